"""Flash attention as tiled NumPy: the loop nest of the CUDA kernels, readable.

This is the algorithm of FlashAttention-2 (Dao, 2023) with the names used in
chapter 8 and in the teaching kernels:

* ``Br`` query rows and ``Bc`` key rows per tile; ``Tr = ceil(N / Br)`` query
  tiles and ``Tc = ceil(N_k / Bc)`` key tiles.
* The forward pass loops over query tiles ``i`` (outer; on the GPU one block
  per ``i``) and key tiles ``j`` (inner), keeping for every query row the
  running maximum ``m``, the running sum ``l`` of ``exp(s - m)`` and the
  un-normalised output; each new tile rescales the old sum and output by
  ``exp(m_old - m_new)``. It saves ``L = m + log(l)``, the log-sum-exp of each
  row's scores, for the backward pass.
* The backward pass loops over key tiles ``j`` (outer; one block per ``j``)
  and query tiles ``i`` (inner), recomputing ``P = exp(S - L)`` instead of
  storing the ``N x N`` matrix.
* Causal attention (``N_q == N_k``; query ``r`` sees keys ``c <= r``) skips the
  tiles that lie entirely above the diagonal.

Arrays are ``(B, H, N, d)``. Keys and values may have fewer heads ``H_kv``
(grouped-query attention, ``H % H_kv == 0``): query head ``h`` uses key head
``h // (H // H_kv)``. The code views ``q`` as ``(B, H_kv, G, N, d)`` with
``G = H // H_kv`` and ``k, v`` as ``(B, H_kv, 1, N_k, d)`` so that NumPy's
broadcasting shares each key head with its group. Every line works on all
batches and heads at once; the only Python loops are the two tile loops.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..validation import check_positive_int, check_qkv_shapes
from .online_softmax import online_softmax_step

__all__ = ["flash_forward_numpy", "flash_backward_numpy", "flash_forward_steps", "FlashStep", "check_flash_inputs"]


def check_flash_inputs(q_shape, k_shape, v_shape, *, is_causal: bool, Br: int, Bc: int) -> None:
    """Raise ``ValueError`` (naming the argument) unless the shapes and tiles fit flash attention.

    Args:
        q_shape: ``(B, H, N, d)``; k_shape, v_shape: ``(B, H_kv, N_k, d)``, ``H % H_kv == 0``.
        is_causal: causal attention needs ``N_k == N``.
        Br, Bc: the tile sizes, positive ints.
    """
    check_qkv_shapes(q_shape, k_shape, v_shape, grouped=True, square="is_causal=True" if is_causal else None)
    check_positive_int("Br", Br)
    check_positive_int("Bc", Bc)


def _grouped(x: np.ndarray, H_kv: int) -> np.ndarray:
    """``(B, H, N, d) -> (B, H_kv, G, N, d)``: query heads grouped by their key head."""
    B, H, N, d = x.shape
    return x.reshape(B, H_kv, H // H_kv, N, d)


def flash_forward_numpy(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    Br: int = 32,
    Bc: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """The tiled flash-attention forward pass.

    Args:
        q: ``(B, H, N, d)`` queries.
        k, v: ``(B, H_kv, N_k, d)`` keys and values (``H % H_kv == 0``).
        is_causal: query ``r`` sees keys ``0 .. r`` (needs ``N_k == N``).
        scale: score scale, default ``1 / sqrt(d)``.
        Br, Bc: query rows and key rows per tile.

    Returns:
        ``O`` ``(B, H, N, d)`` and ``L`` ``(B, H, N)``, the log-sum-exp of each
        row's scaled scores, in the inputs' floating dtype (at least float32).
    """
    check_flash_inputs(q.shape, k.shape, v.shape, is_causal=is_causal, Br=Br, Bc=Bc)
    dtype = np.result_type(q.dtype, k.dtype, v.dtype, np.float32)
    B, H, N, d = q.shape
    H_kv, N_k = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    Q = _grouped(q.astype(dtype, copy=False), H_kv)  # (B, H_kv, G, N, d)
    K = k.astype(dtype, copy=False)[:, :, None]  # (B, H_kv, 1, N_k, d)
    V = v.astype(dtype, copy=False)[:, :, None]  # (B, H_kv, 1, N_k, d)
    O = np.zeros(Q.shape, dtype)  # (B, H_kv, G, N, d)
    L = np.zeros(Q.shape[:-1], dtype)  # (B, H_kv, G, N)
    Tr, Tc = math.ceil(N / Br), math.ceil(N_k / Bc)

    for i in range(Tr):  # one GPU block per query tile
        # rows r0 .. r1-1 (last tile may be short)
        r0, r1 = i * Br, min((i + 1) * Br, N)
        Qi = Q[..., r0:r1, :]  # (B, H_kv, G, br, d)
        m = np.full(Qi.shape[:-1], -np.inf, dtype)  # running max of each row's scores
        l = np.zeros(Qi.shape[:-1], dtype)  # running sum of exp(score - m)
        Oi = np.zeros(Qi.shape, dtype)  # un-normalised output rows
        # Causal: key tile j is needed only if its first key c0 = j*Bc <= the last
        # row r1-1.
        Tc_i = min(Tc, math.ceil(r1 / Bc)) if is_causal else Tc
        for j in range(Tc_i):
            c0, c1 = j * Bc, min((j + 1) * Bc, N_k)  # keys c0 .. c1-1
            Kj, Vj = K[..., c0:c1, :], V[..., c0:c1, :]  # (B, H_kv, 1, bc, d)
            S = scale * (Qi @ Kj.swapaxes(-1, -2))  # (B, H_kv, G, br, bc)
            if is_causal and c1 - 1 > r0:  # the tile crosses the diagonal
                rows = np.arange(r0, r1)[:, None]
                cols = np.arange(c0, c1)[None, :]
                S = np.where(cols <= rows, S, -np.inf)
            # The online softmax (m, l: (B, H_kv, G, br); Oi: (B, H_kv, G, br, d)).
            m, l, Oi, _, _ = online_softmax_step(m, l, Oi, S, Vj)
        O[..., r0:r1, :] = Oi / l[..., None]  # normalise once, at the end
        L[..., r0:r1] = m + np.log(l)  # log-sum-exp, saved for backward
    return O.reshape(B, H, N, d), L.reshape(B, H, N)


def flash_backward_numpy(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    O: np.ndarray,
    dO: np.ndarray,
    L: np.ndarray,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    Br: int = 32,
    Bc: int = 32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tiled flash-attention backward pass (recomputing ``P`` from ``L``).

    With ``S = scale * Q K^T``, ``P = exp(S - L)`` (the softmax, from the saved
    log-sum-exp), ``dV = P^T dO``, ``dP = dO V^T``, ``dS = P * (dP - D)``
    where ``D = rowsum(dO * O)``, ``dQ = scale * dS K`` and ``dK = scale * dS^T Q``.

    Args:
        q: ``(B, H, N, d)``; k, v: ``(B, H_kv, N_k, d)``.
        O, dO: ``(B, H, N, d)``, the forward output and the gradient flowing into it.
        L: ``(B, H, N)``, the log-sum-exp saved by the forward pass.
        is_causal, scale, Br, Bc: as in :func:`flash_forward_numpy`.

    Returns:
        ``dq`` ``(B, H, N, d)``, ``dk`` and ``dv`` ``(B, H_kv, N_k, d)`` (for
        grouped-query attention summed over the query heads sharing a key head).
    """
    check_flash_inputs(q.shape, k.shape, v.shape, is_causal=is_causal, Br=Br, Bc=Bc)
    dtype = np.result_type(q.dtype, k.dtype, v.dtype, np.float32)
    B, H, N, d = q.shape
    H_kv, N_k = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    Q = _grouped(q.astype(dtype, copy=False), H_kv)  # (B, H_kv, G, N, d)
    dO = _grouped(dO.astype(dtype, copy=False), H_kv)  # (B, H_kv, G, N, d)
    O = _grouped(O.astype(dtype, copy=False), H_kv)  # (B, H_kv, G, N, d)
    L = L.astype(dtype, copy=False).reshape(Q.shape[:-1])  # (B, H_kv, G, N)
    K = k.astype(dtype, copy=False)[:, :, None]  # (B, H_kv, 1, N_k, d)
    V = v.astype(dtype, copy=False)[:, :, None]  # (B, H_kv, 1, N_k, d)
    D = (dO * O).sum(axis=-1)  # (B, H_kv, G, N): the preprocessing pass
    dQ = np.zeros(Q.shape, dtype)  # (B, H_kv, G, N, d)
    dK = np.zeros(k.shape, dtype)  # (B, H_kv, N_k, d)
    dV = np.zeros(v.shape, dtype)  # (B, H_kv, N_k, d)
    Tr, Tc = math.ceil(N / Br), math.ceil(N_k / Bc)

    for j in range(Tc):  # one GPU block per key tile
        c0, c1 = j * Bc, min((j + 1) * Bc, N_k)
        Kj, Vj = K[..., c0:c1, :], V[..., c0:c1, :]  # (B, H_kv, 1, bc, d)
        dKj = np.zeros(Kj.shape, dtype)  # accumulated over the query tiles
        dVj = np.zeros(Vj.shape, dtype)
        # Causal: query tile i sees key c0 only if its last row (i+1)*Br - 1 >= c0.
        i_start = c0 // Br if is_causal else 0
        for i in range(i_start, Tr):
            r0, r1 = i * Br, min((i + 1) * Br, N)
            Qi, dOi = Q[..., r0:r1, :], dO[..., r0:r1, :]  # (B, H_kv, G, br, d)
            Li, Di = L[..., r0:r1, None], D[..., r0:r1, None]  # (B, H_kv, G, br, 1)
            S = scale * (Qi @ Kj.swapaxes(-1, -2))  # (B, H_kv, G, br, bc)
            if is_causal and c1 - 1 > r0:
                rows = np.arange(r0, r1)[:, None]
                cols = np.arange(c0, c1)[None, :]
                S = np.where(cols <= rows, S, -np.inf)
            P = np.exp(S - Li)  # the softmax, recomputed
            dVj += (P.swapaxes(-1, -2) @ dOi).sum(axis=2, keepdims=True)  # over the group
            dP = dOi @ Vj.swapaxes(-1, -2)  # (B, H_kv, G, br, bc)
            dS = P * (dP - Di)  # gradient of the scores
            dQ[..., r0:r1, :] += scale * (dS @ Kj)  # (B, H_kv, G, br, d)
            dKj += scale * (dS.swapaxes(-1, -2) @ Qi).sum(axis=2, keepdims=True)
        dK[..., c0:c1, :] = dKj[:, :, 0]
        dV[..., c0:c1, :] = dVj[:, :, 0]
    return dQ.reshape(B, H, N, d), dK, dV


