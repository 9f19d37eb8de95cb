"""Measurements the book uses to explain and debug attention.

* :func:`score_variance` — the variance of ``q·k`` grows like ``d_k``.
* :func:`softmax_saturation` — large logits make softmax nearly one-hot and
  its gradient vanish; scaling by ``1/sqrt(d_k)`` prevents it.
* :func:`attention_entropy` — how spread out each query's weights are
  (near 0: collapsed onto one key; ``log m``: uniform).

The debugging checklist of chapter 9, one diagnostic per item:

* :func:`grad_norms`, :func:`global_grad_norm` (from :mod:`minitransformer.train`),
  :func:`tracked_training` — exploding or vanishing gradients (fix: clipping,
  warmup, a lower learning rate);
* :func:`entropy_by_head`, :func:`normalized_entropy` — attention collapse
  (every query staring at one key) or heads that stay uniform;
* :func:`loss_spikes` — steps where the loss jumps far above its recent level;
* :func:`causal_leak` — a decoder whose outputs change when FUTURE tokens
  change has a mask bug; :func:`permutation_sensitivity` — a model whose
  outputs merely permute with its input has no positional information;
* :func:`saved_activation_bytes` — what backward will keep in memory
  (out-of-memory: smaller batch, checkpointing, fused/flash attention).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn as nn
from torch import Tensor

from ..train import fit, global_grad_norm

__all__ = [
    "score_variance",
    "softmax_saturation",
    "saturation_table",
    "attention_entropy",
    "normalized_entropy",
    "entropy_by_head",
    "grad_norms",
    "global_grad_norm",
    "loss_spikes",
    "causal_leak",
    "permutation_sensitivity",
    "saved_activation_bytes",
    "tracked_training",
]


def score_variance(d_k: int, n_samples: int = 20000, seed: int = 0) -> float:
    """Empirical variance of ``q·k`` for q, k with i.i.d. N(0, 1) entries (theory: ``d_k``)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_samples, d_k, generator=g, dtype=torch.float64)  # (n, d_k)
    k = torch.randn(n_samples, d_k, generator=g, dtype=torch.float64)  # (n, d_k)
    return (q * k).sum(-1).var().item()


def softmax_saturation(d_k: int, n_keys: int = 16, n_trials: int = 200, scaled: bool = True, seed: int = 0) -> dict:
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
    """Entropy (nats) of each row of attention weights ``(..., m) -> (...)``.

    ``H = -sum_j w_j log w_j`` with ``0 log 0 = 0``: ``log m`` for uniform weights
    over ``m`` keys, 0 for a one-hot row.
    """
    return -(weights * (weights + eps).log()).sum(-1)


def normalized_entropy(weights: Tensor, mask: Tensor | None = None) -> Tensor:
    """Entropy divided by its largest possible value, ``log`` (number of keys the query may
    see): 1 = uniform, 0 = one-hot. ``weights (..., m)``, optional bool ``mask``
    broadcastable to it (True = may attend). Rows that may see one key or none give 0."""
    n = torch.full(weights.shape[:-1], weights.shape[-1], dtype=weights.dtype, device=weights.device)
    if mask is not None:
        n = mask.expand(weights.shape).sum(-1).to(weights.dtype)  # (...,)
    h = attention_entropy(weights)  # (...,)
    return torch.where(n > 1, h / n.clamp_min(2).log(), torch.zeros_like(h))


def entropy_by_head(weights: Sequence[Tensor], mask: Tensor | None = None) -> pd.DataFrame:
    """Mean normalised entropy of every layer and head.

    Args:
        weights: one ``(B, H, T, S)`` tensor per layer.
        mask: optional bool mask broadcastable to ``(B, H, T, S)``.

    Returns:
        a table with columns ``layer, head, entropy`` (0 = collapsed, 1 = uniform).
    """
    rows = []
    for layer, w in enumerate(weights):
        ent = normalized_entropy(w, mask).mean(dim=(0, 2))  # (H,)
        rows += [{"layer": layer, "head": h, "entropy": ent[h].item()} for h in range(ent.shape[0])]
    return pd.DataFrame(rows)


