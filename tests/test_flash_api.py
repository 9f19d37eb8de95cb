"""flash_attention / flash_decode on the CPU: dispatch, validation, numerics."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from minitransformer.flash import cupy_bridge
from minitransformer.flash.api import flash_attention, flash_decode
from minitransformer.flash.sources import kernel_source
from minitransformer.flash.tiles import TileConfig
from minitransformer.reference import gqa_attention_ref


def _qkv(B=2, H=4, H_kv=2, N=7, d=16, N_k=None, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    N_k = N if N_k is None else N_k
    return (
        torch.randn(B, H, N, d, generator=g, dtype=dtype),
        torch.randn(B, H_kv, N_k, d, generator=g, dtype=dtype),
        torch.randn(B, H_kv, N_k, d, generator=g, dtype=dtype),
    )


# ---- numerics -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "N,d,causal,H_kv", [(1, 16, True, 4), (7, 64, False, 2), (97, 64, True, 1), (129, 128, False, 4)]
)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_backends_equal_float64_reference(backend, N, d, causal, H_kv):
    q, k, v = _qkv(N=N, d=d, H_kv=H_kv)
    out = flash_attention(q, k, v, is_causal=causal, backend=backend)
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out.double(), gqa_attention_ref(q, k, v, is_causal=causal).out, atol=2e-5, rtol=1e-5)


def test_torch_backend_gradients_match_float64():
    q, k, v = (t.double().requires_grad_() for t in _qkv(N=33, d=16, H_kv=2))
    out = flash_attention(q, k, v, is_causal=True, backend="torch")
    dO = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dO)
    ref = gqa_attention_ref(q, k, v, is_causal=True, dO=dO)
    for g, r in zip(grads, (ref.dq, ref.dk, ref.dv)):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=1e-7)


def test_auto_on_cpu_is_torch_and_differentiable():
    q, k, v = (t.requires_grad_() for t in _qkv())
    out = flash_attention(q, k, v, scale=0.3)
    out.sum().backward()
    assert q.grad is not None and k.grad.shape == k.shape
    ref = gqa_attention_ref(q, k, v, scale=0.3).out
    torch.testing.assert_close(out.detach().double(), ref, atol=2e-5, rtol=1e-5)


def test_numpy_backend_refuses_gradients_but_works_under_no_grad():
    q, k, v = (t.requires_grad_() for t in _qkv())
    with pytest.raises(RuntimeError, match="not differentiable"):
        flash_attention(q, k, v, backend="numpy")
    with torch.no_grad():
        out = flash_attention(q, k, v, backend="numpy")
    assert not out.requires_grad


# ---- validation, before any work ----------------------------------------------------


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda q, k, v: (q, k[..., :8], v[..., :8]), ValueError, "q has head dim 16 but k has 8"),
        (lambda q, k, v: (q, k, v[:, :, :3]), ValueError, "k has 7 keys but v has 3 values"),
        (lambda q, k, v: (q, k, v[..., :8]), ValueError, "v has head dim 8 but q and k have 16"),
        (lambda q, k, v: (q[0], k, v), ValueError, r"q must have shape \(B, H, N, d\)"),
        (lambda q, k, v: (q, k[:1], v[:1]), ValueError, "q has batch size 2 but k has 1"),
        (lambda q, k, v: (q[:, :3], k, v), ValueError, "q has 3 heads, not a multiple of k's 2 heads"),
        (lambda q, k, v: (q, k.double(), v.double()), TypeError, "one dtype"),
        (lambda q, k, v: (q.long(), k, v), TypeError, "q must be a floating tensor"),
        (lambda q, k, v: (q.numpy(), k, v), TypeError, "q must be a torch.Tensor"),
    ],
)
def test_bad_inputs_have_clear_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        flash_attention(*make(*_qkv()), backend="torch")


def test_causal_needs_square_scores():
    q, k, v = _qkv(N=5, N_k=9)
    flash_attention(q, k, v, backend="torch")  # fine without causal
    with pytest.raises(ValueError, match="needs as many keys as queries; q has N=5, k has N_k=9"):
        flash_attention(q, k, v, is_causal=True)


def test_unknown_backend_and_kernel():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="backend='jax'"):
        flash_attention(q, k, v, backend="jax")
    with pytest.raises(ValueError, match="kernel='turbo'"):
        flash_attention(q, k, v, backend="cupy", kernel="turbo")
    with pytest.raises(ValueError, match="needs backend='cupy'"):
        flash_attention(q, k, v, backend="torch", kernel="fast")
    with pytest.raises(ValueError, match="scale must be a finite number"):
        flash_attention(q, k, v, scale=float("nan"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
@pytest.mark.parametrize(
    "has_cupy,match",
    [
        (False, "needs a CUDA GPU and CuPy; found neither"),
        (True, "found CuPy but no CUDA GPU"),
    ],
)
def test_cupy_backend_without_gpu_says_what_is_missing(monkeypatch, has_cupy, match):
    monkeypatch.setattr(cupy_bridge, "_import_cupy", lambda: object() if has_cupy else None)
    with pytest.raises(RuntimeError, match=match) as info:
        flash_attention(*_qkv(), backend="cupy")
    if not has_cupy:
        assert "pip install minitransformer[gpu]" in str(info.value)
        assert "pip install cupy-cuda12x" in str(info.value)


def test_cupy_missing_with_gpu_message(monkeypatch):
    monkeypatch.setattr(cupy_bridge, "_import_cupy", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match="found a GPU but not CuPy.*pip install"):
        cupy_bridge.require_cupy()
    assert not cupy_bridge.cupy_available()


def test_import_does_not_load_cupy():
    import subprocess
    import sys

    code = (
        "import sys, minitransformer, minitransformer.flash.api, minitransformer.flash.cupy_bridge; "
        "print('cupy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bridge_configs_fit_the_shared_memory_limits():
    """sm_75 (T4) grants at most 64 KiB per block; the sm_80 configs fit an A100's 163 KiB."""
    for d in cupy_bridge.FAST_HEAD_DIMS:
        assert cupy_bridge.fast_forward_config(d, 75).smem_bytes <= 64 * 1024
        assert cupy_bridge.fast_backward_config(d, 75).smem_bytes <= 64 * 1024
        assert cupy_bridge.fast_forward_config(d, 80).smem_bytes <= 163 * 1024
        assert cupy_bridge.fast_backward_config(d, 80).smem_bytes <= 163 * 1024
    assert cupy_bridge.fast_forward_config(64, 80).stages == 2
    assert cupy_bridge.fast_forward_config(64, 75).stages == 1


