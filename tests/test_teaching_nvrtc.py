"""The teaching kernels compile with NVRTC (what CuPy uses) for sm_75, sm_80 and sm_90.

No GPU is needed: ``cupy_backends.cuda.libs.nvrtc`` with the pip package
``nvidia-cuda-nvrtc-cu12`` compiles device code on any machine. nvcc accepts
things NVRTC rejects (``INFINITY``, system headers), so this is the check that
matters for ``cupy.RawModule``.
"""

from __future__ import annotations

import re

import pytest

from minitransformer.flash.sources import kernel_source

nvrtc = pytest.importorskip(
    "cupy_backends.cuda.libs.nvrtc", reason="needs cupy-cuda12x (and nvidia-cuda-nvrtc-cu12) for NVRTC"
)

# file -> {kernel: number of parameters in the documented signature}
KERNELS = {
    "teaching_forward.cu": {"flash_fwd_teaching": 14},
    "teaching_backward.cu": {"flash_bwd_preprocess": 5, "flash_bwd_teaching": 18},
}
ARCHS = ["75", "80", "90"]


def compile_nvrtc(source: str, name: str, options: list[str], names: list[str]):
    try:
        prog = nvrtc.createProgram(source, name, [], [])
    except Exception as e:  # libnvrtc missing
        pytest.skip(f"NVRTC is not loadable here: {e}")
    try:
        for n in names:
            nvrtc.addNameExpression(prog, n)
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as e:
            pytest.fail(f"NVRTC rejected {name} with {options}: {e}\n{nvrtc.getProgramLog(prog)}")
        return (
            nvrtc.getPTX(prog).decode(),
            {n: nvrtc.getLoweredName(prog, n) for n in names},
            nvrtc.getProgramLog(prog),
        )
    finally:
        nvrtc.destroyProgram(prog)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", list(KERNELS))
def test_teaching_kernel_compiles_with_nvrtc(filename, arch):
    kernels = KERNELS[filename]
    ptx, lowered, log = compile_nvrtc(
        kernel_source(filename), filename, [f"--gpu-architecture=compute_{arch}"], list(kernels)
    )
    for name, n_params in kernels.items():
        assert lowered[name] == name  # extern "C": the launcher's names as written
        entry = re.search(rf"\.entry {name}\((.*?)\)", ptx, flags=re.S)
        assert entry, f"{name} missing from the PTX of {filename}"
        assert entry.group(1).count(".param") == n_params
    assert ".local" not in ptx, "per-thread arrays spilled to local memory"
    assert "warning" not in log.lower(), log


@pytest.mark.parametrize("arch", ARCHS)
def test_teaching_kernels_assemble_to_cubin(arch):
    """Real machine code (NVRTC runs ptxas): register and shared-memory limits are met."""
    for filename in KERNELS:
        prog = nvrtc.createProgram(kernel_source(filename), filename, [], [])
        try:
            nvrtc.compileProgram(prog, [f"--gpu-architecture=sm_{arch}"])
            assert len(nvrtc.getCUBIN(prog)) > 1000
        finally:
            nvrtc.destroyProgram(prog)
