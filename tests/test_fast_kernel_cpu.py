"""The fast (tensor-core) kernels' exact source, executed on the CPU.

``fast_forward.cu``, ``fast_backward.cu`` and ``decode.cu`` are compiled with
g++ against ``cuda_cpu.h`` + ``cuda_cpu_mma.h`` (``MT_CPU_EMULATION``): their
``mma.sync``/``ldmatrix`` wrappers become lane-by-lane shuffles with the PTX
ISA's fragment layouts, ``cp.async`` becomes a deferred copy that leaves NaN
until the thread waits. Both architecture paths run (``MT_SM=80``:
cp.async double buffering, m16n8k16; ``MT_SM=75``: register-staged
prefetch, m16n8k8 pairs). Outputs start as NaN. References are float64
attention of the same fp16/bf16-rounded inputs.

The last tests break the kernels on purpose (a missing wait, a missing
barrier, a wrong fragment layout) and check that the emulation notices.
"""

from __future__ import annotations

import numpy as np
import pytest

from minitransformer.flash.cpu_cuda import runner
from minitransformer.flash.cpu_cuda.fast_runner import (
    decode_cpu,
    fast_backward_cpu,
    fast_forward_cpu,
    from_bits,
    to_bits,
)
from minitransformer.flash.sources import kernel_source
from minitransformer.reference import gqa_attention_ref

pytestmark = pytest.mark.skipif(not runner.gxx_available(), reason="needs g++")


def _inputs(B, H, H_kv, N, d, dt, seed=0, n_k=None):
    rng = np.random.default_rng(seed)
    n_k = N if n_k is None else n_k
    shapes = ((B, H, N, d), (B, H_kv, n_k, d), (B, H_kv, n_k, d), (B, H, N, d))
    # round to the kernel's 16-bit type so the reference sees exactly the kernel's inputs
    return [from_bits(to_bits(rng.standard_normal(s).astype(np.float32), dt), dt) for s in shapes]


def _reference(q, k, v, dO, causal):
    """float64 attention, its log-sum-exp and gradients, as NumPy arrays."""
    return tuple(t.numpy() for t in gqa_attention_ref(q, k, v, is_causal=causal, dO=dO))


# fp16: the output is rounded to fp16 (|O| < 4: ulp <= 2^-9) and P to fp16 before P V.
TOL = {0: dict(atol=4e-3, rtol=1e-2), 1: dict(atol=3e-2, rtol=3e-2)}


