"""Cached decoding: threads of the one-token steps (restored afterwards), the preallocated KVCache,
the Llama-style preset, and the checks GPT, generate, KVCache and the configs make before any work."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from minitransformer.configs import GPTConfig, TransformerConfig, count_gpt_params
from minitransformer.gpt import DECODE_ONE_THREAD_MAX_MACS, GPT, torch_threads
from minitransformer.kv_cache import KVCache, kv_cache_bytes, kv_cache_report
from minitransformer.norms import RMSNorm

V = 11


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(vocab_size=V, block_size=12, n_layer=2, n_head=4, d_model=16)
    args.update(kw)
    return GPT(**args).double().eval()


def prompt(B=2, T=5, seed=0):
    return torch.randint(1, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def two_threads():
    """The caller's setting under test: 2 torch threads (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def record_threads(model: GPT) -> list[tuple[int, int]]:
    """(tokens fed, torch threads) of every forward pass through the first block."""
    seen = []
    model.blocks[0].register_forward_hook(lambda m, args, out: seen.append((args[0].shape[1], torch.get_num_threads())))
    return seen


# -- threads of the one-token steps ------------------------------------------------------------
def test_one_token_steps_of_a_tiny_model_run_on_one_thread_and_the_count_is_restored(two_threads):
    model = tiny_gpt()
    seen = record_threads(model)
    out = model.generate(prompt(T=3), 6, temperature=0.0)
    assert out.shape == (2, 9)
    assert seen[0] == (3, 2)  # the prompt: the caller's threads
    assert seen[1:] == [(1, 1)] * 5  # every one-token step: one thread
    assert torch.get_num_threads() == 2


def test_refills_keep_the_callers_threads(two_threads):
    model = tiny_gpt(block_size=4)
    seen = record_threads(model)
    model.generate(prompt(T=2), 8, temperature=0.0)
    # the prompt, two one-token steps, then (the window full) a refill of 4 at every step
    assert seen == [(2, 2), (1, 1), (1, 1)] + [(4, 2)] * 5
    assert torch.get_num_threads() == 2


def test_decode_threads_overrides_the_choice_and_big_steps_keep_the_pool(two_threads, monkeypatch):
    model = tiny_gpt()
    seen = record_threads(model)
    model.generate(prompt(T=3), 4, temperature=0.0, decode_threads=2)
    assert {threads for _, threads in seen} == {2}
    seen.clear()
    monkeypatch.setattr("minitransformer.gpt.DECODE_ONE_THREAD_MAX_MACS", 10)  # every step counts as big
    model.generate(prompt(T=3), 4, temperature=0.0)
    assert {threads for _, threads in seen} == {2}
    assert DECODE_ONE_THREAD_MAX_MACS == 1 << 24


def test_threads_and_mode_are_restored_when_generate_raises(two_threads):
    model = tiny_gpt().train()
    calls = []

    def fail_on_third(module, args, out):
        calls.append(torch.get_num_threads())
        if len(calls) == 3:  # inside a one-token step, on one thread
            raise RuntimeError("boom")

    model.blocks[1].register_forward_hook(fail_on_third)
    with pytest.raises(RuntimeError, match="boom"):
        model.generate(prompt(T=3), 6, temperature=0.0)
    assert calls == [2, 1, 1]
    assert torch.get_num_threads() == 2 and model.training


def test_torch_threads_restores_the_count(two_threads):
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="inside"), torch_threads(1):
        raise ValueError("inside")
    assert torch.get_num_threads() == 2
    with torch_threads(None):
        assert torch.get_num_threads() == 2


@pytest.mark.parametrize("decode_threads", [None, 1, 2])
def test_cached_equals_uncached_whatever_the_decode_threads(decode_threads, two_threads):
    model = tiny_gpt(d_model=32, num_kv_heads=2, positional="rotary").float()
    idx = prompt(T=2)
    greedy = model.generate(idx, 14, temperature=0.0, decode_threads=decode_threads)  # past block_size: refills
    assert torch.equal(greedy, model.generate(idx, 14, temperature=0.0, use_cache=False))
    draws = [
        model.generate(idx, 14, 1.3, 5, use_cache, torch.Generator().manual_seed(3), decode_threads=decode_threads)
        for use_cache in (True, False)
    ]
    assert torch.equal(*draws) and draws[0].dtype == torch.long


