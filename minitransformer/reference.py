"""Slow, obviously-correct float64 references shared by the tests and the
exercise checkers.

Everything here favours clarity over speed: explicit loops or the plainest
formula, computed in float64 on the CPU. Library code must never import
this module; tests and checkers compare against it.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["softmax_ref", "attention_ref", "causal_mask_ref"]


def softmax_ref(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64 (rows of ``-inf`` give zeros)."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(x - m)
    s = np.sum(e, axis=axis, keepdims=True)
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0)


def causal_mask_ref(Lq: int, Lk: int) -> np.ndarray:
    """``(Lq, Lk)`` bool, query i (the (Lk-Lq+i)-th position) may see keys <= its position."""
    out = np.zeros((Lq, Lk), dtype=bool)
    for i in range(Lq):
        for j in range(Lk):
            out[i, j] = j <= i + (Lk - Lq)
    return out


def attention_ref(q, k, v, mask=None, *, is_causal: bool = False, scale: float | None = None,
                  return_weights: bool = False):
    """Float64 attention by the formula, one query row at a time.

    Accepts NumPy arrays or tensors of shape ``(..., Lq, d)``, ``(..., Lk, d)``,
    ``(..., Lk, dv)``; the mask is bool, True = may attend. Returns NumPy float64.
    """
    q, k, v = (np.asarray(t.detach().cpu().double() if isinstance(t, Tensor) else t, dtype=np.float64)
               for t in (q, k, v))
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    Lq, d, Lk, dv = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    allowed = np.ones(lead + (Lq, Lk), dtype=bool)
    if mask is not None:
        m = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
        allowed = allowed & np.broadcast_to(m, allowed.shape)
    if is_causal:
        allowed = allowed & causal_mask_ref(Lq, Lk)
    q = np.broadcast_to(q, lead + (Lq, d))
    k = np.broadcast_to(k, lead + (Lk, d))
    v = np.broadcast_to(v, lead + (Lk, dv))
    out = np.zeros(lead + (Lq, dv))
    weights = np.zeros(lead + (Lq, Lk))
    for idx in np.ndindex(*lead):
        for i in range(Lq):
            scores = np.array([q[idx][i] @ k[idx][j] * scale if allowed[idx][i, j] else -np.inf
                               for j in range(Lk)])
            w = softmax_ref(scores)
            weights[idx][i] = w
            out[idx][i] = w @ v[idx]
    return (out, weights) if return_weights else out
