"""Measurements the book uses to explain and debug attention.

* :func:`score_variance` — the variance of ``q·k`` grows like ``d_k``.
* :func:`softmax_saturation` — large logits make softmax nearly one-hot and
  its gradient vanish; scaling by ``1/sqrt(d_k)`` prevents it.
* :func:`attention_entropy` — how spread out each query's weights are
  (near 0: collapsed onto one key; ``log m``: uniform).
"""
from __future__ import annotations

import math

import pandas as pd
import torch
from torch import Tensor

__all__ = ["score_variance", "softmax_saturation", "saturation_table", "attention_entropy"]


def score_variance(d_k: int, n_samples: int = 20000, seed: int = 0) -> float:
    """Empirical variance of ``q·k`` for q, k with i.i.d. N(0, 1) entries (theory: ``d_k``)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_samples, d_k, generator=g, dtype=torch.float64)  # (n, d_k)
    k = torch.randn(n_samples, d_k, generator=g, dtype=torch.float64)  # (n, d_k)
    return (q * k).sum(-1).var().item()


def softmax_saturation(d_k: int, n_keys: int = 16, n_trials: int = 200, scaled: bool = True,
                       seed: int = 0) -> dict:
    """How saturated softmax over ``n_keys`` random scores ``q·k`` is, on average.

    Returns a dict with the mean largest weight (1 = one-hot), the mean
    Frobenius norm of the softmax Jacobian ``diag(p) - p p^T`` (0 = no gradient
    flows back to the scores) and the mean entropy of the weights.
    """
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_trials, 1, d_k, generator=g, dtype=torch.float64)  # (N, 1, d_k)
    k = torch.randn(n_trials, n_keys, d_k, generator=g, dtype=torch.float64)  # (N, m, d_k)
    scores = (q @ k.transpose(-2, -1)).squeeze(1)  # (N, m)
    if scaled:
        scores = scores / math.sqrt(d_k)
    p = torch.softmax(scores, dim=-1)  # (N, m)
    jac = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)  # (N, m, m)
    return {
        "max_weight": p.max(-1).values.mean().item(),
        "jacobian_norm": torch.linalg.matrix_norm(jac).mean().item(),
        "entropy": attention_entropy(p).mean().item(),
    }


def saturation_table(d_values=(4, 16, 64, 256, 1024), **kwargs) -> pd.DataFrame:
    """:func:`softmax_saturation` for several ``d_k``, scaled and unscaled, as a long table."""
    rows = []
    for d in d_values:
        for scaled in (False, True):
            r = softmax_saturation(d, scaled=scaled, **kwargs)
            rows.append({"d_k": d, "scores": "q·k / √d_k" if scaled else "q·k (unscaled)", **r})
    return pd.DataFrame(rows)


def attention_entropy(weights: Tensor, eps: float = 1e-12) -> Tensor:
    """Entropy (nats) of each row of attention weights ``(..., m) -> (...)``."""
    return -(weights * (weights + eps).log()).sum(-1)
