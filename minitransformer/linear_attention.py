"""Efficient attention, part 2: linear attention and random features (chapter 8).

Softmax attention weighs value ``j`` for query ``i`` by
``sim(q_i, k_j) = exp(q_i . k_j * scale)``. Replace the similarity by a dot
product of *features*, ``sim(q, k) = phi(q) . phi(k)`` with ``phi: R^d -> R^r``
positive, and the output

    out_i = sum_j (phi(q_i) . phi(k_j)) v_j / sum_j phi(q_i) . phi(k_j)
          = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))

can be computed right to left: ``phi(K)^T V`` is an ``r x dv`` matrix built
once, so the cost is ``O(n r dv)`` instead of ``O(n^2 d)`` -- matrix
multiplication is associative, ``(phi(Q) phi(K)^T) V = phi(Q) (phi(K)^T V)``.

* :func:`linear_attention` -- Katharopoulos et al. (2020), ``phi(x) = elu(x) + 1``.
  Causal attention needs, for query ``i``, sums over ``j <= i`` only: prefix
  sums of ``phi(k_j) v_j^T``. They are computed a chunk at a time: inside a
  chunk of ``C`` positions the masked quadratic form (``C x C``), across
  chunks a running state ``S = sum phi(k) v^T``, ``z = sum phi(k)`` -- a
  recurrent network whose state has ``r x dv`` numbers.
* :func:`favor_attention` -- Performer's FAVOR+ (Choromanski et al., 2020):
  positive orthogonal random features ``phi(x) = exp(W x - |x|^2 / 2) / sqrt(r)``
  with ``E[phi(q) . phi(k)] = exp(q . k)``, so the linear form approximates
  *softmax* attention, better as the number of features ``r`` grows.

All functions take ``q (..., n, d)``, ``k (..., m, d)``, ``v (..., m, dv)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .validation import (
    check_bool,
    check_finite,
    check_finite_tensors,
    check_positive_int,
    check_qkv,
    check_real,
    check_scale,
    describe,
)

__all__ = [
    "elu_feature_map",
    "linear_attention",
    "linear_attention_from_features",
    "orthogonal_random_features",
    "favor_features",
    "favor_attention",
]


def elu_feature_map(x: Tensor) -> Tensor:
    """``elu(x) + 1``: positive, smooth, the feature map of Katharopoulos et al. (2020). Shape kept."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(
            f"elu_feature_map: x must be a floating tensor, got {x.dtype if isinstance(x, Tensor) else describe(x)}"
        )
    return F.elu(x) + 1.0


