"""Scaled dot-product attention and the masks it uses.

Conventions (the same as ``torch.nn.functional.scaled_dot_product_attention``
for boolean masks):

* ``q`` has shape ``(..., Lq, d)``, ``k`` ``(..., Lk, d)``, ``v`` ``(..., Lk, dv)``.
* A boolean mask is broadcastable to ``(..., Lq, Lk)``; **True means the query
  MAY attend to that key**, False means it may not.
* The weights of each query (each row) sum to 1 over the keys it may see.
* A query that may see no key at all (a fully masked row) gets all-zero
  weights and a zero output, never NaN.
* With ``is_causal`` the ``Lq`` queries are the LAST ``Lq`` of the ``Lk``
  positions (a KV-cache step); ``Lq > Lk`` is refused (the first queries
  would see nothing). torch aligns them with the FIRST keys instead.
* An optional float ``attn_bias``, broadcastable to ``(..., Lq, Lk)``, is ADDED to
  the scaled scores before the softmax (ALiBi's distance penalty, T5's learned
  bias); its ``-inf`` entries hide a key like a False in the mask.
* Grouped-query attention (``k``, ``v`` with fewer heads on dim -3) needs
  ``enable_gqa=True``, as in torch; otherwise head counts must broadcast.
* float16 and bfloat16 inputs are computed in float32 (scores, softmax,
  weighted sum) and rounded back once; float32 and float64 in their own dtype.
* Bad input (dtypes, shapes, NaN or inf in ``q``, ``k``, ``v``, ``scale``,
  ``dropout_p``, the mask) raises ``TypeError``/``ValueError`` before any work.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .validation import (
    FLOAT_DTYPES,
    check_bool,
    check_finite_tensors,
    check_int_tensor,
    check_positive_int,
    check_probability,
    check_qkv,
    check_scale,
    describe,
)

__all__ = [
    "scaled_dot_product_attention",
    "attend",
    "softmax_attention",
    "biased_softmax_attention",
    "causal_mask",
    "causal_bias",
    "padding_mask",
    "masked_softmax",
]


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

    Args:
        Lq: number of queries, ``>= 0``.
        Lk: number of keys, ``>= Lq``.
        device: where the bias lives.
        dtype: a floating dtype (the scores').

    Returns:
        tensor ``(Lq, Lk)`` of ``dtype``.
    """
    for name, value in (("Lq", Lq), ("Lk", Lk)):
        check_positive_int(name, value, minimum=0, where="causal_bias")
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"causal_bias: dtype must be a floating dtype (it holds -inf), got {dtype}")
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
    check_int_tensor("tokens", tokens, where="padding_mask")
    if tokens.dim() != 2:
        raise ValueError(f"padding_mask: tokens must be a (B, S) tensor, got {describe(tokens)}")
    if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)):
        raise TypeError(f"padding_mask: pad_id must be an int, got {describe(pad_id)} {pad_id!r}")
    return (tokens != pad_id)[:, None, None, :]  # (B, 1, 1, S)


def _check_broadcasts_to_scores(name: str, t: Tensor, q: Tensor, k: Tensor) -> None:
    """Raise a ValueError unless ``t`` broadcasts to the scores' shape ``(..., Lq, Lk)`` without enlarging it."""
    scores_shape = (*q.shape[:-1], k.shape[-2])  # k never enlarges q's leading dims (heads included, with GQA)
    try:
        full = torch.broadcast_shapes(t.shape, scores_shape)
    except RuntimeError:
        full = None
    if full != torch.Size(scores_shape):
        raise ValueError(
            f"{name} of shape {tuple(t.shape)} does not broadcast to the scores' shape {scores_shape} (..., Lq, Lk)"
        )


