"""The CUDA kernels on a GPU against float64 references (skipped without GPU + CuPy).

Every output buffer starts as NaN (``cupy_bridge.POISON_OUTPUTS``), so an
element a kernel forgets to write fails. fp16/bf16 tolerance: at most twice
the error of PyTorch's own SDPA on the same 16-bit inputs, plus a small atol.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minitransformer.flash import cupy_bridge
from minitransformer.flash.api import flash_attention, flash_decode
from minitransformer.flash.sources import kernel_source
from minitransformer.reference import gqa_attention_ref

pytestmark = pytest.mark.gpu

SHAPES = [(1, 64), (7, 64), (97, 128), (129, 64), (1000, 128)]


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setattr(cupy_bridge, "POISON_OUTPUTS", True)


def _arch() -> int:
    return cupy_bridge.device_arch(torch.cuda.current_device())


def _inputs(B, H, H_kv, N, d, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda h: torch.randn(B, h, N, d, device="cuda", generator=g).to(dtype)  # noqa: E731
    return mk(H), mk(H_kv), mk(H_kv), mk(H)


def _reference(q, k, v, dO, causal):
    """float64 output and gradients (the package's reference), on q's device."""
    ref = gqa_attention_ref(q, k, v, is_causal=causal, dO=dO)
    return ref.out, (ref.dq, ref.dk, ref.dv)


def _sdpa_errors(q, k, v, dO, causal, ref_o, ref_grads):
    """Max abs error of torch's own SDPA in the same dtype: output and each gradient."""
    qs, ks, vs = (t.detach().clone().requires_grad_() for t in (q, k, v))
    G = q.shape[1] // k.shape[1]  # (enable_gqa needs torch 2.5; repeat instead)
    o = F.scaled_dot_product_attention(qs, ks.repeat_interleave(G, 1), vs.repeat_interleave(G, 1), is_causal=causal)
    grads = torch.autograd.grad(o, (qs, ks, vs), dO)
    return [(o.double() - ref_o).abs().max().item()] + [
        (g.double() - r).abs().max().item() for g, r in zip(grads, ref_grads)
    ]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("N,d", SHAPES)
def test_teaching_kernel_fp32(N, d, causal):
    q, k, v, dO = _inputs(2, 4, 2, N, d, torch.float32)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = flash_attention(q, k, v, is_causal=causal, backend="cupy", kernel="teaching")
    grads = torch.autograd.grad(out, (q, k, v), dO)
    ref_o, ref_g = _reference(q, k, v, dO, causal)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref_o, atol=2e-5, rtol=1e-4)
    for g, r in zip(grads, ref_g):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g.double(), r, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("N,d", SHAPES)
def test_fast_kernel_forward_and_backward(N, d, causal, dtype):
    if dtype == torch.bfloat16 and _arch() < 80:
        pytest.skip("bf16 needs sm_80+")
    q, k, v, dO = _inputs(2, 4, 2, N, d, dtype, seed=N)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = flash_attention(q, k, v, is_causal=causal, backend="cupy", kernel="fast")
    grads = torch.autograd.grad(out, (q, k, v), dO)
    ref_o, ref_g = _reference(q, k, v, dO, causal)
    sdpa = _sdpa_errors(q, k, v, dO, causal, ref_o, ref_g)
    atol = 1e-3 if dtype == torch.float16 else 8e-3
    errors = [(out.double() - ref_o).abs().max().item()] + [
        (g.double() - r).abs().max().item() for g, r in zip(grads, ref_g)
    ]
    for name, err, allowed in zip(("O", "dq", "dk", "dv"), errors, sdpa):
        assert math.isfinite(err), f"{name} has NaN/inf"
        assert err <= 2 * allowed + atol, f"{name}: error {err:.3g} > 2 x SDPA's {allowed:.3g} + {atol}"