def test_bridge_configs_are_frozen_and_named_like_the_teaching_tiles():
    cfg = cupy_bridge.fast_forward_config(64, 80)
    assert isinstance(cfg, TileConfig) and isinstance(cupy_bridge.fast_backward_config(64, 80), TileConfig)
    assert (cfg.Br, cfg.Bc, cfg.threads) == (64, 64, 128)
    assert (cupy_bridge.fast_backward_config(128, 80).Br, cupy_bridge.fast_backward_config(128, 80).Bc) == (32, 64)
    assert cupy_bridge.fast_backward_config(64, 75).Br == 32  # two blocks per SM on a T4
    assert cupy_bridge.fast_backward_config(64, 75).smem_bytes <= 32 * 1024
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.Br = 32


def test_kernel_source_inlines_the_common_header():
    src = kernel_source("fast_forward.cu")
    assert '#include "fast_common.cuh"' not in src and "mma_m16n8k16_f16" in src
    # after the header, #line resumes at the file's own next line (compiler messages stay right)
    raw = kernel_source("fast_forward.cu", inline_includes=False).splitlines()
    lines = src.splitlines()
    last = max(i for i, line in enumerate(lines) if line.startswith("#line"))
    resume = int(lines[last].split()[1])
    assert lines[last + 1 :] == raw[resume - 1 :]
    assert cupy_bridge.kernel_source is kernel_source  # one definition, re-used