def _check_mask(mask: Tensor, q: Tensor, k: Tensor) -> None:
    """A bool mask on ``q``'s device that broadcasts to the scores' shape ``(..., Lq, Lk)``."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a bool tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"mask must have dtype torch.bool (True = may attend), got {mask.dtype}; "
            "for an additive float mask use mask == 0 or build the bool mask directly"
        )
    _check_broadcasts_to_scores("mask", mask, q, k)
    if mask.device != q.device:
        raise ValueError(f"mask is on {mask.device} but q is on {q.device}; put them on one device")


def check_attn_bias(attn_bias: Tensor, q: Tensor, k: Tensor) -> None:
    """A floating ``attn_bias`` on ``q``'s device that broadcasts to the scores' shape ``(..., Lq, Lk)``,
    with no NaN and no ``+inf`` (``-inf`` is allowed: it hides a key).

    Args:
        attn_bias: the bias to add to the scores.
        q: the queries ``(..., Lq, d)``; k: the keys ``(..., Lk, d)``.

    Raises:
        TypeError: not a floating tensor.
        ValueError: a shape that does not broadcast, another device, NaN or ``+inf``.
    """
    if not isinstance(attn_bias, Tensor) or not attn_bias.is_floating_point():
        got = attn_bias.dtype if isinstance(attn_bias, Tensor) else describe(attn_bias)
        raise TypeError(
            f"attn_bias must be a floating tensor added to the scores, got {got}; "
            "to hide keys with a bool tensor pass it as mask (True = may attend)"
        )
    _check_broadcasts_to_scores("attn_bias", attn_bias, q, k)
    if attn_bias.device != q.device:
        raise ValueError(f"attn_bias is on {attn_bias.device} but q is on {q.device}; put them on one device")
    if torch.isnan(attn_bias).any() or (attn_bias == float("inf")).any():
        raise ValueError("attn_bias contains NaN or +inf; only finite values and -inf (hide the key) are allowed")


def _check_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    dropout_p: float,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    return_weights: bool = False,
    finite: bool = True,
) -> None:
    """Everything :func:`scaled_dot_product_attention` checks before any work.

    Types and dtypes of ``q, k, v`` (floating point: an integer or bool ``q``
    is a ``TypeError`` naming ``q``), their shapes, that they are finite, the
    mask's dtype, shape and device, ``dropout_p`` in ``[0, 1)``, ``scale``
    (None or a finite number > 0, the check :func:`~minitransformer.flash.flash_attention`
    uses too), the flags, and that a causal attention has at least as many
    keys as queries (see :func:`causal_mask`). ``finite=False`` skips the one check
    that reads the data (NaN or inf in ``q, k, v``: a reduction and, on a GPU, a
    synchronisation), for callers that run it once themselves.
    """
    for name, flag in (("is_causal", is_causal), ("enable_gqa", enable_gqa), ("return_weights", return_weights)):
        check_bool(name, flag, where="scaled_dot_product_attention")
    check_qkv(q, k, v, enable_gqa=enable_gqa)
    if mask is not None:
        _check_mask(mask, q, k)
    check_probability("dropout_p", dropout_p)
    check_scale(scale)
    Lq, Lk = q.shape[-2], k.shape[-2]
    if is_causal and Lk < Lq:
        raise ValueError(
            f"is_causal=True needs at least as many keys as queries, got Lk={Lk} < Lq={Lq}: the queries are "
            "the LAST Lq positions of the key sequence (see causal_mask), so the first Lq - Lk would see no key"
        )
    if finite:
        check_finite_tensors(("q", q), ("k", k), ("v", v))  # last: the only check that reads the data


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the last dim where only ``mask``-True entries count.

    Args:
        scores: ``(..., Lk)``, e.g. ``(B, S)`` or ``(B, H, Lq, Lk)``.
        mask: bool, broadcastable to ``scores`` (True = may attend), or None.

    Returns:
        weights of ``scores``' shape: each row sums to 1 over its visible
        entries, or is all zeros when it sees none (never NaN).

    Raises:
        TypeError: ``scores`` not a floating tensor, ``mask`` not a bool tensor.
        ValueError: a mask that does not broadcast to ``scores``' shape.
    """
    if not isinstance(scores, Tensor) or not scores.is_floating_point():
        got = scores.dtype if isinstance(scores, Tensor) else describe(scores)
        raise TypeError(f"masked_softmax: scores must be a floating tensor, got {got}")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else describe(mask)
            raise TypeError(f"masked_softmax: mask must be a bool tensor (True = may attend), got {got}")
        if mask.shape != scores.shape:
            try:
                full = torch.broadcast_shapes(mask.shape, scores.shape)
            except RuntimeError:
                full = None
            if full != scores.shape:
                raise ValueError(
                    f"masked_softmax: mask of shape {tuple(mask.shape)} does not broadcast to the scores' "
                    f"shape {tuple(scores.shape)}"
                )
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
    enable_gqa: bool = False,
    attn_bias: Tensor | None = None,
):
    """``softmax(q k^T * scale) v`` with masking, as in "Attention Is All You Need".

    Half-precision inputs (float16, bfloat16) are computed in float32: the
    scores, the softmax and the weighted sum of the values, rounded back to
    the input dtype once at the end. (In float16 a product ``q . k`` above
    65504 is inf before any scale could shrink it, and the weights would be
    rounded before multiplying ``v``.) float32 and float64 inputs are computed
    in their own dtype.

    Args:
        q: queries ``(..., Lq, d)``; with ``enable_gqa`` ``(..., H, Lq, d)``.
        k: keys ``(..., Lk, d)``; leading dims broadcast against ``q``'s. With
            ``enable_gqa`` ``(..., H_kv, Lk, d)`` with ``H % H_kv == 0``.
        v: values ``(..., Lk, dv)`` (the same leading dims as ``k``).
        mask: optional bool tensor broadcastable to ``(..., Lq, Lk)``; True = may attend.
        is_causal: also apply :func:`causal_mask` (combined with ``mask`` by AND).
            The queries are the LAST ``Lq`` of the ``Lk`` positions, so it needs
            ``Lk >= Lq`` (``Lq > Lk`` is a ``ValueError``: the first queries would see no key).
        scale: multiplier of the scores, ``1 / sqrt(d)`` by default; a finite number > 0.
        dropout_p: dropout probability applied to the weights (the caller decides
            when it is training; 0 disables it).
        return_weights: also return the attention weights.
        enable_gqa: grouped-query attention, as ``torch.nn.functional.scaled_dot_product_attention(...,
            enable_gqa=True)``: ``k`` and ``v`` have ``H_kv`` heads on dim -3 and query head ``h``
            reads key/value head ``h // (H // H_kv)``. Off by default, so that mismatched head
            counts are an error rather than a silent grouping.
        attn_bias: optional float tensor broadcastable to ``(..., Lq, Lk)`` (with ``enable_gqa``
            ``(..., H, Lq, Lk)``), added to the scaled scores before the softmax:
            ``softmax(q k^T * scale + attn_bias)``. ``-inf`` entries hide keys as the mask does;
            NaN and ``+inf`` are refused.

    Returns:
        ``out`` of shape ``(..., Lq, dv)`` (``(..., H, Lq, dv)`` with ``enable_gqa``), and with
        ``return_weights`` also the weights ``(..., Lq, Lk)`` that multiplied ``v`` (after
        dropout, if any), both in the inputs' dtype. Rows with no visible key are all zeros in both.

    Raises:
        TypeError: ``q``, ``k``, ``v`` not floating tensors of one dtype; a mask that is not bool;
            a flag that is not a bool.
        ValueError: shapes that do not fit, NaN or inf in ``q``, ``k`` or ``v``, a bad ``scale``
            or ``dropout_p``, ``is_causal`` with ``Lq > Lk``; all before any work.
    """
    _check_inputs(
        q,
        k,
        v,
        mask,
        dropout_p,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=enable_gqa,
        return_weights=return_weights,
    )
    if attn_bias is not None:
        check_attn_bias(attn_bias, q, k)
    return attend(
        q,
        k,
        v,
        mask,
        is_causal=is_causal,
        scale=scale,
        dropout_p=dropout_p,
        return_weights=return_weights,
        enable_gqa=enable_gqa,
        attn_bias=attn_bias,
    )


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    enable_gqa: bool = False,
    attn_bias: Tensor | None = None,
):
    """:func:`scaled_dot_product_attention` without its argument checks.

    For callers that have checked their inputs already (``MultiHeadAttention``
    checks its own once per call, and then calls this for every layer without
    reading the data again). Same arguments and results. It handles the two
    cases around the arithmetic of :func:`softmax_attention`: half-precision
    inputs (computed in float32, rounded back once) and grouped-query heads
    (query head ``h`` reads key/value head ``h // G``, without copying ``k``, ``v``).
    """
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):  # scores, softmax and weighted sum in float32
        q, k, v = q.float(), k.float(), v.float()  # (shapes kept)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    group = q.shape[-3] // k.shape[-3] if enable_gqa else 1
    if group > 1:  # the H query heads as (H_kv, G): each group of G shares one key/value head
        q = q.unflatten(-3, (k.shape[-3], group))  # (..., H, Lq, d) -> (..., H_kv, G, Lq, d)
        k, v = k.unsqueeze(-3), v.unsqueeze(-3)  # (..., H_kv, 1, Lk, d), (..., H_kv, 1, Lk, dv)
        if mask is not None and mask.dim() >= 3:  # its head axis: H -> (H_kv, G), or 1 -> (1, 1)
            mask = mask.unflatten(-3, (k.shape[-4], group)) if mask.shape[-3] > 1 else mask.unsqueeze(-3)
        if attn_bias is not None and attn_bias.dim() >= 3:  # the same for the bias's head axis
            attn_bias = (
                attn_bias.unflatten(-3, (k.shape[-4], group)) if attn_bias.shape[-3] > 1 else attn_bias.unsqueeze(-3)
            )
    if attn_bias is None:
        out, weights = softmax_attention(q, k, v, mask, is_causal=is_causal, scale=scale, dropout_p=dropout_p)
    else:
        out, weights = biased_softmax_attention(
            q, k, v, mask, attn_bias, is_causal=is_causal, scale=scale, dropout_p=dropout_p
        )
    if group > 1:
        out, weights = out.flatten(-4, -3), weights.flatten(-4, -3)  # (..., H, Lq, dv), (..., H, Lq, Lk)
    if out.dtype != dtype:  # half precision: round once, at the end
        out, weights = out.to(dtype), weights.to(dtype)
    return (out, weights) if return_weights else out