def linear_attention_from_features(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, *, causal: bool = False, chunk_size: int = 64, eps: float = 1e-6
) -> Tensor:
    """``phi_q (phi_k^T v)``, normalised, from features that are already computed.

    Args:
        phi_q: ``(..., n, r)``; phi_k: ``(..., m, r)``, positive features.
        v: ``(..., m, dv)``.
        causal: query ``i`` sums over keys ``j <= i`` only (needs ``m == n``).
        chunk_size: positions per chunk of the causal prefix sums.
        eps: the normaliser is clamped below at ``eps`` (it is positive for positive features).

    Returns:
        ``(..., n, dv)``.

    Raises:
        TypeError: not floating tensors of one dtype; a non-bool ``causal``.
        ValueError: shapes that do not fit, NaN or inf anywhere, negative features,
            ``chunk_size < 1``, ``eps`` not a finite number > 0; all before any work.
    """
    check_bool("causal", causal, where="linear_attention")
    check_qkv(
        phi_q,
        phi_k,
        v,
        square="causal=True" if causal else None,
        same_head_dim=False,
        finite=True,
        names=("phi_q", "phi_k", "v"),
    )
    if phi_q.shape[-1] != phi_k.shape[-1]:
        raise ValueError(f"phi(q) has {phi_q.shape[-1]} features but phi(k) has {phi_k.shape[-1]}")
    for name, f in (("phi_q", phi_q), ("phi_k", phi_k)):
        if f.numel() and bool((f < 0).any()):
            raise ValueError(
                f"{name} has negative features (min {f.min().item():.3g}); linear attention needs phi >= 0 "
                "(e.g. elu_feature_map), or the normaliser can vanish"
            )
    check_positive_int("chunk_size", chunk_size)
    check_real("eps", eps, low=0.0, low_open=True, where="linear_attention")
    if not causal:
        kv = phi_k.transpose(-2, -1) @ v  # (..., r, dv): built once, O(m r dv)
        z = phi_k.sum(dim=-2).unsqueeze(-1)  # (..., r, 1)
        return (phi_q @ kv) / (phi_q @ z).clamp_min(eps)  # (..., n, dv)
    n = phi_q.shape[-2]
    lead = torch.broadcast_shapes(phi_q.shape[:-2], phi_k.shape[:-2], v.shape[:-2])
    r, dv = phi_q.shape[-1], v.shape[-1]
    dtype = torch.result_type(phi_q, v)
    S = torch.zeros(lead + (r, dv), dtype=dtype, device=v.device)  # running sum of phi(k_j) v_j^T
    z = torch.zeros(lead + (r, 1), dtype=dtype, device=v.device)  # running sum of phi(k_j)
    outs = []
    for c0 in range(0, n, chunk_size):
        c1 = min(c0 + chunk_size, n)
        fq, fk, vc = phi_q[..., c0:c1, :], phi_k[..., c0:c1, :], v[..., c0:c1, :]  # (..., c, r|dv)
        A = torch.tril(fq @ fk.transpose(-2, -1))  # (..., c, c): inside the chunk, j <= i
        num = A @ vc + fq @ S  # (..., c, dv): this chunk + all earlier ones
        den = A.sum(dim=-1, keepdim=True) + fq @ z  # (..., c, 1)
        outs.append(num / den.clamp_min(eps))
        S = S + fk.transpose(-2, -1) @ vc  # the state moves past the chunk
        z = z + fk.sum(dim=-2).unsqueeze(-1)
    return torch.cat(outs, dim=-2)  # (..., n, dv)


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    feature_map: Callable[[Tensor], Tensor] = elu_feature_map,
    causal: bool = False,
    chunk_size: int = 64,
    eps: float = 1e-6,
) -> Tensor:
    """Linear attention (Katharopoulos et al., 2020): ``phi(Q) (phi(K)^T V)``, normalised.

    Equals the quadratic form ``(A V) / rowsum(A)`` with ``A = phi(Q) phi(K)^T``
    (masked to ``j <= i`` when causal), in ``O(n r dv)`` time and
    ``O(r dv + n * chunk_size)`` extra memory.

    Args:
        q: ``(..., n, d)``; k: ``(..., m, d)``; v: ``(..., m, dv)``.
        feature_map: ``phi``, applied to the last axis; must give positive features.
        causal: query ``i`` sees keys ``j <= i`` (needs ``m == n``).
        chunk_size, eps: see :func:`linear_attention_from_features`.

    Returns:
        ``(..., n, dv)``.

    Raises:
        TypeError, ValueError: as :func:`linear_attention_from_features`, for ``q``, ``k``, ``v``
            before the feature map runs; ``feature_map`` must be callable.
    """
    check_bool("causal", causal, where="linear_attention")
    check_qkv(q, k, v, square="causal=True" if causal else None)
    if not callable(feature_map):
        raise TypeError(f"linear_attention: feature_map must be callable, got {describe(feature_map)}")
    check_positive_int("chunk_size", chunk_size)
    check_real("eps", eps, low=0.0, low_open=True, where="linear_attention")
    check_finite_tensors(("q", q), ("k", k), ("v", v))  # last: the only check that reads the data
    return linear_attention_from_features(
        feature_map(q), feature_map(k), v, causal=causal, chunk_size=chunk_size, eps=eps
    )


def orthogonal_random_features(
    num_features: int,
    dim: int,
    *,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    dtype=torch.float64,
    device=None,
) -> Tensor:
    """Performer's projection ``W`` ``(num_features, dim)``: orthogonal rows with Gaussian lengths.

    Rows come in blocks of ``dim`` mutually orthogonal directions (from the QR
    decomposition of a Gaussian matrix); each row is then given the length of
    an independent Gaussian vector, so that every row on its own is distributed
    as ``N(0, I)`` -- which keeps the estimate unbiased -- while rows within a
    block are orthogonal, which lowers its variance.

    Args:
        num_features: ``r``, any positive int (the last block is cut short).
        dim: ``d``.
        seed: seed of a fresh CPU generator (ignored when ``generator`` is given).
        generator: a CPU ``torch.Generator`` to draw from.
        dtype, device: of the result.
    """
    for name, value in (("num_features", num_features), ("dim", dim)):
        check_positive_int(name, value)
    if seed is not None:
        check_positive_int("seed", seed, minimum=0, where="orthogonal_random_features")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {describe(generator)}")
    g = generator if generator is not None else torch.Generator().manual_seed(0 if seed is None else seed)
    n_blocks = -(-num_features // dim)
    G = torch.randn(n_blocks, dim, dim, generator=g, dtype=torch.float64)
    Qm, R = torch.linalg.qr(G)  # (n_blocks, d, d), batched
    Qm = Qm * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)  # uniformly random rotations
    W = Qm.transpose(-2, -1).reshape(n_blocks * dim, dim)[:num_features]  # (r, d): orthonormal rows
    lengths = torch.randn(num_features, dim, generator=g, dtype=torch.float64).norm(dim=1)
    return (W * lengths.unsqueeze(1)).to(dtype=dtype, device=device)


