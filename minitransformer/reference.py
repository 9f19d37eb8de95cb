"""Slow, obviously-correct float64 references shared by the tests and the
exercise checkers.

Everything here favours clarity over speed: explicit loops or the plainest
formula, computed in float64. Tests and exercise checkers compare against it.

One function is also the library's own: :func:`gqa_attention` (grouped-query
attention by the formula, in torch, in its inputs' dtype) is the exact
CPU path of ``flash_decode``, and :func:`gqa_attention_ref` is the same
formula in float64, with the log-sum-exp and gradients the kernels are
tested against. Nothing else in the library imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

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


def attention_ref(
    q,
    k,
    v,
    mask=None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
    attn_bias=None,
):
    """Float64 attention by the formula, one query row at a time.

    Accepts NumPy arrays or tensors of shape ``(..., Lq, d)``, ``(..., Lk, d)``,
    ``(..., Lk, dv)``; the mask is bool, True = may attend; ``attn_bias`` (optional,
    broadcastable to ``(..., Lq, Lk)``) is added to each allowed score. Returns NumPy float64.
    """
    q, k, v = (
        np.asarray(t.detach().cpu().double() if isinstance(t, Tensor) else t, dtype=np.float64) for t in (q, k, v)
    )
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    Lq, d, Lk, dv = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    allowed = np.ones(lead + (Lq, Lk), dtype=bool)
    if mask is not None:
        m = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
        allowed = allowed & np.broadcast_to(m, allowed.shape)
    if is_causal:
        allowed = allowed & causal_mask_ref(Lq, Lk)
    bias = np.zeros(lead + (Lq, Lk))
    if attn_bias is not None:
        bias = np.broadcast_to(_np64(attn_bias), bias.shape)
    q = np.broadcast_to(q, lead + (Lq, d))
    k = np.broadcast_to(k, lead + (Lk, d))
    v = np.broadcast_to(v, lead + (Lk, dv))
    out = np.zeros(lead + (Lq, dv))
    weights = np.zeros(lead + (Lq, Lk))
    for idx in np.ndindex(*lead):
        for i in range(Lq):
            scores = np.array(
                [q[idx][i] @ k[idx][j] * scale + bias[idx][i, j] if allowed[idx][i, j] else -np.inf for j in range(Lk)]
            )
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


def t5_bucket_ref(
    relative_position: int, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> int:
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
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(large, num_buckets - 1)


def alibi_slopes_ref(n: int) -> list[float]:
    """ALiBi slopes exactly as the paper's code computes them (recursive rule for non-powers of 2)."""

    def get_slopes_power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

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


# --------------------------------------------------------------------------
# Grouped-query attention (chapters 4 and 8): the reference of flash attention,
# its kernels and flash decoding. Torch, so that autograd gives the gradients.


def gqa_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    lengths: Tensor | None = None,
    return_lse: bool = False,
):
    """Grouped-query attention by the formula, in the inputs' dtype and device (differentiable).

    Query head ``h`` reads key head ``h // (H // H_kv)``. The ``T`` queries are
    the LAST ``T`` positions of their sequence: query ``t`` of sequence ``b``
    sits at position ``lengths[b] - T + t`` (``S - T + t`` without ``lengths``),
    as in :func:`~minitransformer.attention.causal_mask`.

    Args:
        q: ``(B, H, T, d)`` queries.
        k: ``(B, H_kv, S, d)`` keys, ``H % H_kv == 0``.
        v: ``(B, H_kv, S, dv)`` values.
        scale: score scale, default ``1 / sqrt(d)``.
        is_causal: query ``t`` sees keys up to its own position only.
        lengths: optional ``(B,)`` integers: only the first ``lengths[b]``
            keys of sequence ``b`` exist; the others are never read (they may
            hold anything, even NaN).
        return_lse: also return the log-sum-exp of each query's scores.

    Returns:
        ``out (B, H, T, dv)``, and with ``return_lse`` also ``lse (B, H, T)``.
    """
    B, H, T, d = q.shape
    H_kv, S = k.shape[1], k.shape[2]
    G = H // H_kv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    kk = k.repeat_interleave(G, dim=1)  # (B, H, S, d)
    vv = v.repeat_interleave(G, dim=1)  # (B, H, S, dv)
    s = scale * q @ kk.transpose(-1, -2)  # (B, H, T, S)
    j = torch.arange(S, device=q.device).view(1, 1, 1, S)  # key positions
    L = S if lengths is None else lengths.to(q.device).long().view(B, 1, 1, 1)
    visible = None
    if lengths is not None:
        visible = j < L  # (B, 1, 1, S)
        # keys past a sequence's length are never read (they may hold anything, even NaN)
        vv = torch.where(j.view(1, 1, S, 1) < L, vv, torch.zeros((), dtype=vv.dtype, device=vv.device))
    if is_causal:
        pos = L - T + torch.arange(T, device=q.device).view(1, 1, T, 1)  # (B or 1, 1, T, 1)
        visible = j <= pos if visible is None else visible & (j <= pos)  # (B or 1, 1, T, S)
    if visible is not None:
        s = s.masked_fill(~visible, float("-inf"))
    out = torch.softmax(s, dim=-1) @ vv  # (B, H, T, dv)
    return (out, torch.logsumexp(s, dim=-1)) if return_lse else out


