"""Every CUDA kernel compiles with NVRTC for sm_75, sm_80 and sm_90 -- without a GPU.

NVRTC is what CuPy compiles with at run time (nvcc accepts sources NVRTC
rejects). ``nvidia-cuda-nvrtc-cu12`` + ``cupy-cuda12x`` give a device-free
NVRTC (``cupy_backends.cuda.libs.nvrtc``). The sources, options and template
name expressions come from :mod:`minitransformer.flash.cupy_bridge`, the code
that compiles them on a GPU, so the two cannot drift.

Every file is compiled to ``sm_XX`` (cubin), which runs the same front end as
``compute_XX`` (PTX; ``__CUDA_ARCH__`` is the same) *and then ptxas*. That
matters: compiling to ``compute_XX`` pastes inline PTX into the output
unchecked, so an ``mma.m16n8k16.f16`` in the sm_75 path would pass; ptxas
rejects instructions the architecture lacks (see
``test_ptxas_rejects_sm80_mma_on_turing``). Cubin is also what CuPy builds on
a real device. The PTX targets are checked for the fast forward kernel's
instruction selection.
"""

from __future__ import annotations

import pytest

nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="needs cupy-cuda12x and nvidia-cuda-nvrtc-cu12")

from minitransformer.flash import cupy_bridge as bridge  # noqa: E402
from minitransformer.flash import resources  # noqa: E402
from minitransformer.flash.sources import kernel_source  # noqa: E402

ARCHS = (75, 80, 90)


def _compile(filename: str, target: str, arch: int) -> tuple[bytes, str, list[str]]:
    """Compile like cupy.RawModule does; return (output, log, lowered names)."""
    names = bridge.name_expressions(filename, arch)
    prog = nvrtc.createProgram(kernel_source(filename), filename, [], [])
    try:
        for name in names:
            nvrtc.addNameExpression(prog, name)
        options = [f"--gpu-architecture={target}", *bridge.NVRTC_OPTIONS]
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as err:
            pytest.fail(f"{filename} for {target}: {err}\n{nvrtc.getProgramLog(prog)}")
        out = nvrtc.getCUBIN(prog) if target.startswith("sm_") else nvrtc.getPTX(prog)
        lowered = [nvrtc.getLoweredName(prog, name) for name in names]
        return out, nvrtc.getProgramLog(prog), lowered
    finally:
        nvrtc.destroyProgram(prog)


def _supported(arch: int) -> bool:
    return arch in nvrtc.getSupportedArchs()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", bridge.KERNEL_FILES)
def test_kernel_compiles_to_cubin(filename: str, arch: int) -> None:
    """Through :func:`~minitransformer.flash.resources.compile_cubin`: the same compile (cached)
    gives tests/test_kernel_resources.py its ptxas report."""
    if not _supported(arch):
        pytest.skip(f"this NVRTC cannot target sm_{arch}")
    compiled = resources.compile_cubin(filename, arch)
    assert compiled.cubin_bytes > 1000
    assert "warning" not in compiled.log.lower(), compiled.log
    names = bridge.name_expressions(filename, arch)
    templates = {m: n for m, n in compiled.lowered.items() if m != n}  # extern "C" names map to themselves
    assert sorted(templates.values()) == sorted(names)
    assert all(m.startswith("_Z") for m in templates)  # mangled template instantiations


@pytest.mark.slow
def test_turing_path_uses_only_turing_mma() -> None:
    """sm_75 gets m16n8k8 (two per 16-deep step); sm_80+ gets m16n8k16 and cp.async."""
    ptx75 = _compile("fast_forward.cu", "compute_75", 75)[0]
    ptx80 = _compile("fast_forward.cu", "compute_80", 80)[0]
    ptx75, ptx80 = (p.decode() if isinstance(p, bytes) else p for p in (ptx75, ptx80))
    assert "m16n8k8" in ptx75 and "m16n8k16" not in ptx75 and "cp.async" not in ptx75
    assert "m16n8k16" in ptx80 and "cp.async.cg" in ptx80 and "ldmatrix" in ptx80


def test_ptxas_rejects_sm80_mma_on_turing() -> None:
    """The cubin check has teeth: the sm_80 instruction does not assemble for sm_75."""
    src = (
        'extern "C" __global__ void k(float* c, const unsigned* a) {\n'
        '  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 '
        '{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"'
        ' : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])'
        ' : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(a[4]), "r"(a[5]));\n}\n'
    )
    prog = nvrtc.createProgram(src, "k.cu", [], [])
    try:
        with pytest.raises(nvrtc.NVRTCError):
            nvrtc.compileProgram(prog, ["--gpu-architecture=sm_75"])
        assert "sm_80" in nvrtc.getProgramLog(prog)
    finally:
        nvrtc.destroyProgram(prog)