def favor_features(x: Tensor, W: Tensor, *, stabilizer: str = "row") -> Tensor:
    """Positive random features ``phi(x) = exp(W x - |x|^2 / 2 - c) / sqrt(r)``.

    Without the constant ``c``, ``E[phi(x) . phi(y)] = exp(x . y)`` for rows of
    ``W`` drawn from ``N(0, I)``. The constant keeps ``exp`` from overflowing
    and cancels in attention's normalisation, provided it is the same for all
    keys: queries use ``"row"`` (each row's own maximum), keys ``"global"``
    (one maximum over all positions of each sequence and head); ``"none"``
    gives the unbiased kernel estimate itself.

    Args:
        x: ``(..., n, d)``; W: ``(r, d)``.

    Returns:
        ``(..., n, r)``.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(
            f"favor_features: x must be a floating tensor, got {x.dtype if isinstance(x, Tensor) else describe(x)}"
        )
    if x.dim() < 1:
        raise ValueError(f"favor_features: x must be (..., n, d), got shape {tuple(x.shape)}")
    if not isinstance(W, Tensor) or W.dim() != 2 or W.shape[1] != x.shape[-1] or W.shape[0] == 0:
        raise ValueError(f"W must be (num_features, {x.shape[-1]}); got {describe(W)}")
    if stabilizer not in ("row", "global", "none"):
        raise ValueError(f"stabilizer={stabilizer!r}; choose 'row', 'global' or 'none'")
    check_finite("x", x, where="favor_features")
    check_finite("W", W, where="favor_features")
    proj = x @ W.to(x).T  # (..., n, r)
    logits = proj - 0.5 * (x * x).sum(dim=-1, keepdim=True)  # (..., n, r)
    if stabilizer == "row":
        logits = logits - logits.amax(dim=-1, keepdim=True).detach()
    elif stabilizer == "global":
        logits = logits - logits.amax(dim=(-2, -1), keepdim=True).detach()
    elif stabilizer != "none":
        raise ValueError(f"stabilizer={stabilizer!r}; choose 'row', 'global' or 'none'")
    return torch.exp(logits) / math.sqrt(W.shape[0])


def favor_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    num_features: int = 256,
    *,
    causal: bool = False,
    scale: float | None = None,
    seed: int = 0,
    features: Tensor | None = None,
    chunk_size: int = 64,
) -> Tensor:
    """Softmax attention approximated by FAVOR+ (Performer, Choromanski et al., 2020).

    ``exp(scale * q . k) = exp(q' . k')`` with ``q' = q sqrt(scale)``,
    ``k' = k sqrt(scale)``; both go through :func:`favor_features` with one
    shared projection, then :func:`linear_attention_from_features`.

    Args:
        q: ``(..., n, d)``; k: ``(..., m, d)``; v: ``(..., m, dv)``.
        num_features: ``r`` random features (more: closer to softmax, slower).
        causal: query ``i`` sees keys ``j <= i``.
        scale: default ``1 / sqrt(d)``.
        seed: seed of :func:`orthogonal_random_features`.
        features: a projection ``W (r, d)`` to use instead of drawing one.
        chunk_size: of the causal prefix sums.

    Returns:
        ``(..., n, dv)``.
    """
    check_bool("causal", causal, where="favor_attention")
    check_qkv(q, k, v, square="causal=True" if causal else None)
    check_scale(scale, where="favor_attention")
    check_positive_int("chunk_size", chunk_size)
    d = q.shape[-1]
    if features is None:
        check_positive_int("num_features", num_features)
    elif not isinstance(features, Tensor) or features.dim() != 2 or features.shape[1] != d or features.shape[0] == 0:
        raise ValueError(f"favor_attention: features: W must be (num_features, {d}); got {describe(features)}")
    check_finite_tensors(("q", q), ("k", k), ("v", v))  # last: the only check that reads the data
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    W = (
        features
        if features is not None
        else orthogonal_random_features(num_features, d, seed=seed, dtype=q.dtype, device=q.device)
    )
    root = math.sqrt(scale)
    phi_q = favor_features(q * root, W, stabilizer="row")  # (..., n, r)
    phi_k = favor_features(k * root, W, stabilizer="global")  # (..., m, r)
    return linear_attention_from_features(phi_q, phi_k, v, causal=causal, chunk_size=chunk_size)
