"""The teaching CUDA kernels' exact sources, executed on the CPU through cuda_cpu.h.

Each kernel is compiled with g++ against the emulation header and launched on
NumPy arrays: threads as fibers under several schedules, NaN-poisoned shared
memory with guard zones, NaN guard zones around every array argument, outputs
NaN before the launch. The results must equal float64 attention and its
gradients; and mutated copies of the kernels (a barrier removed, a guard off
by one, ...) must be caught by the same checks, which proves the checks bite.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minitransformer.flash.cpu_cuda.runner import (
    KernelError,
    gxx_available,
    load_module,
    teaching_backward_cpu,
    teaching_forward_cpu,
)
from minitransformer.flash.sources import kernel_source
from minitransformer.reference import gqa_attention_ref

pytestmark = pytest.mark.skipif(
    not gxx_available(), reason="g++ not found: the CUDA-on-CPU emulation compiles kernels with g++"
)

FWD_SRC = kernel_source("teaching_forward.cu")
BWD_SRC = kernel_source("teaching_backward.cu")
ATOL_OUT = 5e-6  # fp32 kernel vs float64 (measured ~1e-6)
ATOL_GRAD = 2e-5


def make(B, H, H_kv, N, d, N_k=None, seed=0):
    rng = np.random.default_rng(seed)
    N_k = N if N_k is None else N_k
    q = rng.standard_normal((B, H, N, d)).astype(np.float32)
    k = rng.standard_normal((B, H_kv, N_k, d)).astype(np.float32)
    v = rng.standard_normal((B, H_kv, N_k, d)).astype(np.float32)
    dO = rng.standard_normal((B, H, N, d)).astype(np.float32)
    return q, k, v, dO


def reference(q, k, v, dO, causal):
    """Float64 output, log-sum-exp and gradients (the package's reference), as NumPy arrays."""
    return tuple(t.numpy() for t in gqa_attention_ref(q, k, v, is_causal=causal, dO=dO))


def max_err(got, want) -> float:
    """Max abs error; NaN anywhere (an unwritten or poisoned element) counts as infinite."""
    return math.inf if not np.all(np.isfinite(got)) else float(np.max(np.abs(got - want), initial=0.0))


# (B, H, H_kv, N, N_k, d, causal, Br, Bc): one tile with a tail (N below the tile), several
# tiles with a partial last one, N_q != N_k, grouped-query heads, head dims 16/32/64/128.
FWD_CASES = [
    (1, 2, 1, 5, 5, 16, False, 16, 32),
    (1, 2, 2, 70, 70, 64, True, 16, 32),
    (2, 1, 1, 45, 77, 32, False, 8, 16),
]
BWD_CASES = [
    (1, 2, 1, 5, 5, 16, False, 16, 16),
    (1, 2, 2, 70, 70, 64, True, 16, 32),
    (2, 2, 1, 45, 77, 32, False, 8, 16),
]


def forward_failure(case, schedule, source=FWD_SRC) -> str | None:
    """Run the forward kernel on one case; return why it fails, or None."""
    B, H, H_kv, N, N_k, d, causal, Br, Bc = case
    q, k, v, dO = make(B, H, H_kv, N, d, N_k)
    out, L_ref, *_ = reference(q, k, v, dO, causal)
    try:
        O, L = teaching_forward_cpu(q, k, v, is_causal=causal, Br=Br, Bc=Bc, schedule=schedule, source=source)
    except KernelError as e:
        return f"kernel error: {e}"
    errs = max_err(O, out), max_err(L, L_ref)
    return None if max(errs) <= ATOL_OUT else f"{case} {schedule}: errors O {errs[0]:.2e}, L {errs[1]:.2e}"


def backward_failure(case, schedule, source=BWD_SRC, threads=256) -> str | None:
    """Run the backward kernels (on the float64 O and L) on one case; return why they fail, or None."""
    B, H, H_kv, N, N_k, d, causal, Br, Bc = case
    q, k, v, dO = make(B, H, H_kv, N, d, N_k, seed=1)
    out, L, dq_ref, dk_ref, dv_ref = reference(q, k, v, dO, causal)
    try:
        dq, dk, dv = teaching_backward_cpu(
            q, k, v, out, dO, L, is_causal=causal, Br=Br, Bc=Bc, threads=threads, schedule=schedule, source=source
        )
    except KernelError as e:
        return f"kernel error: {e}"
    errs = max_err(dq, dq_ref), max_err(dk, dk_ref), max_err(dv, dv_ref)
    return None if max(errs) <= ATOL_GRAD else f"{case} {schedule}: errors dq/dk/dv {errs}"


@pytest.mark.parametrize("schedule", ["forward", "reverse", "round_robin", "random"])
@pytest.mark.parametrize("case", FWD_CASES)
def test_forward_kernel_equals_float64_attention(case, schedule):
    assert forward_failure(case, schedule) is None


@pytest.mark.parametrize("schedule", ["forward", "reverse", "round_robin", "random"])
@pytest.mark.parametrize("case", BWD_CASES)
def test_backward_kernel_equals_float64_gradients(case, schedule):
    assert backward_failure(case, schedule, threads=64 if schedule == "round_robin" else 256) is None


@pytest.mark.parametrize("d", [16, 64, 128])
@pytest.mark.parametrize("limit", [48 * 1024, 100 * 1024])
def test_kernels_with_tiles_chosen_from_the_shared_memory_limit(d, limit):
    """Forward then backward end to end, tiles from choose_tiles (the GPU launcher's path)."""
    q, k, v, dO = make(1, 2, 1, 67, d, seed=d)
    for causal in (False, True):
        out, L_ref, dq_ref, dk_ref, dv_ref = reference(q, k, v, dO, causal)
        O, L = teaching_forward_cpu(q, k, v, is_causal=causal, shared_mem_limit=limit)
        assert max_err(O, out) <= ATOL_OUT and max_err(L, L_ref) <= ATOL_OUT
        grads = teaching_backward_cpu(q, k, v, O, dO, L, is_causal=causal, shared_mem_limit=limit)
        for got, want in zip(grads, (dq_ref, dk_ref, dv_ref)):
            assert max_err(got, want) <= ATOL_GRAD


def test_length_one_and_torch_inputs():
    q, k, v, dO = make(2, 2, 2, 1, 64)
    out, L_ref, *_ = reference(q, k, v, dO, True)
    O, L = teaching_forward_cpu(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), is_causal=True)
    assert max_err(O, out) <= ATOL_OUT and max_err(L, L_ref) <= ATOL_OUT


