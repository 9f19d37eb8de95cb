"""The tiled flash-attention twins (NumPy and torch) against float64 naive attention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minitransformer.flash.tiled_numpy import flash_backward_numpy, flash_forward_numpy, flash_forward_steps
from minitransformer.flash.tiled_torch import (
    FlashAttentionTorch,
    flash_attention_torch,
    flash_backward_torch,
    flash_forward_torch,
)
from minitransformer.flash.tiles import backward_smem_bytes, choose_tiles, forward_smem_bytes
from minitransformer.reference import attention_ref, gqa_attention_ref


def make(B, H, H_kv, N, d, N_k=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    N_k = N if N_k is None else N_k
    q = torch.randn(B, H, N, d, generator=g, dtype=torch.float64)
    k = torch.randn(B, H_kv, N_k, d, generator=g, dtype=torch.float64)
    v = torch.randn(B, H_kv, N_k, d, generator=g, dtype=torch.float64)
    dO = torch.randn(B, H, N, d, generator=g, dtype=torch.float64)
    return q, k, v, dO


# (B, H, H_kv, N, d, Br, Bc): length 1, odd lengths, non-multiples of the tiles, GQA, d 16/64/128
SHAPES = [
    (2, 2, 2, 1, 16, 16, 32),
    (2, 2, 2, 7, 16, 4, 3),
    (1, 4, 2, 97, 64, 16, 32),
    (2, 2, 1, 129, 128, 32, 16),
    (2, 4, 1, 33, 64, 8, 8),
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_numpy_forward_backward_equal_float64_attention(shape, causal):
    B, H, H_kv, N, d, Br, Bc = shape
    q, k, v, dO = make(B, H, H_kv, N, d)
    out_ref, L_ref = gqa_attention_ref(q, k, v, is_causal=causal)[:2]
    O, L = flash_forward_numpy(q.numpy(), k.numpy(), v.numpy(), is_causal=causal, Br=Br, Bc=Bc)
    np.testing.assert_allclose(O, out_ref.numpy(), atol=1e-12, rtol=0)
    np.testing.assert_allclose(L, L_ref.numpy(), atol=1e-12, rtol=0)
    dq, dk, dv = flash_backward_numpy(
        q.numpy(), k.numpy(), v.numpy(), O, dO.numpy(), L, is_causal=causal, Br=Bc, Bc=Br
    )  # other tiles than forward
    for got, want in zip((dq, dk, dv), gqa_attention_ref(q, k, v, is_causal=causal, dO=dO)[2:]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want.numpy(), atol=1e-11, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_torch_forward_backward_equal_float64_attention(shape, causal):
    B, H, H_kv, N, d, Br, Bc = shape
    q, k, v, dO = make(B, H, H_kv, N, d, seed=1)
    out_ref, L_ref = gqa_attention_ref(q, k, v, is_causal=causal)[:2]
    O, L = flash_forward_torch(q, k, v, is_causal=causal, Br=Br, Bc=Bc)
    torch.testing.assert_close(O, out_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(L, L_ref, atol=1e-12, rtol=0)
    qa, ka, va = (x.clone().requires_grad_(True) for x in (q, k, v))
    out = flash_attention_torch(qa, ka, va, is_causal=causal, Br=Br, Bc=Bc)
    out.backward(dO)
    for got, want in zip((qa.grad, ka.grad, va.grad), gqa_attention_ref(q, k, v, is_causal=causal, dO=dO)[2:]):
        torch.testing.assert_close(got, want, atol=1e-11, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_long_sequence_n1000(causal):
    q, k, v, dO = make(1, 2, 1, 1000, 64, seed=2)
    out_ref, L_ref = gqa_attention_ref(q, k, v, is_causal=causal)[:2]
    O, L = flash_forward_numpy(q.numpy(), k.numpy(), v.numpy(), is_causal=causal, Br=64, Bc=128)
    np.testing.assert_allclose(O, out_ref.numpy(), atol=1e-12, rtol=0)
    np.testing.assert_allclose(L, L_ref.numpy(), atol=1e-12, rtol=0)
    dq, dk, dv = flash_backward_torch(
        q, k, v, torch.from_numpy(O), dO, torch.from_numpy(L), is_causal=causal, Br=128, Bc=64
    )
    for got, want in zip((dq, dk, dv), gqa_attention_ref(q, k, v, is_causal=causal, dO=dO)[2:]):
        torch.testing.assert_close(got, want, atol=1e-11, rtol=0)


def test_different_query_and_key_lengths_non_causal():
    q, k, v, dO = make(2, 2, 1, 13, 16, N_k=40, seed=3)
    O, L = flash_forward_numpy(q.numpy(), k.numpy(), v.numpy(), Br=4, Bc=16)
    np.testing.assert_allclose(O, attention_ref(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)), atol=1e-12)
    dq, dk, dv = flash_backward_numpy(q.numpy(), k.numpy(), v.numpy(), O, dO.numpy(), L, Br=8, Bc=16)
    for got, want in zip((dq, dk, dv), gqa_attention_ref(q, k, v, is_causal=False, dO=dO)[2:]):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-11)


def test_custom_scale_and_float32_dtype():
    q, k, v, _ = make(1, 2, 2, 20, 8, seed=4)
    out_ref = gqa_attention_ref(q, k, v, is_causal=True, scale=0.3).out
    O, L = flash_forward_torch(q.float(), k.float(), v.float(), is_causal=True, scale=0.3, Br=8, Bc=8)
    assert O.dtype == torch.float32 and L.dtype == torch.float32
    torch.testing.assert_close(O.double(), out_ref, atol=2e-6, rtol=0)
    On, _ = flash_forward_numpy(
        q.numpy().astype(np.float32),
        k.numpy().astype(np.float32),
        v.numpy().astype(np.float32),
        is_causal=True,
        scale=0.3,
        Br=8,
        Bc=8,
    )
    assert On.dtype == np.float32
    np.testing.assert_allclose(On, out_ref.numpy(), atol=2e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_autograd_function_passes_gradcheck(causal):
    q, k, v, _ = make(1, 2, 1, 5, 4, seed=5)
    inputs = tuple(x.requires_grad_(True) for x in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: FlashAttentionTorch.apply(a, b, c, causal, None, 2, 3), inputs)


def test_backward_does_not_differentiate_through_the_forward_loop():
    q, k, v, _ = make(1, 1, 1, 9, 4)
    q.requires_grad_(True)
    out = flash_attention_torch(q, k, v, Br=4, Bc=4)
    # one node: our Function, not a graph of the loop's matmuls and exps
    assert type(out.grad_fn).__name__ == "FlashAttentionTorchBackward"
    assert all(fn is None or type(fn).__name__ == "AccumulateGrad" for fn, _ in out.grad_fn.next_functions)


@pytest.mark.parametrize("causal", [False, True])
def test_steps_follow_the_kernel_order_and_end_at_attention(causal):
    q, k, v, _ = make(1, 1, 1, 11, 4, seed=6)
    q, k, v = q[0, 0].numpy(), k[0, 0].numpy(), v[0, 0].numpy()
    steps = list(flash_forward_steps(q, k, v, Br=4, Bc=3, is_causal=causal))
    Tr, Tc = 3, 4
    expected = [
        (i, j) for i in range(Tr) for j in range(min(Tc, math.ceil(min(4 * (i + 1), 11) / 3)) if causal else Tc)
    ]
    assert [(s.i, s.j) for s in steps] == expected
    out_ref = gqa_attention_ref(*(x[None, None] for x in (q, k, v)), is_causal=causal).out
    for s in steps:
        assert s.m.shape == s.l.shape == (s.rows[1] - s.rows[0],)
        if s.last:
            np.testing.assert_allclose(s.O_now, out_ref[0, 0, s.rows[0] : s.rows[1]].numpy(), atol=1e-12)
    # the running max never decreases and the running sum is positive after the first step
    for a, b in zip(steps, steps[1:]):
        if a.i == b.i:
            assert np.all(b.m >= a.m) and np.all(b.l > 0)


def test_bad_inputs_raise_clear_errors():
    q, k, v, _ = make(1, 4, 2, 8, 16)
    with pytest.raises(ValueError, match="is_causal=True needs as many keys as queries"):
        flash_forward_numpy(q.numpy(), k[:, :, :5].numpy(), v[:, :, :5].numpy(), is_causal=True)
    with pytest.raises(ValueError, match="head dim 16 but k has 8"):
        flash_forward_torch(q, k[..., :8], v[..., :8])
    with pytest.raises(ValueError, match="not a multiple of k's 3 heads"):
        flash_forward_torch(q, torch.zeros(1, 3, 8, 16), torch.zeros(1, 3, 8, 16))
    with pytest.raises(ValueError, match="Br must be a positive int, got 0"):
        flash_forward_numpy(q.numpy(), k.numpy(), v.numpy(), Br=0)
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        flash_attention_torch(q.numpy(), k, v)


@pytest.mark.parametrize("d", [16, 32, 64, 128])
@pytest.mark.parametrize("limit", [48 * 1024, 64 * 1024, 100 * 1024, 227 * 1024])
def test_choose_tiles_fits_the_shared_memory_limit(d, limit):
    t = choose_tiles(d, limit)
    assert t.forward.smem_bytes == forward_smem_bytes(t.forward.Br, t.forward.Bc, d) <= limit
    assert t.backward.smem_bytes == backward_smem_bytes(t.backward.Br, t.backward.Bc, d) <= limit
    assert t.forward.threads == 32 * t.forward.Br <= 1024
    # maximal: doubling either side of the tile would not fit (or exceeds the caps)
    assert forward_smem_bytes(t.forward.Br, 2 * t.forward.Bc, d) > limit or t.forward.Bc == 64
    assert backward_smem_bytes(t.backward.Br, 2 * t.backward.Bc, d) > limit or t.backward.Bc == 64


def test_choose_tiles_follows_the_limit_and_the_sequence():
    assert choose_tiles(128, 48 * 1024).forward.Bc < choose_tiles(128, 100 * 1024).forward.Bc
    assert choose_tiles(128, 48 * 1024).backward.Br < choose_tiles(128, 100 * 1024).backward.Br
    small = choose_tiles(64, 100 * 1024, seq_len=5)
    assert small.forward.Br == 8 and small.forward.Bc == 8
    with pytest.raises(ValueError, match="head_dim=256"):
        choose_tiles(256, 48 * 1024)
    with pytest.raises(ValueError, match="too small"):
        choose_tiles(128, 1000)
