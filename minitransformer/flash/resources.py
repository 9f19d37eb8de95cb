"""What each compiled kernel costs the GPU: registers, shared memory, spills, blocks per SM.

No GPU is needed. Every kernel instantiation is compiled exactly as the
launcher compiles it (:func:`~minitransformer.flash.sources.kernel_source`,
:data:`~minitransformer.flash.cupy_bridge.NVRTC_OPTIONS` and
:func:`~minitransformer.flash.cupy_bridge.name_expressions`) by NVRTC to a
cubin for ``sm_XX``, with ``--ptxas-options=-v``: ptxas then reports, per
kernel, the registers per thread, the static shared memory, the stack frame
and the bytes spilled to local memory. :func:`occupancy` adds the launch
shape the launcher uses (threads per block, dynamic shared memory) and the
per-SM limits of the architecture, and gives the blocks that can be resident
on one SM at a time, and what limits them.

The limits (:data:`ARCH_LIMITS`) are the CUDA C++ Programming Guide's
"Technical Specifications per Compute Capability" table (registers, threads,
blocks and shared memory per SM, shared memory per block) and the allocation
rules of the CUDA occupancy calculator, ``cuda_occupancy.h`` in the CUDA
toolkit (``cudaOccMaxBlocksPerSMRegsLimit``, ``cudaOccMaxBlocksPerSMSmemLimit``):
registers are allocated per warp in units of 256 within each of the 4 SM
sub-partitions; shared memory in units of 256 bytes (7.x) or 128 bytes (8.x,
9.x), plus 1 KB the system reserves per block on 8.x and 9.x.

NVRTC comes with ``cupy-cuda12x`` + ``nvidia-cuda-nvrtc-cu12`` and is imported
on first use: ``import minitransformer`` never needs it.
``scripts/kernel_resources.py`` writes the table into ``benchmarks/RESULTS.md``;
``tests/test_kernel_resources.py`` asserts the requirements.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from . import cupy_bridge as bridge
from .sources import kernel_source
from .tiles import BACKWARD_THREADS, PREPROCESS_THREADS, choose_tiles

__all__ = [
    "ARCHS",
    "ArchLimits",
    "ARCH_LIMITS",
    "KernelResources",
    "Launch",
    "parse_ptxas_log",
    "Compiled",
    "compile_cubin",
    "compile_resources",
    "occupancy",
    "launches",
    "resource_table",
    "required_blocks",
    "OCCUPANCY_EXCEPTIONS",
    "markdown_table",
]

ARCHS = (75, 80, 90)  # what the package supports: T4 / A100 / H100 (and what CI compiles)


@dataclass(frozen=True)
class ArchLimits:
    """Per-SM limits of one compute capability (bytes for memory, counts otherwise)."""

    arch: int
    max_threads_per_sm: int
    max_blocks_per_sm: int
    smem_per_sm: int  # the largest shared-memory carve-out of an SM
    smem_per_block_optin: int  # the most one block may be granted (cudaFuncSetAttribute)
    smem_reserved_per_block: int  # taken by the system from every block's share (8.x, 9.x)
    smem_alloc_unit: int
    regs_per_sm: int = 65536
    reg_alloc_unit: int = 256  # registers are allocated per warp, in units of 256
    sub_partitions: int = 4  # each holds a quarter of the register file
    max_regs_per_thread: int = 255


KB = 1024
ARCH_LIMITS = {
    75: ArchLimits(75, 1024, 16, 64 * KB, 64 * KB, 0, 256),  # Turing: T4
    80: ArchLimits(80, 2048, 32, 164 * KB, 163 * KB, 1 * KB, 128),  # Ampere: A100
    90: ArchLimits(90, 2048, 32, 228 * KB, 227 * KB, 1 * KB, 128),  # Hopper: H100
}


@dataclass(frozen=True)
class KernelResources:
    """ptxas's report for one kernel instantiation on one architecture."""

    name: str  # as the launcher names it: "flash_fwd_fast<64, 0>" or "flash_fwd_teaching"
    filename: str
    arch: int
    registers: int  # per thread
    static_smem: int  # bytes of __shared__ arrays
    stack_frame: int  # bytes of per-thread local memory the kernel reserves
    spill_stores: int
    spill_loads: int


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for 'sm_(\d+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log: str) -> dict[str, dict[str, int]]:
    """Parse ``ptxas -v`` output into ``{mangled kernel name: resources}``.

    Each kernel's section starts with ``Compiling entry function '<name>'``;
    it gives ``stack_frame``, ``spill_stores``, ``spill_loads``, ``registers``
    and ``static_smem`` (0 when ptxas prints no ``smem``).
    """
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        entry = _ENTRY.search(line)
        if entry:
            current = out.setdefault(entry.group(1), {"static_smem": 0})
            continue
        if current is None:
            continue
        props = _PROPS.search(line)
        if props:
            current["stack_frame"], current["spill_stores"], current["spill_loads"] = map(int, props.groups())
        used = _USED.search(line)
        if used:
            current["registers"] = int(used.group(1))
            smem = _SMEM.search(line)
            if smem:
                current["static_smem"] = int(smem.group(1))
    for name, res in out.items():
        missing = {"registers", "stack_frame"} - set(res)
        if missing:
            raise ValueError(f"ptxas report for {name} lacks {sorted(missing)}:\n{log}")
    return out


