"""Flash attention as tiled PyTorch, differentiable through its own tiled backward.

The same loop nest, tile names (``Br, Bc, Tr, Tc, m, l``), online-softmax
update (:func:`~minitransformer.flash.online_softmax.online_softmax_step`) and
saved log-sum-exp ``L`` as :mod:`minitransformer.flash.tiled_numpy` and the CUDA
kernels, written with torch operations so that it runs on any device and
dtype and vectorises over batch and heads. :class:`FlashAttentionTorch`
saves only ``q, k, v, O, L`` in the forward pass (memory O(N), no ``N x N``
matrix) and its backward *recomputes* the probabilities tile by tile with
:func:`flash_backward_torch`; autograd never sees the forward loop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .online_softmax import online_softmax_step
from .tiled_numpy import check_flash_inputs

__all__ = ["flash_forward_torch", "flash_backward_torch", "FlashAttentionTorch", "flash_attention_torch"]


def _grouped(x: Tensor, H_kv: int) -> Tensor:
    """``(B, H, N, d) -> (B, H_kv, G, N, d)``: query heads grouped by their key head."""
    B, H, N, d = x.shape
    return x.reshape(B, H_kv, H // H_kv, N, d)


def _causal_tile_mask(r0: int, r1: int, c0: int, c1: int, device) -> Tensor:
    """``(br, bc)`` bool, True where key ``c`` may be seen by query ``r`` (``c <= r``)."""
    rows = torch.arange(r0, r1, device=device)[:, None]
    cols = torch.arange(c0, c1, device=device)[None, :]
    return cols <= rows


@torch.no_grad()
def flash_forward_torch(
    q: Tensor, k: Tensor, v: Tensor, *, is_causal: bool = False, scale: float | None = None, Br: int = 64, Bc: int = 64
) -> tuple[Tensor, Tensor]:
    """The tiled flash-attention forward pass.

    Args:
        q: ``(B, H, N, d)``; k, v: ``(B, H_kv, N_k, d)`` with ``H % H_kv == 0``.
        is_causal: query ``r`` sees keys ``0 .. r`` (needs ``N_k == N``).
        scale: score scale, default ``1 / sqrt(d)``.
        Br, Bc: query rows and key rows per tile.

    Returns:
        ``O`` ``(B, H, N, d)`` in ``q``'s dtype and ``L`` ``(B, H, N)`` (float32
        for half inputs: the statistics are kept in at least float32).
    """
    check_flash_inputs(q.shape, k.shape, v.shape, is_causal=is_causal, Br=Br, Bc=Bc)
    B, H, N, d = q.shape
    H_kv, N_k = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    acc = torch.promote_types(q.dtype, torch.float32)  # accumulate in >= float32
    Q = _grouped(q, H_kv).to(acc)  # (B, H_kv, G, N, d)
    K = k.to(acc)[:, :, None]  # (B, H_kv, 1, N_k, d)
    V = v.to(acc)[:, :, None]  # (B, H_kv, 1, N_k, d)
    O = torch.empty(Q.shape, dtype=acc, device=q.device)  # (B, H_kv, G, N, d)
    L = torch.empty(Q.shape[:-1], dtype=acc, device=q.device)  # (B, H_kv, G, N)
    Tr, Tc = math.ceil(N / Br), math.ceil(N_k / Bc)

    for i in range(Tr):  # one GPU block per query tile
        r0, r1 = i * Br, min((i + 1) * Br, N)
        Qi = Q[..., r0:r1, :]  # (B, H_kv, G, br, d)
        m = torch.full(Qi.shape[:-1], -math.inf, dtype=acc, device=q.device)
        l = torch.zeros(Qi.shape[:-1], dtype=acc, device=q.device)
        Oi = torch.zeros(Qi.shape, dtype=acc, device=q.device)
        Tc_i = min(Tc, math.ceil(r1 / Bc)) if is_causal else Tc  # causal tile skipping
        for j in range(Tc_i):
            c0, c1 = j * Bc, min((j + 1) * Bc, N_k)
            Kj, Vj = K[..., c0:c1, :], V[..., c0:c1, :]  # (B, H_kv, 1, bc, d)
            S = scale * (Qi @ Kj.transpose(-1, -2))  # (B, H_kv, G, br, bc)
            if is_causal and c1 - 1 > r0:  # the tile crosses the diagonal
                S = S.masked_fill(~_causal_tile_mask(r0, r1, c0, c1, q.device), -math.inf)
            # The online softmax (m, l: (B, H_kv, G, br); Oi: (B, H_kv, G, br, d)).
            m, l, Oi, _, _ = online_softmax_step(m, l, Oi, S, Vj)
        O[..., r0:r1, :] = Oi / l[..., None]
        L[..., r0:r1] = m + torch.log(l)
    return O.reshape(B, H, N, d).to(q.dtype), L.reshape(B, H, N)


@torch.no_grad()
def flash_backward_torch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    O: Tensor,
    dO: Tensor,
    L: Tensor,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    Br: int = 64,
    Bc: int = 64,
) -> tuple[Tensor, Tensor, Tensor]:
    """The tiled flash-attention backward pass (recomputing ``P = exp(S - L)``).

    Args:
        q: ``(B, H, N, d)``; k, v: ``(B, H_kv, N_k, d)``.
        O, dO: ``(B, H, N, d)``; L: ``(B, H, N)`` from :func:`flash_forward_torch`.
        is_causal, scale, Br, Bc: as in the forward pass.

    Returns:
        ``dq`` ``(B, H, N, d)``, ``dk`` and ``dv`` ``(B, H_kv, N_k, d)``, in the
        dtypes of ``q``, ``k`` and ``v``.
    """
    check_flash_inputs(q.shape, k.shape, v.shape, is_causal=is_causal, Br=Br, Bc=Bc)
    B, H, N, d = q.shape
    H_kv, N_k = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    acc = torch.promote_types(q.dtype, torch.float32)
    Q = _grouped(q, H_kv).to(acc)  # (B, H_kv, G, N, d)
    dO_ = _grouped(dO, H_kv).to(acc)  # (B, H_kv, G, N, d)
    L_ = L.to(acc).reshape(Q.shape[:-1])  # (B, H_kv, G, N)
    K = k.to(acc)[:, :, None]  # (B, H_kv, 1, N_k, d)
    V = v.to(acc)[:, :, None]
    D = (dO_ * _grouped(O, H_kv).to(acc)).sum(dim=-1)  # (B, H_kv, G, N): preprocessing
    dQ = torch.zeros(Q.shape, dtype=acc, device=q.device)  # (B, H_kv, G, N, d)
    dK = torch.empty(k.shape, dtype=acc, device=q.device)  # (B, H_kv, N_k, d)
    dV = torch.empty(v.shape, dtype=acc, device=q.device)
    Tr, Tc = math.ceil(N / Br), math.ceil(N_k / Bc)

    for j in range(Tc):  # one GPU block per key tile
        c0, c1 = j * Bc, min((j + 1) * Bc, N_k)
        Kj, Vj = K[..., c0:c1, :], V[..., c0:c1, :]  # (B, H_kv, 1, bc, d)
        dKj = torch.zeros(Kj.shape, dtype=acc, device=q.device)
        dVj = torch.zeros(Vj.shape, dtype=acc, device=q.device)
        i_start = c0 // Br if is_causal else 0  # causal: skip tiles above the diagonal
        for i in range(i_start, Tr):
            r0, r1 = i * Br, min((i + 1) * Br, N)
            Qi, dOi = Q[..., r0:r1, :], dO_[..., r0:r1, :]  # (B, H_kv, G, br, d)
            Li, Di = L_[..., r0:r1, None], D[..., r0:r1, None]  # (B, H_kv, G, br, 1)
            S = scale * (Qi @ Kj.transpose(-1, -2))  # (B, H_kv, G, br, bc)
            if is_causal and c1 - 1 > r0:
                S = S.masked_fill(~_causal_tile_mask(r0, r1, c0, c1, q.device), -math.inf)
            P = torch.exp(S - Li)  # the softmax, recomputed
            dVj += (P.transpose(-1, -2) @ dOi).sum(dim=2, keepdim=True)  # over the group
            dP = dOi @ Vj.transpose(-1, -2)  # (B, H_kv, G, br, bc)
            dS = P * (dP - Di)
            dQ[..., r0:r1, :] += scale * (dS @ Kj)  # (B, H_kv, G, br, d)
            dKj += scale * (dS.transpose(-1, -2) @ Qi).sum(dim=2, keepdim=True)
        dK[..., c0:c1, :] = dKj[:, :, 0]
        dV[..., c0:c1, :] = dVj[:, :, 0]
    return dQ.reshape(B, H, N, d).to(q.dtype), dK.to(k.dtype), dV.to(v.dtype)


class FlashAttentionTorch(torch.autograd.Function):
    """Tiled flash attention as an autograd Function.

    ``forward(ctx, q, k, v, is_causal, scale, Br, Bc) -> O``; saves ``q, k, v,
    O, L`` and differentiates with :func:`flash_backward_torch`.
    """

    @staticmethod
    def forward(
        ctx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        is_causal: bool = False,
        scale: float | None = None,
        Br: int = 64,
        Bc: int = 64,
    ) -> Tensor:
        O, L = flash_forward_torch(q, k, v, is_causal=is_causal, scale=scale, Br=Br, Bc=Bc)
        ctx.save_for_backward(q, k, v, O, L)
        ctx.opts = dict(is_causal=is_causal, scale=scale, Br=Br, Bc=Bc)
        return O

    @staticmethod
    def backward(ctx, dO: Tensor):
        q, k, v, O, L = ctx.saved_tensors
        dq, dk, dv = flash_backward_torch(q, k, v, O, dO.contiguous(), L, **ctx.opts)
        return dq, dk, dv, None, None, None, None


def flash_attention_torch(
    q: Tensor, k: Tensor, v: Tensor, *, is_causal: bool = False, scale: float | None = None, Br: int = 64, Bc: int = 64
) -> Tensor:
    """Differentiable tiled flash attention: ``(B, H, N, d) -> (B, H, N, d)``.

    ``k, v`` are ``(B, H_kv, N_k, d)``; see :func:`flash_forward_torch`.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    return FlashAttentionTorch.apply(q, k, v, is_causal, scale, Br, Bc)
