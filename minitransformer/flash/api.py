"""``flash_attention`` and ``flash_decode``: one entry point, several backends.

* ``flash_attention(q, k, v, *, is_causal=False, scale=None, backend="auto",
  kernel=None)`` -- exact attention without the ``N x N`` matrix:

  ========  ==========================================================  ==============
  backend   runs                                                        differentiable
  ========  ==========================================================  ==============
  "numpy"   the tiled NumPy reference (``tiled_numpy``), CPU, float64    no
  "torch"   the tiled torch code (``tiled_torch.FlashAttentionTorch``)   yes
  "cupy"    the CUDA kernels through CuPy (``cupy_bridge``)              yes
  "auto"    "cupy" for CUDA tensors when CuPy is installed, else "torch"
  ========  ==========================================================  ==============

  On "cupy", ``kernel="teaching"`` is the fp32 kernel read in chapter 8 and
  ``kernel="fast"`` the fp16/bf16 tensor-core one; by default float32 inputs
  get the teaching kernel and float16/bfloat16 inputs the fast one.

* ``flash_decode(q, k_cache, v_cache, lengths=None, *, scale=None,
  num_splits=None, is_causal=True)`` -- the KV-cache step of generation:
  the split-KV kernel on a GPU, the same math in plain torch on the CPU.

Shapes: ``q (B, H, N, d)``; ``k, v (B, H_kv, N_k, d)`` with ``H % H_kv == 0``
(grouped-query attention: query head ``h`` reads key head ``h // (H // H_kv)``).
Everything is checked before any work, with errors that name the argument.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..reference import gqa_attention
from ..validation import check_positive_int, check_qkv, check_scale, describe

__all__ = ["flash_attention", "flash_decode", "BACKENDS", "KERNELS"]

BACKENDS = ("auto", "numpy", "torch", "cupy")
KERNELS = ("teaching", "fast")
TEACHING_MAX_HEAD_DIM = 128


def _check_qkv(q, k, v, is_causal: bool, scale) -> None:
    """Types, ranks, shapes, dtypes and devices of ``q, k, v``, and the scale (ValueError/TypeError)."""
    check_qkv(q, k, v, grouped=True, square="is_causal=True" if is_causal else None)
    check_scale(scale)  # the one scale check of every attention: None or a finite number > 0


def _resolve(q: Tensor, backend: str, kernel: str | None) -> tuple[str, str | None]:
    """The backend (and GPU kernel tier) that will run, with all checks done."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; choose one of {BACKENDS}")
    if kernel is not None and kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r}; choose one of {KERNELS} (or None: by dtype)")
    from . import cupy_bridge as bridge

    if backend == "auto":
        backend = "cupy" if q.is_cuda and bridge.cupy_available() else "torch"
    if backend != "cupy":
        if kernel is not None:
            raise ValueError(f"kernel={kernel!r} selects a GPU kernel; it needs backend='cupy', not {backend!r}")
        return backend, None
    bridge.require_cupy()
    if not q.is_cuda:
        raise ValueError(f"backend='cupy' needs CUDA tensors; q is on {q.device}")
    if kernel is None:
        kernel = "teaching" if q.dtype == torch.float32 else "fast"
    d = q.shape[-1]
    if kernel == "teaching":
        if q.dtype != torch.float32:
            raise TypeError(
                f"the teaching kernel is fp32: q is {q.dtype}; pass float32 tensors "
                "or kernel='fast' for float16/bfloat16"
            )
        if d > TEACHING_MAX_HEAD_DIM:
            raise ValueError(f"head dim {d} is not supported by the teaching kernel (1 .. {TEACHING_MAX_HEAD_DIM})")
    else:
        if q.dtype not in (torch.float16, torch.bfloat16):
            raise TypeError(
                f"the fast kernel takes float16 or bfloat16, got {q.dtype}; use kernel='teaching' for float32"
            )
        if d not in bridge.FAST_HEAD_DIMS:
            raise ValueError(f"head dim {d} is not supported by the fast kernel; supported: {bridge.FAST_HEAD_DIMS}")
        arch = bridge.device_arch(bridge.device_index(q))
        if q.dtype == torch.bfloat16 and arch < bridge.BF16_MIN_ARCH:
            raise TypeError(
                f"bfloat16 needs a GPU of compute capability 8.0 or newer; this one is sm_{arch}: use float16"
            )
    return "cupy", kernel