def _extern_c_kernels(source: str) -> tuple[str, ...]:
    return tuple(re.findall(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)', source))


@dataclass(frozen=True)
class Compiled:
    """One kernel file compiled for one architecture (what :func:`compile_cubin` returns)."""

    filename: str
    arch: int
    cubin_bytes: int
    log: str  # NVRTC's log, with ptxas's verbose report
    lowered: dict[str, str]  # mangled name -> the name the launcher writes


@functools.cache
def compile_cubin(filename: str, arch: int) -> Compiled:
    """Compile ``filename`` to a cubin for ``sm_<arch>`` exactly as the launcher does, plus ``-v``.

    The sources, options and name expressions are the launcher's
    (:func:`~minitransformer.flash.sources.kernel_source`,
    :data:`~minitransformer.flash.cupy_bridge.NVRTC_OPTIONS`,
    :func:`~minitransformer.flash.cupy_bridge.name_expressions`); ``--ptxas-options=-v``
    only adds the resource report to the log. Cached: once per (file, arch) per process,
    shared by the NVRTC tests and the resource tests.

    Raises:
        RuntimeError: NVRTC is missing or rejects the source (with its log).
    """
    try:
        from cupy_backends.cuda.libs import nvrtc
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError("kernel resources need NVRTC: pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12") from err
    source = kernel_source(filename)
    names = bridge.name_expressions(filename, arch)
    prog = nvrtc.createProgram(source, filename, [], [])
    try:
        for name in names:
            nvrtc.addNameExpression(prog, name)
        options = [f"--gpu-architecture=sm_{arch}", *bridge.NVRTC_OPTIONS, "--ptxas-options=-v"]
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as err:
            raise RuntimeError(f"{filename} for sm_{arch}: {err}\n{nvrtc.getProgramLog(prog)}") from err
        log = nvrtc.getProgramLog(prog)
        lowered = {nvrtc.getLoweredName(prog, name): name for name in names}
        cubin_bytes = len(nvrtc.getCUBIN(prog))
    finally:
        nvrtc.destroyProgram(prog)
    lowered.update({k: k for k in _extern_c_kernels(source)})
    return Compiled(filename, arch, cubin_bytes, log, lowered)


def compile_resources(filename: str, arch: int) -> dict[str, KernelResources]:
    """ptxas's report per kernel of ``filename`` compiled for ``sm_<arch>`` (:func:`compile_cubin`).

    Args:
        filename: one of :data:`~minitransformer.flash.cupy_bridge.KERNEL_FILES`.
        arch: compute capability, e.g. 75, 80, 90.

    Returns:
        ``{name: KernelResources}``, names as the launcher writes them (template
        name expressions, or the ``extern "C"`` names).
    """
    compiled = compile_cubin(filename, arch)
    return {
        compiled.lowered[mangled]: KernelResources(name=compiled.lowered[mangled], filename=filename, arch=arch, **res)
        for mangled, res in parse_ptxas_log(compiled.log).items()
        if mangled in compiled.lowered
    }


@dataclass(frozen=True)
class Launch:
    """One kernel as launched on one architecture, and how many of its blocks fit on an SM."""

    kernel: KernelResources
    head_dim: int
    threads: int  # per block
    dynamic_smem: int  # bytes the launcher requests
    blocks_per_sm: int
    limited_by: str  # "registers", "shared memory", "threads" or "blocks"

    @property
    def smem(self) -> int:
        """Shared memory per block, static + dynamic (bytes; without the reserved 1 KB)."""
        return self.kernel.static_smem + self.dynamic_smem


def occupancy(registers: int, threads: int, smem_bytes: int, arch: int) -> tuple[int, str]:
    """Resident blocks per SM and the resource that limits them (cuda_occupancy.h's rules).

    Args:
        registers: per thread (ptxas's "Used N registers").
        threads: per block.
        smem_bytes: static + dynamic shared memory per block.
        arch: 75, 80 or 90 (:data:`ARCH_LIMITS`).

    Returns:
        ``(blocks, limiter)``; ``blocks`` is 0 when one block does not fit at all.
    """
    lim = ARCH_LIMITS[arch]
    warps = -(-threads // 32)
    regs_per_warp = -(-(registers * 32) // lim.reg_alloc_unit) * lim.reg_alloc_unit
    if registers > lim.max_regs_per_thread or regs_per_warp * warps > lim.regs_per_sm:
        by_regs = 0
    elif regs_per_warp == 0:
        by_regs = lim.max_blocks_per_sm
    else:
        warps_per_sub = (lim.regs_per_sm // lim.sub_partitions) // regs_per_warp
        by_regs = warps_per_sub * lim.sub_partitions // warps
    smem = smem_bytes + lim.smem_reserved_per_block
    smem = -(-smem // lim.smem_alloc_unit) * lim.smem_alloc_unit
    if smem_bytes > lim.smem_per_block_optin:
        by_smem = 0
    else:
        by_smem = lim.smem_per_sm // smem if smem else lim.max_blocks_per_sm
    limits = {
        "registers": by_regs,
        "shared memory": by_smem,
        "threads": lim.max_threads_per_sm // (warps * 32),
        "blocks": lim.max_blocks_per_sm,
    }
    limiter = min(limits, key=limits.get)
    return limits[limiter], limiter


def launches(filename: str, arch: int) -> Iterator[tuple[str, int, int, int]]:
    """``(name, head_dim, threads, dynamic_smem)`` of every launch the launcher makes from ``filename``.

    The numbers come from the launcher's own configuration functions and
    constants (:mod:`~minitransformer.flash.cupy_bridge`,
    :mod:`~minitransformer.flash.tiles`). The teaching kernels take any head
    dim; they are listed for 32, 64 and 128 with the tiles
    :func:`~minitransformer.flash.tiles.choose_tiles` picks under the
    architecture's per-block opt-in limit.
    """
    optin = ARCH_LIMITS[arch].smem_per_block_optin
    if filename == "teaching_forward.cu":
        for d in bridge.FAST_HEAD_DIMS:
            cfg = choose_tiles(d, optin).forward
            yield "flash_fwd_teaching", d, cfg.threads, cfg.smem_bytes
    elif filename == "teaching_backward.cu":
        for d in bridge.FAST_HEAD_DIMS:
            yield "flash_bwd_preprocess", d, PREPROCESS_THREADS, 0
            cfg = choose_tiles(d, optin).backward
            yield "flash_bwd_teaching", d, BACKWARD_THREADS, cfg.smem_bytes
    else:
        for name in bridge.name_expressions(filename, arch):
            d = int(name.split("<")[1].split(",")[0])
            if name.startswith("flash_fwd_fast"):
                cfg = bridge.fast_forward_config(d, arch)
                yield name, d, cfg.threads, cfg.smem_bytes
            elif name.startswith("flash_bwd_fast"):
                cfg = bridge.fast_backward_config(d, arch)
                yield name, d, cfg.threads, cfg.smem_bytes
            elif name.startswith("flash_bwd_dot_do_o"):
                yield name, d, bridge.DOT_DO_O_THREADS, 0
            elif name.startswith("flash_decode_partial"):
                yield name, d, bridge.DECODE_THREADS, 0
            elif name.startswith("flash_decode_combine"):
                yield name, d, d, 0
            else:  # pragma: no cover - a new kernel must be added here
                raise ValueError(f"no launch shape known for {name}")


def resource_table(archs: tuple[int, ...] = ARCHS, files: tuple[str, ...] | None = None) -> list[Launch]:
    """Every launch of every kernel file on every architecture, with its resources and occupancy."""
    rows = []
    for filename in files or bridge.KERNEL_FILES:
        for arch in archs:
            report = compile_resources(filename, arch)
            for name, d, threads, dyn in launches(filename, arch):
                res = report[name]
                blocks, limiter = occupancy(res.registers, threads, res.static_smem + dyn, arch)
                rows.append(Launch(res, d, threads, dyn, blocks, limiter))
    return rows


def required_blocks(launch: Launch) -> int:
    """The blocks per SM a launch must allow (issue 20): at least 2 for the fast and decode
    kernels at d <= 64 on sm_75 and at d <= 128 on sm_80+, so that one block's barrier or
    memory wait can be covered by another block; otherwise (teaching kernels, d = 128 on
    sm_75) 1, i.e. it must fit at all.

    The teaching kernels are exempt by design: :func:`~minitransformer.flash.tiles.choose_tiles`
    gives them the largest tiles that fit one block's opt-in limit, trading occupancy for
    tile reuse, and they are written to be read, not to be fast.
    """
    k = launch.kernel
    if k.filename.startswith("teaching_"):
        return 1
    if launch.head_dim <= (64 if k.arch < 80 else 128):
        return 2
    return 1


# (name, arch) -> why it cannot reach required_blocks(); tests fail if an entry is no
# longer needed, so the list stays true.
OCCUPANCY_EXCEPTIONS: dict[tuple[str, int], str] = {}


def markdown_table(rows: list[Launch]) -> str:
    """The rows as a Markdown table (one line per kernel, head dim and architecture)."""
    lines = [
        "| kernel | d | arch | registers | shared memory (B) | stack / spills (B) | threads | blocks/SM "
        "| limited by | required |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        k = r.kernel
        smem = f"{r.smem}" if not k.static_smem else f"{r.smem} ({k.static_smem} static)"
        need = required_blocks(r)
        mark = f"{need}" + (" (exception)" if (k.name, k.arch) in OCCUPANCY_EXCEPTIONS else "")
        lines.append(
            f"| `{k.name}` | {r.head_dim} | sm_{k.arch} | {k.registers} | {smem} | "
            f"{k.stack_frame} / {k.spill_stores + k.spill_loads} | {r.threads} | {r.blocks_per_sm} | {r.limited_by} "
            f"| {mark} |"
        )
    return "\n".join(lines)
