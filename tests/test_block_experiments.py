"""Chapter 6's experiment helpers: LayerNorm by hand, the FFN as 1x1 convolutions,
gradients through residual stacks, and the Post-LN / Pre-LN training comparison."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from minitransformer import FeedForward
from minitransformer.book.block_experiments import (
    BlockStackModel,
    ConvFeedForward,
    PreviousTokenTask,
    input_gradient_norms,
    layer_norm,
    norm_placement_experiment,
    train_block_stack,
)


@pytest.mark.parametrize("shape", [(5,), (3, 7), (2, 4, 16), (2, 3, 1, 8)])
def test_layer_norm_matches_torch(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 2
    ln = nn.LayerNorm(shape[-1], eps=1e-3).double()
    with torch.no_grad():
        ln.weight.normal_(generator=g)
        ln.bias.normal_(generator=g)
    torch.testing.assert_close(layer_norm(x, ln.weight, ln.bias, eps=1e-3), ln(x))
    y = layer_norm(x)  # no gain or bias: zero mean, unit (biased) variance per position
    torch.testing.assert_close(y.mean(-1), torch.zeros(shape[:-1], dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_conv_feed_forward_equals_feed_forward(activation):
    torch.manual_seed(0)
    ffn = FeedForward(8, 20, activation=activation).double()
    conv = ConvFeedForward(ffn)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(conv(x), ffn(x))
    assert conv.conv1.weight.shape == (20, 8, 1) and conv.conv2.weight.shape == (8, 20, 1)


def test_input_gradient_norms_vanish_without_residuals():
    df = input_gradient_norms(depths=(1, 16), d_model=16, batch=4)
    assert set(df.columns) == {"depth", "stack", "grad_ratio"} and len(df) == 8
    at16 = df[df.depth == 16].set_index("stack").grad_ratio
    assert at16["plain"] < 1e-4 and at16["residual + LN"] > 0.5


def test_previous_token_task():
    x, y = PreviousTokenTask(vocab_size=7, length=5).batch(3, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (3, 5) and int(x.max()) < 7
    assert torch.equal(y[:, 1:], x[:, :-1]) and torch.equal(y[:, 0], x[:, -1])


def test_block_stack_model_shapes_and_placement():
    for norm_first in (False, True):
        m = BlockStackModel(11, 6, d_model=8, num_heads=2, num_layers=2, norm_first=norm_first)
        assert m(torch.zeros(4, 6, dtype=torch.long)).shape == (4, 6, 11)
        assert all(layer.norm_first == norm_first for layer in m.encoder.layers)
        assert (m.encoder.norm is not None) == norm_first


def test_training_is_seeded_and_warmup_ramps_lr():
    kw = dict(
        num_layers=1, d_model=8, num_heads=2, task=PreviousTokenTask(6, 4), steps=6, batch_size=4, lr=1e-2, log_every=1
    )
    _, a = train_block_stack(True, **kw)
    _, b = train_block_stack(True, **kw)
    assert a.equals(b) and list(a.step) == [1, 2, 3, 4, 5, 6]
    _, w = train_block_stack(False, warmup=4, **kw)
    assert w.lr.tolist() == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2, 1e-2])


def test_norm_placement_experiment_frame():
    df = norm_placement_experiment(
        num_layers=1,
        d_model=8,
        num_heads=2,
        task=PreviousTokenTask(6, 4),
        steps=3,
        batch_size=4,
        log_every=1,
        post_ln_warmup=2,
    )
    assert set(df.run) == {"Post-LN", "Pre-LN", "Post-LN + warmup"} and len(df) == 9
    assert df.attrs["uniform_loss"] == pytest.approx(math.log(6))
    first = df[df.step == 1].set_index("run").loss  # same seed and batch, different placements
    assert first["Post-LN"] == pytest.approx(first["Post-LN + warmup"])