# ---- flash_decode (CPU path = exact torch math) ---------------------------------------


@pytest.mark.parametrize("T,H,H_kv", [(1, 8, 2), (3, 4, 4), (2, 6, 1)])
def test_flash_decode_equals_full_attention_with_gqa_and_lengths(T, H, H_kv):
    """The T newest queries against the cache == the last T rows of causal full attention."""
    B, S, d = 3, 40, 16
    g = torch.Generator().manual_seed(T)
    q_all = torch.randn(B, H, S, d, generator=g)
    k_all = torch.randn(B, H_kv, S, d, generator=g)
    v_all = torch.randn(B, H_kv, S, d, generator=g)
    lengths = torch.tensor([S, 17, T])
    q_new = torch.stack([q_all[b, :, int(n) - T : int(n)] for b, n in enumerate(lengths)])  # (B, H, T, d)
    out = flash_decode(q_new, k_all, v_all, lengths, num_splits=3)
    assert out.shape == (B, H, T, d)
    for b in range(B):
        n = int(lengths[b])
        full = gqa_attention_ref(
            q_all[b : b + 1, :, :n], k_all[b : b + 1, :, :n], v_all[b : b + 1, :, :n], is_causal=True
        ).out
        torch.testing.assert_close(out[b : b + 1].double(), full[:, :, n - T : n], atol=1e-5, rtol=1e-5)


def test_flash_decode_noncausal_and_default_lengths():
    q, k, v = _qkv(B=2, H=4, H_kv=2, N=2, N_k=11, d=8)
    out = flash_decode(q, k, v, is_causal=False)
    torch.testing.assert_close(out.double(), gqa_attention_ref(q, k, v).out, atol=1e-5, rtol=1e-5)


def test_flash_decode_validation():
    q, k, v = _qkv(N=2, N_k=10)
    with pytest.raises(ValueError, match=r"lengths must lie in \[T, S\] = \[2, 10\]"):
        flash_decode(q, k, v, torch.tensor([1, 10]))
    with pytest.raises(ValueError, match=r"lengths must be an integer tensor of shape \(B,\)"):
        flash_decode(q, k, v, torch.tensor([5.0, 6.0]))
    with pytest.raises(ValueError, match="num_splits must be a positive int"):
        flash_decode(q, k, v, num_splits=0)
    with pytest.raises(ValueError, match="q has head dim 16 but k has 8"):
        flash_decode(q, k[..., :8], v[..., :8])


def test_decode_masks_padding_positions():
    """Garbage past a sequence's length must not leak into its output (the CPU path and the reference)."""
    q, k, v = _qkv(B=2, N=1, N_k=12, d=8)
    lengths = torch.tensor([12, 5])
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 5:] = 1e4
    v2[1, :, 5:] = float("nan")
    a = flash_decode(q, k, v, lengths, scale=0.35)
    torch.testing.assert_close(a, flash_decode(q, k2, v2, lengths, scale=0.35))
    ref = gqa_attention_ref(q, k2, v2, lengths=lengths, scale=0.35, is_causal=True).out
    torch.testing.assert_close(a.double(), ref, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(ref[1], gqa_attention_ref(q[1:], k[1:, :, :5], v[1:, :, :5], scale=0.35).out[0])


def test_device_index_respects_the_tensor_and_the_current_device(monkeypatch):
    """`cuda:1` is device 1; a bare `cuda` is the CURRENT device, not device 0."""
    from types import SimpleNamespace

    from minitransformer.flash.cupy_bridge import device_index

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert device_index(SimpleNamespace(device=torch.device("cuda", 1))) == 1
    assert device_index(SimpleNamespace(device=torch.device("cuda", 0))) == 0
    assert device_index(SimpleNamespace(device=torch.device("cuda"))) == 3
