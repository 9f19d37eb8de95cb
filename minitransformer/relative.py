"""Relative positions as biases added to attention scores: T5 buckets and ALiBi.

Instead of changing the token vectors, add a number ``b(i - j)`` to the score
of query ``i`` against key ``j``, before the softmax::

    scores = q @ k.transpose(-2, -1) / sqrt(d) + bias      # (B, H, Lq, Lk)

* T5 (Raffel et al. 2020) learns one scalar per head and per *bucket* of
  relative distance: exact buckets for small distances, logarithmically wider
  ones up to ``max_distance``, one shared bucket beyond.
* ALiBi (Press et al. 2022) learns nothing: head ``h`` subtracts
  ``slope_h * distance``, with geometric slopes ``2^-8/H, 2^-16/H, ...``.

Relative position is ``key position - query position`` (negative = the key is
in the past). With fewer queries than keys (a KV-cache step) the queries are
the LAST ``Lq`` positions, as in :func:`~minitransformer.causal_mask`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from .validation import FLOAT_DTYPES, MAX_TABLE_ENTRIES, check_bool, check_int_tensor, check_positive_int

__all__ = ["relative_position_bucket", "RelativePositionBias", "alibi_slopes", "alibi_bias"]


def _check_cap(where: str, entries: int, sizes: str) -> None:
    """A bias of ``entries`` numbers must stay under :data:`~minitransformer.validation.MAX_TABLE_ENTRIES`."""
    if entries > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"{where}: {sizes} would build a bias of {entries:,} entries, more than the cap of {MAX_TABLE_ENTRIES:,}"
        )


def relative_position_bucket(
    relative_position: Tensor, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> Tensor:
    """T5's bucket of each relative position ``key - query`` (same arithmetic as T5).

    Bidirectional: half the buckets for keys at or before the query, half (offset
    by ``num_buckets/2``) for keys after it. Unidirectional: future keys all share
    bucket 0 with distance 0. Within a half of ``n`` buckets, distances
    ``0 .. n/2 - 1`` get a bucket each; larger distances share buckets of
    logarithmically growing width up to ``max_distance``; everything further
    lands in bucket ``n - 1``.

    Args:
        relative_position: integer tensor of ``key_pos - query_pos``, any shape.
        bidirectional: whether keys after the query get their own buckets.
        num_buckets: total number of buckets.
        max_distance: distance from which all positions share the last bucket.

    Returns:
        ``int64`` tensor of the same shape, values in ``[0, num_buckets)``.
    """
    if not isinstance(relative_position, Tensor) or relative_position.is_floating_point():
        got = relative_position.dtype if isinstance(relative_position, Tensor) else type(relative_position).__name__
        raise TypeError(f"relative_position must be an integer tensor, got {got}")
    check_int_tensor("relative_position", relative_position, where="relative_position_bucket")
    check_bool("bidirectional", bidirectional, where="relative_position_bucket")
    check_positive_int("num_buckets", num_buckets, where="relative_position_bucket")
    check_positive_int("max_distance", max_distance, where="relative_position_bucket")
    half = num_buckets // 2 if bidirectional else num_buckets
    if half // 2 < 1 or max_distance <= half // 2:
        raise ValueError(
            f"need num_buckets >= {4 if bidirectional else 2} and max_distance > the exact range "
            f"{half // 2}; got num_buckets={num_buckets}, max_distance={max_distance}, "
            f"bidirectional={bidirectional}"
        )
    relative_position = relative_position.long()
    buckets = torch.zeros_like(relative_position)  # (...)
    if bidirectional:
        buckets += (relative_position > 0).long() * half  # keys after the query: upper half
        distance = relative_position.abs()  # (...)
    else:
        distance = (-relative_position).clamp(min=0)  # (...) future keys -> distance 0
    max_exact = half // 2
    is_small = distance < max_exact
    log_ratio = torch.log(distance.clamp(min=max_exact).float() / max_exact) / math.log(max_distance / max_exact)
    if_large = max_exact + (log_ratio * (half - max_exact)).long()  # (...) truncation, as in T5
    if_large = if_large.clamp(max=half - 1)
    return buckets + torch.where(is_small, distance, if_large)  # (...)


class RelativePositionBias(nn.Module):
    """T5's learned relative position bias: one scalar per (bucket, head).

    Args:
        num_heads: number of attention heads ``H``.
        num_buckets: number of distance buckets.
        max_distance: distance from which positions share the last bucket.
        bidirectional: ``True`` for an encoder, ``False`` for a causal decoder.

    Parameters: ``embedding.weight`` of shape ``(num_buckets, num_heads)``.
    """

    def __init__(self, num_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        check_positive_int("num_heads", num_heads, where="RelativePositionBias")
        relative_position_bucket(torch.zeros(1, dtype=torch.long), bidirectional, num_buckets, max_distance)
        self.num_heads, self.num_buckets = num_heads, num_buckets
        self.max_distance, self.bidirectional = max_distance, bidirectional
        self.embedding = nn.Embedding(num_buckets, num_heads)  # weight (num_buckets, H)

    def buckets(self, Lq: int, Lk: int, query_offset: int | None = None) -> Tensor:
        """The bucket of every (query, key) pair, ``(Lq, Lk)`` int64 (see :meth:`forward`)."""
        check_positive_int("Lq", Lq, where="RelativePositionBias")
        check_positive_int("Lk", Lk, where="RelativePositionBias")
        _check_cap("RelativePositionBias", Lq * Lk, f"Lq={Lq} x Lk={Lk}")
        if query_offset is None:
            query_offset = Lk - Lq
        if isinstance(query_offset, bool) or not isinstance(query_offset, int):
            raise TypeError(f"RelativePositionBias: query_offset must be an int or None, got {query_offset!r}")
        if query_offset < 0:
            raise ValueError(
                f"RelativePositionBias: query_offset must be >= 0, got {query_offset} "
                f"(Lq={Lq} > Lk={Lk}: pass query_offset explicitly)"
            )
        device = self.embedding.weight.device
        q_pos = torch.arange(query_offset, query_offset + Lq, device=device)  # (Lq,)
        k_pos = torch.arange(Lk, device=device)  # (Lk,)
        relative = k_pos[None, :] - q_pos[:, None]  # (Lq, Lk)
        return relative_position_bucket(relative, self.bidirectional, self.num_buckets, self.max_distance)

    def forward(self, Lq: int, Lk: int, query_offset: int | None = None) -> Tensor:
        """The bias to add to attention scores.

        Args:
            Lq: number of queries.
            Lk: number of keys (positions ``0 .. Lk-1``).
            query_offset: position of the first query; default ``Lk - Lq`` (the
                queries are the last ``Lq`` positions, e.g. one decoding step with a cache).

        Returns:
            ``(1, H, Lq, Lk)``, broadcastable against scores ``(B, H, Lq, Lk)``.
        """
        buckets = self.buckets(Lq, Lk, query_offset)  # (Lq, Lk)
        bias = self.embedding(buckets)  # (Lq, Lk, H)
        return bias.permute(2, 0, 1).unsqueeze(0)  # (Lq, Lk, H) -> (1, H, Lq, Lk)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, num_buckets={self.num_buckets}, "
            f"max_distance={self.max_distance}, bidirectional={self.bidirectional}"
        )


def alibi_slopes(num_heads: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """ALiBi's head slopes.

    For ``H`` a power of 2: the geometric sequence ``2^(-8/H), 2^(-16/H), ..., 2^-8``
    (8 heads: ``1/2, 1/4, ..., 1/256``). Otherwise, with ``P`` the largest power of 2
    below ``H``: the ``P`` slopes of ``P`` heads, followed by the first ``H - P``
    of every other slope of ``2P`` heads (the paper's rule; 6 heads:
    ``2^-2, 2^-4, 2^-6, 2^-8, 2^-1, 2^-3``).

    Args:
        num_heads: number of heads ``H``.

    Returns:
        ``(H,)``.
    """
    check_positive_int("num_heads", num_heads, where="alibi_slopes")
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"alibi_slopes: dtype must be a floating dtype {FLOAT_DTYPES}, got {dtype}")

    def power_of_2(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    P = 2 ** math.floor(math.log2(num_heads))
    slopes = power_of_2(P)
    if P != num_heads:
        slopes += power_of_2(2 * P)[0::2][: num_heads - P]
    return torch.tensor(slopes, dtype=dtype)  # (H,)


def alibi_bias(
    num_heads: int, Lq: int, Lk: int, causal: bool = True, dtype: torch.dtype = torch.float32, device=None
) -> Tensor:
    """ALiBi bias ``-slope_h * (query_pos - key_pos)`` to add to attention scores.

    The queries are the last ``Lq`` of the ``Lk`` positions (query ``i`` sits at
    ``Lk - Lq + i``). With ``causal=True`` keys after the query get ``-inf``, so
    adding the bias also applies the causal mask; with ``causal=False`` the
    distance is ``|query_pos - key_pos|`` in both directions.

    Args:
        num_heads: number of heads ``H``.
        Lq: number of queries; at most ``Lk``.
        Lk: number of keys.
        causal: mask the future with ``-inf`` (decoder) or penalise both directions.

    Returns:
        ``(H, Lq, Lk)``.
    """
    for name, value in (("Lq", Lq), ("Lk", Lk)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"alibi_bias: {name} must be an int, got {type(value).__name__} {value!r}")
    if Lq <= 0 or Lk <= 0 or Lq > Lk:
        raise ValueError(f"alibi_bias: need 0 < Lq <= Lk (queries are the last Lq positions), got Lq={Lq}, Lk={Lk}")
    check_positive_int("num_heads", num_heads, where="alibi_bias")
    check_bool("causal", causal, where="alibi_bias")
    _check_cap("alibi_bias", num_heads * Lq * Lk, f"num_heads={num_heads} x Lq={Lq} x Lk={Lk}")
    slopes = alibi_slopes(num_heads, torch.float64).to(device)  # (H,)
    q_pos = torch.arange(Lk - Lq, Lk, device=device)  # (Lq,)
    k_pos = torch.arange(Lk, device=device)  # (Lk,)
    distance = (q_pos[:, None] - k_pos[None, :]).double()  # (Lq, Lk), > 0 for past keys
    bias = -slopes[:, None, None] * distance.abs()  # (H, 1, 1) * (Lq, Lk) -> (H, Lq, Lk)
    if causal:
        bias = bias.masked_fill(distance < 0, float("-inf"))  # (H, Lq, Lk)
    return bias.to(dtype)  # (H, Lq, Lk)