class GQAReference(NamedTuple):
    """What :func:`gqa_attention_ref` returns: float64 tensors (gradients None without ``dO``)."""

    out: Tensor  # (B, H, T, dv)
    lse: Tensor  # (B, H, T)
    dq: Tensor | None  # (B, H, T, d)
    dk: Tensor | None  # (B, H_kv, S, d)
    dv: Tensor | None  # (B, H_kv, S, dv)


def _f64(x) -> Tensor:
    """A detached float64 copy of a tensor (same device) or a NumPy array (CPU)."""
    if isinstance(x, Tensor):
        return x.detach().to(torch.float64)
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


def gqa_attention_ref(
    q, k, v, *, scale: float | None = None, is_causal: bool = False, lengths=None, dO=None
) -> GQAReference:
    """Float64 grouped-query attention, its log-sum-exp and (given ``dO``) its gradients.

    :func:`gqa_attention` on float64 copies of the inputs (tensors keep their
    device; NumPy arrays go to the CPU), with autograd for the gradients.

    Args:
        q: ``(B, H, T, d)``; k: ``(B, H_kv, S, d)``; v: ``(B, H_kv, S, dv)``;
            torch tensors or NumPy arrays of any float dtype.
        scale, is_causal, lengths: as in :func:`gqa_attention`.
        dO: optional ``(B, H, T, dv)`` gradient of the output.

    Returns:
        :class:`GQAReference` ``(out, lse, dq, dk, dv)``, float64 tensors;
        the gradients are None without ``dO``.
    """
    q, k, v = (_f64(x).requires_grad_(dO is not None) for x in (q, k, v))
    if lengths is not None and not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(np.asarray(lengths))
    with torch.enable_grad():
        out, lse = gqa_attention(q, k, v, scale=scale, is_causal=is_causal, lengths=lengths, return_lse=True)
        grads = (None, None, None)
        if dO is not None:
            grads = torch.autograd.grad(out, (q, k, v), _f64(dO).to(out.device))
    return GQAReference(out.detach(), lse.detach(), *grads)


def linear_attention_ref(q, k, v, phi: Callable[[Tensor], Tensor], causal: bool = False) -> np.ndarray:
    """Linear attention as the quadratic form, one query at a time, float64.

    ``out_i = sum_j a_ij v_j / sum_j a_ij`` with ``a_ij = phi(q_i) . phi(k_j)``
    over all keys ``j`` (causal: ``j <= i``).

    Args:
        q: ``(..., n, d)``; k: ``(..., m, d)``; v: ``(..., m, dv)`` float64 tensors.
        phi: the feature map, applied to the last axis.
        causal: query ``i`` sees keys ``j <= i`` only.

    Returns:
        NumPy ``(..., n, dv)``.
    """
    fq, fk = phi(q).numpy(), phi(k).numpy()
    v = v.numpy()
    out = np.zeros(fq.shape[:-1] + (v.shape[-1],))
    for idx in np.ndindex(*fq.shape[:-2]):
        for i in range(fq.shape[-2]):
            last = i + 1 if causal else fk.shape[-2]
            a = fk[idx][:last] @ fq[idx][i]  # (keys,)
            out[idx + (i,)] = a @ v[idx][:last] / a.sum()
    return out


__all__ += ["gqa_attention", "gqa_attention_ref", "GQAReference", "linear_attention_ref"]


# --------------------------------------------------------------------------
# Modern block parts (Llama / Qwen / OLMo): RMSNorm, gated feed-forward networks,
# attention with QK-norm and per-token RoPE positions. NumPy float64, one formula
# (or one query) at a time.
def rms_norm_ref(x, weight=None, eps: float = 1e-6) -> np.ndarray:
    """RMSNorm: ``x / sqrt(mean(x^2) + eps) * weight`` over the last axis, float64 ``(..., d)``."""
    x = _np64(x)
    out = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # (..., d)
    return out if weight is None else out * _np64(weight)


def activation_ref(x, name: str) -> np.ndarray:
    """The FFN nonlinearities by their formulas, float64: ``"relu"``, ``"gelu"`` (erf),
    ``"gelu_tanh"`` (``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``), ``"silu"`` (``x sigmoid(x)``)."""
    x = _np64(x)
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "gelu":
        return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    raise ValueError(f"unknown activation {name!r}")