@pytest.mark.parametrize(
    "sm,d,N,causal,dt,H,H_kv,schedule",
    [
        (80, 64, 1, True, 0, 2, 2, "forward"),
        (80, 64, 7, False, 0, 2, 1, "reverse"),
        (80, 64, 97, True, 0, 2, 2, "forward"),
        (80, 64, 200, True, 0, 1, 1, "reverse"),  # 4 key tiles: the double buffer cycles
        (80, 128, 129, False, 0, 2, 2, "round_robin"),
        (80, 32, 70, True, 1, 4, 2, "random"),  # bf16, grouped-query
        (75, 64, 97, True, 0, 2, 1, "reverse"),  # sm_75: register-staged prefetch, m16n8k8
        (75, 128, 129, True, 0, 1, 1, "forward"),  # sm_75, d = 128: 32-key tiles
        (75, 64, 200, False, 0, 1, 1, "random"),
    ],
)
def test_fast_forward_matches_float64(sm, d, N, causal, dt, H, H_kv, schedule):
    B = 2
    q, k, v, dO = _inputs(B, H, H_kv, N, d, dt)
    O, L = fast_forward_cpu(q, k, v, is_causal=causal, dt=dt, sm=sm, schedule=schedule, seed=3)
    O_ref, L_ref = _reference(q, k, v, dO, causal)[:2]
    assert not np.isnan(O).any() and not np.isnan(L).any()
    np.testing.assert_allclose(O, O_ref, **TOL[dt])
    np.testing.assert_allclose(L, L_ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize(
    "sm,d,N,causal,dt,H,H_kv,schedule",
    [
        (80, 64, 97, True, 0, 2, 2, "reverse"),
        (80, 64, 129, False, 0, 2, 1, "forward"),  # GQA: a block sums dK, dV over the group
        (80, 128, 150, True, 1, 4, 2, "reverse"),  # bf16, d = 128, GQA, 5 query tiles x 2 heads: buffers cycle
        (80, 64, 200, False, 0, 3, 1, "random"),  # 4 query tiles x 3 heads: prefetch crosses heads
        (80, 32, 7, True, 1, 2, 2, "random"),
        (75, 128, 70, False, 0, 1, 1, "round_robin"),  # d = 128: 32-query steps
        (75, 64, 1, True, 0, 1, 1, "forward"),
        (75, 64, 97, True, 0, 2, 1, "reverse"),  # sm_75, d = 64: 32-query steps, dS^T in Q's buffer
        (75, 32, 70, False, 0, 2, 2, "random"),  # sm_75, d = 32: 64-query steps, dS^T in Q's buffer
    ],
)
def test_fast_backward_matches_float64(sm, d, N, causal, dt, H, H_kv, schedule):
    B = 2
    q, k, v, dO = _inputs(B, H, H_kv, N, d, dt, seed=1)
    O_ref, L_ref, dq_ref, dk_ref, dv_ref = _reference(q, k, v, dO, causal)
    dq, dk, dv = fast_backward_cpu(q, k, v, O_ref, dO, L_ref, is_causal=causal, dt=dt, sm=sm, schedule=schedule, seed=5)
    assert dk.shape == dv.shape == (B, H_kv, N, d)  # summed over the group by the kernel
    for got, ref in ((dq, dq_ref), (dk, dk_ref), (dv, dv_ref)):
        assert not np.isnan(got).any()
        scale = np.abs(ref).max() + 1e-6
        assert np.abs(got - ref).max() <= (3e-3 if dt == 0 else 3e-2) * max(scale, 1.0)


@pytest.mark.parametrize(
    "B,H,H_kv,T,S,d,dt,splits,schedule,R",
    [
        (2, 4, 2, 1, 300, 64, 2, 4, "forward", None),  # fp32, GQA, second sequence shorter
        (2, 8, 2, 3, 170, 128, 0, 3, "reverse", None),  # fp16, 3 new tokens: causal among them
        (1, 2, 2, 2, 40, 32, 1, 1, "random", None),  # bf16, one split = one block per head
        (2, 16, 1, 1, 90, 64, 2, 5, "round_robin", None),  # MQA: 16 query heads on one kv head -> 2 row chunks
        # one query row per block (2 keys per lane group and step, one exp2 per lane and row)
        (2, 2, 2, 1, 300, 128, 0, 3, "reverse", None),
        (2, 4, 4, 1, 77, 64, 1, 2, "random", None),
        (1, 1, 1, 1, 50, 32, 2, 1, "forward", None),
        (2, 4, 2, 2, 61, 64, 2, 2, "round_robin", 1),  # R = 1 with 4 rows per kv head: 4 z-chunks
    ],
)
def test_decode_matches_full_attention(B, H, H_kv, T, S, d, dt, splits, schedule, R):
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((B, H, T, d), (B, H_kv, S, d), (B, H_kv, S, d)))
    if dt != 2:
        q, k, v = (from_bits(to_bits(x, dt), dt) for x in (q, k, v))
    lengths = np.array([S, max(T, S // 2 - 3)][:B], np.int32)
    O = decode_cpu(q, k, v, lengths, num_splits=splits, dt=dt, schedule=schedule, seed=7, rows_per_block=R)
    ref = gqa_attention_ref(q, k, v, lengths=lengths, is_causal=True).out.numpy()
    assert not np.isnan(O).any()
    np.testing.assert_allclose(O, ref, atol={2: 1e-5, 0: 2e-3, 1: 1e-2}[dt], rtol=1e-2)


# ---- the emulation catches broken kernels -------------------------------------------


def _mutant(filename: str, old: str, new: str) -> str:
    src = kernel_source(filename)
    assert src.count(old) == 1, f"mutation anchor not found once in {filename}: {old!r}"
    return src.replace(old, new)


def _forward_error(source: str, sm: int = 80, schedule: str = "forward", N: int = 200) -> float:
    q, k, v, dO = _inputs(1, 1, 1, N, 64, 0, seed=4)
    O, _ = fast_forward_cpu(q, k, v, is_causal=True, sm=sm, schedule=schedule, source=source)
    err = np.abs(O - _reference(q, k, v, dO, True)[0]).max()
    return float("inf") if np.isnan(err) else float(err)


@pytest.mark.parametrize(
    "what,sm,old,new",
    [
        (
            "no wait for the cp.async of the current tile",
            80,
            "cp_async_commit();\n      cp_async_wait<1>();",
            "cp_async_commit();",
        ),
        (
            "no barrier before a buffer is refilled",
            80,
            "__syncthreads();                                   // this buffer is refilled next iteration",
            "",
        ),
        (
            "sm_80: K buffer 1 (Q's borrowed buffer) refilled before every warp has read Q",
            80,
            "__syncthreads();                                     // Q read by every warp: sQ is K buffer 1 again",
            "",
        ),
        ("V read without the transposing ldmatrix", 80, "ldmatrix_x4_trans(vf,", "ldmatrix_x4(vf,"),
        (
            "sm_75: registers stored while others still read the tile",
            75,
            "__syncthreads();                                 // all warps are done with the tile",
            "",
        ),
        ("causal mask drops the diagonal", 80, "j > i + off))", "j >= i + off))"),
    ],
)
def test_broken_forward_is_caught(what, sm, old, new):
    broken = _mutant("fast_forward.cu", old, new)
    errors = []
    for schedule in ("forward", "reverse"):
        try:
            errors.append(_forward_error(broken, sm=sm, schedule=schedule))
        except runner.KernelError:
            errors.append(float("inf"))
    assert max(errors) > 0.05, f"{what}: not caught (errors {errors})"


def test_unbroken_forward_passes_the_same_check():
    assert _forward_error(kernel_source("fast_forward.cu"), schedule="reverse") < 4e-3


@pytest.mark.parametrize(
    "what,old,new,R",
    [
        ("rescaling factor taken from a key's lane", "ex, g0 + U);", "ex, g0);", 1),
        (
            "weights shared from the wrong group",
            "__shfl_sync(0xffffffffu, ex, g0 + u);",
            "__shfl_sync(0xffffffffu, ex, u);",
            1,
        ),
        ("causal mask drops the new token's own key", "j[u] <= qpos[r]", "j[u] < qpos[r]", 4),
        (
            "warps merged before all have written",
            "  __syncthreads();\n\n  // ---- merge the 4 warps",
            "\n  // ---- merge",
            4,
        ),
    ],
)
def test_broken_decode_is_caught(what, old, new, R):
    broken = _mutant("decode.cu", old, new)
    rng = np.random.default_rng(8)
    B, H, H_kv, T, S, d = 2, 4, 2, 1, 150, 64
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((B, H, T, d), (B, H_kv, S, d), (B, H_kv, S, d)))
    lengths = np.array([S, 70], np.int32)
    ref = gqa_attention_ref(q, k, v, lengths=lengths, is_causal=True).out.numpy()
    errors = []
    for schedule in ("forward", "reverse"):
        try:
            O = decode_cpu(q, k, v, lengths, num_splits=2, schedule=schedule, rows_per_block=R, source=broken)
            err = np.abs(O - ref).max()
            errors.append(float("inf") if np.isnan(err) else float(err))
        except runner.KernelError:
            errors.append(float("inf"))
    assert max(errors) > 0.05, f"{what}: not caught (errors {errors})"
    ok = decode_cpu(q, k, v, lengths, num_splits=2, schedule="reverse", rows_per_block=R)
    assert np.abs(ok - ref).max() < 1e-5


@pytest.mark.parametrize(
    "what,old,new",
    [
        (
            "sm_80: no wait for the cp.async of this step's Q and dO",
            "cp_async_commit();\n      cp_async_wait<1>();",
            "cp_async_commit();",
        ),
        (
            "sm_80: next step's Q, dO prefetched into the buffer being read",
            "load_step(step + 1, stage ^ 1);",
            "load_step(step + 1, stage);",
        ),
        (
            "GQA: only the group's first query head visited",
            "const int n_steps = G * n_qt;",
            "const int n_steps = n_qt;",
        ),
    ],
)
def test_broken_backward_pipeline_is_caught(what, old, new):
    broken = _mutant("fast_backward.cu", old, new)
    q, k, v, dO = _inputs(1, 2, 1, 150, 64, 0, seed=9)
    O, L, dq_ref, dk_ref, _ = _reference(q, k, v, dO, False)
    errors = []
    for schedule in ("forward", "reverse"):
        try:
            dq, dk, _ = fast_backward_cpu(q, k, v, O, dO, L, source=broken, schedule=schedule)
            err = max(np.abs(dq - dq_ref).max(), np.abs(dk - dk_ref).max())
            errors.append(float("inf") if np.isnan(err) else float(err))
        except runner.KernelError:
            errors.append(float("inf"))
    assert max(errors) > 0.05, f"{what}: not caught (errors {errors})"


def test_broken_backward_sm75_dS_over_Q_is_caught():
    """sm_75: dS^T is written over Q and dO; without the barrier before, dK reads a torn Q."""
    broken = _mutant(
        "fast_backward.cu",
        "if (C::DS_IN_Q) __syncthreads();",
        "",
    )
    q, k, v, dO = _inputs(1, 1, 1, 97, 64, 0, seed=6)
    O, L, _, dk_ref, _ = _reference(q, k, v, dO, False)
    errors = []
    for schedule in ("forward", "reverse"):
        _, dk, _ = fast_backward_cpu(q, k, v, O, dO, L, source=broken, schedule=schedule, sm=75)
        err = np.abs(dk - dk_ref).max()
        errors.append(float("inf") if np.isnan(err) else float(err))
    assert max(errors) > 0.05, f"not caught (errors {errors})"


def test_broken_backward_is_caught():
    """dQ reads dS^T from shared memory: without the barrier after writing it, NaN."""
    broken = _mutant(
        "fast_backward.cu",
        "pack2<DT>(dpt[nt][2 * r], dpt[nt][2 * r + 1]);\n    __syncthreads();",
        "pack2<DT>(dpt[nt][2 * r], dpt[nt][2 * r + 1]);",
    )
    q, k, v, dO = _inputs(1, 1, 1, 97, 64, 0, seed=6)
    O, L = _reference(q, k, v, dO, False)[:2]
    dq, _, _ = fast_backward_cpu(q, k, v, O, dO, L, source=broken, schedule="forward")
    dq_r, _, _ = fast_backward_cpu(q, k, v, O, dO, L, source=broken, schedule="reverse")
    assert np.isnan(dq).any() or np.isnan(dq_r).any()
