"""Resource checks of every CUDA kernel instantiation, from ptxas' report -- no GPU needed.

:func:`minitransformer.flash.resources.compile_resources` compiles each kernel file
for sm_75, sm_80 and sm_90 exactly as the launcher does, with ``--ptxas-options=-v``
(each (file, arch) once per session: about half a minute for all of them on 2 cores,
hence ``slow``). Asserted for every launch the launcher can make:

* no bytes spilled to local memory and no stack frame;
* the blocks per SM that its registers, shared memory (static + the dynamic amount
  the launcher requests) and threads allow reach
  :func:`~minitransformer.flash.resources.required_blocks` (2 for the fast and decode
  kernels at d <= 64 on sm_75 and d <= 128 on sm_80+), except for the instantiations
  in :data:`~minitransformer.flash.resources.OCCUPANCY_EXCEPTIONS`, each with its
  measured reason -- and an exception that is no longer needed fails, so the list
  stays true;
* benchmarks/RESULTS.md holds the table the script writes from these numbers.

The parser and the occupancy arithmetic are checked on fixed inputs (fast, not slow).
"""

from __future__ import annotations

import importlib.util

import pytest

from helpers import ROOT
from minitransformer.flash import resources as res

HAVE_NVRTC = importlib.util.find_spec("cupy_backends") is not None
needs_nvrtc = pytest.mark.skipif(not HAVE_NVRTC, reason="needs cupy-cuda12x and nvidia-cuda-nvrtc-cu12")

LOG = """ptxas info    : 72 bytes gmem, 144 bytes cmem[4]
ptxas info    : Compiling entry function '_Z14flash_bwd_fastILi128ELi1EEvPKt' for 'sm_80'
ptxas info    : Function properties for _Z14flash_bwd_fastILi128ELi1EEvPKt
ptxas         .     528 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 236 registers, used 1 barriers, 528 bytes cumulative stack size, 448 bytes cmem[0]
ptxas info    : Compiling entry function 'flash_decode' for 'sm_80'
ptxas info    : Function properties for flash_decode
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 8256 bytes smem, 400 bytes cmem[0]
"""


def test_parse_ptxas_log() -> None:
    report = res.parse_ptxas_log(LOG)
    assert report["_Z14flash_bwd_fastILi128ELi1EEvPKt"] == {
        "static_smem": 0,
        "stack_frame": 528,
        "spill_stores": 8,
        "spill_loads": 4,
        "registers": 236,
    }
    assert report["flash_decode"]["static_smem"] == 8256 and report["flash_decode"]["registers"] == 40
    with pytest.raises(ValueError, match="lacks"):
        res.parse_ptxas_log("ptxas info    : Compiling entry function 'k' for 'sm_80'\n")


@pytest.mark.parametrize(
    ("regs", "threads", "smem", "arch", "expected"),
    [
        (255, 128, 0, 80, (2, "registers")),  # 8192 registers per warp: 2 warps per sub-partition
        (128, 128, 0, 80, (4, "registers")),
        (32, 256, 0, 75, (4, "threads")),  # 1024 threads per SM on Turing
        (32, 32, 0, 80, (32, "blocks")),
        (64, 128, 32768, 75, (2, "shared memory")),  # exactly half of 64 KB, no reserve on 7.5
        (64, 128, 32768, 80, (4, "shared memory")),  # 164 KB / (32 KB + 1 KB reserved)
        (64, 128, 87040, 80, (1, "shared memory")),  # (85 KB + 1 KB) * 2 > 164 KB
        (64, 128, 87040, 90, (2, "shared memory")),
        (64, 128, 70 * 1024, 75, (0, "shared memory")),  # over the per-block limit: does not fit
    ],
)
def test_occupancy_arithmetic(regs, threads, smem, arch, expected) -> None:
    assert res.occupancy(regs, threads, smem, arch) == expected


@pytest.fixture(scope="module")
def table() -> list[res.Launch]:
    return res.resource_table()  # compile_resources is cached: once per (file, arch) per session


@pytest.mark.slow
@needs_nvrtc
def test_every_launch_is_in_the_table(table) -> None:
    """Every instantiation the launcher compiles, on every arch, has its row and its resources."""
    from minitransformer.flash import cupy_bridge as bridge

    for arch in res.ARCHS:
        names = {r.kernel.name for r in table if r.kernel.arch == arch}
        for filename in bridge.KERNEL_FILES:
            assert set(bridge.name_expressions(filename, arch)) <= names
        assert {"flash_fwd_teaching", "flash_bwd_preprocess", "flash_bwd_teaching"} <= names
    assert all(r.kernel.registers > 0 and r.threads > 0 for r in table)


@pytest.mark.slow
@needs_nvrtc
def test_no_spills_and_no_stack_frame(table) -> None:
    bad = [
        f"{r.kernel.name} sm_{r.kernel.arch}: stack {r.kernel.stack_frame} B, spills "
        f"{r.kernel.spill_stores} B stored / {r.kernel.spill_loads} B loaded"
        for r in table
        if r.kernel.stack_frame or r.kernel.spill_stores or r.kernel.spill_loads
    ]
    assert not bad, "\n".join(dict.fromkeys(bad))


@pytest.mark.slow
@needs_nvrtc
def test_blocks_per_sm(table) -> None:
    """At least 2 blocks per SM where required, every launch fits at all, exceptions are still needed."""
    short, stale = [], set(res.OCCUPANCY_EXCEPTIONS)
    for r in table:
        need, key = res.required_blocks(r), (r.kernel.name, r.kernel.arch)
        assert r.blocks_per_sm >= 1, f"{key}: one block does not fit ({r.smem} B, {r.kernel.registers} registers)"
        if r.blocks_per_sm < need:
            if key in res.OCCUPANCY_EXCEPTIONS:
                stale.discard(key)
            else:
                short.append(
                    f"{r.kernel.name} d={r.head_dim} sm_{r.kernel.arch}: {r.blocks_per_sm} < {need} blocks/SM, "
                    f"limited by {r.limited_by} ({r.kernel.registers} registers, {r.smem} B shared memory)"
                )
    assert not short, "\n".join(short)
    assert not stale, f"exceptions no longer needed (remove them): {sorted(stale)}"


@pytest.mark.slow
@needs_nvrtc
def test_results_md_holds_the_current_table() -> None:
    spec = importlib.util.spec_from_file_location("kernel_resources", ROOT / "scripts" / "kernel_resources.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    assert mod.replace_section(text, mod.section()) == text, "run: python scripts/kernel_resources.py"