@pytest.mark.parametrize("kw", [{}, {"positional": "rotary", "num_kv_heads": 2}])
def test_a_model_trains_after_generate_and_the_output_is_a_normal_tensor(kw):
    """The one-token steps run in inference mode; nothing they create may stay in the model."""
    model = tiny_gpt(**kw).train()
    out = model.generate(prompt(T=2), 9, temperature=0.0)  # one-token steps up to position 10
    assert not out.is_inference() and model.training
    _, loss = model(out[:, :-1], out[:, 1:])
    loss.backward()  # RoPE's cos/sin tables were built outside inference mode
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("build_tables", [True, False])
def test_no_inference_tensor_stays_in_the_model_after_generate(build_tables, monkeypatch):
    """RoPE's cos/sin tables are built before the inference-mode steps (without that, the steps would grow them)."""
    if not build_tables:
        monkeypatch.setattr(GPT, "_build_tables", lambda self: None)
    model = tiny_gpt(positional="rotary")
    model.generate(prompt(T=2), 9, temperature=0.0)
    tables = [t for pair in model.blocks[0].self_attn.rotary._cache.values() for t in pair]
    assert tables and any(t.is_inference() for t in tables) != build_tables


def test_zero_new_tokens_returns_the_prompt():
    idx = prompt()
    assert tiny_gpt().generate(idx, 0) is idx


# -- the preallocated cache ---------------------------------------------------------------------
def test_kv_cache_appends_in_place_without_reallocating():
    cache = KVCache(1, 2, 6, 4, dtype=torch.float64)
    storage = cache.k.data_ptr(), cache.v.data_ptr()
    k = torch.arange(2 * 6 * 4, dtype=torch.float64).reshape(1, 2, 6, 4)
    cache.append(k[:, :, :4], -k[:, :, :4])
    keys, values = cache.append(k[:, :, 4:5], -k[:, :, 4:5])
    assert keys.shape == (1, 2, 5, 4) and torch.equal(keys, k[:, :, :5]) and torch.equal(values, -k[:, :, :5])
    assert (cache.k.data_ptr(), cache.v.data_ptr()) == storage and keys.data_ptr() == storage[0]  # views
    cache.reset()
    keys, _ = cache.append(k[:, :, 5:], k[:, :, 5:])
    assert len(cache) == 1 and torch.equal(keys, k[:, :, 5:]) and cache.k.data_ptr() == storage[0]


# -- the Llama-style preset ---------------------------------------------------------------------
def test_llama_preset_builds_a_llama_style_model():
    config = GPTConfig.LLAMA_CHAR_CPU
    model = GPT.from_config(config)
    block = model.blocks[0]
    assert isinstance(model.ln_f, RMSNorm) and isinstance(block.norm1, RMSNorm) and isinstance(block.norm2, RMSNorm)
    assert block.ffn.activation == "swiglu" and block.ffn.linear3 is not None and block.ffn.d_ff == 344
    attn = block.self_attn
    assert (attn.num_heads, attn.num_kv_heads, attn.head_dim) == (4, 2, 32)
    assert attn.rotary is not None and model.pos_emb is None and model.positional == "rotary"
    assert attn.qkv.bias is None and attn.out.bias is None and block.ffn.linear1.bias is None
    assert model.lm_head.weight is not model.tok_emb.weight
    assert model.num_parameters() == config.num_parameters() == count_gpt_params(config) == 742_784
    assert (config.n_layer, config.n_head, config.d_model, config.block_size) == (4, 4, 128, 64)  # CHAR_CPU's size


def test_llama_preset_generates_the_same_tokens_with_and_without_the_cache():
    config = dataclasses.replace(GPTConfig.LLAMA_CHAR_CPU, vocab_size=V, block_size=10, n_layer=2, d_model=32)
    torch.manual_seed(0)
    model = GPT.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # random gains too, so that the norms matter
            p.add_(0.3 * torch.randn_like(p))
    idx = prompt(T=3)
    greedy = model.generate(idx, 12, temperature=0.0)  # past block_size: a refill
    assert torch.equal(greedy, model.generate(idx, 12, temperature=0.0, use_cache=False))
    draws = [model.generate(idx, 12, 1.0, None, c, torch.Generator().manual_seed(5)) for c in (True, False)]
    assert torch.equal(*draws)
    full, _ = model(greedy[:, :10])  # the cached logits step by step equal a full pass
    caches = model.new_kv_caches(2)
    steps = [model(greedy[:, :4], kv_caches=caches)[0]] + [
        model(greedy[:, t : t + 1], kv_caches=caches)[0] for t in range(4, 10)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "changes",
    [
        dict(qk_norm=True),
        dict(qkv_bias=True, out_bias=False, bias=False),
        dict(activation="geglu", bias=True, norm="layer"),
        dict(tie_weights=True, positional="learned", norm_eps=1e-6, rope_base=500000.0),
    ],
)
def test_closed_form_counts_of_llama_style_variants(changes):
    config = dataclasses.replace(GPTConfig.LLAMA_CHAR_CPU, **changes)
    with torch.device("meta"):
        assert GPT.from_config(config).num_parameters() == config.num_parameters()