def test_name_expressions_cover_the_launchers() -> None:
    """Every instantiation a launcher can ask for is compiled."""
    for arch in ARCHS:
        fwd = bridge.name_expressions("fast_forward.cu", arch)
        bwd = bridge.name_expressions("fast_backward.cu", arch)
        dec = bridge.name_expressions("decode.cu", arch)
        types = (bridge.F16, bridge.BF16) if arch >= 80 else (bridge.F16,)
        for d in bridge.FAST_HEAD_DIMS:
            for t in types:
                assert f"flash_fwd_fast<{d}, {t}>" in fwd
                assert f"flash_bwd_fast<{d}, {t}>" in bwd and f"flash_bwd_dot_do_o<{d}, {t}>" in bwd
        for d in bridge.DECODE_HEAD_DIMS:
            for t in (bridge.F32,) + types:
                assert f"flash_decode_combine<{d}, {t}>" in dec
                for r in bridge.DECODE_ROWS:
                    assert f"flash_decode_partial<{d}, {t}, {r}>" in dec
    assert not any("1>" in n for n in bridge.name_expressions("fast_forward.cu", 75))  # no bf16 on T4
    with pytest.raises(ValueError, match="unknown kernel file"):
        bridge.name_expressions("nope.cu", 80)


def test_shuffle_emulation_variant_compiles_for_the_gpu() -> None:
    """-DMT_PTX_VIA_SHUFFLES (the CPU emulation's bodies) is valid CUDA too: the GPU test
    compares it with the real mma/ldmatrix."""
    prog = nvrtc.createProgram(kernel_source("fast_forward.cu"), "fast_forward.cu", [], [])
    try:
        nvrtc.addNameExpression(prog, "flash_fwd_fast<64, 0>")
        nvrtc.compileProgram(prog, ["--gpu-architecture=sm_80", *bridge.NVRTC_OPTIONS, "-DMT_PTX_VIA_SHUFFLES"])
        ptx = nvrtc.getPTX(prog)
        ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
        assert "mma.sync" not in ptx and "ldmatrix" not in ptx and "shfl.sync" in ptx
    finally:
        nvrtc.destroyProgram(prog)


_ALL_WRAPPERS = r"""
extern "C" __global__ void all_wrappers(const mt_u16* g, float* out) {
  __shared__ __align__(16) mt_u16 tile[16 * 24];
  cp_async_16(tile + (threadIdx.x % 16) * 24, g + (threadIdx.x % 16) * 8, threadIdx.x < 16);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  const mt_u16* row = tile + (threadIdx.x % 16) * 24;
  mt_u32 a[4], b[4], c2[2], d2[2];
  ldmatrix_x4(a, row);
  ldmatrix_x4_trans(b, row);
  ldmatrix_x2(c2, row);
  ldmatrix_x2_trans(d2, row);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  mma_m16n8k8_f16(acc, c2, d2[0]);
  mma_k16<MT_F16>(acc, a, b);
#if MT_SM >= 80
  mma_m16n8k16_f16(acc, a, b);
  mma_m16n8k16_bf16(acc, a, b + 2);
#endif
  out[threadIdx.x] = acc[0] + acc[1] + acc[2] + acc[3] + quad_max(acc[0]) + quad_sum(acc[1])
                     + to_float<MT_BF16>(from_float<MT_BF16>(acc[2])) + lo_f<MT_F16>(pack2<MT_F16>(acc[3], 1.f));
}
"""


@pytest.mark.parametrize("arch", ARCHS)
def test_every_ptx_wrapper_assembles(arch: int) -> None:
    """ptxas only sees the inline PTX of functions a kernel uses: this kernel uses them all
    (including the ones the fast kernels do not call today)."""
    src = kernel_source("fast_forward.cu") + _ALL_WRAPPERS
    prog = nvrtc.createProgram(src, "wrappers.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, [f"--gpu-architecture=sm_{arch}", *bridge.NVRTC_OPTIONS])
        except nvrtc.NVRTCError as err:
            pytest.fail(f"sm_{arch}: {err}\n{nvrtc.getProgramLog(prog)}")
        assert len(nvrtc.getCUBIN(prog)) > 1000
    finally:
        nvrtc.destroyProgram(prog)
