"""Efficient attention, part 1: sparse patterns (chapter 8).

Exact attention compares every query with every key: ``O(n^2)`` scores. A
*sparse* pattern lets each query see only some keys:

* **sliding window / local** (Longformer, Mistral): query ``i`` sees keys
  ``j`` with ``|i - j| <= window`` (causal: ``0 <= i - j <= window``);
  ``O(n * window)`` scores;
* **strided** (Child et al. 2019, "Sparse Transformers"): the local band of
  the last ``stride`` positions plus every ``stride``-th earlier position,
  so any two positions are two hops apart with ``O(n * sqrt(n))`` scores
  when ``stride ~ sqrt(n)``;
* **global tokens** (Longformer, BigBird): a few positions see everything
  and are seen by everyone, on top of a local window;
* **random** keys per query (BigBird's third ingredient).

The builders return boolean ``(n, n)`` masks with the package's convention
(True = may attend, as in :func:`~minitransformer.attention.scaled_dot_product_attention`),
optionally ANDed with the causal mask. :func:`sparse_attention` applies any
of them through the package's attention, which still computes all ``n^2``
scores (a mask alone saves nothing); :func:`sliding_window_attention`
computes only blocks along the diagonal, with ``O(n * window)`` time and memory.

Linear attention and random features (FAVOR+) live in
:mod:`minitransformer.linear_attention`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import causal_mask, scaled_dot_product_attention
from .validation import check_bool, check_finite_tensors, check_positive_int, check_qkv, check_scale, describe

#: The largest dense ``(n, n)`` mask the builders make (2**28 entries: 256 MiB of bools).
MAX_MASK_ENTRIES = 1 << 28

__all__ = [
    "sliding_window_mask",
    "strided_mask",
    "global_token_mask",
    "random_mask",
    "mask_density",
    "sparse_attention",
    "sliding_window_attention",
]


def _check_n(n: int, where: str) -> int:
    """``n`` is a positive int whose ``(n, n)`` mask is not absurdly large."""
    check_positive_int("n", n, where=where)
    if n * n > MAX_MASK_ENTRIES:
        raise ValueError(
            f"{where}: n={n} would build a dense {n} x {n} mask ({n * n:,} entries, more than "
            f"{MAX_MASK_ENTRIES:,}); use sliding_window_attention, which never forms it"
        )
    return n


def _offsets(n: int, device=None) -> Tensor:
    """``(n, n)`` integer matrix ``i - j`` (query index minus key index)."""
    i = torch.arange(n, device=device).unsqueeze(1)  # (n, 1)
    j = torch.arange(n, device=device).unsqueeze(0)  # (1, n)
    return i - j  # (n, n)


def sliding_window_mask(n: int, window: int, *, causal: bool = False, device=None) -> Tensor:
    """Local attention: query ``i`` may attend to key ``j`` when they are at most ``window`` apart.

    Args:
        n: sequence length (queries = keys).
        window: how far a query reaches, ``>= 0``. Non-causal: ``|i - j| <= window``
            (up to ``2 * window + 1`` keys per row); causal: ``0 <= i - j <= window``
            (itself and the ``window`` previous positions).
        causal: also forbid the future.
        device: where to create the mask.

    Returns:
        bool ``(n, n)``, True = may attend. Every row sees at least its own position.
    """
    _check_n(n, "sliding_window_mask")
    check_positive_int("window", window, minimum=0)
    check_bool("causal", causal, where="sliding_window_mask")
    d = _offsets(n, device)  # (n, n): i - j
    if causal:
        return (d >= 0) & (d <= window)
    return d.abs() <= window


def strided_mask(n: int, stride: int, *, causal: bool = True, device=None) -> Tensor:
    """The "strided" pattern of Sparse Transformers (Child et al., 2019), both heads in one mask.

    Query ``i`` may attend to key ``j`` when ``|i - j| < stride`` (the local
    band: ``stride`` positions including itself when causal) or when
    ``i - j`` is a multiple of ``stride`` (a "summary" every ``stride`` steps).
    With ``stride ~ sqrt(n)`` a row has about ``2 sqrt(n)`` keys, and every
    key is reachable from every query in two steps.

    Args:
        n: sequence length.
        stride: ``>= 1``.
        causal: also forbid the future (the autoregressive setting of the paper).
        device: where to create the mask.

    Returns:
        bool ``(n, n)``, True = may attend.
    """
    _check_n(n, "strided_mask")
    check_positive_int("stride", stride)
    check_bool("causal", causal, where="strided_mask")
    d = _offsets(n, device)  # (n, n)
    mask = (d.abs() < stride) | (d.remainder(stride) == 0)
    return mask & (d >= 0) if causal else mask


def _global_indices(n: int, global_tokens: int | Sequence[int]) -> list[int]:
    if isinstance(global_tokens, bool):
        raise TypeError(f"global_tokens must be an int or a sequence of positions, got bool {global_tokens}")
    if isinstance(global_tokens, int):
        if not 0 <= global_tokens <= n:
            raise ValueError(f"global_tokens={global_tokens} must be between 0 and n={n}")
        return list(range(global_tokens))
    if isinstance(global_tokens, Tensor):
        global_tokens = global_tokens.tolist() if global_tokens.dim() else [global_tokens.item()]
    if isinstance(global_tokens, (str, bytes)) or not isinstance(global_tokens, (Sequence, range)):
        raise TypeError(f"global_tokens must be an int or a sequence of positions, got {describe(global_tokens)}")
    not_int = [g for g in global_tokens if isinstance(g, bool) or not isinstance(g, int)]
    if not_int:
        raise TypeError(f"global_tokens must hold int positions, got {not_int[:5]}")
    idx = [int(g) for g in global_tokens]
    bad = [g for g in idx if not 0 <= g < n]
    if bad:
        raise ValueError(f"global_tokens {bad} are outside 0 .. n-1 = {n - 1}")
    return idx


def global_token_mask(
    n: int, global_tokens: int | Sequence[int], *, window: int = 0, causal: bool = False, device=None
) -> Tensor:
    """Global tokens on top of a sliding window (Longformer, BigBird).

    The global positions attend to every position and every position attends
    to them; all other pairs follow :func:`sliding_window_mask` with ``window``
    (``window=0``: each position sees only itself besides the global tokens).

    Args:
        n: sequence length.
        global_tokens: an int ``g`` (the first ``g`` positions, e.g. ``[CLS]``)
            or a sequence of positions.
        window: the local reach of every position.
        causal: AND the result with the causal mask (a global token then sees
            only the past, and is seen only by later positions).
        device: where to create the mask.

    Returns:
        bool ``(n, n)``, True = may attend.
    """
    _check_n(n, "global_token_mask")
    check_positive_int("window", window, minimum=0)
    check_bool("causal", causal, where="global_token_mask")
    idx = torch.tensor(_global_indices(n, global_tokens), dtype=torch.long, device=device)
    is_global = torch.zeros(n, dtype=torch.bool, device=device)
    is_global[idx] = True
    mask = sliding_window_mask(n, window, device=device)
    mask = mask | is_global.unsqueeze(1) | is_global.unsqueeze(0)  # global rows and columns
    return mask & causal_mask(n, device=device) if causal else mask


def random_mask(n: int, num_random: int, *, causal: bool = False, seed: int = 0, device=None) -> Tensor:
    """BigBird's random part: each query may attend to ``num_random`` keys drawn at random.

    Keys are drawn without replacement among those the query may see (all of
    them, or the past and itself when ``causal``); a row with fewer candidates
    gets all of them. Reproducible with ``seed``.

    Returns:
        bool ``(n, n)``, True = may attend (``min(num_random, candidates)`` per row).
    """
    _check_n(n, "random_mask")
    check_positive_int("num_random", num_random, minimum=0)
    check_bool("causal", causal, where="random_mask")
    check_positive_int("seed", seed, minimum=0, where="random_mask")
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(n, n, generator=g)  # (n, n): a random order of the keys per row
    if causal:
        scores = scores.masked_fill(~causal_mask(n), 2.0)  # future keys sort last
    allowed = causal_mask(n) if causal else torch.ones(n, n, dtype=torch.bool)
    order = scores.argsort(dim=-1)  # (n, n)
    chosen = torch.zeros(n, n, dtype=torch.bool)
    chosen.scatter_(1, order[:, :num_random], True)
    return (chosen & allowed).to(device)


def mask_density(mask: Tensor) -> float:
    """The fraction of (query, key) pairs a mask allows: the share of scores still computed.

    Args:
        mask: a non-empty bool tensor, True = may attend.

    Returns:
        a float in ``[0, 1]``.
    """
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype if isinstance(mask, Tensor) else describe(mask)}")
    if mask.numel() == 0:
        raise ValueError(f"mask is empty (shape {tuple(mask.shape)}): it has no density")
    return mask.float().mean().item()


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, *, scale: float | None = None) -> Tensor:
    """Attention restricted to a sparse pattern, through the package's dense attention.

    This is the *reference* form: it computes all ``Lq x Lk`` scores and masks
    the forbidden ones, so it costs as much as exact attention. It defines
    what a sparse kernel (such as :func:`sliding_window_attention`) must return.

    Args:
        q: ``(..., Lq, d)``; k: ``(..., Lk, d)``; v: ``(..., Lk, dv)``.
        mask: bool ``(Lq, Lk)`` (or broadcastable to ``(..., Lq, Lk)``), True = may attend,
            e.g. from :func:`sliding_window_mask`.
        scale: default ``1 / sqrt(d)``.

    Returns:
        ``(..., Lq, dv)``; a query whose row of the mask is empty gets zeros.
    """
    check_qkv(q, k, v)  # NaN and inf: scaled_dot_product_attention checks them, before any work
    check_scale(scale, where="sparse_attention")
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(
            "sparse_attention: mask must be a bool tensor (True = may attend), got "
            f"{mask.dtype if isinstance(mask, Tensor) else describe(mask)}"
        )
    if mask.dim() < 2 or mask.shape[-2:] != (q.shape[-2], k.shape[-2]):
        raise ValueError(
            f"sparse_attention: mask must end in (Lq, Lk) = ({q.shape[-2]}, {k.shape[-2]}); got {tuple(mask.shape)}"
        )
    return scaled_dot_product_attention(q, k, v, mask.to(q.device), scale=scale)


def sliding_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Local attention that computes only blocks along the diagonal:
    ``O(n * window * d)``.

    Equal to
    ``sparse_attention(q, k, v, sliding_window_mask(n, window, causal=causal))``
    but never forms the ``n x n`` scores. The sequence is cut into blocks of
    ``b >= window`` positions ("sliding chunks", as in Longformer's
    implementation); the keys a query of block ``i`` may see all lie in blocks
    ``i - 1``, ``i`` and ``i + 1``, so each block of queries meets one
    ``b x 3b`` tile of scores -- a dense matrix product -- and the keys outside
    the window are masked inside that tile. ``unfold`` presents the three
    blocks of keys of every query block as a view, without copying.

    Args:
        q, k: ``(..., n, d)``; v: ``(..., n, dv)`` (queries and keys are the same
            positions).
        window: the reach, as in :func:`sliding_window_mask`.
        causal: only the past and the present.
        scale: default ``1 / sqrt(d)``.
        block_size: ``b`` (default ``max(window, 16)``); must be ``>= window``.

    Returns:
        ``(..., n, dv)``.
    """
    check_positive_int("window", window, minimum=0)
    check_qkv(q, k, v, square="sliding_window_attention")
    check_bool("causal", causal, where="sliding_window_attention")
    check_scale(scale, where="sliding_window_attention")
    n, d = q.shape[-2], q.shape[-1]
    b = (
        max(window, 16)  # default block size
        if block_size is None
        else check_positive_int("block_size", block_size)
    )
    if b < window:
        raise ValueError(f"block_size={block_size!r} must be >= window={window}")
    # last: the only check that reads the data
    check_finite_tensors(("q", q), ("k", k), ("v", v))
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    nb = -(-n // b)  # number of blocks
    extra = nb * b - n  # padding at the end
    qb = F.pad(q, (0, 0, 0, extra)).unflatten(-2, (nb, b))  # (..., nb, b, d)
    # (..., nb, d, 3b): blocks i-1, i, i+1
    k3 = F.pad(k, (0, 0, b, b + extra)).unfold(-2, 3 * b, b)
    v3 = F.pad(v, (0, 0, b, b + extra)).unfold(-2, 3 * b, b)  # (..., nb, dv, 3b)
    scores = (qb @ k3) * scale  # (..., nb, b, 3b)
    qpos = torch.arange(nb * b, device=q.device).view(nb, b, 1)  # query positions
    kpos = (
        (torch.arange(nb, device=q.device).view(nb, 1, 1) - 1) * b  # tile starts
        + torch.arange(3 * b, device=q.device)
    )  # (nb, 1, 3b): key positions
    offset = qpos - kpos  # (nb, b, 3b): i - j
    allowed = (
        (kpos >= 0)
        & (kpos < n)  # a real key
        & (offset <= window)
        & (offset >= (0 if causal else -window))  # within the window
    )
    # padded queries see their own (zero) key
    allowed = allowed | ((qpos >= n) & (offset == 0))
    # (..., nb, b, 3b)
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    out = weights @ v3.transpose(-1, -2)  # (..., nb, b, dv)
    return out.flatten(-3, -2)[..., :n, :]  # (..., n, dv)


# Part 2 (linear attention, FAVOR+) lives in its own module; its names are also importable from here.
from .linear_attention import elu_feature_map, favor_attention, linear_attention, orthogonal_random_features  # noqa: E402

__all__ += ["elu_feature_map", "linear_attention", "favor_attention", "orthogonal_random_features"]