# -- checks before any work ---------------------------------------------------------------------
def no_forward(model: GPT) -> GPT:
    """Make any forward pass through the model fail loudly (a check must come first)."""

    def hook(module, args):
        raise AssertionError("the forward pass ran before the check")

    model.tok_emb.register_forward_pre_hook(hook)
    return model


@pytest.mark.parametrize(
    "idx,targets,error,match",
    [
        (torch.randn(2, 5), None, TypeError, "idx must be an integer tensor"),
        (torch.ones(2, 5, dtype=torch.bool), None, TypeError, "idx must be an integer tensor"),
        ([[1, 2]], None, TypeError, "idx must be an integer tensor"),
        (torch.ones(5, dtype=torch.long), None, ValueError, r"idx must be token ids \(B, T\)"),
        (torch.ones(2, 0, dtype=torch.long), None, ValueError, r"idx must be token ids \(B, T\)"),
        (torch.full((2, 5), V), None, ValueError, r"idx holds ids in \[11, 11\] but vocab_size=11"),
        (torch.ones(2, 13, dtype=torch.long), None, ValueError, "idx has 13 tokens"),
        (prompt(), torch.randn(2, 5), TypeError, "targets must be an integer tensor"),
        (prompt(), torch.ones(2, 5), TypeError, "targets must be an integer tensor"),
        (prompt(), prompt(T=4), ValueError, r"targets must have idx's shape \(2, 5\)"),
        (prompt(), torch.full((2, 5), -2), ValueError, r"targets holds ids in \[-2, -2\]"),
        (prompt(), torch.full((2, 5), V), ValueError, r"targets holds ids in \[11, 11\].*vocab_size=11"),
    ],
)
def test_forward_checks_idx_and_targets_before_any_work(idx, targets, error, match):
    model = no_forward(tiny_gpt())
    with pytest.raises(error, match=match):
        model(idx, targets)


def test_forward_accepts_ignored_targets_and_int32_ids():
    model = tiny_gpt()
    targets = prompt(seed=1)
    targets[:, :2] = -1
    _, loss = model(prompt().int(), targets.int())
    assert torch.isfinite(loss)


def test_forward_checks_the_kv_caches_before_any_work():
    model = no_forward(tiny_gpt(num_kv_heads=2))
    idx = prompt(T=3)
    with pytest.raises(TypeError, match="kv_caches must be a list of KVCache"):
        model(idx, kv_caches=[torch.zeros(1)] * 2)
    with pytest.raises(ValueError, match=r"kv_caches must hold one KVCache per block \(2\), got 1"):
        model(idx, kv_caches=model.new_kv_caches(2)[:1])
    with pytest.raises(ValueError, match=r"kv_caches\[0\] is KVCache\(B=3"):
        model(idx, kv_caches=model.new_kv_caches(3))
    wrong_heads = [KVCache(2, 4, 12, 4, dtype=torch.float64) for _ in range(2)]
    with pytest.raises(ValueError, match="H_kv=2"):
        model(idx, kv_caches=wrong_heads)
    short = [KVCache(2, 2, 2, 4, dtype=torch.float64) for _ in range(2)]
    with pytest.raises(ValueError, match=r"kv_caches\[0\] holds 0 of max_len=2 positions: no room for 3 more"):
        model(idx, kv_caches=short)
    uneven = model.new_kv_caches(2)
    uneven[1].append(torch.zeros(2, 2, 1, 4, dtype=torch.float64), torch.zeros(2, 2, 1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="kv_caches hold different lengths"):
        model(idx, kv_caches=uneven)
    full = model.new_kv_caches(2)
    tiny_gpt(num_kv_heads=2)(prompt(T=11), kv_caches=full)  # 11 of 12 positions filled
    with pytest.raises(ValueError, match=r"idx has 3 tokens \(after 11 cached\) but block_size=12"):
        model(idx, kv_caches=full)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.new_kv_caches(0)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(max_new_tokens=-1), ValueError, "max_new_tokens must be a non-negative int"),
        (dict(max_new_tokens=2.0), ValueError, "max_new_tokens must be a non-negative int"),
        (dict(temperature=float("inf")), ValueError, "temperature must be a number >= 0"),
        (dict(temperature=float("nan")), ValueError, "temperature must be a number >= 0"),
        (dict(top_k=0), ValueError, "top_k must be a positive int or None"),
        (dict(use_cache=1), TypeError, "use_cache must be True or False"),
        (dict(generator=0), TypeError, "generator must be a torch.Generator or None"),
        (dict(decode_threads=0), ValueError, "decode_threads must be a positive int"),
        (dict(idx=torch.randn(2, 3)), TypeError, "idx must be an integer tensor"),
        (dict(idx=torch.full((1, 3), -1)), ValueError, r"idx holds ids in \[-1, -1\]"),
    ],
)
def test_generate_checks_its_arguments_once_before_any_work(kwargs, error, match, two_threads):
    model = no_forward(tiny_gpt()).train()
    args = dict(idx=prompt(), max_new_tokens=3) | kwargs
    with pytest.raises(error, match=match):
        model.generate(**args)
    assert model.training and torch.get_num_threads() == 2


