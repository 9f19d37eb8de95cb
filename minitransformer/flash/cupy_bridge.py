"""PyTorch <-> CUDA kernels through CuPy: compile, cache, launch, differentiate.

The ``.cu`` files in ``minitransformer/flash/kernels`` ship as package data.
This module

* reads them with :func:`minitransformer.flash.sources.kernel_source`, which
  inlines their local ``#include "..."`` (so the source handed to NVRTC is one
  self-contained string, whether the package is a directory or a zip);
* compiles each file once per (file, options, compute capability) with
  ``cupy.RawModule`` -- NVRTC at run time, the same compiler the CI tests run
  device-free with exactly :data:`NVRTC_OPTIONS` and :func:`name_expressions`;
* hands torch tensors to the kernels through DLPack (``cupy.from_dlpack``: the
  same memory, no copy) and launches on torch's current CUDA stream;
* wraps forward + backward in :class:`CupyFlashFunction`, a
  ``torch.autograd.Function``, so ``flash_attention(backend="cupy")`` trains.

CuPy is imported lazily, on the first launch: ``import minitransformer``
never needs it. Without CuPy or without a GPU, :func:`require_cupy` says
which one is missing and how to install.

Two kernel tiers: ``"teaching"`` (fp32, ``teaching_*.cu``, tile sizes from
:func:`minitransformer.flash.tiles.choose_tiles` and the device's
shared-memory limit) and ``"fast"`` (fp16/bf16 on tensor cores,
``fast_*.cu``). Plus the flash-decoding kernel of the KV-cache path
(``decode.cu``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .sources import kernel_source
from .tiles import BACKWARD_THREADS, PREPROCESS_THREADS, TileConfig, choose_tiles

__all__ = [
    "KERNEL_FILES",
    "NVRTC_OPTIONS",
    "FAST_HEAD_DIMS",
    "DECODE_HEAD_DIMS",
    "DECODE_ROWS",
    "kernel_source",
    "name_expressions",
    "FastForwardConfig",
    "fast_forward_config",
    "fast_backward_config",
    "MAX_GRID_YZ",
    "VECTOR_BYTES",
    "check_vector_aligned",
    "batch_chunks",
    "require_cupy",
    "cupy_available",
    "teaching_forward",
    "teaching_backward",
    "fast_forward",
    "fast_backward",
    "decode",
    "CupyFlashFunction",
]

# ---------------------------------------------------------------------------
# What is compiled, and how (the NVRTC tests import these: they cannot drift).

KERNEL_FILES = ("teaching_forward.cu", "teaching_backward.cu", "fast_forward.cu", "fast_backward.cu", "decode.cu")
NVRTC_OPTIONS = ("--std=c++17",)  # CuPy adds -arch for the device it compiles for
FAST_HEAD_DIMS = (32, 64, 128)  # the fast kernels' template instantiations
DECODE_HEAD_DIMS = (32, 64, 128)
DECODE_ROWS = (1, 4, 8)  # query rows per decode block (G * T rounded up)
F16, BF16, F32 = 0, 1, 2  # element types, as in fast_common.cuh (MT_F16 ...)
BF16_MIN_ARCH = 80  # mma.sync with bf16 inputs needs sm_80+


def _dtypes(arch: int) -> tuple[int, ...]:
    return (F16, BF16) if arch >= BF16_MIN_ARCH else (F16,)


def name_expressions(filename: str, arch: int) -> tuple[str, ...]:
    """The template instantiations compiled from ``filename`` for compute capability ``arch``.

    ``arch`` is e.g. 75, 80, 90. The teaching kernels are ``extern "C"``: none.
    """
    if filename == "fast_forward.cu":
        return tuple(f"flash_fwd_fast<{d}, {t}>" for d in FAST_HEAD_DIMS for t in _dtypes(arch))
    if filename == "fast_backward.cu":
        return tuple(
            f"{k}<{d}, {t}>"
            for k in ("flash_bwd_fast", "flash_bwd_dot_do_o")
            for d in FAST_HEAD_DIMS
            for t in _dtypes(arch)
        )
    if filename == "decode.cu":
        types = (F32,) + _dtypes(arch)
        partial = tuple(
            f"flash_decode_partial<{d}, {t}, {r}>" for d in DECODE_HEAD_DIMS for t in types for r in DECODE_ROWS
        )
        return partial + tuple(f"flash_decode_combine<{d}, {t}>" for d in DECODE_HEAD_DIMS for t in types)
    if filename in KERNEL_FILES:
        return ()
    raise ValueError(f"unknown kernel file {filename!r}; known: {KERNEL_FILES}")


FAST_THREADS = 128  # 4 warps per block in both fast kernels
DOT_DO_O_THREADS = 128  # flash_bwd_dot_do_o: one warp per row, 4 rows per block
DECODE_THREADS = 128  # flash_decode_partial: 4 warps (flash_decode_combine: d threads)


@dataclass(frozen=True)
class FastForwardConfig(TileConfig):
    """Launch shape of ``flash_fwd_fast``: a :class:`~.tiles.TileConfig` (``Br`` query
    rows per block, so the grid is ``ceil(N / Br)`` blocks per head; ``Bc`` keys per
    tile; ``threads`` per block; ``smem_bytes`` of dynamic shared memory per block)
    plus ``stages``, the K/V buffers in shared memory (2: cp.async double buffering
    on sm_80+, 1 on sm_75)."""

    stages: int


def fast_forward_config(head_dim: int, arch: int) -> FastForwardConfig:
    """Launch shape of ``flash_fwd_fast`` (mirrors ``FwdCfg`` in fast_forward.cu).

    Args:
        head_dim: ``d``, one of :data:`FAST_HEAD_DIMS`.
        arch: compute capability, e.g. 75, 80, 90 (picks the code path).

    Returns:
        The :class:`FastForwardConfig`.
    """
    Br = 64
    Bc = 64 if (head_dim <= 64 or arch >= 80) else 32
    stages = 2 if arch >= 80 else 1
    q_rows = 0 if stages == 2 else Br  # two stages: Q borrows the second K buffer
    smem = (q_rows + 2 * stages * Bc) * (head_dim + 8) * 2  # 16-bit rows padded by 8
    return FastForwardConfig(Br=Br, Bc=Bc, stages=stages, threads=FAST_THREADS, smem_bytes=smem)


def fast_backward_config(head_dim: int, arch: int) -> TileConfig:
    """Launch shape of ``flash_bwd_fast`` (mirrors ``BwdCfg`` in fast_backward.cu).

    Args:
        head_dim: ``d``, one of :data:`FAST_HEAD_DIMS`.
        arch: compute capability, e.g. 75, 80, 90 (sm_80+ double-buffers Q and dO;
            sm_75 takes 32-query steps at d = 64 and keeps dS^T in the Q/dO buffers,
            so that two blocks fit in 64 KB).

    Returns:
        A :class:`~.tiles.TileConfig`: ``Bc`` keys per block (the grid is
        ``ceil(N_k / Bc)`` blocks per *kv* head), ``Br`` queries per step.
    """
    Bc = 64
    Br = 64 if (head_dim <= 32 or (head_dim <= 64 and arch >= 80)) else 32
    LD, LDS = head_dim + 8, Br + 8
    stages = 2 if arch >= 80 else 1  # Q/dO buffers: cp.async double buffering on sm_80+
    ds_halves = 0 if arch < 80 else Bc * LDS  # sm_75: dS^T borrows the Q and dO buffers
    smem = (2 * Bc + 2 * stages * Br) * LD * 2 + ds_halves * 2 + 2 * Br * 4
    return TileConfig(Br=Br, Bc=Bc, threads=FAST_THREADS, smem_bytes=smem)


# ---------------------------------------------------------------------------
# Launch checks (plain Python: tested on the CPU).

MAX_GRID_YZ = 65535  # CUDA's limit on gridDim.y and gridDim.z (gridDim.x: 2^31 - 1)
VECTOR_BYTES = 16  # cp.async, ldmatrix and the vector loads move 16 bytes at a time


def check_vector_aligned(kernel: str, **tensors: Tensor) -> None:
    """Raise ``ValueError`` unless every tensor can be read 16 bytes at a time.

    The fast and decode kernels copy rows of Q, K, V (and dO) with 16-byte
    ``cp.async``, vector loads and (from shared memory) ``ldmatrix``: the data
    must start at a 16-byte boundary and every row must be a whole number of
    16-byte chunks with unit stride inside it. A misaligned address would stop
    the kernel with "misaligned address" (or worse, on the emulated paths,
    read the wrong bytes), so it is checked before anything is launched.

    Args:
        kernel: the kernel's name, for the message.
        tensors: ``name=tensor`` pairs, each ``(..., rows, d)`` with rows of ``d`` elements.

    Raises:
        ValueError: naming the tensor, its address modulo 16, its strides, and the fix.
    """
    for name, t in tensors.items():
        off = t.data_ptr() % VECTOR_BYTES
        if off:
            raise ValueError(
                f"{kernel} reads {name} {VECTOR_BYTES} bytes at a time, so its data must start at a "
                f"{VECTOR_BYTES}-byte boundary; {name}.data_ptr() % {VECTOR_BYTES} = {off} (a view at "
                f"storage offset {t.storage_offset()}). Pass a copy, {name}.clone() (.contiguous() keeps "
                f"a view that is already contiguous where it is)"
            )
        row_bytes = t.shape[-1] * t.element_size()
        if t.stride(-1) != 1 or row_bytes % VECTOR_BYTES or (t.stride(-2) * t.element_size()) % VECTOR_BYTES:
            raise ValueError(
                f"{kernel} reads {name} in rows of {VECTOR_BYTES}-byte chunks: it needs unit stride in the "
                f"last dim and rows {VECTOR_BYTES}-byte aligned; got shape {tuple(t.shape)}, strides "
                f"{tuple(t.stride())}, {t.element_size()}-byte elements. Pass {name}.contiguous()"
            )


def batch_chunks(batch: int, blocks_per_item: int, what: str) -> list[slice]:
    """Slices of the batch small enough for gridDim.y.

    The kernels put ``batch x heads`` on gridDim.y, which CUDA limits to
    65,535 blocks; a larger batch is launched in pieces of whole sequences
    (contiguous slices along dim 0, so no copies).

    Args:
        batch: ``B``.
        blocks_per_item: blocks on gridDim.y per sequence (``H`` or ``H_kv``).
        what: how the message names ``blocks_per_item``, e.g. ``"H"``.

    Returns:
        ``[slice(b0, b1), ...]`` covering ``range(batch)``.

    Raises:
        ValueError: when one sequence alone needs more than 65,535 blocks on gridDim.y.
    """
    if blocks_per_item > MAX_GRID_YZ:
        raise ValueError(
            f"{what}={blocks_per_item} exceeds CUDA's gridDim.y limit of {MAX_GRID_YZ:,} blocks per launch "
            f"(one block row per head); use fewer heads per call"
        )
    step = MAX_GRID_YZ // blocks_per_item
    return [slice(b, min(b + step, batch)) for b in range(0, batch, step)]


# ---------------------------------------------------------------------------
# CuPy, lazily.

_INSTALL = (
    "install CuPy with `pip install minitransformer[gpu]` (or `pip install cupy-cuda12x` "
    "for CUDA 12) on a machine with an NVIDIA GPU"
)


def _import_cupy():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def require_cupy():
    """Return the ``cupy`` module, or raise ``RuntimeError`` saying what is missing."""
    cupy = _import_cupy()
    gpu = torch.cuda.is_available()
    if cupy is None and not gpu:
        raise RuntimeError(f"backend='cupy' needs a CUDA GPU and CuPy; found neither: {_INSTALL}")
    if cupy is None:
        raise RuntimeError(f"backend='cupy' needs a CUDA GPU and CuPy; found a GPU but not CuPy: {_INSTALL}")
    if not gpu:
        raise RuntimeError(
            "backend='cupy' needs a CUDA GPU and CuPy; found CuPy but no CUDA GPU "
            "(torch.cuda.is_available() is False); use backend='torch' on the CPU"
        )
    return cupy


def cupy_available() -> bool:
    """True when a CUDA GPU and CuPy are both present (what backend='auto' asks)."""
    return torch.cuda.is_available() and _import_cupy() is not None


@functools.cache
def device_arch(device_index: int) -> int:
    """Compute capability of a device as an int: 75, 80, 86, 90, ..."""
    cupy = require_cupy()
    return int(cupy.cuda.Device(device_index).compute_capability)


@functools.cache
def device_smem_optin(device_index: int) -> int:
    """The most dynamic shared memory a block may be granted (bytes)."""
    cupy = require_cupy()
    attrs = cupy.cuda.Device(device_index).attributes
    return int(attrs.get("MaxSharedMemoryPerBlockOptin", attrs["MaxSharedMemoryPerBlock"]))


@functools.cache
def device_sm_count(device_index: int) -> int:
    cupy = require_cupy()
    return int(cupy.cuda.Device(device_index).attributes["MultiProcessorCount"])


@functools.cache
def _module(filename: str, names: tuple[str, ...], arch: int, device_index: int):
    """Compile ``filename`` once per (instantiations, compute capability, device).

    Only the instantiations a launch needs are compiled (a second or two, not
    the half minute all of ``decode.cu``'s would take); every one of them is in
    :func:`name_expressions`, which the NVRTC tests compile for each arch.
    """
    cupy = require_cupy()
    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=kernel_source(filename), options=NVRTC_OPTIONS, name_expressions=names or None)


def _kernel(
    filename: str, name: str, device_index: int, smem_bytes: int = 0, module_names: tuple[str, ...] | None = None
):
    """One kernel, granted ``smem_bytes`` of dynamic shared memory.

    ``module_names``: the instantiations compiled together with it (default:
    just ``name`` for template kernels, none for ``extern "C"`` ones).
    """
    if module_names is None:
        module_names = (name,) if "<" in name else ()
    fn = _module(filename, module_names, device_arch(device_index), device_index).get_function(name)
    if smem_bytes > 48 * 1024 and fn.max_dynamic_shared_size_bytes < smem_bytes:
        limit = device_smem_optin(device_index)
        if smem_bytes > limit:
            raise RuntimeError(f"{name} needs {smem_bytes} bytes of shared memory per block; this GPU allows {limit}")
        fn.max_dynamic_shared_size_bytes = smem_bytes  # cudaFuncSetAttribute, once
    return fn


def _launch(fn, grid: tuple, block: tuple, args: tuple, smem_bytes: int, device: torch.device) -> None:
    """Launch on torch's current stream, tensors passed through DLPack (no copies)."""
    import numpy as np

    cupy = require_cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(index).cuda_stream, index)
    with cupy.cuda.Device(index), stream:
        conv = []
        for a in args:
            if isinstance(a, Tensor):
                # 16-bit floats travel as int16 (same bits; CuPy has no bfloat16 dtype).
                t = a.view(torch.int16) if a.dtype in (torch.float16, torch.bfloat16) else a
                conv.append(cupy.from_dlpack(t.detach()))
            elif isinstance(a, bool) or isinstance(a, int):
                conv.append(np.int32(a))
            elif isinstance(a, float):
                conv.append(np.float32(a))
            else:
                raise TypeError(f"unsupported kernel argument {type(a).__name__}")
        fn(tuple(int(g) for g in grid), tuple(int(b) for b in block), tuple(conv), shared_mem=int(smem_bytes))