def test_bad_inputs_raise_before_launching():
    q, k, v, _ = make(1, 1, 1, 4, 256)
    with pytest.raises(ValueError, match="head dims up to 128"):
        teaching_forward_cpu(q, k, v)
    q, k, v, _ = make(1, 2, 2, 4, 16)
    with pytest.raises(ValueError, match="is_causal=True needs as many keys"):
        teaching_forward_cpu(q, k[:, :, :3], v[:, :, :3], is_causal=True)
    with pytest.raises(ValueError, match="Br=64"):
        teaching_forward_cpu(q, k, v, Br=64, Bc=16)


# ---- Mutations: each is a bug the checks above must catch ------------------------------------
FWD_MUTATIONS = {
    "no barrier after the K/V load": (
        "        __syncthreads();\n\n        if (row_valid) {",
        "\n        if (row_valid) {",
    ),
    "no barrier at the end of the tile": ("rewriting it).\n        __syncthreads();", "rewriting it)."),
    "no __syncwarp before reading P": ("            __syncwarp();\n", ""),
    "partial-tile mask dropped": ("if (col < N_k && (!is_causal || col <= r))", "if (!is_causal || col <= r)"),
    "load guard reads one row past the end": ("const bool ok = col0 + c < N_k;", "const bool ok = col0 + c <= N_k;"),
    "causal mask drops the diagonal": ("(!is_causal || col <= r)", "(!is_causal || col < r)"),
    "tile tail left unfilled": (
        "            Ks[c * (d + 1) + x] = ok ? Kh[(size_t)(col0 + c) * d + x] : 0.0f;\n"
        "            Vs[c * d + x]       = ok ? Vh[(size_t)(col0 + c) * d + x] : 0.0f;\n",
        "            if (ok) Ks[c * (d + 1) + x] = Kh[(size_t)(col0 + c) * d + x];\n"
        "            if (ok) Vs[c * d + x] = Vh[(size_t)(col0 + c) * d + x];\n",
    ),
    "online softmax without rescaling": ("o[t] = alpha * o[t] + pv[t];", "o[t] = o[t] + pv[t];"),
}
BWD_MUTATIONS = {
    "no barrier after the Q/dO load": (
        "loaded by other threads.\n            __syncthreads();",
        "loaded by other threads.",
    ),
    "no barrier between P/dS and their use": ("rows of P and dS.\n            __syncthreads();", "rows of P and dS."),
    "no barrier at the end of the query tile": ("Ls, Ds.\n            __syncthreads();", "Ls, Ds."),
    "causal mask drops the diagonal": ("(!is_causal || col <= row)", "(!is_causal || col < row)"),
    "load guard reads one row past the end": (
        "const bool ok = row0 + rr < N;\n                Qs[",
        "const bool ok = row0 + rr <= N;\n                Qs[",
    ),
    "tile tail left unfilled": (
        "dOs[rr * d + x]      = ok ? dOh[(size_t)(row0 + rr) * d + x] : 0.0f;",
        "if (ok) dOs[rr * d + x] = dOh[(size_t)(row0 + rr) * d + x];",
    ),
    "shuffle reduction stops one step early": (
        "for (int offset = 16; offset > 0; offset /= 2)          // 16, 8, 4, 2, 1",
        "for (int offset = 16; offset > 1; offset /= 2)",
    ),
}


