"""Run the fast (tensor-core) kernels' exact source on the CPU.

The fast kernels (``fast_forward.cu``, ``fast_backward.cu``) and the decode
kernel (``decode.cu``) reach the hardware only through the small wrappers of
``fast_common.cuh`` (``mma_*``, ``ldmatrix_*``, ``cp_async_*``, fp16
conversions). With ``MT_CPU_EMULATION`` defined those wrappers become plain
C++ built on ``__shfl_sync`` (fragments gathered lane by lane, as the PTX ISA
lays them out) and on ``cuda_cpu_mma.h`` (deferred, NaN-poisoning
``cp.async``; ``_Float16``). Everything else -- tiling, pipelining,
barriers, masks, the online softmax -- is the source NVRTC compiles.

``MT_SM`` picks the architecture's code path: 80 (``cp.async`` double
buffering, m16n8k16) or 75 (register-staged prefetch, each m16n8k16 as two
m16n8k8). The kernels are C++ templates; this module adds one
``extern "C"`` wrapper per instantiation so that :mod:`.runner` can launch
it. Inputs and outputs are NumPy arrays; 16-bit values are passed as their
bits (``uint16``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..cupy_bridge import fast_backward_config, fast_forward_config
from ..sources import kernel_source
from .runner import CpuModule, load_module

__all__ = ["fast_forward_cpu", "fast_backward_cpu", "decode_cpu", "emulated_module", "to_bits", "from_bits"]

MMA_HEADER = Path(__file__).with_name("cuda_cpu_mma.h")
_NP16 = {0: np.float16}  # numpy has no bfloat16: bf16 travels as uint16 bits

# (C parameter list, C argument list) of each kernel's extern "C" wrapper: the kernels' own names.
_FWD_PARAMS = (
    "const mt_u16* Q, const mt_u16* K, const mt_u16* V, mt_u16* O, float* L, "
    "int H, int H_kv, int N, int N_k, float scale, int is_causal",
    "Q, K, V, O, L, H, H_kv, N, N_k, scale, is_causal",
)
_BWD_PARAMS = (
    "const mt_u16* Q, const mt_u16* K, const mt_u16* V, const mt_u16* dO, const float* L, "
    "const float* Dvec, float* dQacc, mt_u16* dK, mt_u16* dV, int H, int H_kv, int N, int N_k, "
    "float scale, int is_causal",
    "Q, K, V, dO, L, Dvec, dQacc, dK, dV, H, H_kv, N, N_k, scale, is_causal",
)
_DOT_PARAMS = ("const mt_u16* dO, const mt_u16* O, float* Dvec, int rows", "dO, O, Dvec, rows")
_DEC_PARAMS = (
    "const void* Q, const void* K, const void* V, const int* lengths, float* O_part, float* m_part, "
    "float* l_part, int H, int H_kv, int T, int S_max, int n_splits, int split_len, float scale, "
    "int is_causal",
    "Q, K, V, lengths, O_part, m_part, l_part, H, H_kv, T, S_max, n_splits, split_len, scale, is_causal",
)
_COMB_PARAMS = (
    "const float* O_part, const float* m_part, const float* l_part, void* O, float* L, int n_splits",
    "O_part, m_part, l_part, O, L, n_splits",
)


def _wrapper(name: str, template: str, params: tuple[str, str]) -> str:
    return f'extern "C" __global__ void {name}({params[0]}) {{ {template}({params[1]}); }}\n'


def emulated_module(
    filename: str, sm: int, instantiations: tuple[tuple[str, str, tuple], ...], source: str | None = None
) -> CpuModule:
    """Compile ``filename`` for the CPU with ``MT_SM=sm`` and the given wrappers.

    ``instantiations``: ``(wrapper name, template name, params)`` triples.
    ``source``: another (self-contained) source to use instead of the file's
    (the tests pass mutated copies to check that bugs are caught).
    """
    if sm not in (75, 80):
        raise ValueError(f"sm={sm}: the emulation has the sm_75 and the sm_80+ code paths (75, 80)")
    prologue = (
        f"#define MT_CPU_EMULATION 1\n#define MT_SM {sm}\n"
        f'#line 1 "cuda_cpu_mma.h"\n{MMA_HEADER.read_text()}\n#line 1 "{filename}"\n'
    )
    wrappers = "".join(_wrapper(*inst) for inst in instantiations)
    body = source if source is not None else kernel_source(filename)
    return load_module(prologue + body + "\n" + wrappers, filename)


def to_bits(x: np.ndarray, dt: int) -> np.ndarray:
    """float array -> uint16 bits of fp16 (dt=0) or bf16 (dt=1), round to nearest even."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dt == 0:
        return x.astype(np.float16).view(np.uint16)
    u = x.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bits(bits: np.ndarray, dt: int) -> np.ndarray:
    """uint16 bits -> float32."""
    if dt == 0:
        return bits.view(np.float16).astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def fast_forward_cpu(
    q,
    k,
    v,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    dt: int = 0,
    sm: int = 80,
    schedule: str = "forward",
    seed: int = 0,
    source: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Execute ``flash_fwd_fast<d, dt>`` on the CPU.

    Args:
        q: ``(B, H, N, d)``; k, v: ``(B, H_kv, N_k, d)`` float arrays, rounded
            to fp16 (``dt=0``) or bf16 (``dt=1``) first.
        sm: 80 or 75 (which code path). schedule, seed: see ``cuda_cpu.h``.
        source: a mutated copy of the inlined source to run instead.

    Returns:
        ``O`` ``(B, H, N, d)`` float32 (from the 16-bit output) and ``L``
        ``(B, H, N)``, the log-sum-exp; both start as NaN, so unwritten elements stay NaN.
    """
    B, H, N, d = q.shape
    H_kv, N_k = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    name = f"emu_fwd_{d}_{dt}"
    mod = emulated_module("fast_forward.cu", sm, ((name, f"flash_fwd_fast<{d}, {dt}>", _FWD_PARAMS),), source)
    cfg = fast_forward_config(d, sm)
    O = np.full(q.shape, 0xFFFF, np.uint16)  # NaN bits
    L = np.full((B, H, N), np.nan, np.float32)
    mod.launch(
        name,
        (math.ceil(N / cfg.Br), B * H),
        (cfg.threads,),
        [to_bits(q, dt), to_bits(k, dt), to_bits(v, dt), O, L, H, H_kv, N, N_k, scale, int(is_causal)],
        shared_mem=cfg.smem_bytes,
        schedule=schedule,
        seed=seed,
    )
    return from_bits(O, dt), L


def fast_backward_cpu(
    q,
    k,
    v,
    O,
    dO,
    L,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    dt: int = 0,
    sm: int = 80,
    schedule: str = "forward",
    seed: int = 0,
    source: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Execute ``flash_bwd_dot_do_o`` + ``flash_bwd_fast<d, dt>`` on the CPU.

    Returns ``dq (B, H, N, d)`` fp32 and ``dk, dv (B, H_kv, N_k, d)`` (under
    grouped-query attention the kernel sums the query heads of a group).
    """
    B, H, N, d = q.shape
    H_kv, N_k = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    names = (f"emu_bwd_{d}_{dt}", f"emu_dot_{d}_{dt}")
    mod = emulated_module(
        "fast_backward.cu",
        sm,
        (
            (names[0], f"flash_bwd_fast<{d}, {dt}>", _BWD_PARAMS),
            (names[1], f"flash_bwd_dot_do_o<{d}, {dt}>", _DOT_PARAMS),
        ),
        source,
    )
    cfg = fast_backward_config(d, sm)
    O16, dO16 = to_bits(O, dt), to_bits(dO, dt)
    rows = B * H * N
    Dvec = np.full((B, H, N), np.nan, np.float32)
    mod.launch(names[1], (math.ceil(rows / 4),), (128,), [dO16, O16, Dvec, rows], schedule=schedule, seed=seed)
    dq = np.zeros(q.shape, np.float32)
    dk = np.full((B, H_kv, N_k, d), 0xFFFF, np.uint16)
    dv = np.full((B, H_kv, N_k, d), 0xFFFF, np.uint16)
    mod.launch(
        names[0],
        (math.ceil(N_k / cfg.Bc), B * H_kv),
        (cfg.threads,),
        [
            to_bits(q, dt),
            to_bits(k, dt),
            to_bits(v, dt),
            dO16,
            np.ascontiguousarray(L, np.float32),
            Dvec,
            dq,
            dk,
            dv,
            H,
            H_kv,
            N,
            N_k,
            scale,
            int(is_causal),
        ],
        shared_mem=cfg.smem_bytes,
        schedule=schedule,
        seed=seed,
    )
    return dq, from_bits(dk, dt), from_bits(dv, dt)


def decode_cpu(
    q,
    k_cache,
    v_cache,
    lengths,
    *,
    scale: float | None = None,
    num_splits: int = 4,
    rows_per_block: int | None = None,
    dt: int = 2,
    is_causal: bool = True,
    schedule: str = "forward",
    seed: int = 0,
    source: str | None = None,
) -> np.ndarray:
    """Execute ``flash_decode_partial`` + ``flash_decode_combine`` on the CPU.

    ``dt``: 2 fp32, 0 fp16, 1 bf16. ``source``: a (mutated) source to run instead of
    ``decode.cu``. Returns ``(B, H, T, d)`` float32.
    """
    from ..cupy_bridge import DECODE_ROWS

    B, H, T, d = q.shape
    H_kv, S = k_cache.shape[1], k_cache.shape[2]
    G = H // H_kv
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    R = rows_per_block or next((r for r in DECODE_ROWS if r >= G * T), DECODE_ROWS[-1])
    names = (f"emu_dec_{d}_{dt}_{R}", f"emu_comb_{d}_{dt}")
    mod = emulated_module(
        "decode.cu",
        80,
        (
            (names[0], f"flash_decode_partial<{d}, {dt}, {R}>", _DEC_PARAMS),
            (names[1], f"flash_decode_combine<{d}, {dt}>", _COMB_PARAMS),
        ),
        source,
    )
    conv = (lambda x: np.ascontiguousarray(x, np.float32)) if dt == 2 else (lambda x: to_bits(x, dt))
    lengths = np.ascontiguousarray(lengths, np.int32)
    split_len = math.ceil(int(lengths.max()) / num_splits)
    rows = B * H * T
    O_part = np.full((rows, num_splits, d), np.nan, np.float32)
    m_part = np.full((rows, num_splits), np.nan, np.float32)
    l_part = np.full((rows, num_splits), np.nan, np.float32)
    mod.launch(
        names[0],
        (num_splits, B * H_kv, math.ceil(G * T / R)),
        (128,),
        [
            conv(q),
            conv(k_cache),
            conv(v_cache),
            lengths,
            O_part,
            m_part,
            l_part,
            H,
            H_kv,
            T,
            S,
            num_splits,
            split_len,
            scale,
            int(is_causal),
        ],
        schedule=schedule,
        seed=seed,
    )
    O = np.full(q.shape, np.nan, np.float32) if dt == 2 else np.full(q.shape, 0xFFFF, np.uint16)
    L = np.full((B, H, T), np.nan, np.float32)
    mod.launch(names[1], (rows,), (d,), [O_part, m_part, l_part, O, L, num_splits], schedule=schedule, seed=seed)
    return O if dt == 2 else from_bits(O, dt)
