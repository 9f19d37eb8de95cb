"""Scaled dot-product attention and the masks it uses.

Conventions (the same as ``torch.nn.functional.scaled_dot_product_attention``
for boolean masks):

* ``q`` has shape ``(..., Lq, d)``, ``k`` ``(..., Lk, d)``, ``v`` ``(..., Lk, dv)``.
* A boolean mask is broadcastable to ``(..., Lq, Lk)``; **True means the query
  MAY attend to that key**, False means it may not.
* The weights of each query (each row) sum to 1 over the keys it may see.
* A query that may see no key at all (a fully masked row) gets all-zero
  weights and a zero output, never NaN.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["scaled_dot_product_attention", "causal_mask", "causal_bias", "padding_mask"]


def causal_mask(Lq: int, Lk: int | None = None, device=None) -> Tensor:
    """Boolean look-ahead mask, True where query ``i`` may attend to key ``j``.

    With ``Lk == Lq`` this is the lower triangle (diagonal included). With
    ``Lk > Lq`` the ``Lq`` queries are taken to be the LAST ``Lq`` positions of
    the ``Lk``-long sequence (as when new tokens attend to a KV cache), so
    query ``i`` sees keys ``0 .. i + (Lk - Lq)``.

    Args:
        Lq: number of queries.
        Lk: number of keys (defaults to ``Lq``); must be ``>= Lq``.
        device: where to create the mask.

    Returns:
        bool tensor of shape ``(Lq, Lk)``.
    """
    Lk = Lq if Lk is None else Lk
    for name, value in (("Lq", Lq), ("Lk", Lk)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"causal_mask: {name} must be a non-negative int, got {value!r}")
    if Lk < Lq:
        raise ValueError(
            f"causal_mask: Lk={Lk} < Lq={Lq}; the queries are the last Lq positions of the "
            "key sequence, so there must be at least as many keys as queries"
        )
    i = torch.arange(Lq, device=device).unsqueeze(1)  # (Lq, 1)
    j = torch.arange(Lk, device=device).unsqueeze(0)  # (1, Lk)
    return j <= i + (Lk - Lq)  # (Lq, Lk)


@lru_cache(maxsize=16)
def _cached_causal_bias(Lq: int, Lk: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False):            # a normal tensor, usable with autograd later
        bias = torch.zeros(Lq, Lk, device=device, dtype=dtype)
        return bias.masked_fill_(~causal_mask(Lq, Lk, device=device), float("-inf"))  # (Lq, Lk)


def causal_bias(Lq: int, Lk: int, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The causal mask as numbers to ADD to the scores: 0 where query ``i`` may
    attend to key ``j`` (see :func:`causal_mask`), ``-inf`` where it may not.

    ``scores + causal_bias(...)`` equals ``scores.masked_fill(~causal_mask(...), -inf)``
    bit for bit, and trains faster: an addition passes its gradient through
    untouched, while ``masked_fill`` must mask the gradient again. Small biases
    (up to 2**18 entries, e.g. 512 x 512; the 16 most recent shapes) are cached,
    so treat the result as read-only; larger ones are built on each call.

    Returns:
        tensor ``(Lq, Lk)`` of ``dtype``.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    if Lq * Lk <= 1 << 18:
        return _cached_causal_bias(Lq, Lk, device, dtype)
    return _cached_causal_bias.__wrapped__(Lq, Lk, device, dtype)


def padding_mask(tokens: Tensor, pad_id: int) -> Tensor:
    """Mask out padding keys: True where the key is a real token.

    Args:
        tokens: integer tensor ``(B, S)``.
        pad_id: the id used for padding.

    Returns:
        bool tensor ``(B, 1, 1, S)``, which broadcasts over heads and queries
        against scores of shape ``(B, H, Lq, S)``.
    """
    if not isinstance(tokens, Tensor) or tokens.dim() != 2:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"padding_mask: tokens must be a (B, S) tensor, got {shape}")
    if tokens.is_floating_point():
        raise TypeError(f"padding_mask: tokens must hold integer ids, got dtype {tokens.dtype}")
    return (tokens != pad_id)[:, None, None, :]  # (B, 1, 1, S)


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dims (..., L, d), got shape {tuple(t.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q has head dim {q.shape[-1]} but k has {k.shape[-1]} (shapes {tuple(q.shape)} and {tuple(k.shape)})")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k has {k.shape[-2]} keys but v has {v.shape[-2]} values (shapes {tuple(k.shape)} and {tuple(v.shape)})")
    if k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"k and v must share their leading (batch, head) dims, got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.shape[:-2] != q.shape[:-2]:  # equal leading dims (the usual case) need no broadcasting check
        try:
            batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
        except RuntimeError:
            raise ValueError(f"the leading dims of q {tuple(q.shape)} and k {tuple(k.shape)} do not broadcast") from None
        if batch != q.shape[:-2]:
            raise ValueError(f"k's leading dims {tuple(k.shape[:-2])} would enlarge q's {tuple(q.shape[:-2])}")
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a bool tensor, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise TypeError(
                f"mask must have dtype torch.bool (True = may attend), got {mask.dtype}; "
                "for an additive float mask use mask == 0 or build the bool mask directly"
            )
        scores_shape = (*q.shape[:-1], k.shape[-2])
        try:
            full = torch.broadcast_shapes(mask.shape, scores_shape)
        except RuntimeError:
            full = None
        if full != torch.Size(scores_shape):
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape "
                f"{scores_shape} (..., Lq, Lk)"
            )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
):
    """``softmax(q k^T * scale) v`` with masking, as in "Attention Is All You Need".

    Args:
        q: queries ``(..., Lq, d)``.
        k: keys ``(..., Lk, d)``; leading dims broadcast against ``q``'s.
        v: values ``(..., Lk, dv)``.
        mask: optional bool tensor broadcastable to ``(..., Lq, Lk)``; True = may attend.
        is_causal: also apply :func:`causal_mask` (combined with ``mask`` by AND).
        scale: multiplier of the scores, ``1 / sqrt(d)`` by default.
        dropout_p: dropout probability applied to the weights (the caller decides
            when it is training; 0 disables it).
        return_weights: also return the attention weights.

    Returns:
        ``out`` of shape ``(..., Lq, dv)``, and with ``return_weights`` also the
        weights ``(..., Lq, Lk)`` that multiplied ``v`` (after dropout, if any).
        Rows with no visible key are all zeros in both.
    """
    _check_inputs(q, k, v, mask, dropout_p)
    Lq, Lk = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale

    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (..., Lq, Lk)
    if is_causal and Lq == 1:
        is_causal = False  # one query is the LAST position (see causal_mask): it sees every key
    if is_causal and mask is None:
        # Every query sees at least its own position, so no row is fully masked.
        # Adding 0 / -inf is masked_fill(~causal_mask, -inf) bit for bit, and cheaper to train.
        weights = torch.softmax(scores + causal_bias(Lq, Lk, q.device, scores.dtype), dim=-1)  # (..., Lq, Lk)
    else:
        if is_causal:
            mask = mask & causal_mask(Lq, Lk, device=q.device)  # (..., Lq, Lk)
        if mask is None:
            weights = torch.softmax(scores, dim=-1)  # (..., Lq, Lk)
        else:
            scores = scores.masked_fill(~mask, float("-inf"))
            # A row that sees no key would be softmax of all -inf = NaN. Give it
            # finite scores, then zero its weights after the softmax.
            visible = mask.any(dim=-1, keepdim=True)  # (..., Lq, 1)
            scores = scores.masked_fill(~visible, 0.0)
            weights = torch.softmax(scores, dim=-1) * visible  # (..., Lq, Lk)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    out = torch.matmul(weights, v)  # (..., Lq, dv)
    return (out, weights) if return_weights else out