def biased_softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    attn_bias: Tensor,
    *,
    is_causal: bool,
    scale: float,
    dropout_p: float,
) -> tuple[Tensor, Tensor]:
    """:func:`softmax_attention` with a bias added to the scores:
    ``weights = softmax(q k^T * scale + attn_bias)`` over the visible keys, ``out = weights v``.

    A ``-inf`` in the bias hides its key, as a False in the mask does, so a query whose
    every key is hidden gets zeros, not NaN.

    Args:
        q, k, v, mask, is_causal, scale, dropout_p: as :func:`softmax_attention`.
        attn_bias: float, broadcastable to ``(..., Lq, Lk)``.

    Returns:
        ``out (..., Lq, dv)`` and ``weights (..., Lq, Lk)``.
    """
    Lq, Lk = q.shape[-2], k.shape[-2]
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale + attn_bias.to(q.dtype)  # (..., Lq, Lk)
    seen = attn_bias != float("-inf")  # broadcastable to (..., Lq, Lk)
    mask = seen if mask is None else mask & seen
    if is_causal:
        mask = mask & causal_mask(Lq, Lk, device=scores.device)  # (..., Lq, Lk)
    weights = masked_softmax(scores, mask)  # (..., Lq, Lk); rows that see no key are zeros
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    out = torch.matmul(weights, v)  # (..., Lq, dv)
    return out, weights


def softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    *,
    is_causal: bool,
    scale: float,
    dropout_p: float,
) -> tuple[Tensor, Tensor]:
    """The arithmetic itself: ``weights = softmax(q k^T * scale)`` over the visible
    keys, ``out = weights v``.

    Args:
        q: ``(..., Lq, d)``; k: ``(..., Lk, d)``; v: ``(..., Lk, dv)`` (leading dims
            broadcast).
        mask: bool, broadcastable to ``(..., Lq, Lk)``, True = may attend; or None.
        is_causal: query ``i`` (the LAST ``Lq`` positions) sees keys
            ``0 .. i + Lk - Lq``.
        scale: the multiplier of the scores.
        dropout_p: dropout on the weights (0: none).

    Returns:
        ``out (..., Lq, dv)`` and ``weights (..., Lq, Lk)``; a query that sees no key
        gets zeros.
    """
    Lq, Lk = q.shape[-2], k.shape[-2]
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (..., Lq, Lk)
    if is_causal and Lq == 1:
        # one query is the LAST position (see causal_mask): it sees every key
        is_causal = False
    if is_causal and mask is None:
        # Every query sees at least its own position, so no row is fully masked.
        # Adding 0 / -inf is masked_fill(~causal_mask, -inf) bit for bit, and cheaper
        # to train.
        weights = torch.softmax(
            scores + causal_bias(Lq, Lk, scores.device, scores.dtype),  # (Lq, Lk) bias
            dim=-1,
        )  # (..., Lq, Lk)
    else:
        if is_causal:
            mask = mask & causal_mask(Lq, Lk, device=scores.device)  # (..., Lq, Lk)
        # (..., Lq, Lk); rows that see no key are zeros
        weights = masked_softmax(scores, mask)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    out = torch.matmul(weights, v)  # (..., Lq, dv)
    return out, weights
