"""Bad input is refused before any work, with the argument named: every public function of the
attention, validation, efficient, linear-attention, positional, relative, data and train modules.

Each case calls a function with one bad argument and asserts the exception type (``TypeError``
for a wrong type or dtype, ``ValueError`` for a wrong value, shape or range) and that the message
names the argument. Where "before any work" matters (the losses, attention), a spy proves the
expensive call was never made.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable

import pytest
import torch
from torch import nn

from minitransformer import attention, data, efficient, linear_attention, positional, relative, train
from minitransformer.flash import flash_attention
from minitransformer.validation import (
    MAX_TABLE_ENTRIES,
    check_bool,
    check_finite,
    check_int_tensor,
    check_real,
    check_scale,
)

NAN, INF = float("nan"), float("inf")


def qkv(*shape, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(*shape, generator=g, dtype=dtype) for _ in range(3))


def with_nan(t: torch.Tensor, value: float = NAN) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[1] = value
    return t


def expect(error: type[Exception], name: str, fn: Callable[[], object]) -> None:
    """``fn()`` raises ``error`` and the message names ``name``."""
    with pytest.raises(error) as info:
        fn()
    assert name in str(info.value), f"{name!r} not in {str(info.value)!r}"


# -- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,error",
    [(NAN, ValueError), (INF, ValueError), (-INF, ValueError), (0.0, ValueError), (-1, ValueError)]
    + [("0.5", TypeError), (True, TypeError), (torch.tensor(0.5), TypeError), ([0.5], TypeError)],
)
def test_check_scale(value, error):
    expect(error, "scale must be a finite number > 0 or None", lambda: check_scale(value))


def test_check_scale_passes_values_through_unchanged():
    assert check_scale(None) is None and check_scale(0.125) == 0.125 and check_scale(3) == 3


@pytest.mark.parametrize("value,error", [(NAN, ValueError), (INF, ValueError), (1.5, ValueError), (-0.1, ValueError)])
def test_check_real_range_and_finiteness(value, error):
    expect(error, "smoothing must be", lambda: check_real("smoothing", value, low=0.0, high=1.0))


def test_check_real_types_and_open_bounds():
    expect(TypeError, "eps must be a real number", lambda: check_real("eps", "1e-6", low=0.0, low_open=True))
    expect(TypeError, "eps", lambda: check_real("eps", False, low=0.0))
    expect(ValueError, "eps must be in (0, inf), got 0.0", lambda: check_real("eps", 0.0, low=0.0, low_open=True))
    assert check_real("x", 1, low=0.0) == 1.0


@pytest.mark.parametrize("value", [1, 0, "yes", None, torch.tensor(True)])
def test_check_bool(value):
    expect(TypeError, "is_causal must be True or False", lambda: check_bool("is_causal", value))


def test_check_finite_and_int_tensor():
    expect(ValueError, "q has 1 non-finite values", lambda: check_finite("q", with_nan(torch.zeros(2, 3))))
    expect(ValueError, "q has 1 non-finite", lambda: check_finite("q", with_nan(torch.zeros(2, 3), -INF)))
    check_finite("q", torch.zeros(0, 3))  # empty: nothing to check
    expect(
        TypeError,
        "targets must hold integer ids, got dtype torch.float32",
        lambda: check_int_tensor("targets", torch.zeros(3)),
    )
    expect(
        TypeError,
        "targets must hold integer ids, got dtype torch.bool",
        lambda: check_int_tensor("targets", torch.zeros(3, dtype=torch.bool)),
    )
    expect(TypeError, "targets must be an integer torch.Tensor, got list", lambda: check_int_tensor("targets", [1, 2]))
    expect(
        ValueError,
        "targets must have 1 dims",
        lambda: check_int_tensor("targets", torch.zeros(2, 2, dtype=torch.long), dim=1),
    )
    t = torch.tensor([0, 3, -100, 12, -1])
    expect(
        ValueError,
        "targets must be in [0, 10) (or -100, the ignore_index); found -1 .. 12 (2 values)",
        lambda: check_int_tensor("targets", t, low=0, high=10, allow=-100),
    )


# -- scaled dot-product attention ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8, torch.complex64])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_sdpa_rejects_non_floating_q_k_v_naming_it(dtype, which):
    args = list(qkv(2, 5, 8, dtype=torch.float32))
    args[which] = torch.zeros(2, 5, 8, dtype=dtype)
    name = "qkv"[which]
    expect(TypeError, f"{name} must be a floating tensor", lambda: attention.scaled_dot_product_attention(*args))


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_sdpa_rejects_nan_and_inf_in_q_k_v(which, value):
    args = list(qkv(2, 5, 8))
    args[which] = with_nan(args[which], value)
    expect(ValueError, f"{'qkv'[which]} has 1 non-finite values", lambda: attention.scaled_dot_product_attention(*args))


@pytest.mark.parametrize(
    "scale,error", [(NAN, ValueError), (INF, ValueError), (0.0, ValueError), (-0.5, ValueError), ("1", TypeError)]
)
def test_sdpa_and_flash_share_one_scale_check(scale, error):
    q, k, v = qkv(1, 2, 4, 8)
    with pytest.raises(error) as ours:
        attention.scaled_dot_product_attention(q, k, v, scale=scale)
    with pytest.raises(error) as theirs:
        flash_attention(q, k, v, scale=scale, backend="torch")
    assert str(ours.value) == str(theirs.value) and "scale" in str(ours.value)


@pytest.mark.parametrize(
    "p,error",
    [
        (1.0, ValueError),
        (-0.1, ValueError),
        (NAN, ValueError),
        (INF, ValueError),
        ("0.1", TypeError),
        (True, TypeError),
    ],
)
def test_sdpa_dropout_p_range(p, error):
    expect(error, "dropout_p", lambda: attention.scaled_dot_product_attention(*qkv(3, 4), dropout_p=p))


@pytest.mark.parametrize("flag", ["is_causal", "return_weights", "enable_gqa"])
def test_sdpa_flags_must_be_bool(flag):
    expect(
        TypeError,
        f"{flag} must be True or False",
        lambda: attention.scaled_dot_product_attention(*qkv(3, 4), **{flag: 1}),
    )


def test_sdpa_mask_dtype_shape_and_device_are_checked_before_the_matmul(monkeypatch):
    q, k, v = qkv(2, 3, 4)
    calls = []
    monkeypatch.setattr(attention.torch, "matmul", lambda *a: calls.append(a))  # any work would be recorded
    expect(
        TypeError,
        "mask must have dtype torch.bool",
        lambda: attention.scaled_dot_product_attention(q, k, v, torch.ones(3, 3)),
    )
    expect(
        TypeError,
        "mask must be a bool tensor, got list",
        lambda: attention.scaled_dot_product_attention(q, k, v, [[True]]),
    )
    expect(
        ValueError,
        "mask of shape (3, 2) does not broadcast",
        lambda: attention.scaled_dot_product_attention(q, k, v, torch.ones(3, 2, dtype=torch.bool)),
    )
    expect(
        ValueError,
        "mask of shape (4, 3, 3) does not broadcast",  # would enlarge the batch
        lambda: attention.scaled_dot_product_attention(q, k, v, torch.ones(4, 3, 3, dtype=torch.bool)),
    )
    expect(
        ValueError,
        "Lk=3 < Lq=4",
        lambda: attention.scaled_dot_product_attention(
            torch.zeros(4, 4, dtype=torch.float64), k[0], v[0], is_causal=True
        ),
    )
    expect(ValueError, "scale", lambda: attention.scaled_dot_product_attention(q, k, v, scale=NAN))
    assert calls == []


def test_sdpa_causal_with_more_queries_than_keys_is_refused_and_explained():
    q, k, v = torch.zeros(5, 8), torch.zeros(4, 8), torch.zeros(4, 8)
    expect(
        ValueError,
        "is_causal=True needs at least as many keys as queries, got Lk=4 < Lq=5",
        lambda: attention.scaled_dot_product_attention(q, k, v, is_causal=True),
    )
    # with more keys than queries the queries are the LAST positions (a KV-cache step): allowed
    out, w = attention.scaled_dot_product_attention(k[:2], q, q, is_causal=True, return_weights=True)
    assert torch.equal(w != 0, attention.causal_mask(2, 5)) and out.shape == (2, 8)


def test_sdpa_shapes_and_empty_tensors():
    sdpa = attention.scaled_dot_product_attention
    expect(ValueError, "q has head dim 0", lambda: sdpa(torch.zeros(3, 0), torch.zeros(4, 0), torch.zeros(4, 2)))
    expect(
        ValueError, "q must have at least 2 dims", lambda: sdpa(torch.zeros(8), torch.zeros(4, 8), torch.zeros(4, 8))
    )
    expect(
        ValueError, "k has 4 keys but v has 5", lambda: sdpa(torch.zeros(3, 8), torch.zeros(4, 8), torch.zeros(5, 8))
    )
    expect(TypeError, "q must be a torch.Tensor, got list", lambda: sdpa([[1.0]], torch.zeros(4, 8), torch.zeros(4, 8)))
    expect(
        TypeError,
        "q, k, v must have one dtype",
        lambda: sdpa(torch.zeros(3, 8), torch.zeros(4, 8).double(), torch.zeros(4, 8)),
    )
    # zero queries or zero keys are well defined: an empty output, or rows that see no key (zeros)
    assert sdpa(torch.zeros(0, 8), torch.zeros(4, 8), torch.zeros(4, 2)).shape == (0, 2)
    assert torch.equal(sdpa(torch.zeros(3, 8), torch.zeros(0, 8), torch.zeros(0, 2)), torch.zeros(3, 2))


def test_masks_and_masked_softmax():
    expect(ValueError, "Lk=2 < Lq=3", lambda: attention.causal_mask(3, 2))
    expect(ValueError, "Lq must be a non-negative int, got 2.5", lambda: attention.causal_mask(2.5))
    expect(ValueError, "Lq must be a non-negative int, got True", lambda: attention.causal_mask(True))
    expect(ValueError, "Lk must be a non-negative int, got -1", lambda: attention.causal_bias(3, -1))
    expect(
        TypeError, "causal_bias: dtype must be a floating dtype", lambda: attention.causal_bias(3, 3, dtype=torch.long)
    )
    expect(
        TypeError,
        "tokens must hold integer ids, got dtype torch.float32",
        lambda: attention.padding_mask(torch.zeros(2, 3), 0),
    )
    expect(
        TypeError,
        "tokens must hold integer ids, got dtype torch.bool",
        lambda: attention.padding_mask(torch.zeros(2, 3, dtype=torch.bool), 0),
    )
    expect(TypeError, "tokens must be an integer torch.Tensor, got list", lambda: attention.padding_mask([[1, 0]], 0))
    expect(
        ValueError,
        "tokens must be a (B, S) tensor",
        lambda: attention.padding_mask(torch.zeros(3, dtype=torch.long), 0),
    )
    expect(TypeError, "pad_id must be an int", lambda: attention.padding_mask(torch.zeros(2, 3, dtype=torch.long), 0.0))
    expect(
        TypeError,
        "scores must be a floating tensor",
        lambda: attention.masked_softmax(torch.zeros(2, 3, dtype=torch.long), None),
    )
    expect(
        TypeError, "mask must be a bool tensor", lambda: attention.masked_softmax(torch.zeros(2, 3), torch.ones(2, 3))
    )
    expect(
        ValueError,
        "mask of shape (2, 4) does not broadcast",
        lambda: attention.masked_softmax(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool)),
    )


# -- sparse, sliding-window and linear attention ----------------------------------------------------------------


@pytest.mark.parametrize(
    "call,error,name",
    [
        (lambda: efficient.sliding_window_mask(0, 1), ValueError, "n must be a positive int"),
        (lambda: efficient.sliding_window_mask(4, -1), ValueError, "window must be a non-negative int"),
        (lambda: efficient.sliding_window_mask(4, 1, causal="yes"), TypeError, "causal must be True or False"),
        (lambda: efficient.sliding_window_mask(100_000, 1), ValueError, "n=100000 would build a dense"),
        (lambda: efficient.strided_mask(4, 0), ValueError, "stride must be a positive int"),
        (lambda: efficient.strided_mask(4.0, 2), ValueError, "n must be a positive int"),
        (lambda: efficient.global_token_mask(4, True), TypeError, "global_tokens"),
        (lambda: efficient.global_token_mask(4, [0, 1.5]), TypeError, "global_tokens must hold int positions"),
        (lambda: efficient.global_token_mask(4, "ab"), TypeError, "global_tokens"),
        (lambda: efficient.global_token_mask(4, [5]), ValueError, "global_tokens [5] are outside"),
        (lambda: efficient.global_token_mask(4, 1, window=-2), ValueError, "window must be a non-negative int"),
        (lambda: efficient.random_mask(4, -1), ValueError, "num_random"),
        (lambda: efficient.random_mask(4, 1, seed=-3), ValueError, "seed must be a non-negative int"),
        (lambda: efficient.mask_density(torch.ones(2, 2)), TypeError, "mask must be a bool tensor"),
        (lambda: efficient.mask_density(torch.ones(0, 2, dtype=torch.bool)), ValueError, "mask is empty"),
    ],
)
def test_sparse_mask_builders(call, error, name):
    expect(error, name, call)


def test_sparse_and_sliding_window_attention():
    q, k, v = qkv(2, 6, 4)
    mask = efficient.sliding_window_mask(6, 1)
    expect(ValueError, "scale", lambda: efficient.sparse_attention(q, k, v, mask, scale=-1.0))
    expect(ValueError, "q has 1 non-finite", lambda: efficient.sparse_attention(with_nan(q), k, v, mask))
    expect(TypeError, "k must be a floating tensor", lambda: efficient.sparse_attention(q, k.long(), v, mask))
    expect(TypeError, "mask must be a bool tensor", lambda: efficient.sparse_attention(q, k, v, mask.float()))
    expect(ValueError, "scale", lambda: efficient.sliding_window_attention(q, k, v, 2, scale=INF))
    expect(ValueError, "v has 1 non-finite", lambda: efficient.sliding_window_attention(q, k, with_nan(v, INF), 2))
    expect(
        TypeError, "causal must be True or False", lambda: efficient.sliding_window_attention(q, k, v, 2, causal=None)
    )
    expect(
        ValueError,
        "block_size must be a positive int",
        lambda: efficient.sliding_window_attention(q, k, v, 2, block_size=0),
    )
    expect(TypeError, "q must be a floating tensor", lambda: efficient.sliding_window_attention(q.int(), k, v, 2))


def test_linear_and_favor_attention():
    la = linear_attention
    q, k, v = qkv(2, 6, 4)
    expect(ValueError, "k has 1 non-finite", lambda: la.linear_attention(q, with_nan(k), v))
    expect(TypeError, "v must be a floating tensor", lambda: la.linear_attention(q, k, v.bool()))
    expect(TypeError, "feature_map must be callable", lambda: la.linear_attention(q, k, v, feature_map="elu"))
    expect(ValueError, "eps must be in (0, inf)", lambda: la.linear_attention(q, k, v, eps=0.0))
    expect(ValueError, "eps must be finite", lambda: la.linear_attention(q, k, v, eps=NAN))
    expect(
        ValueError, "chunk_size must be a positive int", lambda: la.linear_attention(q, k, v, causal=True, chunk_size=0)
    )
    expect(TypeError, "causal must be True or False", lambda: la.linear_attention(q, k, v, causal=1))
    expect(ValueError, "phi_q has negative features", lambda: la.linear_attention_from_features(-q.abs(), k.abs(), v))
    expect(
        ValueError,
        "phi_k has 1 non-finite",
        lambda: la.linear_attention_from_features(q.abs(), with_nan(k.abs(), INF), v),
    )
    expect(TypeError, "x must be a floating tensor", lambda: la.elu_feature_map(torch.arange(3)))
    expect(ValueError, "scale", lambda: la.favor_attention(q, k, v, scale=0.0))
    expect(ValueError, "num_features must be a positive int", lambda: la.favor_attention(q, k, v, num_features=0))
    expect(ValueError, "q has 1 non-finite", lambda: la.favor_attention(with_nan(q), k, v))
    expect(ValueError, "W must be (num_features, 4)", lambda: la.favor_attention(q, k, v, features=torch.zeros(0, 4)))
    expect(ValueError, "seed must be a non-negative int", lambda: la.orthogonal_random_features(4, 4, seed=-1))
    expect(TypeError, "generator must be a torch.Generator", lambda: la.orthogonal_random_features(4, 4, generator=0))
    expect(ValueError, "dim must be a positive int", lambda: la.orthogonal_random_features(4, 0))
    W = la.orthogonal_random_features(8, 4)
    expect(ValueError, "stabilizer", lambda: la.favor_features(q, W, stabilizer="max"))
    expect(TypeError, "x must be a floating tensor", lambda: la.favor_features(q.long(), W))
    expect(ValueError, "W has 1 non-finite", lambda: la.favor_features(q, with_nan(W)))


# -- positions ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,error,name",
    [
        (
            lambda: positional.sinusoidal_encoding(10**6, 1024),
            ValueError,
            "num_positions=1000000, d_model=1024 would build a table",
        ),
        (lambda: positional.sinusoidal_encoding(4, 8, base=0.0), ValueError, "base must be in (0, inf)"),
        (lambda: positional.sinusoidal_encoding(4, 8, base=NAN), ValueError, "base must be finite"),
        (lambda: positional.sinusoidal_encoding(4, 8, base="1e4"), TypeError, "base must be a real number"),
        (lambda: positional.sinusoidal_encoding(4, 8, dtype=torch.long), TypeError, "dtype must be a floating dtype"),
        (lambda: positional.sinusoidal_encoding(4.0, 8), ValueError, "num_positions must be a non-negative int"),
        (lambda: positional.transition_matrix(1, 2**15), ValueError, "d_model=32768 would build a table"),
        (lambda: positional.transition_matrix(True, 8), TypeError, "k must be an int offset"),
        (lambda: positional.transition_matrix(1, 8, base=-1.0), ValueError, "base must be in"),
        (
            lambda: positional.sinusoidal_encoding_2d(2**10, 2**10, 2**9),
            ValueError,
            "height=1024, width=1024, d_model=512 would build",
        ),
        (lambda: positional.sinusoidal_encoding_2d(2, 0, 8), ValueError, "width must be a positive int"),
        (lambda: positional.SinusoidalPositionalEncoding(7), ValueError, "d_model must be a positive even int, got 7"),
        (lambda: positional.SinusoidalPositionalEncoding(8, max_len=0), ValueError, "max_len must be a positive int"),
        (lambda: positional.SinusoidalPositionalEncoding(8, max_len=2**30), ValueError, "would build a table"),
        (lambda: positional.SinusoidalPositionalEncoding(8, dropout=NAN), ValueError, "dropout must be in"),
        (
            lambda: positional.LearnedPositionalEmbedding(2**20, 2**10),
            ValueError,
            "num_positions=1048576 x d_model=1024",
        ),
        (
            lambda: positional.LearnedPositionalEmbedding(4, 8, init_std=-1.0),
            ValueError,
            "init_std must be in [0, inf)",
        ),
        (lambda: positional.LearnedPositionalEmbedding(4, 8, init_std=INF), ValueError, "init_std must be finite"),
    ],
)
def test_position_tables(call, error, name):
    expect(error, name, call)


@pytest.mark.parametrize("cls", [positional.SinusoidalPositionalEncoding, positional.LearnedPositionalEmbedding])
def test_position_modules_forward(cls):
    m = cls(8, 8)
    x = torch.zeros(2, 3, 8)
    expect(TypeError, "x must be floating point", lambda: m(torch.zeros(2, 3, 8, dtype=torch.long)))
    expect(TypeError, "offset must be an int, got float", lambda: m(x, offset=1.5))
    expect(TypeError, "offset must be an int, got bool", lambda: m(x, offset=True))
    expect(ValueError, "offset must be >= 0, got -1", lambda: m(x, offset=-1))
    expect(ValueError, "x must be (B, T, d_model=8)", lambda: m(torch.zeros(3, 8)))


@pytest.mark.parametrize(
    "call,error,name",
    [
        (
            lambda: relative.relative_position_bucket(torch.zeros(3)),
            TypeError,
            "relative_position must be an integer tensor",
        ),
        (
            lambda: relative.relative_position_bucket([1, 2]),
            TypeError,
            "relative_position must be an integer tensor, got list",
        ),
        (
            lambda: relative.relative_position_bucket(torch.zeros(3, dtype=torch.bool)),
            TypeError,
            "relative_position must hold integer ids",
        ),
        (
            lambda: relative.relative_position_bucket(torch.zeros(3, dtype=torch.long), bidirectional=1),
            TypeError,
            "bidirectional must be True or False",
        ),
        (
            lambda: relative.relative_position_bucket(torch.zeros(3, dtype=torch.long), num_buckets=8.0),
            ValueError,
            "num_buckets must be a positive int",
        ),
        (
            lambda: relative.relative_position_bucket(torch.zeros(3, dtype=torch.long), max_distance=0),
            ValueError,
            "max_distance must be a positive int",
        ),
        (lambda: relative.RelativePositionBias(0), ValueError, "num_heads must be a positive int"),
        (lambda: relative.RelativePositionBias(2)(2**15, 2**15), ValueError, "Lq=32768 x Lk=32768 would build a bias"),
        (lambda: relative.RelativePositionBias(2)(0, 3), ValueError, "Lq must be a positive int"),
        (lambda: relative.RelativePositionBias(2)(2, 3, query_offset=1.0), TypeError, "query_offset must be an int"),
        (lambda: relative.alibi_slopes(0), ValueError, "num_heads must be a positive int"),
        (lambda: relative.alibi_slopes(4, dtype=torch.int32), TypeError, "dtype must be a floating dtype"),
        (lambda: relative.alibi_bias(4, 3.0, 5), TypeError, "Lq must be an int"),
        (lambda: relative.alibi_bias(4, 6, 5), ValueError, "need 0 < Lq <= Lk"),
        (lambda: relative.alibi_bias(0, 3, 5), ValueError, "num_heads must be a positive int"),
        (lambda: relative.alibi_bias(4, 3, 5, causal="no"), TypeError, "causal must be True or False"),
        (lambda: relative.alibi_bias(64, 2**13, 2**13), ValueError, "would build a bias of"),
    ],
)
def test_relative_positions(call, error, name):
    expect(error, name, call)


def test_table_cap_is_stated():
    assert MAX_TABLE_ENTRIES == 2**28
    positional.sinusoidal_encoding(2**14, 2**4)  # well below the cap: fine


# -- data -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    return data.task_tokenizer("reverse")


def test_tokenizer_arguments(tok):
    expect(TypeError, "chars must be a string or a collection of strings", lambda: data.Tokenizer(123))
    expect(TypeError, "chars must be a string or a collection of strings", lambda: data.Tokenizer([1, 2]))
    expect(TypeError, "specials must be a string or a collection", lambda: data.Tokenizer("ab", specials=[None]))
    expect(ValueError, "specials must be distinct", lambda: data.Tokenizer("ab", specials=("<pad>", "<pad>")))
    expect(ValueError, "chars must be single characters", lambda: data.Tokenizer(["ab"]))
    expect(TypeError, "text must be a str, got list", lambda: tok.encode(["1"]))
    expect(ValueError, "outside the vocabulary", lambda: tok.encode("1x"))
    expect(ValueError, f"ids must be ints in [0, {len(tok)})", lambda: tok.decode([3, -1]))
    expect(ValueError, "ids must be ints in", lambda: tok.decode([3, len(tok)]))
    expect(ValueError, "ids must be ints in", lambda: tok.decode([3.0]))
    expect(TypeError, "ids must hold integer ids", lambda: tok.decode(torch.tensor([3.0])))
    expect(ValueError, "ids must be one sequence", lambda: tok.decode(torch.zeros(2, 2, dtype=torch.long)))
    assert tok.decode(torch.tensor([3, 4, tok.eos_id, 5])) == "01"


def test_toy_task_arguments():
    rng = random.Random(0)
    expect(TypeError, "rng must be a random.Random", lambda: data.reversal_example(0, 3))
    expect(ValueError, "length must be a positive int, got 0", lambda: data.reversal_example(rng, 0))
    expect(ValueError, "length must be a positive int, got 2.0", lambda: data.date_example(rng, 2.0))
    expect(TypeError, "date must be a datetime.date", lambda: data.written_date("2021-03-03", "day_month"))
    expect(ValueError, "style must be one of", lambda: data.written_date(datetime.date(2021, 3, 3), "iso"))
    expect(ValueError, "task must be one of", lambda: data.task_tokenizer("sort"))
    expect(ValueError, "n must be a non-negative int", lambda: data.make_pairs("reverse", -1, [3], 0))
    expect(TypeError, "seed must be an int", lambda: data.make_pairs("reverse", 2, [3], 0.5))
    expect(ValueError, "lengths must not be empty", lambda: data.make_pairs("reverse", 2, [], 0))
    expect(ValueError, "every length must be a positive int", lambda: data.make_pairs("reverse", 2, [0], 0))


def test_collate_and_batch_iterator_check_before_the_first_batch(tok):
    ex = data.make_pairs("reverse", 4, [3], 0)
    expect(ValueError, "collate: examples is empty", lambda: data.collate([], tok))
    expect(TypeError, "collate: tokenizer must be a Tokenizer", lambda: data.collate(ex, "0123456789"))
    expect(TypeError, "collate: examples must be Example", lambda: data.collate(["123"], tok))
    expect(TypeError, "examples must be a sequence of Example", lambda: data.collate("123", tok))
    # a generator would only complain at next(); these are raised at the call (and an empty
    # example list with forever=True no longer loops without end)
    expect(ValueError, "batch_iterator: examples is empty", lambda: data.batch_iterator([], tok, 2, forever=True))
    expect(ValueError, "batch_size must be a positive int, got 0", lambda: data.batch_iterator(ex, tok, 0))
    expect(TypeError, "seed must be an int", lambda: data.batch_iterator(ex, tok, 2, seed="0"))
    assert len(list(data.batch_iterator(ex, tok, 2))) == 2


def test_char_lm_arguments():
    stream = torch.arange(20)
    expect(
        TypeError, "data must hold integer ids, got dtype torch.float32", lambda: data.get_batch(stream.float(), 4, 2)
    )
    expect(TypeError, "data must be an integer torch.Tensor, got list", lambda: data.get_batch(list(range(20)), 4, 2))
    expect(ValueError, "data must be a 1-D tensor", lambda: data.get_batch(stream.view(4, 5), 2, 2))
    expect(ValueError, "block_size must be a positive int, got 2.5", lambda: data.get_batch(stream, 2.5, 2))
    expect(ValueError, "block_size=20 must be in [1, len(data)=20)", lambda: data.get_batch(stream, 20, 2))
    expect(ValueError, "batch_size must be a positive int, got 0", lambda: data.get_batch(stream, 4, 0))
    expect(TypeError, "generator must be a torch.Generator", lambda: data.get_batch(stream, 4, 2, generator=0))
    expect(ValueError, "block_size", lambda: data.get_batch(torch.zeros(0, dtype=torch.long), 1, 2))  # empty stream
    expect(ValueError, "train_frac must be finite", lambda: data.char_lm_splits("abcdef", NAN))
    expect(ValueError, "train_frac must be in (0, 1), got 1.0", lambda: data.char_lm_splits("abcdef", 1.0))
    expect(TypeError, "text must be a str", lambda: data.char_lm_splits(b"abcdef"))
    expect(ValueError, "text must have at least 2 characters", lambda: data.char_lm_splits("a"))
    expect(TypeError, "plays must be a non-empty tuple", lambda: data.load_shakespeare(plays="roman/coriolanus"))
    expect(ValueError, "max_chars must be a positive int, got 0", lambda: data.load_shakespeare(max_chars=0))


# -- training -------------------------------------------------------------------------------------------------------


def test_label_smoothing_loss_checks_targets_before_the_forward_work(monkeypatch):
    logits = torch.randn(4, 5)
    calls = []
    monkeypatch.setattr(train.torch, "log_softmax", lambda *a, **k: calls.append(a))
    loss = train.label_smoothing_loss
    expect(
        ValueError,
        "targets must be in [0, 5) (or -100, the ignore_index); found 5",
        lambda: loss(logits, torch.tensor([0, 1, 5, -100]), 0.1),
    )
    expect(
        ValueError,
        "targets must be in [0, 5) (or -100, the ignore_index); found -1",
        lambda: loss(logits, torch.tensor([0, 1, -1, 2]), 0.1),
    )
    expect(
        TypeError, "targets must hold integer ids, got dtype torch.float32", lambda: loss(logits, torch.zeros(4), 0.1)
    )
    expect(
        TypeError,
        "targets must hold integer ids, got dtype torch.bool",
        lambda: loss(logits, torch.zeros(4, dtype=torch.bool), 0.1),
    )
    expect(
        TypeError,
        "logits must be a floating tensor",
        lambda: loss(logits.long(), torch.zeros(4, dtype=torch.long), 0.1),
    )
    expect(ValueError, "smoothing must be finite", lambda: loss(logits, torch.zeros(4, dtype=torch.long), NAN))
    expect(
        ValueError,
        "smoothing must be in [0, 1], got -0.1",
        lambda: loss(logits, torch.zeros(4, dtype=torch.long), -0.1),
    )
    expect(
        TypeError,
        "ignore_index must be an int",
        lambda: loss(logits, torch.zeros(4, dtype=torch.long), 0.1, ignore_index=None),
    )
    expect(
        ValueError,
        "logits must be (N, C) and targets (N,)",
        lambda: loss(logits, torch.zeros(3, dtype=torch.long), 0.1),
    )
    assert calls == []


def test_smoothed_targets_arguments():
    st = train.smoothed_targets
    expect(ValueError, "targets must be in [0, 4); found 4", lambda: st(torch.tensor([0, 4]), 4, 0.1))
    expect(ValueError, "targets must be in [0, 4); found -1", lambda: st(torch.tensor([-1, 2]), 4, 0.1))
    expect(TypeError, "targets must hold integer ids", lambda: st(torch.tensor([0.0, 1.0]), 4, 0.1))
    expect(ValueError, "targets must be a (N,) tensor", lambda: st(torch.zeros(2, 2, dtype=torch.long), 4, 0.1))
    expect(
        ValueError, "num_classes must be a positive int, got 0", lambda: st(torch.zeros(2, dtype=torch.long), 0, 0.1)
    )
    expect(ValueError, "smoothing must be finite", lambda: st(torch.zeros(2, dtype=torch.long), 4, INF))
    expect(TypeError, "smoothing must be a real number", lambda: st(torch.zeros(2, dtype=torch.long), 4, "0.1"))
    assert st(torch.zeros(0, dtype=torch.long), 4, 0.1).shape == (0, 4)  # no targets: an empty distribution


class _Config:
    vocab_size, pad_id = 13, 0


class _Spy(nn.Module):
    def __init__(self):
        super().__init__()
        self.config, self.calls = _Config(), 0

    def forward(self, *args):
        self.calls += 1
        raise AssertionError("the forward pass must not run on bad input")


def test_seq2seq_loss_checks_the_batch_before_the_forward_pass(tok):
    batch = data.collate(data.make_pairs("reverse", 3, [4], 0), tok)
    model = _Spy()

    def with_(**changes):
        return data.Seq2SeqBatch(**{**batch.__dict__, **changes})

    bad = batch.tgt_out.clone()
    bad[0, 0] = 13
    neg = batch.src.clone()
    neg[1, 2] = -1
    expect(
        ValueError, "batch.tgt_out must be in [0, 13); found 13", lambda: train.seq2seq_loss(model, with_(tgt_out=bad))
    )
    expect(
        ValueError,
        "batch.src must be in [0, 13); found -1",
        lambda: train.seq2seq_loss(model, with_(src=neg)),
    )
    expect(
        TypeError,
        "batch.tgt_in must hold integer ids",
        lambda: train.seq2seq_loss(model, with_(tgt_in=batch.tgt_in.float())),
    )
    expect(
        ValueError,
        "batch.src_lengths must be in [1, 5)",
        lambda: train.seq2seq_loss(model, with_(src_lengths=batch.src_lengths + 1)),
    )
    expect(
        ValueError, "batch shapes do not fit", lambda: train.seq2seq_loss(model, with_(tgt_out=batch.tgt_out[:, :-1]))
    )
    expect(TypeError, "batch must be a Seq2SeqBatch", lambda: train.seq2seq_loss(model, (batch.src, batch.tgt_in)))
    expect(ValueError, "label_smoothing must be in [0, 1]", lambda: train.seq2seq_loss(model, batch, 2.0))
    assert model.calls == 0


def test_schedules_and_loop_arguments():
    expect(TypeError, "noam_lr: d_model must be an int, got float", lambda: train.noam_lr(1, 512.0, 100))
    expect(TypeError, "noam_lr: step must be an int", lambda: train.noam_lr(None, 512, 100))
    expect(ValueError, "step must be a non-negative int, got -1", lambda: train.noam_lr(-1, 512, 100))
    expect(ValueError, "factor must be in (0, inf)", lambda: train.noam_lr(1, 512, 100, factor=0.0))
    expect(ValueError, "factor must be finite", lambda: train.NoamSchedule(512, 100, factor=NAN))
    expect(TypeError, "warmup_cosine_lr: total must be an int", lambda: train.warmup_cosine_lr(0, 1, 10.0))
    expect(ValueError, "min_ratio must be in [0, 1]", lambda: train.warmup_cosine_lr(0, 1, 10, min_ratio=1.5))
    expect(ValueError, "warmup=20, total=10", lambda: train.warmup_cosine_lr(0, 20, 10))
    expect(ValueError, "seed must be a non-negative int", lambda: train.set_seed(-1))
    expect(ValueError, "seed must be < 2**32", lambda: train.set_seed(2**40))
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = lambda step: model(torch.ones(1, 2)).sum()  # noqa: E731
    expect(TypeError, "loss_fn must be callable", lambda: train.fit(model, None, opt, 2, progress=False))
    expect(
        TypeError,
        "optimizer must be a torch.optim.Optimizer",
        lambda: train.fit(model, loss_fn, "adam", 2, progress=False),
    )
    expect(
        TypeError, "model must be a torch.nn.Module", lambda: train.fit(lambda x: x, loss_fn, opt, 2, progress=False)
    )
    expect(TypeError, "num_steps must be an int", lambda: train.fit(model, loss_fn, opt, 2.0, progress=False))
    expect(ValueError, "num_steps must be >= 1, got 0", lambda: train.fit(model, loss_fn, opt, 0, progress=False))
    expect(
        ValueError,
        "clip_norm must be in (0, inf)",
        lambda: train.fit(model, loss_fn, opt, 2, clip_norm=0.0, progress=False),
    )
    expect(
        ValueError, "clip_norm must be finite", lambda: train.fit(model, loss_fn, opt, 2, clip_norm=NAN, progress=False)
    )
    expect(
        ValueError,
        "eval_every must be a positive int",
        lambda: train.fit(model, loss_fn, opt, 2, eval_every=0, progress=False),
    )
    expect(
        ValueError,
        "start_step must be a non-negative int",
        lambda: train.fit(model, loss_fn, opt, 2, start_step=-1, progress=False),
    )
    expect(
        ValueError,
        "log_every must be a positive int, got 0",
        lambda: train.fit(model, loss_fn, opt, 2, log_every=0, progress=False),
    )
    expect(
        TypeError,
        "grad_norm must be True or False",
        lambda: train.fit(model, loss_fn, opt, 2, grad_norm=None, progress=False),
    )
    expect(TypeError, "model must be a torch.nn.Module", lambda: train.global_grad_norm([]))


def test_train_seq2seq_and_accuracy_arguments(tok):
    model = _Spy()
    model.lin = nn.Linear(1, 1)
    ex = data.make_pairs("reverse", 4, [3], 0)
    expect(ValueError, "lr must be in (0, inf)", lambda: train.train_seq2seq(model, ex, tok, 5, lr=0.0, progress=False))
    expect(ValueError, "lr must be finite", lambda: train.train_seq2seq(model, ex, tok, 5, lr=INF, progress=False))
    expect(
        ValueError, "num_steps must be a positive int", lambda: train.train_seq2seq(model, ex, tok, 0, progress=False)
    )
    expect(
        ValueError, "batch_iterator: examples is empty", lambda: train.train_seq2seq(model, [], tok, 5, progress=False)
    )
    expect(
        ValueError,
        "warmup must be a non-negative int",
        lambda: train.train_seq2seq(model, ex, tok, 5, warmup=-1, progress=False),
    )
    expect(TypeError, "tokenizer must be a Tokenizer", lambda: train.accuracy_by_length(model, ex, None))
    expect(
        ValueError, "batch_size must be a positive int", lambda: train.accuracy_by_length(model, ex, tok, batch_size=0)
    )
    expect(TypeError, "decode_fn must be callable", lambda: train.accuracy_by_length(model, ex, tok, decode_fn=1))
    assert model.calls == 0


# -- the RNN models of chapters 1-2 ---------------------------------------------------------------------------------


def test_seq2seq_model_ids_and_rnn_attention_dtypes():
    from minitransformer import AdditiveAttention, LuongAttention
    from minitransformer.rnn import Seq2Seq, Seq2SeqConfig

    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig.preset("tiny", vocab_size=13, attention="bahdanau"))
    src, tgt = torch.randint(3, 13, (2, 5)), torch.randint(3, 13, (2, 4))
    bad = src.clone()
    bad[0, 0] = 13
    neg = tgt.clone()
    neg[1, 3] = -1
    expect(TypeError, "src must hold integer ids, got dtype torch.float32", lambda: model(src.float(), None, tgt))
    expect(ValueError, "src must be in [0, 13); found 13", lambda: model(bad, None, tgt))
    expect(ValueError, "tgt_in must be in [0, 13); found -1", lambda: model(src, None, neg))
    expect(TypeError, "tgt_in must hold integer ids", lambda: model(src, None, tgt.double()))
    expect(TypeError, "return_weights must be True or False", lambda: model(src, None, tgt, return_weights=1))
    expect(ValueError, "src must be in [0, 13)", lambda: model.greedy_decode(src + 13, 3))
    att = AdditiveAttention(4, 4, 8)
    q, keys = torch.randn(2, 4), torch.randn(2, 5, 4)
    expect(TypeError, "query must be a floating tensor, got torch.int64", lambda: att(q.long(), keys))
    expect(TypeError, "keys must be a floating tensor", lambda: att(q, keys.int()))
    expect(TypeError, "values must be a torch.Tensor", lambda: att(q, keys, values=[1.0]))
    expect(TypeError, "values must be a floating tensor", lambda: LuongAttention(4, 4)(q, keys, values=keys.bool()))


def test_finiteness_check_is_exact_when_a_sum_would_overflow():
    big = torch.full((4, 8), 3e38)  # finite float32 entries whose sum is inf
    check_finite("q", big)
    check_finite("q", torch.full((4, 8), 6e4, dtype=torch.float16))  # a float16 sum would overflow
    check_finite("q", torch.full((4, 8), 3e38, dtype=torch.bfloat16))  # even a float32 sum does
    check_finite("q", torch.full((4, 8), 1e308, dtype=torch.float64))
    expect(ValueError, "q has 1 non-finite values", lambda: check_finite("q", with_nan(big, INF)))
    q = torch.full((2, 4, 8), 6e4, dtype=torch.float16)  # float16's sum would be inf; the check is exact
    out = attention.scaled_dot_product_attention(q, q, q)
    assert torch.equal(out, q)  # equal keys: uniform weights over equal values


def test_gqa_shapes_in_the_shared_check():
    from minitransformer.validation import check_qkv_shapes

    check_qkv_shapes((2, 8, 5, 16), (2, 2, 7, 16), (2, 2, 7, 4), enable_gqa=True)
    check_qkv_shapes((3, 2, 8, 5, 16), (1, 8, 7, 16), (1, 8, 7, 16), enable_gqa=True)  # batch dims broadcast
    expect(
        ValueError,
        "q has 8 heads, not a multiple of k's 3",
        lambda: check_qkv_shapes((2, 8, 5, 16), (2, 3, 7, 16), (2, 3, 7, 16), enable_gqa=True),
    )
    expect(
        ValueError,
        "q has 8 heads, not a multiple of k's 0",
        lambda: check_qkv_shapes((2, 8, 5, 16), (2, 0, 7, 16), (2, 0, 7, 16), enable_gqa=True),
    )
    expect(
        ValueError,
        "k's leading dims (3,) would enlarge q's (1,)",
        lambda: check_qkv_shapes((1, 8, 5, 16), (3, 2, 7, 16), (3, 2, 7, 16), enable_gqa=True),
    )
    expect(ValueError, "pass enable_gqa=True", lambda: check_qkv_shapes((2, 8, 5, 16), (2, 2, 7, 16), (2, 2, 7, 16)))
