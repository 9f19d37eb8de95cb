"""The public API contract of DESIGN.md: names importable from the top level, with their conventions."""

from __future__ import annotations

import inspect
import subprocess
import sys

import minitransformer as mt

CONTRACT = [
    "scaled_dot_product_attention",
    "causal_mask",
    "padding_mask",
    "AdditiveAttention",
    "LuongAttention",
    "MultiHeadAttention",
    "sinusoidal_encoding",
    "RotaryEmbedding",
    "FeedForward",
    "EncoderLayer",
    "DecoderLayer",
    "Encoder",
    "Decoder",
    "Transformer",
    "GPT",
    "KVCache",
    "flash_attention",
]


def test_contract_names_are_exported():
    for name in CONTRACT:
        assert hasattr(mt, name) and name in mt.__all__, name
    assert all(hasattr(mt, n) for n in mt.__all__)


def test_signatures_follow_the_contract():
    sig = lambda f: inspect.signature(f).parameters  # noqa: E731
    p = sig(mt.scaled_dot_product_attention)
    assert list(p)[:4] == ["q", "k", "v", "mask"]
    assert all(
        p[n].kind is inspect.Parameter.KEYWORD_ONLY for n in ("is_causal", "scale", "dropout_p", "return_weights")
    )
    assert list(sig(mt.causal_mask)) == ["Lq", "Lk", "device"]
    assert list(sig(mt.MultiHeadAttention.__init__))[1:6] == ["d_model", "num_heads", "num_kv_heads", "dropout", "bias"]
    fwd = sig(mt.MultiHeadAttention.forward)
    assert list(fwd)[1:5] == ["query", "key", "value", "mask"]
    assert all(fwd[n].kind is inspect.Parameter.KEYWORD_ONLY for n in ("is_causal", "need_weights", "kv_cache"))
    assert list(sig(mt.GPT.__init__))[1:7] == ["vocab_size", "block_size", "n_layer", "n_head", "d_model", "dropout"]
    gen = sig(mt.GPT.generate)
    assert list(gen)[1:3] == ["idx", "max_new_tokens"] and gen["use_cache"].default is True
    fa = sig(mt.flash_attention)
    assert fa["backend"].default == "auto" and fa["is_causal"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(sig(mt.RotaryEmbedding.forward))[1:3] == ["x", "positions"]


def test_import_needs_no_cupy():
    code = "import sys, minitransformer; assert 'cupy' not in sys.modules, 'cupy imported'"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
