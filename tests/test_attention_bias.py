"""The additive score bias (``attn_bias``) of scaled_dot_product_attention and MultiHeadAttention.

``softmax(q k^T * scale + attn_bias) v``: compared with the float64 formula of
minitransformer.reference, with torch's float ``attn_mask`` (the same addition), and
with two properties of the softmax (a constant per row changes nothing; ``-inf``
hides a key exactly as a False in the mask does).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minitransformer import MultiHeadAttention, RotaryEmbedding, scaled_dot_product_attention
from minitransformer.reference import attention_ref, mha_ref
from minitransformer.relative import alibi_bias


def _qkv(B, H, Lq, Lk, d, H_kv=None, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    H_kv = H if H_kv is None else H_kv
    q = torch.randn(B, H, Lq, d, generator=g, dtype=dtype)
    k = torch.randn(B, H_kv, Lk, d, generator=g, dtype=dtype)
    v = torch.randn(B, H_kv, Lk, d + 1, generator=g, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize(
    "B,H,Lq,Lk,bias_shape",
    [
        (2, 3, 5, 5, (3, 5, 5)),  # one bias per head (ALiBi's shape)
        (1, 2, 1, 7, (1, 2, 1, 7)),  # one query
        (2, 1, 4, 6, (2, 1, 4, 6)),  # per sequence
        (3, 2, 3, 3, (3, 1)),  # a bias per query row only: broadcast over keys
    ],
)
def test_bias_matches_the_float64_formula(B, H, Lq, Lk, bias_shape):
    q, k, v = _qkv(B, H, Lq, Lk, 4)
    bias = torch.randn(*bias_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, w = scaled_dot_product_attention(q, k, v, attn_bias=bias, return_weights=True)
    ref_out, ref_w = attention_ref(q, k, v, attn_bias=bias, return_weights=True)
    np.testing.assert_allclose(out.numpy(), ref_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.numpy(), ref_w, rtol=1e-12, atol=1e-12)


def test_bias_with_mask_and_causal_matches_the_formula_and_torch():
    q, k, v = _qkv(2, 2, 6, 6, 8)
    bias = torch.randn(2, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    mask = torch.rand(2, 1, 1, 6, generator=torch.Generator().manual_seed(3)) > 0.3  # (B, 1, 1, S)
    mask[..., 0] = True
    out = scaled_dot_product_attention(q, k, v, mask, is_causal=True, attn_bias=bias)
    ref = attention_ref(q, k, v, mask, is_causal=True, attn_bias=bias)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)
    allowed = mask & torch.ones(6, 6, dtype=torch.bool).tril()
    torch_out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.masked_fill(~allowed, float("-inf")))
    torch.testing.assert_close(out, torch_out, rtol=1e-12, atol=1e-12)


def test_a_constant_per_row_changes_nothing_and_zero_bias_is_no_bias():
    q, k, v = _qkv(2, 2, 5, 5, 4)
    plain = scaled_dot_product_attention(q, k, v, is_causal=True)
    shift = torch.randn(2, 2, 5, 1, dtype=torch.float64) * 10  # (B, H, Lq, 1): softmax is shift-invariant
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, is_causal=True, attn_bias=shift), plain)
    zero = torch.zeros(5, 5, dtype=torch.float64)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, is_causal=True, attn_bias=zero), plain)


def test_minus_inf_hides_a_key_like_the_mask_and_a_hidden_row_gives_zeros():
    q, k, v = _qkv(1, 2, 4, 4, 4)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[1, 2] = False
    mask[3] = False  # query 3 sees nothing
    bias = torch.zeros(4, 4, dtype=torch.float64).masked_fill(~mask, float("-inf"))
    out_b, w_b = scaled_dot_product_attention(q, k, v, attn_bias=bias, return_weights=True)
    out_m, w_m = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    torch.testing.assert_close(out_b, out_m, rtol=0, atol=0)
    torch.testing.assert_close(w_b, w_m, rtol=0, atol=0)
    assert torch.all(out_b[..., 3, :] == 0) and not torch.isnan(out_b).any()


def test_bias_with_grouped_query_heads_matches_repeated_heads():
    q, k, v = _qkv(2, 4, 5, 5, 4, H_kv=2)
    bias = torch.randn(4, 5, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)  # (H, Lq, Lk)
    out = scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, attn_bias=bias)
    k4, v4 = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)  # (B, H, Lk, d)
    ref = attention_ref(q, k4, v4, is_causal=True, attn_bias=bias)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_gradient_reaches_a_learned_bias():
    q, k, v = _qkv(1, 2, 3, 3, 4)
    bias = torch.zeros(2, 3, 3, dtype=torch.float64, requires_grad=True)
    attend = lambda b: scaled_dot_product_attention(q, k, v, is_causal=True, attn_bias=b)  # noqa: E731
    assert torch.autograd.gradcheck(attend, (bias,))


@pytest.mark.parametrize("num_kv_heads", [4, 2])
def test_multihead_with_alibi_matches_the_reference(num_kv_heads):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads).double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    bias = alibi_bias(4, 6, 6, causal=True, dtype=torch.float64)  # (H, T, T), -inf above the diagonal
    out = mha(x, is_causal=True, attn_bias=bias)
    finite = bias.clamp(min=-1e300)  # the reference masks with causal=True; -inf there is the same mask
    ref = mha_ref(
        x, mha.qkv.weight, mha.out.weight, 4, num_kv_heads, mha.qkv.bias, mha.out.bias, causal=True, attn_bias=finite
    )
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-10, atol=1e-12)


def test_multihead_bias_with_rope_and_every_backend_agrees():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2, rotary=RotaryEmbedding(8)).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    bias = torch.randn(2, 5, 5, dtype=torch.float64)  # (H, T, T)
    ours = mha(x, is_causal=True, attn_bias=bias)
    ref = mha_ref(
        x, mha.qkv.weight, mha.out.weight, 2, 2, mha.qkv.bias, mha.out.bias, positions=torch.arange(5),
        causal=True, attn_bias=bias,
    )  # fmt: skip
    np.testing.assert_allclose(ours.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    for backend in ("torch", "flash"):
        mha.backend = backend
        torch.testing.assert_close(mha(x, is_causal=True, attn_bias=bias), ours, rtol=1e-10, atol=1e-12)
    mha.backend = "minitransformer"
    _, w = mha(x, is_causal=True, attn_bias=bias, need_weights=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 5, dtype=torch.float64))


def test_no_bias_leaves_multihead_unchanged():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).double()
    x = torch.randn(1, 4, 8, dtype=torch.float64)
    torch.testing.assert_close(mha(x, is_causal=True, attn_bias=None), mha(x, is_causal=True), rtol=0, atol=0)


@pytest.mark.parametrize(
    "bias,error,words",
    [
        (torch.zeros(4, 4, dtype=torch.bool), TypeError, "floating tensor"),
        (torch.zeros(3, 5), ValueError, "does not broadcast"),
        (torch.full((4, 4), float("nan")), ValueError, "NaN"),
        (torch.full((4, 4), float("inf")), ValueError, "+inf"),
        ([[0.0] * 4] * 4, TypeError, "floating tensor"),
    ],
)
def test_bad_bias_is_refused_with_a_clear_message(bias, error, words):
    q, k, v = _qkv(1, 2, 4, 4, 4, dtype=torch.float32)
    with pytest.raises(error, match=words.replace("+", r"\+")):
        scaled_dot_product_attention(q, k, v, attn_bias=bias)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(error, match=words.replace("+", r"\+")):
        mha(torch.randn(1, 4, 8), attn_bias=bias)