def mutate(source: str, old: str, new: str) -> str:
    assert source.count(old) == 1, f"the mutation's target {old!r} must occur once in the kernel source"
    return source.replace(old, new)


@pytest.mark.parametrize("name", list(FWD_MUTATIONS))
def test_forward_mutation_is_caught(name):
    source = mutate(FWD_SRC, *FWD_MUTATIONS[name])
    failures = (forward_failure(case, schedule, source) for case in FWD_CASES for schedule in ("forward", "reverse"))
    assert any(f is not None for f in failures), f"mutation {name!r} passed every check"


@pytest.mark.parametrize("name", list(BWD_MUTATIONS))
def test_backward_mutation_is_caught(name):
    source = mutate(BWD_SRC, *BWD_MUTATIONS[name])
    failures = (backward_failure(case, schedule, source) for case in BWD_CASES for schedule in ("forward", "reverse"))
    assert any(f is not None for f in failures), f"mutation {name!r} passed every check"


# ---- The emulator's own machinery -------------------------------------------------------------
EMU_SRC = r"""
extern "C" __global__ void static_tile(const float* in, float* out, int extra) {
    __shared__ float tile[64];
    __shared__ int counter;
    const int t = threadIdx.x;
    if (t == 0) counter = 0;
    tile[t] = in[blockIdx.x * 64 + t];
    __syncthreads();
    atomicAdd(&counter, 1);
    __syncthreads();
    out[blockIdx.x * 64 + t] = tile[63 - t] + tile[t + extra] + (float)counter;
}
extern "C" __global__ void warp_ops(const int* in, int* out) {
    const int t = threadIdx.x, v = in[t];
    out[6 * t + 0] = __shfl_sync(0xffffffff, v, 3);
    out[6 * t + 1] = __shfl_up_sync(0xffffffff, v, 2);
    out[6 * t + 2] = __shfl_down_sync(0xffffffff, v, 5, 16);
    out[6 * t + 3] = __shfl_xor_sync(0xffffffff, v, 7);
    out[6 * t + 4] = (int)__ballot_sync(0xffffffff, v % 3 == 0);
    out[6 * t + 5] = __all_sync(0xffffffff, v >= 0);
}
extern "C" __global__ void shared_overflow(float* out, int n) {
    __shared__ float s[32];
    s[threadIdx.x + n] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x];
}
extern "C" __global__ void global_overflow(float* out, int n) {
    out[threadIdx.x + n] = 1.0f;
}
extern "C" __global__ void mismatched_meeting(float* out) {
    float v = threadIdx.x;
    if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffff, v, 1);
    else __syncthreads();
    out[threadIdx.x] = v;
}
"""


@pytest.fixture(scope="module")
def emu():
    return load_module(EMU_SRC, "emulator_tests.cu")


def test_static_shared_memory_barriers_and_atomics(emu):
    x = np.arange(128, dtype=np.float32)
    out = np.full(128, np.nan, np.float32)
    emu.launch("static_tile", (2,), (64,), [x, out, 0], schedule="reverse")
    tile = x.reshape(2, 64)
    np.testing.assert_array_equal(out.reshape(2, 64), tile[:, ::-1] + tile + 64)
    emu.launch("static_tile", (2,), (64,), [x, out, 1])  # tile[64]: one past the end, a NaN guard
    assert np.isnan(out.reshape(2, 64)[:, 63]).all() and np.isfinite(out.reshape(2, 64)[:, :63]).all()


def test_warp_shuffles_and_votes_follow_cuda_semantics(emu):
    v = np.array([5, 9, 3, 12, 0, 7, 6, 1] * 8, dtype=np.int32)  # 64 threads, 2 warps
    out = np.zeros(6 * 64, np.int32)
    emu.launch("warp_ops", (1,), (64,), [v, out], schedule="random", seed=3)
    out = out.reshape(64, 6)
    for t in range(64):
        w, lane = divmod(t, 32)
        lanes = v[32 * w : 32 * w + 32]
        assert out[t, 0] == lanes[3]
        assert out[t, 1] == (lanes[lane - 2] if lane >= 2 else lanes[lane])
        assert out[t, 2] == (lanes[lane + 5] if lane % 16 + 5 < 16 else lanes[lane])
        assert out[t, 3] == lanes[lane ^ 7]
        assert out[t, 4] == np.int32(np.uint32(sum(1 << i for i in range(32) if lanes[i] % 3 == 0)))
        assert out[t, 5] == 1


def test_out_of_bounds_writes_and_deadlocks_are_errors(emu):
    out = np.zeros(64, np.float32)
    emu.launch("shared_overflow", (1,), (32,), [out, 0])
    with pytest.raises(KernelError, match="outside a static __shared__ array"):
        emu.launch("shared_overflow", (1,), (32,), [out, 1])
    with pytest.raises(KernelError, match="outside array argument 0"):
        emu.launch("global_overflow", (1,), (32,), [out, 40])
    with pytest.raises(KernelError, match="deadlock"):
        emu.launch("mismatched_meeting", (1,), (64,), [out])
