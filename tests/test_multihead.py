"""MultiHeadAttention against torch.nn.MultiheadAttention, GQA, cross-attention and the KV cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from helpers import rand
from minitransformer import KVCache, MultiHeadAttention, causal_mask, padding_mask
from minitransformer.kv_cache import kv_cache_bytes, kv_cache_report


def torch_pair(d=16, h=4, bias=True, seed=0):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(d, h, bias=bias, batch_first=True, dtype=torch.float64).eval()
    return ref, MultiHeadAttention.from_torch(ref).eval()


@pytest.mark.parametrize("bias", [True, False])
def test_self_attention_equals_torch(bias):
    ref, ours = torch_pair(bias=bias)
    x = rand(3, 7, 16)
    out, w = ours(x, need_weights=True)
    ref_out, ref_w = ref(x, x, x, average_attn_weights=False)
    assert torch.allclose(out, ref_out, atol=1e-12) and torch.allclose(w, ref_w, atol=1e-12)


def test_cross_attention_and_masks_equal_torch():
    ref, ours = torch_pair(d=24, h=6)
    x, mem = rand(2, 5, 24), rand(2, 9, 24, seed=1)
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9]])
    pad = padding_mask(tokens, 0)  # (2, 1, 1, 9) True = real
    out = ours(x, mem, mask=pad)
    ref_out, _ = ref(x, mem, mem, key_padding_mask=~pad[:, 0, 0])
    assert torch.allclose(out, ref_out, atol=1e-12)
    value = rand(2, 9, 24, seed=2)  # distinct key and value tensors
    assert torch.allclose(ours(x, mem, value), ref(x, mem, value)[0], atol=1e-12)


def test_causal_equals_torch():
    ref, ours = torch_pair()
    x = rand(2, 6, 16)
    ref_out, _ = ref(x, x, x, attn_mask=~causal_mask(6))
    assert torch.allclose(ours(x, is_causal=True), ref_out, atol=1e-12)


def test_parameter_count_is_4d2_plus_4d():
    for d, h in [(16, 4), (64, 8), (512, 8)]:
        assert MultiHeadAttention(d, h).num_parameters() == 4 * d * d + 4 * d
        assert MultiHeadAttention(d, h, bias=False).num_parameters() == 4 * d * d


def test_grouped_query_equals_explicitly_repeated_heads():
    torch.manual_seed(0)
    gqa = MultiHeadAttention(32, 8, num_kv_heads=2).double()
    full = MultiHeadAttention(32, 8).double()
    hd, kv = 4, 8
    with torch.no_grad():  # copy Wq; repeat each kv head's rows for its 4 query heads
        Wq, Wk, Wv = gqa.qkv.weight.split([32, kv, kv])
        bq, bk, bv = gqa.qkv.bias.split([32, kv, kv])
        rep = lambda t: t.view(2, hd, -1).repeat_interleave(4, 0).reshape(32, -1)  # noqa: E731
        full.qkv.weight.copy_(torch.cat([Wq, rep(Wk), rep(Wv)]))
        full.qkv.bias.copy_(torch.cat([bq, rep(bk[:, None]).squeeze(-1), rep(bv[:, None]).squeeze(-1)]))
        full.out.load_state_dict(gqa.out.state_dict())
    x = rand(2, 5, 32)
    assert torch.allclose(gqa(x, is_causal=True), full(x, is_causal=True), atol=1e-12)
    assert gqa.num_parameters() < full.num_parameters()


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
def test_kv_cache_step_by_step_equals_full_causal_pass(num_kv_heads):
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads).double().eval()
    x = rand(2, 9, 16)
    full = m(x, is_causal=True)
    cache = KVCache(2, num_kv_heads, 16, 4, dtype=torch.float64)
    steps = [m(x[:, :4], is_causal=True, kv_cache=cache)]  # a prompt of 4, then one token at a time
    steps += [m(x[:, t : t + 1], is_causal=True, kv_cache=cache) for t in range(4, 9)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-12)
    assert len(cache) == 9


def test_static_cross_attention_cache_reuses_memory():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4).double().eval()
    x, mem = rand(1, 3, 16), rand(1, 7, 16, seed=1)
    cache = KVCache(1, 4, 7, 4, dtype=torch.float64, static=True)
    first = m(x[:, :1], mem, kv_cache=cache)
    later = m(x[:, 1:], mem * 0 + 99, kv_cache=cache)  # memory ignored once cached
    assert torch.allclose(torch.cat([first, later], 1), m(x, mem), atol=1e-12)


def test_kv_cache_errors_and_memory():
    cache = KVCache(1, 2, 4, 8)
    with pytest.raises(ValueError, match="expects k and v of shape"):
        cache.append(torch.zeros(1, 3, 1, 8), torch.zeros(1, 3, 1, 8))
    cache.append(torch.zeros(1, 2, 4, 8), torch.zeros(1, 2, 4, 8))
    with pytest.raises(RuntimeError, match="KVCache is full"):
        cache.append(torch.zeros(1, 2, 1, 8), torch.zeros(1, 2, 1, 8))
    assert cache.nbytes() == 2 * 1 * 2 * 4 * 8 * 4
    # Llama-2 70B: 80 layers, 8 kv heads of 128, 4096 tokens, fp16 -> 1.25 GiB; 8x more without GQA
    assert kv_cache_bytes(80, 8, 128, 4096) == 2 * 80 * 8 * 128 * 4096 * 2 == 1342177280
    assert "8x smaller" in kv_cache_report("Llama-2 70B", 80, 64, 8, 128, 4096)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(d_model=30, num_heads=4), "d_model=30 is not divisible by num_heads=4"),
        (dict(d_model=32, num_heads=8, num_kv_heads=3), "num_heads=8 is not divisible by num_kv_heads=3"),
        (dict(d_model=32, num_heads=4, dropout=1.5), "dropout"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(**kwargs)


def test_forward_errors():
    m = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match="batch-first"):
        m(torch.zeros(5, 16))
    with pytest.raises(ValueError, match="has 8 features but d_model=16"):
        m(torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match="query batch 2 != key batch 3"):
        m(torch.zeros(2, 5, 16), torch.zeros(3, 5, 16))
    with pytest.raises(TypeError, match="torch.nn.MultiheadAttention"):
        MultiHeadAttention.from_torch(nn.Linear(2, 2))


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, dropout=0.5)
    x = torch.randn(1, 6, 16)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))


def test_a_static_cache_is_for_cross_attention_only():
    m = MultiHeadAttention(16, 4)
    cache = KVCache(1, 4, 5, 4, static=True)
    x = torch.randn(1, 2, 16)
    m(x, kv_cache=cache)  # the first call fills it
    with pytest.raises(RuntimeError, match="static"):
        m(x, kv_cache=cache)  # self-attention must not reuse stale keys


def test_one_output_projection_for_every_backend():
    """forward = _qkv_heads -> _attend -> merge heads -> out, whichever backend attends."""
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, num_kv_heads=2).double().eval()
    x = rand(2, 5, 16)
    q, k, v = m._qkv_heads(x, None, None, None)
    assert q.shape == (2, 4, 5, 4) and k.shape == v.shape == (2, 2, 5, 4)  # K/V keep H_kv heads
    for backend in ("minitransformer", "torch", "flash"):
        m.backend = backend
        out, weights = m._attend(q, k, v, None, True, False)
        assert out.shape == (2, 4, 5, 4) and (weights is None) == (backend != "minitransformer")
        assert torch.allclose(m(x, is_causal=True), m.out(out.transpose(1, 2).reshape(2, 5, 16)), atol=1e-12)
    assert m.backend == "flash" and "flash" in type(m).backend.__doc__


def test_value_without_key_is_an_error_not_self_attention():
    m = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match="value was given without key"):
        m(torch.zeros(1, 3, 16), value=torch.zeros(1, 5, 16))