# Tests set this to True: every output buffer then starts as NaN, so an element a
# kernel forgets to write cannot pass for a correct one.
POISON_OUTPUTS = False


def _out(shape, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """An output buffer (uninitialized, or NaN under :data:`POISON_OUTPUTS`)."""
    dtype = like.dtype if dtype is None else dtype
    if POISON_OUTPUTS:
        return torch.full(tuple(shape), float("nan"), device=like.device, dtype=dtype)
    return torch.empty(tuple(shape), device=like.device, dtype=dtype)


def device_index(t: Tensor) -> int:
    """The CUDA device ``t`` lives on (``cuda`` without an index means the current device;
    ``t.device.index or 0`` would be wrong when the current device is not 0)."""
    return t.device.index if t.device.index is not None else torch.cuda.current_device()


def _dt(dtype: torch.dtype) -> int:
    return {torch.float16: F16, torch.bfloat16: BF16, torch.float32: F32}[dtype]


# ---------------------------------------------------------------------------
# Teaching kernels (fp32).


def teaching_forward(q: Tensor, k: Tensor, v: Tensor, is_causal: bool, scale: float) -> tuple[Tensor, Tensor]:
    """``flash_fwd_teaching``: ``q (B, H, N, d)``, ``k, v (B, H_kv, N_k, d)`` fp32 CUDA,
    contiguous -> ``O (B, H, N, d)``, ``L (B, H, N)``."""
    B, H, N, d = q.shape
    H_kv, N_k = k.shape[1], k.shape[2]
    dev = device_index(q)
    cfg = choose_tiles(d, device_smem_optin(dev), seq_len=max(N, N_k)).forward
    O = _out(q.shape, q)
    L = _out((B, H, N), q, torch.float32)
    fn = _kernel("teaching_forward.cu", "flash_fwd_teaching", dev, cfg.smem_bytes)
    for b in batch_chunks(B, H, "H"):  # gridDim.y = batch x heads <= 65,535
        _launch(
            fn,
            (math.ceil(N / cfg.Br), (b.stop - b.start) * H),
            (cfg.threads,),
            (q[b], k[b], v[b], O[b], L[b], H, H_kv, N, N_k, d, cfg.Br, cfg.Bc, float(scale), int(is_causal)),
            cfg.smem_bytes,
            q.device,
        )
    return O, L


def teaching_backward(
    q: Tensor, k: Tensor, v: Tensor, O: Tensor, dO: Tensor, L: Tensor, is_causal: bool, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``flash_bwd_preprocess`` + ``flash_bwd_teaching`` -> ``dQ, dK, dV`` (fp32)."""
    B, H, N, d = q.shape
    H_kv, N_k = k.shape[1], k.shape[2]
    dev = device_index(q)
    cfg = choose_tiles(d, device_smem_optin(dev), seq_len=max(N, N_k)).backward
    Dvec = _out((B, H, N), q, torch.float32)
    rows = B * H * N
    pre = _kernel("teaching_backward.cu", "flash_bwd_preprocess", dev)
    _launch(
        pre, (math.ceil(rows / (PREPROCESS_THREADS // 32)),), (PREPROCESS_THREADS,), (O, dO, Dvec, rows, d), 0, q.device
    )
    dQ = torch.zeros_like(q)  # accumulated with atomicAdd
    dK, dV = _out(k.shape, k), _out(v.shape, v)
    fn = _kernel("teaching_backward.cu", "flash_bwd_teaching", dev, cfg.smem_bytes)
    for b in batch_chunks(B, H_kv, "H_kv"):  # gridDim.y = batch x kv heads <= 65,535
        args = (q[b], k[b], v[b], dO[b], L[b], Dvec[b], dQ[b], dK[b], dV[b])
        _launch(
            fn,
            (math.ceil(N_k / cfg.Bc), (b.stop - b.start) * H_kv),
            (BACKWARD_THREADS,),
            (*args, H, H_kv, N, N_k, d, cfg.Br, cfg.Bc, float(scale), int(is_causal)),
            cfg.smem_bytes,
            q.device,
        )
    return dQ, dK, dV


# ---------------------------------------------------------------------------
# Fast kernels (fp16 / bf16, tensor cores).


def fast_forward(q: Tensor, k: Tensor, v: Tensor, is_causal: bool, scale: float) -> tuple[Tensor, Tensor]:
    """``flash_fwd_fast<d, type>`` -> ``O (B, H, N, d)`` in the input type, ``L (B, H, N)`` fp32."""
    B, H, N, d = q.shape
    H_kv, N_k = k.shape[1], k.shape[2]
    name = f"flash_fwd_fast<{d}, {_dt(q.dtype)}>"
    check_vector_aligned(name, q=q, k=k, v=v)
    chunks = batch_chunks(B, H, "H")
    dev = device_index(q)
    cfg = fast_forward_config(d, device_arch(dev))
    O = _out(q.shape, q)
    L = _out((B, H, N), q, torch.float32)
    fn = _kernel("fast_forward.cu", name, dev, cfg.smem_bytes)
    for b in chunks:  # gridDim.y = batch x heads <= 65,535
        _launch(
            fn,
            (math.ceil(N / cfg.Br), (b.stop - b.start) * H),
            (cfg.threads,),
            (q[b], k[b], v[b], O[b], L[b], H, H_kv, N, N_k, float(scale), int(is_causal)),
            cfg.smem_bytes,
            q.device,
        )
    return O, L


def fast_backward(
    q: Tensor, k: Tensor, v: Tensor, O: Tensor, dO: Tensor, L: Tensor, is_causal: bool, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``flash_bwd_dot_do_o`` + ``flash_bwd_fast`` -> ``dQ, dK, dV`` in the input type."""
    B, H, N, d = q.shape
    H_kv, N_k = k.shape[1], k.shape[2]
    t = _dt(q.dtype)
    check_vector_aligned(f"flash_bwd_fast<{d}, {t}>", q=q, k=k, v=v, dO=dO)
    chunks = batch_chunks(B, H_kv, "H_kv")
    dev = device_index(q)
    cfg = fast_backward_config(d, device_arch(dev))
    rows = B * H * N
    Dvec = _out((B, H, N), q, torch.float32)
    names = (f"flash_bwd_dot_do_o<{d}, {t}>", f"flash_bwd_fast<{d}, {t}>")
    _launch(
        _kernel("fast_backward.cu", names[0], dev, module_names=names),
        (math.ceil(rows / (DOT_DO_O_THREADS // 32)),),
        (DOT_DO_O_THREADS,),
        (dO, O, Dvec, rows),
        0,
        q.device,
    )
    dQacc = torch.zeros((B, H, N, d), device=q.device, dtype=torch.float32)
    # dK, dV per kv head: a block sums the query heads of its group in fp32 registers.
    dK, dV = _out(k.shape, k), _out(v.shape, v)
    fn = _kernel("fast_backward.cu", names[1], dev, cfg.smem_bytes, module_names=names)
    for b in chunks:  # gridDim.y = batch x kv heads <= 65,535
        _launch(
            fn,
            (math.ceil(N_k / cfg.Bc), (b.stop - b.start) * H_kv),
            (cfg.threads,),
            (q[b], k[b], v[b], dO[b], L[b], Dvec[b], dQacc[b], dK[b], dV[b], H, H_kv, N, N_k)
            + (float(scale), int(is_causal)),
            cfg.smem_bytes,
            q.device,
        )
    return dQacc.to(q.dtype), dK, dV


class CupyFlashFunction(torch.autograd.Function):
    """Flash attention on the GPU kernels, differentiable.

    ``apply(q, k, v, is_causal, scale, kernel)`` with ``kernel`` ``"teaching"``
    (fp32) or ``"fast"`` (fp16/bf16); inputs contiguous CUDA tensors
    ``(B, H, N, d)`` / ``(B, H_kv, N_k, d)``. Saves ``q, k, v, O, L``; the
    backward recomputes P from ``L`` (no N x N tensor is ever stored).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, is_causal: bool, scale: float, kernel: str) -> Tensor:
        fwd = teaching_forward if kernel == "teaching" else fast_forward
        O, L = fwd(q, k, v, is_causal, scale)
        ctx.save_for_backward(q, k, v, O, L)
        ctx.opts = (is_causal, scale, kernel)
        return O

    @staticmethod
    def backward(ctx, dO: Tensor):
        q, k, v, O, L = ctx.saved_tensors
        is_causal, scale, kernel = ctx.opts
        bwd = teaching_backward if kernel == "teaching" else fast_backward
        dq, dk, dv = bwd(q, k, v, O, dO.contiguous(), L, is_causal, scale)
        return dq, dk, dv, None, None, None


# ---------------------------------------------------------------------------
# Flash-decoding.


def decode_splits(batch_kv_blocks: int, max_len: int, sm_count: int) -> int:
    """How many pieces to cut the cache into: enough blocks for ~2 waves of the GPU,
    but no piece shorter than 128 keys."""
    want = math.ceil(2 * sm_count / max(batch_kv_blocks, 1))
    return max(1, min(want, math.ceil(max_len / 128)))


def decode(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, lengths: Tensor, scale: float, num_splits: int | None, is_causal: bool
) -> Tensor:
    """Two-pass flash-decoding.

    Args:
        q: ``(B, H, T, d)`` new queries, contiguous, fp32/fp16/bf16.
        k_cache, v_cache: ``(B, H_kv, S, d)``; may be views of a larger cache
            (``KVCache`` returns ``[:, :, :length]`` slices): the rows only need
            unit stride within a head.
        lengths: ``(B,)`` int32 on the device: valid positions per sequence.
        num_splits: pieces of the cache (None: chosen from the GPU's size);
            ``1`` is the one-block-per-head baseline.

    Returns:
        ``(B, H, T, d)`` in the input type.
    """
    B, H, T, d = q.shape
    H_kv = k_cache.shape[1]
    G = H // H_kv
    t = _dt(q.dtype)
    # Rows of a head must be contiguous and the heads evenly spaced: then the kernel only
    # needs the distance between heads (S_stride rows), and a cache slice is not copied.
    kc, vc = k_cache, v_cache
    if not (
        kc.stride(3) == 1 and kc.stride(2) == d and kc.stride(0) == H_kv * kc.stride(1) and vc.stride() == kc.stride()
    ):
        kc, vc = kc.contiguous(), vc.contiguous()
    S_stride = kc.stride(1) // d
    R = next((r for r in DECODE_ROWS if r >= G * T), DECODE_ROWS[-1])
    zchunks = math.ceil(G * T / R)
    names = (f"flash_decode_partial<{d}, {t}, {R}>", f"flash_decode_combine<{d}, {t}>")
    check_vector_aligned(names[0], q=q, k_cache=kc, v_cache=vc)
    chunks = batch_chunks(B, H_kv, "H_kv")  # gridDim.y = batch x kv heads <= 65,535
    if zchunks > MAX_GRID_YZ:
        raise ValueError(f"G * T = {G * T} query rows per kv head need {zchunks} blocks on gridDim.z (max 65,535)")
    dev = device_index(q)
    max_len = int(lengths.max().item())
    n_splits = num_splits or decode_splits(B * H_kv * zchunks, max_len, device_sm_count(dev))
    split_len = math.ceil(max_len / n_splits)
    rows = B * H * T
    O_part = _out((B, H * T, n_splits, d), q, torch.float32)  # per split: output, max m, sum l
    m_part = _out((B, H * T, n_splits), q, torch.float32)
    l_part = _out((B, H * T, n_splits), q, torch.float32)
    fn = _kernel("decode.cu", names[0], dev, module_names=names)
    for b in chunks:
        _launch(
            fn,
            (n_splits, (b.stop - b.start) * H_kv, zchunks),
            (DECODE_THREADS,),
            (q[b], kc[b], vc[b], lengths[b], O_part[b], m_part[b], l_part[b], H, H_kv, T, S_stride)
            + (n_splits, split_len, float(scale), int(is_causal)),
            0,
            q.device,
        )
    O = _out(q.shape, q)
    L = _out((B, H, T), q, torch.float32)
    comb = _kernel("decode.cu", names[1], dev, module_names=names)
    _launch(comb, (rows,), (d,), (O_part, m_part, l_part, O, L, n_splits), 0, q.device)
    return O