def flash_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    backend: str = "auto",
    kernel: str | None = None,
) -> Tensor:
    """Exact softmax attention, computed tile by tile (FlashAttention-2).

    Args:
        q: ``(B, H, N, d)`` queries.
        k, v: ``(B, H_kv, N_k, d)`` keys and values, ``H % H_kv == 0``.
        is_causal: query ``i`` sees keys ``0 .. i`` (needs ``N_k == N``).
        scale: score scale, default ``1 / sqrt(d)``.
        backend: ``"auto"``, ``"numpy"``, ``"torch"`` or ``"cupy"`` (module docstring).
        kernel: ``"teaching"`` or ``"fast"`` on ``backend="cupy"``; None picks by dtype.

    Returns:
        ``(B, H, N, d)`` on ``q``'s device. With ``backend="numpy"`` the
        result is computed in float64 and returned in ``q``'s dtype, detached:
        that backend is a reference, not differentiable (it raises if ``q``,
        ``k`` or ``v`` requires grad -- use ``"torch"`` to train on the CPU).

    Raises:
        ValueError / TypeError: for bad shapes, dtypes, devices or options;
        RuntimeError: ``backend="cupy"`` without a GPU or without CuPy.
    """
    _check_qkv(q, k, v, is_causal, scale)
    backend, kern = _resolve(q, backend, kernel)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)

    if backend == "numpy":
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
            raise RuntimeError(
                "backend='numpy' is a reference and is not differentiable; "
                "use backend='torch' (or 'cupy') when gradients are needed, "
                "or call it under torch.no_grad()"
            )
        from .tiled_numpy import flash_forward_numpy

        arrays = [t.detach().cpu().double().numpy() for t in (q, k, v)]
        O, _ = flash_forward_numpy(*arrays, is_causal=is_causal, scale=scale)
        return torch.from_numpy(O).to(device=q.device, dtype=q.dtype)
    if backend == "torch":
        from .tiled_torch import flash_attention_torch

        return flash_attention_torch(q, k, v, is_causal=is_causal, scale=scale)
    from .cupy_bridge import CupyFlashFunction

    return CupyFlashFunction.apply(q.contiguous(), k.contiguous(), v.contiguous(), is_causal, scale, kern)


def _decode_exact(q: Tensor, k: Tensor, v: Tensor, lengths: Tensor, scale: float, is_causal: bool) -> Tensor:
    """Exact decode attention in torch, float32 (the CPU path; differentiable).

    Query ``t`` of ``T`` new ones sits at position ``lengths[b] - T + t``.
    """
    out = gqa_attention(
        q.float(), k.float(), v.float(), scale=scale, is_causal=is_causal, lengths=lengths
    )  # (B, H, T, d)
    return out.to(q.dtype)


def flash_decode(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    lengths: Tensor | None = None,
    *,
    scale: float | None = None,
    num_splits: int | None = None,
    is_causal: bool = True,
) -> Tensor:
    """Attention of a few new queries to a KV cache (flash-decoding on a GPU).

    Args:
        q: ``(B, H, T, d)``, the ``T`` (1..a few) newest positions' queries.
        k_cache, v_cache: ``(B, H_kv, S, d)``; the first ``lengths[b]``
            positions of sequence ``b`` are valid and include the ``T`` new
            ones. Views such as ``KVCache``'s ``[:, :, :length]`` are used in
            place.
        lengths: ``(B,)`` integer tensor, ``T <= lengths[b] <= S``; None: all ``S``.
        scale: default ``1 / sqrt(d)``.
        num_splits: pieces the GPU kernel cuts the cache into (None: enough
            to fill the GPU; 1: one block per head). Ignored on the CPU.
        is_causal: new query ``t`` sees keys up to position ``lengths[b] - T + t``
            (what generation needs); False: every valid key.

    Returns:
        ``(B, H, T, d)`` in ``q``'s dtype. The GPU kernel runs for CUDA tensors
        when CuPy is installed and ``d`` is 32, 64 or 128 (bf16: sm_80+); it is
        not differentiable, so when ``q`` requires grad (or otherwise) the exact
        torch computation runs instead.
    """
    _check_qkv(q, k_cache, v_cache, False, scale)
    B, H, T, d = q.shape
    S = k_cache.shape[2]
    if lengths is None:
        lengths = torch.full((B,), S, dtype=torch.int32, device=q.device)
    if (
        not isinstance(lengths, Tensor)
        or lengths.shape != (B,)
        or lengths.dtype.is_floating_point
        or lengths.dtype == torch.bool
    ):
        raise ValueError(f"lengths must be an integer tensor of shape (B,) = ({B},); got {describe(lengths)}")
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < T or hi > S:
        raise ValueError(
            f"lengths must lie in [T, S] = [{T}, {S}] (they count the {T} new token(s)); got min {lo}, max {hi}"
        )
    if num_splits is not None:
        check_positive_int("num_splits", num_splits)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    from . import cupy_bridge as bridge

    if (
        q.is_cuda
        and bridge.cupy_available()
        and d in bridge.DECODE_HEAD_DIMS
        and q.dtype != torch.float64
        and not (torch.is_grad_enabled() and q.requires_grad)
    ):
        if q.dtype == torch.bfloat16 and bridge.device_arch(bridge.device_index(q)) < bridge.BF16_MIN_ARCH:
            return _decode_exact(q, k_cache, v_cache, lengths, scale, is_causal)
        return bridge.decode(
            q.contiguous(), k_cache, v_cache, lengths.to(q.device, torch.int32), scale, num_splits, is_causal
        )
    return _decode_exact(q, k_cache, v_cache, lengths, scale, is_causal)
