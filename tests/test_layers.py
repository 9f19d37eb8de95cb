"""FeedForward, EncoderLayer, DecoderLayer and the stacks, against PyTorch's own layers (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from helpers import rand
from minitransformer import MultiHeadAttention, causal_mask, padding_mask
from minitransformer.kv_cache import KVCache
from minitransformer.layers import DecoderLayer, EncoderLayer, FeedForward
from minitransformer.transformer import Decoder, Encoder

D, H, FF = 16, 4, 24
LAYER_KINDS = [(nf, act) for nf in (False, True) for act in ("relu", "gelu")]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def tokens_with_padding():
    """Two sequences of length 7, the second padded (id 0) after 4 tokens."""
    tok = torch.tensor([[5, 3, 2, 7, 1, 4, 6], [2, 2, 9, 1, 0, 0, 0]])
    return tok, padding_mask(tok, pad_id=0)  # ours: (B, 1, 1, S), True = real token


def torch_encoder_layer(norm_first, activation, seed=0):
    torch.manual_seed(seed)
    return nn.TransformerEncoderLayer(
        D, H, FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).double()


def torch_decoder_layer(norm_first, activation, seed=0):
    torch.manual_seed(seed)
    return nn.TransformerDecoderLayer(
        D, H, FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).double()


# -- feed-forward ------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_ffn_equals_two_1x1_convolutions(activation):
    torch.manual_seed(0)
    ffn = FeedForward(D, FF, activation=activation).double()
    conv1, conv2 = nn.Conv1d(D, FF, kernel_size=1).double(), nn.Conv1d(FF, D, kernel_size=1).double()
    with torch.no_grad():
        conv1.weight.copy_(ffn.linear1.weight[:, :, None])
        conv1.bias.copy_(ffn.linear1.bias)
        conv2.weight.copy_(ffn.linear2.weight[:, :, None])
        conv2.bias.copy_(ffn.linear2.bias)
    x = rand(3, 9, D)
    act = nn.ReLU() if activation == "relu" else nn.GELU()
    conv_out = conv2(act(conv1(x.transpose(1, 2)))).transpose(1, 2)  # Conv1d wants (B, C, T)
    assert torch.allclose(ffn(x), conv_out, atol=1e-12)


def test_ffn_is_position_wise_so_it_commutes_with_shifts():
    ffn = FeedForward(D).double()
    x = rand(2, 10, D)
    assert torch.allclose(ffn(torch.roll(x, 3, dims=1)), torch.roll(ffn(x), 3, dims=1), atol=1e-12)
    assert ffn.d_ff == 4 * D


# -- encoder layer -----------------------------------------------------------------------------
@pytest.mark.parametrize("norm_first,activation", LAYER_KINDS)
def test_encoder_layer_equals_torch(norm_first, activation):
    ref = torch_encoder_layer(norm_first, activation)
    ours = EncoderLayer.from_torch(ref)
    x = rand(2, 7, D)
    tok, mask = tokens_with_padding()
    expected = ref(x, src_key_padding_mask=(tok == 0))  # torch: True = padding
    assert torch.allclose(ours(x, mask), expected, atol=1e-12)
    assert torch.allclose(ours(x), ref(x), atol=1e-12)
    assert torch.allclose(ours(x, is_causal=True), ref(x, src_mask=~causal_mask(7)), atol=1e-12)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_the_written_formulas(norm_first):
    layer = EncoderLayer(D, H, FF, norm_first=norm_first).double()
    x = rand(2, 5, D)
    mha, ffn, ln1, ln2 = layer.self_attn, layer.ffn, layer.norm1, layer.norm2
    if norm_first:  # x = x + MHA(LN(x)); x = x + FFN(LN(x))
        y = x + mha(ln1(x))
        y = y + ffn(ln2(y))
    else:  # Z = LN(X + MHA(X)); out = LN(Z + FFN(Z))
        z = ln1(x + mha(x))
        y = ln2(z + ffn(z))
    assert torch.allclose(layer(x), y, atol=1e-12)


# -- decoder layer -----------------------------------------------------------------------------
@pytest.mark.parametrize("norm_first,activation", LAYER_KINDS)
def test_decoder_layer_equals_torch(norm_first, activation):
    ref = torch_decoder_layer(norm_first, activation)
    ours = DecoderLayer.from_torch(ref)
    x, memory = rand(2, 5, D, seed=1), rand(2, 7, D, seed=2)
    src, src_mask = tokens_with_padding()
    tgt = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]])
    expected = ref(
        x, memory, tgt_mask=~causal_mask(5), tgt_key_padding_mask=(tgt == 0), memory_key_padding_mask=(src == 0)
    )
    got = ours(x, memory, self_mask=padding_mask(tgt, 0), memory_mask=src_mask)
    assert torch.allclose(got[0], expected[0], atol=1e-12)
    # the padded positions of sequence 1 are garbage in both, but still equal
    assert torch.allclose(got, expected, atol=1e-12)


def test_decoder_layer_is_causal_and_returns_both_maps():
    layer = DecoderLayer(D, H, FF).double().eval()
    x, memory = rand(1, 6, D, seed=1), rand(1, 4, D, seed=2)
    changed = x.clone()
    changed[:, 4:] = rand(1, 2, D, seed=3)
    assert torch.allclose(layer(x, memory)[:, :4], layer(changed, memory)[:, :4], atol=1e-12)
    assert not torch.allclose(layer(x, memory)[:, 4:], layer(changed, memory)[:, 4:])
    out, self_w, cross_w = layer(x, memory, need_weights=True)
    assert self_w.shape == (1, H, 6, 6) and cross_w.shape == (1, H, 6, 4)
    assert torch.all(self_w.triu(1) == 0)
    assert torch.allclose(cross_w.sum(-1), torch.ones(1, H, 6, dtype=torch.float64))


def test_decoder_layer_with_caches_equals_full_pass():
    layer = DecoderLayer(D, H, FF, num_kv_heads=2, norm_first=True).double().eval()
    x, memory = rand(2, 6, D, seed=1), rand(2, 3, D, seed=2)
    full = layer(x, memory)
    self_cache = KVCache(2, 2, 6, D // H, dtype=torch.float64)
    cross_cache = KVCache(2, 2, 3, D // H, dtype=torch.float64, static=True)
    steps = [layer(x[:, t : t + 1], memory, self_cache=self_cache, cross_cache=cross_cache) for t in range(6)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-12)


# -- stacks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_and_decoder_stacks_equal_torch(norm_first):
    torch.manual_seed(0)
    final = nn.LayerNorm(D).double() if norm_first else None
    ref_enc = nn.TransformerEncoder(
        torch_encoder_layer(norm_first, "relu"), 3, norm=final, enable_nested_tensor=False
    ).double()
    final = nn.LayerNorm(D).double() if norm_first else None
    ref_dec = nn.TransformerDecoder(torch_decoder_layer(norm_first, "relu"), 2, norm=final).double()
    for mod in (ref_enc, ref_dec):  # make the copies of the layer differ from each other
        for p in mod.parameters():
            nn.init.normal_(p, std=0.3)
    enc, dec = Encoder.from_torch(ref_enc), Decoder.from_torch(ref_dec)
    src, src_mask = tokens_with_padding()
    x, y = rand(2, 7, D, seed=1), rand(2, 5, D, seed=2)
    memory = enc(x, src_mask)
    assert torch.allclose(memory, ref_enc(x, src_key_padding_mask=(src == 0)), atol=1e-10)
    expected = ref_dec(y, memory, tgt_mask=~causal_mask(5), memory_key_padding_mask=(src == 0))
    assert torch.allclose(dec(y, memory, memory_mask=src_mask), expected, atol=1e-10)


def test_pre_ln_stacks_end_with_a_layernorm_and_post_ln_stacks_do_not():
    assert isinstance(Encoder(2, D, H, norm_first=True).norm, nn.LayerNorm)
    assert isinstance(Decoder(2, D, H, norm_first=True).norm, nn.LayerNorm)
    assert Encoder(2, D, H).norm is None and Decoder(2, D, H).norm is None
    memory, maps = Encoder(3, D, H).double()(rand(1, 4, D), need_weights=True)
    assert memory.shape == (1, 4, D) and len(maps) == 3 and maps[0].shape == (1, H, 4, 4)


def test_gradients_reach_every_parameter():
    layer = DecoderLayer(D, H, FF, norm_first=True).double()
    x, memory = rand(2, 5, D, seed=1).requires_grad_(), rand(2, 3, D, seed=2).requires_grad_()
    layer(x, memory).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    assert x.grad.abs().sum() > 0 and memory.grad.abs().sum() > 0


# -- the attention backend switch --------------------------------------------------------------
@pytest.mark.parametrize("num_kv_heads", [None, 2])
def test_torch_backend_gives_our_outputs(num_kv_heads):
    torch.manual_seed(0)
    ours = MultiHeadAttention(D, H, num_kv_heads).double()
    fused = MultiHeadAttention(D, H, num_kv_heads, backend="torch").double()
    fused.load_state_dict(ours.state_dict())
    x, mem = rand(2, 7, D, seed=1), rand(2, 5, D, seed=2)
    _, mask = tokens_with_padding()
    assert torch.allclose(ours(x, mask=mask), fused(x, mask=mask), atol=1e-12)
    assert torch.allclose(ours(x, is_causal=True), fused(x, is_causal=True), atol=1e-12)
    assert torch.allclose(ours(x, mem, mem, mask=mask[..., :5]), fused(x, mem, mem, mask=mask[..., :5]), atol=1e-12)
    caches = [KVCache(2, num_kv_heads or H, 7, D // H, dtype=torch.float64) for _ in range(2)]
    ours(x[:, :4], is_causal=True, kv_cache=caches[0])
    fused(x[:, :4], is_causal=True, kv_cache=caches[1])  # then 3 queries against 7 keys:
    a = ours(x[:, 4:], mask=mask, is_causal=True, kv_cache=caches[0])
    assert torch.allclose(a, fused(x[:, 4:], mask=mask, is_causal=True, kv_cache=caches[1]), atol=1e-12)
    out, w = fused(x, need_weights=True)  # weights come from our implementation
    assert w.shape == (2, H, 7, 7)


def test_backend_names_are_checked():
    with pytest.raises(ValueError, match="no attention dropout"):
        MultiHeadAttention(D, H, dropout=0.1, backend="flash").train()(torch.zeros(1, 3, D))
    m = MultiHeadAttention(D, H)
    with pytest.raises(ValueError, match="backend='cuda' is not one of"):
        m.backend = "cuda"
    assert m.backend == "minitransformer"


# -- errors ------------------------------------------------------------------------------------
def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="d_model=30 is not divisible by num_heads=4"):
        EncoderLayer(30, 4)
    with pytest.raises(ValueError, match="activation='swish' is not one of"):
        FeedForward(D, activation="swish")
    with pytest.raises(TypeError, match="activation must be a string"):
        DecoderLayer(D, H, activation=nn.ReLU())
    with pytest.raises(ValueError, match="d_ff must be a positive int"):
        FeedForward(D, d_ff=0)
    with pytest.raises(ValueError, match="dropout must be in"):
        EncoderLayer(D, H, dropout=1.5)
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        Encoder(0, D, H)
    with pytest.raises(ValueError, match="FeedForward: x has 8 features but d_model=16"):
        FeedForward(D)(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"memory must be \(B=2, S, d_model=16\), got \(3, 4, 16\)"):
        DecoderLayer(D, H)(torch.randn(2, 3, D), torch.randn(3, 4, D))
    with pytest.raises(TypeError, match="expects torch.nn.TransformerEncoderLayer"):
        EncoderLayer.from_torch(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="self_caches must hold one KVCache per layer"):
        Decoder(2, D, H)(torch.randn(1, 1, D), torch.randn(1, 2, D), self_caches=[])


# -- options reach every layer -----------------------------------------------------------------
@pytest.mark.parametrize("stack", [Encoder, Decoder])
def test_stack_keyword_options_reach_every_layer(stack):
    from minitransformer import RotaryEmbedding

    rotary = RotaryEmbedding(D // H)
    model = stack(2, D, H, FF, 0.1, norm_first=True, bias=False, layer_norm_eps=1e-3, rotary=rotary, ffn_dropout=0.0)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert model.norm in norms and len(norms) == 2 * (3 if stack is Decoder else 2) + 1
    assert all(n.eps == 1e-3 and n.bias is None for n in norms)  # the final norm too
    assert linears and all(lin.bias is None for lin in linears)
    for layer in model.layers:
        assert layer.self_attn.rotary is rotary and layer.ffn.dropout.p == 0.0 and layer.dropout1.p == 0.1
        if stack is Decoder:
            assert layer.cross_attn.rotary is None  # RoPE: self-attention only
    with pytest.raises(TypeError, match="unexpected keyword argument 'biass'"):
        stack(2, D, H, biass=False)


def test_decoder_layer_ffn_dropout_is_separate_from_dropout():
    layer = DecoderLayer(D, H, FF, dropout=0.3, ffn_dropout=0.0)
    assert layer.ffn.dropout.p == 0.0 and layer.self_attn.dropout == layer.cross_attn.dropout == 0.3
    assert DecoderLayer(D, H, FF, dropout=0.3).ffn.dropout.p == 0.3  # default: the same as dropout
    with pytest.raises(ValueError, match=r"ffn_dropout must be in \[0, 1\), got 1.0"):
        DecoderLayer(D, H, ffn_dropout=1.0)


def test_size_checks_are_uniform_and_reject_bool():
    for make, name in (
        (lambda: EncoderLayer(D, True), "num_heads"),
        (lambda: FeedForward(True), "d_model"),
        (lambda: Encoder(True, D, H), "num_layers"),
        (lambda: MultiHeadAttention(D, 0), "num_heads"),
    ):
        with pytest.raises(ValueError, match=f"{name} must be a positive int, got"):
            make()
    with pytest.raises(TypeError, match="dropout must be a number in"):
        EncoderLayer(D, H, dropout="0.1")