def test_kv_cache_checks_its_arguments():
    with pytest.raises(ValueError, match="KVCache: max_len must be a positive int, got 0"):
        KVCache(1, 2, 0, 4)
    with pytest.raises(TypeError, match="KVCache: dtype must be a floating torch.dtype"):
        KVCache(1, 2, 4, 4, dtype=torch.int64)
    with pytest.raises(TypeError, match="KVCache: static must be True or False"):
        KVCache(1, 2, 4, 4, static="yes")
    cache = KVCache(1, 2, 4, 8)
    with pytest.raises(TypeError, match="KVCache.append expects tensors k and v"):
        cache.append([0.0], torch.zeros(1, 2, 1, 8))
    with pytest.raises(TypeError, match=r"k has dtype torch.float64 .* this cache stores torch.float32"):
        cache.append(torch.zeros(1, 2, 1, 8, dtype=torch.float64), torch.zeros(1, 2, 1, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expects k and v of shape \(B=1, H_kv=2, T_new, head_dim=8\)"):
        cache.append(torch.zeros(1, 2, 1, 8), torch.zeros(1, 2, 2, 8))
    assert len(cache) == 0  # nothing was stored by the failed calls
    with pytest.raises(ValueError, match="kv_cache_bytes: tokens must be a non-negative int"):
        kv_cache_bytes(2, 2, 64, -1)
    with pytest.raises(ValueError, match="n_heads=6 is not divisible by n_kv_heads=4"):
        kv_cache_report("x", 2, 6, 4, 64, 100)


@pytest.mark.parametrize(
    "config,changes,error,match",
    [
        (GPTConfig, dict(n_head=3), ValueError, "GPTConfig: d_model=128 is not divisible by n_head=3"),
        (GPTConfig, dict(num_kv_heads=3), ValueError, "GPTConfig: n_head=4 is not divisible by num_kv_heads=3"),
        (GPTConfig, dict(block_size=0), ValueError, "GPTConfig: block_size must be a positive int, got 0"),
        (GPTConfig, dict(d_ff=0), ValueError, "GPTConfig: d_ff must be a positive int"),
        (GPTConfig, dict(dropout=1.0), ValueError, r"GPTConfig: dropout must be in \[0, 1\)"),
        (GPTConfig, dict(positional="alibi"), ValueError, "GPTConfig: positional='alibi' is not one of"),
        (GPTConfig, dict(norm="batch"), ValueError, "GPTConfig: norm='batch' is not one of"),
        (GPTConfig, dict(activation=None), TypeError, "GPTConfig: activation must be a string"),
        (GPTConfig, dict(bias="no"), TypeError, "GPTConfig: bias must be True or False"),
        (GPTConfig, dict(qkv_bias=1), TypeError, "GPTConfig: qkv_bias must be True or False"),
        (GPTConfig, dict(norm_eps=0.0), ValueError, "GPTConfig: norm_eps must be in"),
        (GPTConfig, dict(rope_base="1e4"), TypeError, "GPTConfig: rope_base must be a real number"),
        (TransformerConfig, dict(num_heads=7), ValueError, "TransformerConfig: d_model=512 is not divisible by"),
        (TransformerConfig, dict(num_encoder_layers=0), ValueError, "TransformerConfig: num_encoder_layers"),
        (TransformerConfig, dict(tgt_vocab_size=100), ValueError, "TransformerConfig: share_embeddings needs"),
        (TransformerConfig, dict(pad_id=37000), ValueError, "TransformerConfig: pad_id=37000 is not an id"),
        (TransformerConfig, dict(activation="tanh"), ValueError, "TransformerConfig: activation='tanh'"),
        (TransformerConfig, dict(tie_output=None), TypeError, "TransformerConfig: tie_output must be True or False"),
    ],
)
def test_configs_check_every_field(config, changes, error, match):
    base = GPTConfig.CHAR_CPU if config is GPTConfig else TransformerConfig.BASE
    with pytest.raises(error, match=match):
        dataclasses.replace(base, **changes)