def grad_norms(model: nn.Module) -> dict[str, float]:
    """The L2 norm of every parameter's gradient (after ``backward``), by name."""
    return {name: p.grad.norm().item() for name, p in model.named_parameters() if p.grad is not None}


def loss_spikes(losses: Sequence[float], window: int = 20, factor: float = 2.0) -> list[int]:
    """Indices where the loss exceeds ``factor`` times the median of the previous ``window``
    losses (or is not finite): the steps to inspect."""
    losses = [float(x) for x in losses]
    spikes = []
    for i, x in enumerate(losses):
        if not math.isfinite(x):
            spikes.append(i)
            continue
        past = [v for v in losses[max(0, i - window) : i] if math.isfinite(v)]
        if len(past) >= min(5, window):
            med = sorted(past)[len(past) // 2]
            if x > factor * med:
                spikes.append(i)
    return spikes


@torch.no_grad()
def causal_leak(fn: Callable[[Tensor], Tensor], idx: Tensor, vocab_size: int, seed: int = 0) -> Tensor:
    """Test a decoder for look-ahead leaks.

    For every position ``t``, the tokens AFTER ``t`` are replaced by random ones and
    the outputs at positions ``<= t`` are compared. A correct causal model gives
    exactly 0 everywhere.

    Args:
        fn: ``idx (B, T) -> outputs (B, T, ...)`` (e.g. ``lambda i: model(i)[0]``).
        idx: ``(B, T)`` token ids.
        vocab_size: to draw replacement tokens.

    Returns:
        ``(T,)``: the largest change of any output at positions ``<= t`` when the
        future after ``t`` changes.
    """
    g = torch.Generator().manual_seed(seed)
    base = fn(idx)  # (B, T, ...)
    T = idx.shape[1]
    leak = torch.zeros(T)
    for t in range(T - 1):
        changed = idx.clone()
        changed[:, t + 1 :] = torch.randint(vocab_size, changed[:, t + 1 :].shape, generator=g)
        out = fn(changed)
        leak[t] = (out[:, : t + 1] - base[:, : t + 1]).abs().max()
    return leak


@torch.no_grad()
def permutation_sensitivity(fn: Callable[[Tensor], Tensor], x: Tensor, seed: int = 0) -> float:
    """``max |fn(x[:, perm]) - fn(x)[:, perm]|`` for a random permutation of the positions
    (dim 1). 0 means the model cannot tell the order of its inputs (no positions,
    or positions that never reach the attention)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[1], generator=g)
    return (fn(x[:, perm]) - fn(x)[:, perm]).abs().max().item()


def saved_activation_bytes(fn: Callable[[], Tensor], model: nn.Module | None = None) -> int:
    """Bytes of the tensors autograd saves for the backward pass while ``fn()`` runs
    (each distinct storage counted once; the parameters of ``model``, if given, are
    not counted): the activation memory that grows with batch size and, for
    attention, with the square of the sequence length."""
    seen: dict[int, int] = {}
    params = set() if model is None else {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: Tensor):
        try:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return int(sum(seen.values()))


def tracked_training(
    model: nn.Module,
    loss_fn: Callable[[int], Tensor],
    optimizer: torch.optim.Optimizer,
    steps: int,
    scheduler=None,
    clip_norm: float | None = None,
) -> pd.DataFrame:
    """Train with :func:`~minitransformer.train.fit`, recording at every step the loss, the
    global gradient norm BEFORE clipping and the learning rate: the three curves to look at first.

    Args:
        model, loss_fn, optimizer, scheduler, clip_norm: as in :func:`~minitransformer.train.fit`
            (but no clipping by default).
        steps: number of steps.

    Returns:
        a table with columns ``step, loss, grad_norm, lr``, one row per step; ``step`` counts
        from 0 and ``lr`` is the learning rate the step used.
    """
    history = fit(
        model,
        loss_fn,
        optimizer,
        steps,
        scheduler=scheduler,
        clip_norm=clip_norm,
        grad_norm=True,
        log_every=1,
        progress=False,
    )
    frame = history.to_frame()[["step", "loss", "grad_norm", "lr"]]
    return frame.assign(step=frame["step"] - 1)
