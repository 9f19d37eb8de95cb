"""Llama/Qwen-style block parts: RMSNorm, gated and tanh-GELU FFNs, QK-norm, separate attention
biases, and the options threaded through the layers, stacks and GPT. Each part is compared with
an independent reference: torch's own module or function, or a float64 formula from
``minitransformer.reference``."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import rand
from minitransformer import MultiHeadAttention, RotaryEmbedding
from minitransformer.gpt import GPT
from minitransformer.kv_cache import KVCache
from minitransformer.layers import ACTIVATIONS, DecoderLayer, EncoderLayer, FeedForward, glu_d_ff
from minitransformer.norms import NORMS, RMSNorm, make_norm, rms_norm
from minitransformer.reference import activation_ref, gated_ffn_ref, mha_ref, rms_norm_ref
from minitransformer.transformer import Decoder, Encoder

D, H = 16, 4
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random values in every parameter (norm gains and biases included, so none can be skipped unseen)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype) + (1.0 if p.dim() == 1 else 0.0))
    return module


# -- RMSNorm -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [1e-6, 1e-5, 0.1])
def test_rmsnorm_equals_torch_rmsnorm(dtype, eps):
    ours = randomize_(RMSNorm(D, eps=eps)).to(dtype)
    ref = nn.RMSNorm(D, eps=eps).to(dtype)
    ref.load_state_dict(ours.state_dict())  # the same state dict: one tensor named "weight"
    x = rand(3, 7, D, seed=1).to(dtype) * 3
    tol = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours(x), ref(x), **tol)


def test_rmsnorm_without_weight_equals_torch_and_the_float64_formula():
    ours, ref = RMSNorm(7, eps=1e-5, weight=False), nn.RMSNorm(7, eps=1e-5, elementwise_affine=False)
    assert list(ours.parameters()) == [] and ours.weight is None
    x = rand(2, 5, 7, seed=2)
    np.testing.assert_allclose(ours(x).numpy(), rms_norm_ref(x, eps=1e-5), rtol=0, atol=1e-13)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-13)


@pytest.mark.parametrize("shape", [(1, D), (4, 1, D), (2, 3, 5, D)])
def test_rmsnorm_matches_the_float64_formula_and_normalises_the_rms(shape):
    norm = randomize_(RMSNorm(D, eps=1e-6)).double()
    x = rand(*shape, seed=3) * 5 + 2  # not centred: RMSNorm does not subtract the mean
    np.testing.assert_allclose(norm(x).detach().numpy(), rms_norm_ref(x, norm.weight, 1e-6), rtol=0, atol=1e-12)
    unit = rms_norm(x)  # no gain: every row has root mean square 1 (up to eps)
    torch.testing.assert_close(unit.pow(2).mean(-1), torch.ones(shape[:-1], dtype=torch.float64))
    assert not torch.allclose(unit, F.layer_norm(x, (D,)))  # LayerNorm would also centre


def test_rmsnorm_in_half_precision_is_computed_in_float32():
    x = rand(4, 64, seed=4).to(torch.bfloat16) * 100
    out = RMSNorm(64)(x)
    assert out.dtype == torch.bfloat16
    expected = torch.from_numpy(rms_norm_ref(x.double(), eps=1e-6))
    torch.testing.assert_close(out.double(), expected, rtol=1e-2, atol=1e-2)


def test_rmsnorm_gradients_against_gradcheck():
    norm = randomize_(RMSNorm(5, eps=1e-3)).double()
    x = rand(3, 5, seed=5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: norm(t), (x,))


def test_make_norm_and_errors():
    assert type(make_norm("layer", D)) is nn.LayerNorm and type(make_norm("rms", D)) is RMSNorm
    assert make_norm("layer", D, bias=False).bias is None
    assert NORMS == ("layer", "rms")
    with pytest.raises(ValueError, match=r"norm='batch' is not one of \('layer', 'rms'\)"):
        make_norm("batch", D)
    with pytest.raises(ValueError, match=r"norm='group' is not one of"):
        EncoderLayer(D, H, norm="group")
    with pytest.raises(ValueError, match="RMSNorm: d must be a positive int, got 0"):
        RMSNorm(0)
    with pytest.raises(ValueError, match="RMSNorm: eps must be a positive number, got 0"):
        RMSNorm(4, eps=0)
    with pytest.raises(TypeError, match="RMSNorm: eps must be a positive number, got str"):
        RMSNorm(4, eps="1e-6")
    with pytest.raises(ValueError, match=r"RMSNorm: x must be \(..., d=4\), got shape \(2, 5\)"):
        RMSNorm(4)(torch.zeros(2, 5))


# -- feed-forward: gated and tanh-GELU -----------------------------------------------------------
@pytest.mark.parametrize("activation", ["swiglu", "geglu"])
@pytest.mark.parametrize("bias", [True, False])
def test_gated_ffn_matches_the_float64_formula(activation, bias):
    ffn = randomize_(FeedForward(D, 24, activation=activation, bias=bias)).double()
    assert ffn.linear3 is not None and (ffn.linear3.bias is not None) == bias
    x = rand(2, 9, D, seed=6)
    lin = (ffn.linear1, ffn.linear3, ffn.linear2)
    biases = [m.bias for m in lin] if bias else [None] * 3
    expected = gated_ffn_ref(x, *(m.weight for m in lin), *biases, activation=activation)
    np.testing.assert_allclose(ffn(x).detach().numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["relu", "gelu", "gelu_tanh"])
def test_ungated_activations_match_their_formulas(name):
    ffn = randomize_(FeedForward(D, 20, activation=name)).double()
    assert ffn.linear3 is None
    x = rand(3, 4, D, seed=7)
    h = activation_ref(x.numpy() @ ffn.linear1.weight.detach().numpy().T + ffn.linear1.bias.detach().numpy(), name)
    expected = h @ ffn.linear2.weight.detach().numpy().T + ffn.linear2.bias.detach().numpy()
    np.testing.assert_allclose(ffn(x).detach().numpy(), expected, rtol=0, atol=1e-12)


def test_gelu_tanh_is_torchs_tanh_approximation_and_differs_from_exact_gelu():
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    ffn = FeedForward(1, 1, activation="gelu_tanh").double()
    with torch.no_grad():  # FFN(x) = act(x) exactly
        ffn.linear1.weight.fill_(1.0), ffn.linear1.bias.zero_(), ffn.linear2.weight.fill_(1.0), ffn.linear2.bias.zero_()
    out = ffn(x[:, None])[:, 0]
    torch.testing.assert_close(out, F.gelu(x, approximate="tanh"), rtol=0, atol=1e-15)
    np.testing.assert_allclose(out.detach().numpy(), activation_ref(x, "gelu_tanh"), rtol=0, atol=1e-14)
    assert 1e-5 < (out - F.gelu(x)).abs().max() < 1e-3  # close to the erf GELU, but not equal


def test_encoder_layer_from_torch_with_tanh_gelu():
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(
        D, H, 24, dropout=0.0, activation=nn.GELU(approximate="tanh"), batch_first=True, norm_first=True
    ).double()
    ours = EncoderLayer.from_torch(ref)
    assert ours.ffn.activation == "gelu_tanh"
    x = rand(2, 7, D, seed=8)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-12)


def test_glu_d_ff_matches_llama_and_the_parameter_count():
    assert glu_d_ff(4096, multiple_of=256) == 11008  # Llama-7B's FFN width
    assert glu_d_ff(5120, multiple_of=256) == 13824  # Llama-13B
    assert glu_d_ff(96) == 256  # 2/3 of 4 * 96 = 384
    for d in (96, 120, 48):  # 3 matrices of d x (8d/3) == 2 matrices of d x 4d
        gated = FeedForward(d, glu_d_ff(d), activation="swiglu", bias=False)
        plain = FeedForward(d, activation="gelu", bias=False)
        assert sum(p.numel() for p in gated.parameters()) == sum(p.numel() for p in plain.parameters()) == 8 * d * d
    assert glu_d_ff(10, d_ff=30, multiple_of=8) == 24  # int(20) rounded up to a multiple of 8
    with pytest.raises(ValueError, match="multiple_of must be a positive int, got 0"):
        glu_d_ff(8, multiple_of=0)


def test_activation_errors_list_the_choices():
    assert ACTIVATIONS == ("relu", "gelu", "gelu_tanh", "swiglu", "geglu")
    with pytest.raises(ValueError, match=r"activation='silu' is not one of \('relu', 'gelu', 'gelu_tanh'"):
        FeedForward(D, activation="silu")


# -- MultiHeadAttention: QK-norm and bias switches ---------------------------------------------
@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("rotary", [False, True])
def test_qk_norm_attention_matches_the_float64_formula(num_kv_heads, rotary):
    rope = RotaryEmbedding(D // H, base=100.0) if rotary else None
    mha = randomize_(MultiHeadAttention(D, H, num_kv_heads, rotary=rope, qk_norm=True, qk_norm_eps=1e-5)).double()
    assert mha.q_norm.weight.shape == mha.k_norm.weight.shape == (D // H,)
    x = rand(2, 6, D, seed=9)
    expected = mha_ref(
        x,
        mha.qkv.weight,
        mha.out.weight,
        H,
        num_kv_heads,
        mha.qkv.bias,
        mha.out.bias,
        q_gain=mha.q_norm.weight,
        k_gain=mha.k_norm.weight,
        eps=1e-5,
        positions=torch.arange(6) if rotary else None,
        base=100.0,
        causal=True,
    )
    np.testing.assert_allclose(mha(x, is_causal=True).detach().numpy(), expected, rtol=0, atol=1e-12)
    plain = MultiHeadAttention(D, H, num_kv_heads, rotary=rope).double()
    plain.load_state_dict(mha.state_dict(), strict=False)  # the same projections without QK-norm differ
    assert not torch.allclose(plain(x, is_causal=True), mha(x, is_causal=True))


def test_qk_norm_is_applied_before_rope():
    """With non-uniform gains, normalising after rotating gives a different answer."""
    rope = RotaryEmbedding(D // H)
    mha = randomize_(MultiHeadAttention(D, H, rotary=rope, qk_norm=True)).double().eval()
    x = rand(1, 5, D, seed=10)
    q, k, _ = mha._qkv_heads(x, None, None, None)
    qkv = mha.qkv(x).split([D, D, D], dim=-1)
    raw_q, raw_k = mha._split_heads(qkv[0], H), mha._split_heads(qkv[1], H)
    torch.testing.assert_close(q, rope(mha.q_norm(raw_q)))
    torch.testing.assert_close(k, rope(mha.k_norm(raw_k)))
    assert not torch.allclose(q, mha.q_norm(rope(raw_q)))


def test_qk_norm_cross_attention_with_a_static_cache_equals_no_cache():
    mha = randomize_(MultiHeadAttention(D, H, 2, qk_norm=True)).double()
    x, memory = rand(2, 4, D, seed=11), rand(2, 6, D, seed=12)
    full = mha(x, memory, memory)
    cache = KVCache(2, 2, 6, D // H, dtype=torch.float64, static=True)
    steps = [mha(x[:, t : t + 1], memory, memory, kv_cache=cache) for t in range(4)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-12)


def test_qk_norm_bounds_the_attention_logits():
    """After QK-norm (unit gains) every logit is at most sqrt(d_head) in size, however large the inputs."""
    mha = MultiHeadAttention(D, H, qk_norm=True).double()
    _, w = mha(rand(1, 8, D, seed=13) * 1e4, need_weights=True)
    big = MultiHeadAttention(D, H).double()
    big.load_state_dict(mha.state_dict(), strict=False)
    _, w_big = big(rand(1, 8, D, seed=13) * 1e4, need_weights=True)
    assert w_big.max() > 0.999  # without it the softmax saturates (one-hot rows)
    assert w.max() < 0.9 and w.min() > 0  # with it the weights stay spread out


@pytest.mark.parametrize("bias,qkv_bias,out_bias", [(True, None, None), (False, True, None), (True, None, False)])
def test_separate_bias_switches(bias, qkv_bias, out_bias):
    mha = MultiHeadAttention(D, H, 2, bias=bias, qkv_bias=qkv_bias, out_bias=out_bias)
    want_qkv = bias if qkv_bias is None else qkv_bias
    want_out = bias if out_bias is None else out_bias
    assert (mha.qkv.bias is not None) == want_qkv and (mha.out.bias is not None) == want_out
    if want_qkv:
        assert mha.qkv.bias.shape == (D + 2 * 2 * (D // H),)
    x = rand(2, 3, D, seed=14).float()
    assert mha(x).shape == (2, 3, D)


def test_separate_biases_match_the_float64_formula():
    """Qwen2 style: biases on Q, K, V only."""
    mha = randomize_(MultiHeadAttention(D, H, 2, bias=False, qkv_bias=True)).double()
    assert mha.out.bias is None
    x = rand(2, 5, D, seed=15)
    expected = mha_ref(x, mha.qkv.weight, mha.out.weight, H, 2, mha.qkv.bias, None, causal=True)
    np.testing.assert_allclose(mha(x, is_causal=True).detach().numpy(), expected, rtol=0, atol=1e-12)


def test_the_contracts_positional_order_is_unchanged_and_new_options_are_keyword_only():
    params = inspect.signature(MultiHeadAttention.__init__).parameters
    assert list(params)[1:6] == ["d_model", "num_heads", "num_kv_heads", "dropout", "bias"]
    for name in ("qkv_bias", "out_bias", "qk_norm", "qk_norm_eps"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["qk_norm"].default is False and params["qkv_bias"].default is None
    fwd = inspect.signature(MultiHeadAttention.forward).parameters
    assert list(fwd)[1:5] == ["query", "key", "value", "mask"]
    assert fwd["positions"].kind is inspect.Parameter.KEYWORD_ONLY
    for cls in (EncoderLayer, DecoderLayer):
        p = inspect.signature(cls.__init__).parameters
        assert list(p)[1:8] == ["d_model", "num_heads", "d_ff", "dropout", "norm_first", "activation", "num_kv_heads"]
        for name in ("norm", "qk_norm", "qkv_bias", "out_bias"):
            assert p[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert p["norm"].default == "layer"


# -- the options in the layers and stacks --------------------------------------------------------
def rms_block_by_hand(layer: EncoderLayer, x: torch.Tensor, rope) -> np.ndarray:
    """x + MHA(RMS(x)), then + SwiGLU(RMS(x)), every piece from the float64 references."""
    a, at = layer.self_attn, layer.ffn
    h = rms_norm_ref(x, layer.norm1.weight, 1e-5)
    attn = mha_ref(
        h, a.qkv.weight, a.out.weight, H, 2, q_gain=a.q_norm.weight, k_gain=a.k_norm.weight, eps=1e-5,
        positions=torch.arange(x.shape[1]), base=rope.base, causal=True,
    )  # fmt: skip
    x = x.numpy() + attn
    h = rms_norm_ref(x, layer.norm2.weight, 1e-5)
    return x + gated_ffn_ref(h, at.linear1.weight, at.linear3.weight, at.linear2.weight, activation="swiglu")


def test_llama_style_encoder_layer_matches_the_float64_formulas():
    rope = RotaryEmbedding(D // H)
    layer = EncoderLayer(
        D, H, 24, norm_first=True, activation="swiglu", num_kv_heads=2, bias=False, rotary=rope, norm="rms",
        qk_norm=True,
    )  # fmt: skip
    layer = randomize_(layer).double()
    assert isinstance(layer.norm1, RMSNorm) and isinstance(layer.norm2, RMSNorm)
    assert not any(name.endswith("bias") for name, _ in layer.named_parameters())
    x = rand(2, 6, D, seed=16)
    np.testing.assert_allclose(
        layer(x, is_causal=True).detach().numpy(), rms_block_by_hand(layer, x, rope), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("norm_first", [False, True])
def test_rms_post_and_pre_norm_decoder_layer_formulas(norm_first):
    layer = randomize_(DecoderLayer(D, H, 24, norm_first=norm_first, norm="rms", bias=False)).double()
    assert [type(n) for n in (layer.norm1, layer.norm2, layer.norm3)] == [RMSNorm] * 3
    x, memory = rand(2, 5, D, seed=17), rand(2, 4, D, seed=18)
    n1, n2, n3 = layer.norm1, layer.norm2, layer.norm3
    sa = lambda h: layer.self_attn(h, is_causal=True)  # noqa: E731
    ca = lambda h: layer.cross_attn(h, memory, memory)  # noqa: E731
    if norm_first:
        y = x + sa(n1(x))
        y = y + ca(n2(y))
        y = y + layer.ffn(n3(y))
    else:
        y = n1(x + sa(x))
        y = n2(y + ca(y))
        y = n3(y + layer.ffn(y))
    torch.testing.assert_close(layer(x, memory), y, rtol=0, atol=1e-12)


def test_decoder_layer_qk_norm_and_biases_reach_both_attentions():
    layer = DecoderLayer(D, H, qk_norm=True, bias=False, qkv_bias=True)
    for attn in (layer.self_attn, layer.cross_attn):
        assert attn.q_norm is not None and attn.qkv.bias is not None and attn.out.bias is None
    assert layer.ffn.linear1.bias is None


def test_stacks_pass_the_options_and_end_with_the_chosen_norm():
    enc = Encoder(2, D, H, 24, norm_first=True, activation="geglu", norm="rms", qk_norm=True, layer_norm_eps=1e-4)
    dec = Decoder(2, D, H, 24, norm_first=True, norm="rms", out_bias=False)
    assert isinstance(enc.norm, RMSNorm) and enc.norm.eps == 1e-4 and isinstance(dec.norm, RMSNorm)
    assert all(layer.ffn.activation == "geglu" and layer.self_attn.q_norm is not None for layer in enc.layers)
    assert all(layer.self_attn.out.bias is None and layer.self_attn.qkv.bias is not None for layer in dec.layers)
    enc, dec = enc.double(), dec.double()
    x, y = rand(2, 5, D, seed=19), rand(2, 3, D, seed=20)
    memory = enc(x)
    expected = x
    for layer in enc.layers:
        expected = layer(expected)
    torch.testing.assert_close(memory, enc.norm(expected), rtol=0, atol=1e-12)
    assert dec(y, memory).shape == (2, 3, D)


# -- a Llama-style GPT -------------------------------------------------------------------------
def llama_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(
        vocab_size=13, block_size=16, n_layer=2, n_head=4, d_model=24, d_ff=glu_d_ff(24), num_kv_heads=2,
        positional="rotary", tie_weights=False, bias=False, activation="swiglu", norm="rms",
    )  # fmt: skip
    args.update(kw)
    return GPT(**args).double().eval()


def test_llama_style_gpt_is_built_as_asked():
    model = llama_gpt(qk_norm=True, rope_base=500000.0)
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    assert isinstance(model.ln_f, RMSNorm) and model.pos_emb is None
    block = model.blocks[0]
    assert isinstance(block.norm1, RMSNorm) and block.ffn.activation == "swiglu" and block.ffn.d_ff == 64
    assert block.self_attn.num_kv_heads == 2 and block.self_attn.q_norm is not None
    assert block.self_attn.rotary.base == 500000.0
    assert torch.equal(block.norm1.weight, torch.ones(24, dtype=torch.float64))  # gains start at 1
    # the residual-stream projections get GPT-2's scaled init, the gated FFN's W_2 included
    assert block.ffn.linear2.weight.std() < 0.02 / math.sqrt(2 * 2) * 1.5


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (1.0, None), (0.8, 5)])
def test_llama_style_gpt_generates_the_same_tokens_with_and_without_cache(qk_norm, temperature, top_k):
    model = llama_gpt(qk_norm=qk_norm)
    idx = torch.randint(0, 13, (2, 3), generator=torch.Generator().manual_seed(1))
    runs = [
        model.generate(idx, 20, temperature, top_k, use_cache=c, generator=torch.Generator().manual_seed(2))
        for c in (True, False)
    ]  # 3 + 20 > block_size: the window slides and the cache is refilled
    assert runs[0].shape == (2, 23)
    assert torch.equal(runs[0], runs[1])


def test_llama_style_gpt_cached_logits_equal_the_full_forward():
    model = llama_gpt(qk_norm=True)
    idx = torch.randint(0, 13, (2, 9), generator=torch.Generator().manual_seed(3))
    full, _ = model(idx)
    caches = model.new_kv_caches(2)
    parts = [model(idx[:, :4], kv_caches=caches)[0]] + [
        model(idx[:, t : t + 1], kv_caches=caches)[0] for t in range(4, 9)
    ]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-10)


def test_llama_style_gpt_trains():
    model = llama_gpt(qk_norm=True).train()
    opt = model.configure_optimizers(lr=3e-3)
    idx = torch.randint(0, 13, (4, 16), generator=torch.Generator().manual_seed(4))
    losses = []
    for _ in range(30):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None for p in model.parameters())


def test_gpt_default_options_are_gpt2s():
    model = GPT(11, 8, 1, 2, 8)
    block = model.blocks[0]
    assert type(model.ln_f) is nn.LayerNorm and type(block.norm1) is nn.LayerNorm
    assert block.ffn.activation == "gelu" and block.ffn.linear3 is None and block.self_attn.q_norm is None
    with pytest.raises(ValueError, match=r"norm='rmsnorm' is not one of"):
        GPT(11, 8, 1, 2, 8, norm="rmsnorm")
