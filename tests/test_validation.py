"""The shared argument checks: one wording for one mistake, wherever it is made."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minitransformer import attention, rnn_attention, scaled_dot_product_attention
from minitransformer.efficient import sliding_window_attention
from minitransformer.flash import flash_attention
from minitransformer.flash.cpu_cuda import runner
from minitransformer.flash.tiled_numpy import flash_forward_numpy
from minitransformer.linear_attention import linear_attention
from minitransformer.validation import check_positive_int, check_probability, check_qkv, check_qkv_shapes, describe


def test_describe_gives_shapes_or_type_names():
    assert describe(torch.zeros(2, 3)) == "(2, 3)"
    assert describe(np.zeros((4,))) == "(4,)"
    assert describe([1, 2]) == "list" and describe(None) == "NoneType"


@pytest.mark.parametrize("value", [0, -1, True, False, 2.0, "3", None])
def test_positive_int_rejects_non_ints_bools_and_small_values(value):
    with pytest.raises(ValueError, match=rf"num_heads must be a positive int, got {value!r}"):
        check_positive_int("num_heads", value)


def test_positive_int_variants():
    assert check_positive_int("n", 3) == 3 and type(check_positive_int("n", np.int64(3))) is int
    assert check_positive_int("window", 0, minimum=0) == 0
    with pytest.raises(ValueError, match=r"^window must be a non-negative int, got -1$"):
        check_positive_int("window", -1, minimum=0)
    with pytest.raises(ValueError, match=r"^block must be an int >= 3, got 2$"):
        check_positive_int("block", 2, minimum=3)
    with pytest.raises(ValueError, match=r"^RotaryEmbedding: head_dim must be a positive even int, got 7$"):
        check_positive_int("head_dim", 7, multiple_of=2, where="RotaryEmbedding")
    with pytest.raises(ValueError, match=r"d_model must be a positive multiple of 4, got 18"):
        check_positive_int("d_model", 18, multiple_of=4)


def test_probability():
    assert check_probability("dropout", 0) == 0.0 and check_probability("dropout", 0.5) == 0.5
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\), got 1.0"):
        check_probability("dropout_p", 1.0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got -0.1"):
        check_probability("dropout", -0.1)
    with pytest.raises(TypeError, match="dropout must be a number in"):
        check_probability("dropout", True)


def test_qkv_shapes_broadcast_layout():
    check_qkv_shapes((2, 3, 5, 8), (1, 5, 8), (1, 5, 4))  # k, v broadcast over q's batch
    with pytest.raises(ValueError, match=r"k's leading dims \(2,\) would enlarge q's \(\)"):
        check_qkv_shapes((5, 8), (2, 5, 8), (2, 5, 8))
    with pytest.raises(ValueError, match="k and v must share their leading"):
        check_qkv_shapes((2, 5, 8), (2, 5, 8), (1, 5, 8))
    with pytest.raises(ValueError, match="causal=True needs as many keys as queries; q has N=5, k has N_k=6"):
        check_qkv_shapes((5, 8), (6, 8), (6, 8), square="causal=True")


def test_qkv_shapes_grouped_layout():
    check_qkv_shapes((2, 8, 5, 16), (2, 2, 9, 16), (2, 2, 9, 16), grouped=True)
    with pytest.raises(ValueError, match=r"q must have shape \(B, H, N, d\)"):
        check_qkv_shapes((8, 5, 16), (2, 9, 16), (2, 9, 16), grouped=True)
    with pytest.raises(ValueError, match="q has batch size 2 but k has 1"):
        check_qkv_shapes((2, 8, 5, 16), (1, 2, 9, 16), (1, 2, 9, 16), grouped=True)
    with pytest.raises(ValueError, match="q has 8 heads, not a multiple of k's 3 heads"):
        check_qkv_shapes((2, 8, 5, 16), (2, 3, 9, 16), (2, 3, 9, 16), grouped=True)
    with pytest.raises(ValueError, match="v has head dim 8 but q and k have 16"):
        check_qkv_shapes((2, 8, 5, 16), (2, 2, 9, 16), (2, 2, 9, 8), grouped=True)
    with pytest.raises(ValueError, match="empty input"):
        check_qkv_shapes((2, 8, 0, 16), (2, 2, 9, 16), (2, 2, 9, 16), grouped=True)


def test_qkv_tensors():
    q = torch.zeros(2, 5, 8)
    with pytest.raises(TypeError, match="k must be a torch.Tensor, got list"):
        check_qkv(q, [1], q)
    with pytest.raises(TypeError, match="q must be a floating tensor"):
        check_qkv(q.long(), q, q)
    with pytest.raises(TypeError, match="q, k, v must have one dtype"):
        check_qkv(q, q.double(), q)
    with pytest.raises(ValueError, match="phi_q has head dim 8 but phi_k has 4"):
        check_qkv(q, q[..., :4], q, names=("phi_q", "phi_k", "v"))


def test_every_attention_words_a_head_dim_mismatch_the_same_way():
    q, k = torch.zeros(1, 2, 6, 16), torch.zeros(1, 2, 6, 8)
    message = "q has head dim 16 but k has 8"
    calls = [
        lambda: scaled_dot_product_attention(q, k, k),
        lambda: flash_attention(q, k, k, backend="torch"),
        lambda: flash_forward_numpy(q.numpy(), k.numpy(), k.numpy()),
        lambda: runner._check(q.numpy(), k.numpy(), k.numpy(), False),
        lambda: linear_attention(q, k, k),
        lambda: sliding_window_attention(q, k, k, 2),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()


def test_one_masked_softmax():
    assert rnn_attention.masked_softmax is attention.masked_softmax
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    w = attention.masked_softmax(scores, mask)
    assert torch.allclose(w[0], torch.softmax(torch.tensor([1.0, -float("inf"), 3.0]), -1))
    assert torch.equal(w[1], torch.zeros(3))


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_every_attention_words_a_bad_scale_the_same_way(scale):
    from minitransformer.efficient import sliding_window_mask, sparse_attention
    from minitransformer.flash import flash_decode
    from minitransformer.linear_attention import favor_attention

    q = torch.zeros(1, 2, 6, 8)
    message = rf"scale must be a finite number > 0 or None, got {scale!r}"
    calls = [
        lambda: scaled_dot_product_attention(q, q, q, scale=scale),
        lambda: flash_attention(q, q, q, scale=scale, backend="torch"),
        lambda: flash_decode(q[:, :, :1], q, q, scale=scale),
        lambda: sparse_attention(q, q, q, sliding_window_mask(6, 1), scale=scale),
        lambda: sliding_window_attention(q, q, q, 2, scale=scale),
        lambda: favor_attention(q, q, q, scale=scale),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()


def test_every_choice_argument_is_refused_with_the_same_words():
    from minitransformer import GPT, GPTConfig, MultiHeadAttention
    from minitransformer.layers import FeedForward
    from minitransformer.norms import make_norm

    cases = [
        (lambda: FeedForward(8, activation="swish"), "activation='swish' is not one of"),
        (lambda: make_norm("batch", 8), "norm='batch' is not one of"),
        (lambda: MultiHeadAttention(8, 2, backend="cuda"), "backend='cuda' is not one of"),
        (lambda: GPT(10, 8, 1, 2, 8, positional="alibi"), "positional='alibi' is not one of"),
        (lambda: GPTConfig(norm="batch"), "GPTConfig: norm='batch' is not one of"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    for call, message in [
        (lambda: FeedForward(8, activation=None), "activation must be a string, one of .*, got NoneType"),
        (lambda: make_norm(1, 8), "norm must be a string, one of .*, got int"),
        (lambda: GPTConfig(activation=3), "GPTConfig: activation must be a string"),
    ]:
        with pytest.raises(TypeError, match=message):
            call()