def gated_ffn_ref(x, W1, W3, W2, b1=None, b3=None, b2=None, activation: str = "swiglu") -> np.ndarray:
    """A gated FFN ``(act(x W1^T + b1) * (x W3^T + b3)) W2^T + b2``, float64.

    Weights in ``nn.Linear`` layout: ``W1, W3 (d_ff, d)``, ``W2 (d, d_ff)``.
    ``activation``: ``"swiglu"`` (SiLU) or ``"geglu"`` (erf GELU). Returns ``(..., d)``.
    """
    x, W1, W3, W2 = (_np64(t) for t in (x, W1, W3, W2))
    a = x @ W1.T + (0.0 if b1 is None else _np64(b1))  # (..., d_ff)
    g = x @ W3.T + (0.0 if b3 is None else _np64(b3))  # (..., d_ff)
    h = activation_ref(a, {"swiglu": "silu", "geglu": "gelu"}[activation]) * g  # (..., d_ff)
    return h @ W2.T + (0.0 if b2 is None else _np64(b2))  # (..., d)


def mha_ref(
    x,
    W_qkv,
    W_o,
    num_heads: int,
    num_kv_heads: int,
    b_qkv=None,
    b_o=None,
    *,
    q_gain=None,
    k_gain=None,
    eps: float = 1e-6,
    positions=None,
    base: float = 10000.0,
    causal: bool = False,
    mask=None,
    attn_bias=None,
) -> np.ndarray:
    """Self-attention by the formula, one batch row, head and query at a time, float64.

    ``q, k, v = x W_qkv^T + b_qkv`` split into ``H`` query and ``H_kv`` key/value heads
    (query head ``h`` reads key/value head ``h // (H / H_kv)``); with ``q_gain``/``k_gain``
    every query/key head vector is RMS-normalised and scaled by the gain (QK-norm); with
    ``positions`` (``(T,)`` or ``(B, T)``) queries and keys are rotated by interleaved RoPE
    (:func:`rope_complex_ref`); then ``softmax(q k^T / sqrt(d_head))`` over the allowed keys
    (``mask`` bool ``(T, T)`` or ``(B, T, T)``, True = may attend, and ``j <= i`` if ``causal``),
    plus ``attn_bias`` (broadcastable to ``(B, H, T, T)``) if given, the heads concatenated
    and ``W_o^T + b_o`` applied.

    Args:
        x: ``(B, T, d)``; W_qkv: ``(d + 2 H_kv d_head, d)``; W_o: ``(d, d)`` (``nn.Linear`` layout).

    Returns:
        NumPy ``(B, T, d)``.
    """
    x, W_qkv, W_o = _np64(x), _np64(W_qkv), _np64(W_o)
    B, T, d = x.shape
    hd = d // num_heads
    kv = num_kv_heads * hd
    qkv = x @ W_qkv.T + (0.0 if b_qkv is None else _np64(b_qkv))  # (B, T, d + 2 kv)
    q = qkv[..., :d].reshape(B, T, num_heads, hd).transpose(0, 2, 1, 3)  # (B, H, T, hd)
    k = qkv[..., d : d + kv].reshape(B, T, num_kv_heads, hd).transpose(0, 2, 1, 3)  # (B, H_kv, T, hd)
    v = qkv[..., d + kv :].reshape(B, T, num_kv_heads, hd).transpose(0, 2, 1, 3)  # (B, H_kv, T, hd)
    if q_gain is not None:
        q, k = rms_norm_ref(q, q_gain, eps), rms_norm_ref(k, k_gain, eps)
    if positions is not None:
        pos = np.broadcast_to(np.asarray(positions.cpu() if isinstance(positions, Tensor) else positions), (B, T))
        q = np.stack([rope_complex_ref(q[b], pos[b], base) for b in range(B)])  # (B, H, T, hd)
        k = np.stack([rope_complex_ref(k[b], pos[b], base) for b in range(B)])  # (B, H_kv, T, hd)
    allowed = np.ones((B, T, T), dtype=bool)
    if mask is not None:
        allowed &= np.broadcast_to(_np64(mask).astype(bool), (B, T, T))
    if causal:
        allowed &= np.tril(np.ones((T, T), dtype=bool))
    bias = np.zeros((B, num_heads, T, T))
    if attn_bias is not None:
        bias = np.broadcast_to(_np64(attn_bias), bias.shape)
    heads = np.zeros((B, T, num_heads, hd))
    for b in range(B):
        for h in range(num_heads):
            g = h // (num_heads // num_kv_heads)
            for i in range(T):
                scores = [q[b, h, i] @ k[b, g, j] / math.sqrt(hd) + bias[b, h, i, j] for j in range(T)]
                e = np.where(allowed[b, i], np.array(scores), -np.inf)  # (T,)
                heads[b, i, h] = softmax_ref(e) @ v[b, g] if allowed[b, i].any() else 0.0
    return heads.reshape(B, T, d) @ W_o.T + (0.0 if b_o is None else _np64(b_o))  # (B, T, d)


__all__ += ["rms_norm_ref", "activation_ref", "gated_ffn_ref", "mha_ref"]
