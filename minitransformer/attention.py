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

from .validation import check_positive_int, check_probability, check_qkv, describe

__all__ = ["scaled_dot_product_attention", "causal_mask", "causal_bias", "padding_mask", "masked_softmax"]


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
        check_positive_int(name, value, minimum=0, where="causal_mask")
    if Lk < Lq:
        raise ValueError(
            f"causal_mask: Lk={Lk} < Lq={Lq}; the queries are the last Lq positions of the "
            "key sequence, so there must be at least as many keys as queries"
        )
    i = torch.arange(Lq, device=device).unsqueeze(1)  # (Lq, 1)
    j = torch.arange(Lk, device=device).unsqueeze(0)  # (1, Lk)
    return j <= i + (Lk - Lq)  # (Lq, Lk)


CAUSAL_BIAS_CACHE_SIZE = 16  # shapes kept
CAUSAL_BIAS_CACHE_MAX_ENTRIES = 1 << 18  # biases larger than this (e.g. above 512 x 512) are not cached


def _build_causal_bias(Lq: int, Lk: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A fresh ``(Lq, Lk)`` bias: 0 where :func:`causal_mask` is True, ``-inf`` elsewhere."""
    with torch.inference_mode(False):  # a normal tensor, usable with autograd later
        bias = torch.zeros(Lq, Lk, device=device, dtype=dtype)
        return bias.masked_fill_(~causal_mask(Lq, Lk, device=device), float("-inf"))  # (Lq, Lk)


_cached_causal_bias = lru_cache(maxsize=CAUSAL_BIAS_CACHE_SIZE)(_build_causal_bias)


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
    build = _cached_causal_bias if Lq * Lk <= CAUSAL_BIAS_CACHE_MAX_ENTRIES else _build_causal_bias
    return build(Lq, Lk, device, dtype)


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
        raise ValueError(f"padding_mask: tokens must be a (B, S) tensor, got {describe(tokens)}")
    if tokens.is_floating_point():
        raise TypeError(f"padding_mask: tokens must hold integer ids, got dtype {tokens.dtype}")
    return (tokens != pad_id)[:, None, None, :]  # (B, 1, 1, S)


def _check_mask(mask: Tensor, q: Tensor, k: Tensor) -> None:
    """A bool mask that broadcasts to the scores' shape ``(..., Lq, Lk)``."""
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
            f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape {scores_shape} (..., Lq, Lk)"
        )


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float) -> None:
    """Everything :func:`scaled_dot_product_attention` checks before any work."""
    check_qkv(q, k, v)
    if mask is not None:
        _check_mask(mask, q, k)
    check_probability("dropout_p", dropout_p)


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the last dim where only ``mask``-True entries count.

    Args:
        scores: ``(..., Lk)``, e.g. ``(B, S)`` or ``(B, H, Lq, Lk)``.
        mask: bool, broadcastable to ``scores`` (True = may attend), or None.

    Returns:
        weights of ``scores``' shape: each row sums to 1 over its visible
        entries, or is all zeros when it sees none (never NaN).
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)  # (..., Lk)
    scores = scores.masked_fill(~mask, float("-inf"))
    # A row that sees no key would be softmax of all -inf = NaN. Give it
    # finite scores, then zero its weights after the softmax.
    visible = mask.any(dim=-1, keepdim=True)  # (..., 1)
    scores = scores.masked_fill(~visible, 0.0)
    return torch.softmax(scores, dim=-1) * visible  # (..., Lk)


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
        weights = masked_softmax(scores, mask)  # (..., Lq, Lk); rows that see no key are zeros
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    out = torch.matmul(weights, v)  # (..., Lq, dv)
    return (out, weights) if return_weights else out