@dataclass(frozen=True)
class FlashStep:
    """The state of one query tile after processing one key tile (single head).

    ``S`` and ``P`` are the tile's masked scores and ``exp(S - m)``; ``m``, ``l``
    the running max and sum per row; ``O_acc`` the un-normalised output and
    ``O_now = O_acc / l`` the tile's output if the keys ended here.
    """

    i: int
    j: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    S: np.ndarray  # (br, bc)
    P: np.ndarray  # (br, bc)
    m: np.ndarray  # (br,)
    l: np.ndarray  # (br,)
    alpha: np.ndarray  # (br,) exp(m_old - m_new), the rescaling of this step
    O_acc: np.ndarray  # (br, d)
    O_now: np.ndarray  # (br, d)
    last: bool  # the last key tile of query tile i


def flash_forward_steps(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    Br: int,
    Bc: int,
    is_causal: bool = False,
    scale: float | None = None,
) -> Iterator[FlashStep]:
    """Yield the forward pass one ``(i, j)`` tile step at a time, for the book's step-through.

    Args:
        q: ``(N, d)``; k, v: ``(N_k, d)`` (one head).

    Yields:
        :class:`FlashStep` per processed tile pair, in kernel order (causal
        tiles above the diagonal are skipped, as in the kernel). The ``O_now``
        of each query tile's ``last`` step equals the attention output rows.
    """
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    if q.ndim != 2 or k.ndim != 2 or v.ndim != 2:
        raise ValueError(
            f"flash_forward_steps takes one head: q (N, d), k and v (N_k, d); got {q.shape}, {k.shape}, {v.shape}"
        )
    check_flash_inputs((1, 1) + q.shape, (1, 1) + k.shape, (1, 1) + v.shape, is_causal=is_causal, Br=Br, Bc=Bc)
    N, d = q.shape
    N_k = k.shape[0]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    Tr, Tc = math.ceil(N / Br), math.ceil(N_k / Bc)
    for i in range(Tr):
        r0, r1 = i * Br, min((i + 1) * Br, N)
        m = np.full(r1 - r0, -np.inf)
        l = np.zeros(r1 - r0)
        O_acc = np.zeros((r1 - r0, d))
        Tc_i = min(Tc, math.ceil(r1 / Bc)) if is_causal else Tc
        for j in range(Tc_i):
            c0, c1 = j * Bc, min((j + 1) * Bc, N_k)
            S = scale * (q[r0:r1] @ k[c0:c1].T)
            if is_causal:
                S = np.where(np.arange(c0, c1)[None, :] <= np.arange(r0, r1)[:, None], S, -np.inf)
            m, l, O_acc, P, alpha = online_softmax_step(m, l, O_acc, S, v[c0:c1])
            yield FlashStep(
                i,
                j,
                (r0, r1),
                (c0, c1),
                S,
                P,
                m.copy(),
                l.copy(),
                alpha,
                O_acc.copy(),
                O_acc / l[:, None],
                j == Tc_i - 1,
            )
