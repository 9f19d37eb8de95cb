"""The encoder-decoder Transformer, GPT, sampling and the configs' parameter counts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from minitransformer.configs import (
    GPTConfig,
    TransformerConfig,
    count_block_params,
    count_gpt_params,
    count_transformer_params,
)
from minitransformer.gpt import GPT, sample_next_token, sampling_probs
from minitransformer.transformer import Transformer

V = 11
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(vocab_size=V, block_size=12, n_layer=2, n_head=4, d_model=16)
    args.update(kw)
    return GPT(**args).double().eval()


def tiny_transformer(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(
        d_model=16, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=32, dropout=0.0, max_len=20, pad_id=0
    )
    args.update(kw)
    return Transformer(V, V, **args).double().eval()


def prompt(B=2, T=5, seed=0):
    return torch.randint(1, V, (B, T), generator=torch.Generator().manual_seed(seed))


# -- GPT ---------------------------------------------------------------------------------------
def test_gpt_forward_shapes_and_loss():
    model = tiny_gpt()
    idx = prompt()
    logits, loss = model(idx)
    assert logits.shape == (2, 5, V) and loss is None
    targets = prompt(seed=1)
    logits, loss = model(idx, targets)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    assert torch.isclose(loss, expected)
    targets[:, :2] = -1  # ignored positions
    _, loss = model(idx, targets)
    expected = torch.nn.functional.cross_entropy(logits[:, 2:].reshape(-1, V), targets[:, 2:].reshape(-1))
    assert torch.isclose(loss, expected)


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rotary"])
def test_gpt_is_causal(positional):
    model = tiny_gpt(positional=positional)
    idx = prompt(T=9)
    changed = idx.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % V
    a, b = model(idx)[0], model(changed)[0]
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-12)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"positional": "rotary"},
        {"positional": "sinusoidal"},
        {"num_kv_heads": 2},
        {"num_kv_heads": 1, "positional": "rotary"},
    ],
)
def test_gpt_cached_logits_equal_uncached_step_by_step(kw):
    model = tiny_gpt(**kw)
    idx = prompt(T=10)
    full, _ = model(idx)
    caches = model.new_kv_caches(batch_size=2)
    first, _ = model(idx[:, :4], kv_caches=caches)  # a prompt of 4, then one token at a time
    steps = [first] + [model(idx[:, t : t + 1], kv_caches=caches)[0] for t in range(4, 10)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-10)
    assert len(caches[0]) == 10


@pytest.mark.parametrize("kw", [{}, {"num_kv_heads": 2, "positional": "rotary"}])
def test_generate_greedy_cached_equals_uncached(kw):
    model = tiny_gpt(**kw)
    idx = prompt(T=3)
    a = model.generate(idx, 8, temperature=0.0, use_cache=True)
    b = model.generate(idx, 8, temperature=0.0, use_cache=False)
    assert a.shape == (2, 11) and torch.equal(a, b) and torch.equal(a[:, :3], idx)
    manual = idx  # greedy = append the argmax of the last position's logits
    for _ in range(8):
        manual = torch.cat([manual, model(manual)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(a, manual)


def test_generate_sampled_with_the_same_seed_is_the_same_with_and_without_cache():
    model = tiny_gpt(d_model=32).float()
    idx = prompt(T=2)
    torch.manual_seed(123)
    a = model.generate(idx, 9, temperature=1.3, top_k=5, use_cache=True)
    torch.manual_seed(123)
    b = model.generate(idx, 9, temperature=1.3, top_k=5, use_cache=False)
    torch.manual_seed(7)
    c = model.generate(idx, 9, temperature=1.3, top_k=5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generate_beyond_block_size_crops_the_context():
    model = tiny_gpt(block_size=6)
    idx = prompt(T=4)
    a = model.generate(idx, 10, temperature=0.0, use_cache=True)
    b = model.generate(idx, 10, temperature=0.0, use_cache=False)
    manual = idx
    for _ in range(10):  # nanoGPT's rule: condition on the last block_size tokens
        logits, _ = model(manual[:, -6:])
        manual = torch.cat([manual, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert a.shape == (2, 14) and torch.equal(a, b) and torch.equal(a, manual)
    long_prompt = prompt(T=9)  # a prompt longer than block_size is cropped too
    assert torch.equal(
        model.generate(long_prompt, 3, temperature=0.0),
        model.generate(long_prompt, 3, temperature=0.0, use_cache=False),
    )
    with pytest.raises(ValueError, match="idx has 7 tokens .* but block_size=6"):
        model(prompt(T=7))


def test_top_k_keeps_only_the_k_most_likely_tokens():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.5, 0.3], [3.0, 2.0, 1.0, 0.0, -1.0]])
    probs = sampling_probs(logits, temperature=1.0, top_k=2)
    assert torch.equal(probs > 0, torch.tensor([[False, True, False, True, False], [True, True, False, False, False]]))
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    assert torch.allclose(sampling_probs(logits, top_k=99), torch.softmax(logits, -1))
    assert torch.equal(sampling_probs(logits, temperature=0.0).argmax(-1), logits.argmax(-1))
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_next_token(logits, 2.0, top_k=2, generator=g) for _ in range(200)], dim=1)
    assert set(draws[0].tolist()) == {1, 3} and set(draws[1].tolist()) == {0, 1}
    model = tiny_gpt()
    idx = prompt(T=3)
    torch.manual_seed(0)
    assert torch.equal(model.generate(idx, 5, top_k=1), model.generate(idx, 5, temperature=0.0))


def test_torch_attention_backend_gives_the_same_logits():
    model = tiny_gpt(num_kv_heads=2)
    idx, targets = prompt(T=12), prompt(T=12, seed=1)
    ours, loss_ours = model(idx, targets)
    model.attn_backend = "torch"
    assert all(b.self_attn.backend == "torch" for b in model.blocks)
    theirs, loss_theirs = model(idx, targets)
    assert torch.allclose(ours, theirs, atol=1e-12) and torch.isclose(loss_ours, loss_theirs)
    loss_theirs.backward()
    assert torch.equal(
        model.generate(idx[:, :3], 6, temperature=0.0), model.generate(idx[:, :3], 6, temperature=0.0, use_cache=False)
    )


def test_flash_backend_trains_and_generates_like_ours():
    # On the CPU "flash" runs the tiled torch twin (training) and the exact decode path.
    model = tiny_gpt(num_kv_heads=2)
    idx, targets = prompt(T=12), prompt(T=12, seed=1)
    ours, loss_ours = model(idx, targets)
    loss_ours.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.attn_backend = "flash"
    theirs, loss_flash = model(idx, targets)
    assert torch.allclose(ours, theirs, atol=1e-10) and torch.isclose(loss_ours, loss_flash)
    loss_flash.backward()
    assert all(torch.allclose(g, p.grad, atol=1e-10) for g, p in zip(grads, model.parameters()))
    flash_cached = model.generate(idx[:, :3], 6, temperature=0.0)
    model.attn_backend = "minitransformer"
    assert torch.equal(flash_cached, model.generate(idx[:, :3], 6, temperature=0.0, use_cache=False))


def test_gradients_reach_every_parameter_and_weights_are_tied():
    model = tiny_gpt().train()
    _, loss = model(prompt(), prompt(seed=1))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert model.lm_head.weight is model.tok_emb.weight
    assert tiny_gpt(tie_weights=False).lm_head.weight is not tiny_gpt(tie_weights=False).tok_emb.weight


def test_gpt_dropout_acts_only_in_training_and_as_in_gpt2():
    model = tiny_gpt(dropout=0.2)
    block = model.blocks[0]
    assert block.self_attn.dropout == 0.2 and block.dropout1.p == 0.2 and block.ffn.dropout.p == 0.0
    idx = prompt()
    assert torch.equal(model(idx)[0], model(idx)[0])  # eval: deterministic
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])


def test_tiny_gpt_overfits_a_repeated_sequence():
    torch.manual_seed(0)
    model = GPT(vocab_size=V, block_size=16, n_layer=2, n_head=2, d_model=32)
    data = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3] * 4)
    x = torch.stack([data[i : i + 16] for i in range(8)])  # (8, 16)
    y = torch.stack([data[i + 1 : i + 17] for i in range(8)])  # (8, 16)
    opt = model.configure_optimizers(lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(60):
        _, loss = model(x, y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 2.0 and loss.item() < 0.2
    out = model.generate(data[None, :10], 10, temperature=0.0)
    assert torch.equal(out[0, 10:], data[10:20])
    assert model.training  # generate ran in eval mode and restored the mode


def test_attention_maps_have_one_map_per_layer_and_head():
    model = tiny_gpt()
    maps = model.attention_maps(prompt(T=7))
    assert maps.shape == (2, 2, 4, 7, 7)
    assert torch.all(maps.triu(1) == 0) and torch.allclose(maps.sum(-1), torch.ones(2, 2, 4, 7, dtype=maps.dtype))


def test_gpt_rejects_bad_configs_and_inputs():
    with pytest.raises(ValueError, match="d_model=30 is not divisible by n_head=4"):
        GPT(V, 8, 2, 4, 30)
    with pytest.raises(ValueError, match="block_size must be a positive int, got 0"):
        GPT(V, 0, 2, 4, 16)
    with pytest.raises(ValueError, match="positional='alibi' is not one of"):
        GPT(V, 8, 2, 4, 16, positional="alibi")
    model = tiny_gpt()
    with pytest.raises(TypeError, match="idx must be an integer tensor of token ids"):
        model(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"idx holds ids in \[0, 11\] but vocab_size=11"):
        model(torch.tensor([[0, 11]]))
    with pytest.raises(ValueError, match=r"targets must have idx's shape \(2, 5\)"):
        model(prompt(), prompt(T=4))
    with pytest.raises(ValueError, match="temperature must be a number >= 0"):
        model.generate(prompt(), 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k must be a positive int or None, got 0"):
        model.generate(prompt(), 2, top_k=0)
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative int"):
        model.generate(prompt(), -1)


# -- the encoder-decoder Transformer ------------------------------------------------------------
def test_transformer_forward_is_causal_and_ignores_padding():
    model = tiny_transformer()
    src = torch.tensor([[4, 5, 6, 7, 8], [3, 9, 2, 0, 0]])
    tgt = torch.tensor([[1, 5, 6, 7], [1, 2, 3, 4]])
    logits = model(src, tgt)
    assert logits.shape == (2, 4, V)
    future = tgt.clone()
    future[:, 2:] = 9
    assert torch.allclose(model(src, future)[:, :2], logits[:, :2], atol=1e-12)
    no_pad = model(src[1:, :3], tgt[1:])  # the same sentence without its padding
    assert torch.allclose(logits[1:], no_pad, atol=1e-12)


@pytest.mark.parametrize("kw,eos", [({}, 10), ({"norm_first": True, "num_kv_heads": 2, "activation": "gelu"}, 9)])
def test_greedy_decode_cached_equals_uncached(kw, eos):
    model = tiny_transformer(**kw)  # untrained: the EOS ids are chosen so that ONE sequence ends early
    src = torch.tensor([[4, 5, 6, 7, 8], [3, 9, 2, 0, 0]])
    a = model.greedy_decode(src, 12, bos_id=1, eos_id=eos, use_cache=True)
    b = model.greedy_decode(src, 12, bos_id=1, eos_id=eos, use_cache=False)
    assert torch.equal(a, b) and 1 <= a.shape[1] <= 12
    memory, src_mask = model.encode(src), src != 0
    ys = torch.ones(2, 1, dtype=torch.long)  # BOS, then the same tokens by hand from full decoder passes
    for _ in range(a.shape[1]):
        logits = model.decode(ys, memory, src_mask[:, None, None, :])  # (B, T, V)
        ys = torch.cat([ys, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    ys = ys[:, 1:]
    done = torch.cumsum(ys == eos, dim=1) > 0
    after_eos = torch.cat([torch.zeros(2, 1, dtype=torch.bool), done[:, :-1]], dim=1)
    assert after_eos.any(dim=1).sum() == 1, "exactly one sequence should end early"
    assert torch.equal(a[~after_eos], ys[~after_eos]) and torch.all(a[after_eos] == 0)  # pad after EOS


def test_greedy_decode_stops_when_every_sequence_has_ended():
    model = tiny_transformer()
    with torch.no_grad():  # make EOS (id 2) the argmax everywhere
        model.generator.bias.fill_(0.0)
        model.generator.bias[2] = 1e3
    out = model.greedy_decode(torch.tensor([[4, 5, 6]]), 10, bos_id=1, eos_id=2)
    assert out.tolist() == [[2]]


def test_transformer_weight_sharing_and_maps():
    model = tiny_transformer(share_embeddings=True, tie_output=True)
    assert model.src_embed is model.tgt_embed and model.generator.weight is model.tgt_embed.weight
    maps = model.attention_maps(torch.tensor([[4, 5, 6]]), torch.tensor([[1, 7]]))
    assert [m.shape for m in maps["cross"]] == [(1, 4, 2, 3)] * 2
    assert maps["encoder"][0].shape == (1, 4, 3, 3) and maps["decoder_self"][1].shape == (1, 4, 2, 2)
    with pytest.raises(ValueError, match="share_embeddings needs src_vocab_size == tgt_vocab_size, got 11 and 12"):
        Transformer(11, 12, 16, 4, share_embeddings=True)
    with pytest.raises(ValueError, match="tgt_in reaches position 21 > max_len=20"):
        model(torch.tensor([[4, 5]]), torch.ones(1, 21, dtype=torch.long))
    with pytest.raises(ValueError, match=r"src must be an integer tensor \(B, L\), got \(1, 2, 16\)"):
        model(torch.randn(1, 2, 16), torch.tensor([[1]]))
    with pytest.raises(ValueError, match="max_len=30 exceeds the model's max_len=20"):
        model.greedy_decode(torch.tensor([[4, 5]]), 30, 1, 2)


# -- configs and parameter counts ---------------------------------------------------------------
def test_closed_form_counts_equal_the_models():
    assert count_block_params(512, 2048) == 3_152_384
    assert count_block_params(512, 2048, cross_attention=True) == 4_204_032
    with torch.device("meta"):  # no memory is allocated for these
        for cfg in (
            TransformerConfig.BASE,
            TransformerConfig.BIG,
            dataclasses.replace(
                TransformerConfig.BASE,
                norm_first=True,
                share_embeddings=False,
                tie_output=False,
                src_vocab_size=900,
                num_kv_heads=2,
            ),
        ):
            assert Transformer.from_config(cfg).num_parameters() == count_transformer_params(cfg)
        for cfg in (
            GPTConfig.CHAR_CPU,
            GPTConfig.CHAR_GPU,
            GPTConfig.GPT2_SMALL,
            dataclasses.replace(
                GPTConfig.CHAR_CPU, positional="rotary", tie_weights=False, bias=False, num_kv_heads=2, d_ff=200
            ),
        ):
            assert GPT.from_config(cfg).num_parameters() == count_gpt_params(cfg) == cfg.num_parameters()
    assert TransformerConfig.BASE.num_parameters() == 63_119_496
    assert GPTConfig.GPT2_SMALL.num_parameters() == 124_439_808  # GPT-2 small's published "124M"
    with pytest.raises(dataclasses.FrozenInstanceError):
        GPTConfig.CHAR_CPU.n_layer = 8


@pytest.mark.parametrize("model,config", [(Transformer, TransformerConfig), (GPT, GPTConfig)])
def test_from_config_passes_every_field_by_name(model, config):
    import inspect

    params = inspect.signature(model.__init__).parameters
    assert all(f.name in params for f in dataclasses.fields(config))  # a new field needs its argument
    small = (
        dataclasses.replace(
            TransformerConfig.BASE,
            src_vocab_size=V,
            tgt_vocab_size=V,
            d_model=16,
            num_heads=4,
            num_encoder_layers=1,
            num_decoder_layers=2,
            d_ff=24,
            dropout=0.25,
            max_len=9,
            share_embeddings=False,
            tie_output=False,
            pad_id=0,
            norm_first=True,
        )
        if config is TransformerConfig
        else dataclasses.replace(
            GPTConfig.CHAR_CPU,
            vocab_size=V,
            block_size=9,
            n_layer=1,
            n_head=2,
            d_model=16,
            dropout=0.25,
            d_ff=24,
            positional="rotary",
            tie_weights=False,
            bias=False,
        )
    )
    m = model.from_config(small)
    if config is TransformerConfig:
        assert (m.max_len, m.pad_id, len(m.encoder.layers), len(m.decoder.layers)) == (9, 0, 1, 2)
        assert m.src_embed is not m.tgt_embed and m.generator.weight is not m.tgt_embed.weight
        assert m.encoder.layers[0].ffn.d_ff == 24 and m.encoder.norm is not None and m.dropout.p == 0.25
    else:
        assert (m.block_size, m.n_layer, m.positional, m.blocks[0].ffn.d_ff) == (9, 1, "rotary", 24)
        assert m.lm_head.weight is not m.tok_emb.weight and m.ln_f.bias is None and m.drop.p == 0.25
    assert m.num_parameters() == small.num_parameters()
    assert model.from_config(small, dropout=0.0).num_parameters() == m.num_parameters()
    with pytest.raises(TypeError, match=f"from_config expects a {config.__name__}"):
        model.from_config(GPTConfig.CHAR_CPU if config is TransformerConfig else TransformerConfig.BASE)