def test_fast_kernel_lse_and_head_dim_32():
    q, k, v, _ = _inputs(1, 2, 2, 77, 32, torch.float16)
    O, L = cupy_bridge.fast_forward(q, k, v, True, 1 / math.sqrt(32))
    ref = gqa_attention_ref(q, k, v, is_causal=True)
    torch.testing.assert_close(L.double(), ref.lse, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(O.double(), ref.out, atol=2e-3, rtol=1e-2)


def test_emulated_fragments_match_the_hardware():
    """fast_forward.cu compiled with -DMT_PTX_VIA_SHUFFLES (the bodies the CPU emulation
    runs) gives the same result as the real mma/ldmatrix on this GPU."""
    import cupy

    q, k, v, _ = _inputs(2, 2, 2, 150, 64, torch.float16, seed=9)
    name = "flash_fwd_fast<64, 0>"
    mod = cupy.RawModule(
        code=kernel_source("fast_forward.cu"),
        options=cupy_bridge.NVRTC_OPTIONS + ("-DMT_PTX_VIA_SHUFFLES",),
        name_expressions=[name],
    )
    fn = mod.get_function(name)
    cfg = cupy_bridge.fast_forward_config(64, _arch())
    fn.max_dynamic_shared_size_bytes = cfg.smem_bytes
    O = torch.full_like(q, float("nan"))
    L = torch.full((2, 2, 150), float("nan"), device="cuda")
    cupy_bridge._launch(
        fn,
        (math.ceil(150 / cfg.Br), 4),
        (cfg.threads,),
        (q, k, v, O, L, 2, 2, 150, 150, 0.125, 1),
        cfg.smem_bytes,
        q.device,
    )
    O_hw, L_hw = cupy_bridge.fast_forward(q, k, v, True, 0.125)
    torch.testing.assert_close(O, O_hw, atol=2e-3, rtol=1e-2)
    torch.testing.assert_close(L, L_hw, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    "B,H,H_kv,T,S,d,splits",
    [
        (2, 8, 2, 1, 5000, 128, None),
        (3, 4, 4, 3, 777, 64, 1),
        (1, 32, 4, 2, 300, 64, 7),
        (2, 4, 1, 4, 65, 32, None),
    ],
)
def test_decode_kernel_equals_full_attention(B, H, H_kv, T, S, d, splits, dtype):
    g = torch.Generator(device="cuda").manual_seed(S)
    q = torch.randn(B, H, T, d, device="cuda", generator=g).to(dtype)
    cache_k = torch.randn(B, H_kv, S + 50, d, device="cuda", generator=g).to(dtype)
    cache_v = torch.randn(B, H_kv, S + 50, d, device="cuda", generator=g).to(dtype)
    k, v = cache_k[:, :, :S], cache_v[:, :, :S]  # views, as KVCache returns
    lengths = torch.tensor([S, max(T, S // 3), T][:B], device="cuda", dtype=torch.int32)
    out = flash_decode(q, k, v, lengths, num_splits=splits)
    ref = gqa_attention_ref(q, k, v, lengths=lengths, scale=1 / math.sqrt(d), is_causal=True).out
    assert torch.isfinite(out).all()
    tol = 2e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=1e-2)


def test_errors_on_gpu():
    q, k, v, _ = _inputs(1, 2, 2, 8, 48, torch.float16)
    with pytest.raises(ValueError, match="head dim 48 is not supported by the fast kernel"):
        flash_attention(q, k, v, backend="cupy")
    with pytest.raises(TypeError, match="teaching kernel is fp32"):
        flash_attention(q, k, v, backend="cupy", kernel="teaching")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        flash_attention(q.cpu(), k.cpu(), v.cpu(), backend="cupy")
    if _arch() < 80:
        q, k, v, _ = _inputs(1, 2, 2, 8, 64, torch.bfloat16)
        with pytest.raises(TypeError, match="bfloat16 needs a GPU of compute capability 8.0"):
            flash_attention(q, k, v, backend="cupy")


def test_auto_backend_picks_cupy_for_cuda_tensors():
    q, k, v, _ = _inputs(1, 2, 2, 33, 64, torch.float16)
    a = flash_attention(q, k, v)
    b = cupy_bridge.fast_forward(q, k, v, False, 0.125)[0]
    torch.testing.assert_close(a, b, atol=0, rtol=0)
