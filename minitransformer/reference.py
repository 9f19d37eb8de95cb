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


# -- positions (chapter 5) ----------------------------------------------------

def sinusoidal_ref(num_positions: int, d_model: int, base: float = 10000.0) -> np.ndarray:
    """The sinusoidal table by the formula, one entry at a time: ``(P, d)`` float64."""
    pe = np.zeros((num_positions, d_model))
    for p in range(num_positions):
        for i in range(d_model // 2):
            angle = p / base ** (2 * i / d_model)
            pe[p, 2 * i] = math.sin(angle)
            pe[p, 2 * i + 1] = math.cos(angle)
    return pe


def rope_complex_ref(x, positions, base: float = 10000.0) -> np.ndarray:
    """RoPE in the interleaved layout as complex multiplication, float64.

    Row ``t`` of ``x (..., T, d)`` is read as ``d/2`` complex numbers
    ``x_{2j} + i x_{2j+1}``, each multiplied by ``exp(i * positions[t] * base^(-2j/d))``.
    """
    x = np.asarray(x.detach().cpu().double() if isinstance(x, Tensor) else x, dtype=np.float64)
    positions = np.asarray(positions.cpu() if isinstance(positions, Tensor) else positions)
    d = x.shape[-1]
    z = x[..., 0::2] + 1j * x[..., 1::2]  # (..., T, d/2)
    theta = np.array([base ** (-2 * j / d) for j in range(d // 2)])  # (d/2,)
    z = z * np.exp(1j * positions[:, None] * theta[None, :])  # (..., T, d/2)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def t5_bucket_ref(relative_position: int, bidirectional: bool = True, num_buckets: int = 32,
                  max_distance: int = 128) -> int:
    """T5's bucket of one relative position, written as in Mesh TensorFlow (``n = -relative``)."""
    ret = 0
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        ret += num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact)
                            * (num_buckets - max_exact))
    return ret + min(large, num_buckets - 1)


def alibi_slopes_ref(n: int) -> list[float]:
    """ALiBi slopes exactly as the paper's code computes them (recursive rule for non-powers of 2)."""
    def get_slopes_power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start ** i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return get_slopes_power_of_2(closest) + alibi_slopes_ref(2 * closest)[0::2][: n - closest]


__all__ += ["sinusoidal_ref", "rope_complex_ref", "t5_bucket_ref", "alibi_slopes_ref"]


# --------------------------------------------------------------------------
# RNN attention (chapter 2): one batch row and one key at a time, float64.
def _np64(t):
    return np.asarray(t.detach().cpu().double() if isinstance(t, Tensor) else t, dtype=np.float64)


def rnn_attention_ref(score_fn, query, keys, values=None, mask=None):
    """Generic float64 RNN attention: ``e_j = score_fn(s, h_j)`` for each real
    position j, ``alpha = softmax(e)``, ``c = sum_j alpha_j v_j``.

    ``query (B, dq)``, ``keys (B, S, dk)``, ``values (B, S, dv)`` (default keys),
    ``mask`` bool ``(B, S)`` True = real. Returns NumPy ``(context (B, dv),
    weights (B, S))``; a fully masked row gives zeros.
    """
    query, keys = _np64(query), _np64(keys)
    values = keys if values is None else _np64(values)
    B, S = keys.shape[:2]
    allowed = np.ones((B, S), dtype=bool) if mask is None else _np64(mask).astype(bool)
    context, weights = np.zeros((B, values.shape[2])), np.zeros((B, S))
    for b in range(B):
        e = np.array([score_fn(query[b], keys[b, j]) if allowed[b, j] else -np.inf for j in range(S)])
        weights[b] = softmax_ref(e)
        context[b] = weights[b] @ values[b]
    return context, weights


def additive_attention_ref(query, keys, W_a, U_a, v_a, values=None, mask=None):
    """Bahdanau: ``e_j = v_a^T tanh(W_a s + U_a h_j)`` with ``W_a (d_a, dq)``,
    ``U_a (d_a, dk)``, ``v_a (d_a,)`` (``nn.Linear`` weight layouts)."""
    W_a, U_a, v_a = _np64(W_a), _np64(U_a), _np64(v_a).reshape(-1)
    return rnn_attention_ref(lambda s, h: v_a @ np.tanh(W_a @ s + U_a @ h), query, keys, values, mask)


def luong_attention_ref(query, keys, score, W_a=None, v_a=None, values=None, mask=None):
    """Luong: dot ``s^T h_j``; general ``s^T W_a h_j`` with ``W_a (dq, dk)``;
    concat ``v_a^T tanh(W_a [s; h_j])`` with ``W_a (d_a, dq + dk)``, ``v_a (d_a,)``."""
    if score == "dot":
        fn = lambda s, h: s @ h  # noqa: E731
    elif score == "general":
        W = _np64(W_a)
        fn = lambda s, h: s @ W @ h  # noqa: E731
    else:
        W, v = _np64(W_a), _np64(v_a).reshape(-1)
        fn = lambda s, h: v @ np.tanh(W @ np.concatenate([s, h]))  # noqa: E731
    return rnn_attention_ref(fn, query, keys, values, mask)


__all__ += ["rnn_attention_ref", "additive_attention_ref", "luong_attention_ref"]
