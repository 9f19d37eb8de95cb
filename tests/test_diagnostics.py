"""The debugging diagnostics on inputs with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minitransformer import GPT, EncoderLayer
from minitransformer.book.diagnostics import (
    attention_entropy,
    causal_leak,
    entropy_by_head,
    global_grad_norm,
    grad_norms,
    loss_spikes,
    normalized_entropy,
    permutation_sensitivity,
    saved_activation_bytes,
    tracked_training,
)
from minitransformer.book.scaling import KAPLAN_2020, fit_power_law, kaplan_loss


def test_entropy_of_uniform_and_one_hot():
    for n in (2, 5, 64):
        assert math.isclose(
            attention_entropy(torch.full((n,), 1 / n, dtype=torch.float64)).item(), math.log(n), rel_tol=1e-9
        )
    assert attention_entropy(torch.eye(4, dtype=torch.float64)).abs().max() < 1e-9
    w = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    assert torch.allclose(normalized_entropy(w, mask), torch.tensor([1.0, 0.0]))
    assert torch.allclose(normalized_entropy(torch.full((3, 8), 1 / 8)), torch.ones(3))
    table = entropy_by_head([torch.full((2, 3, 4, 4), 0.25)])
    assert list(table.columns) == ["layer", "head", "entropy"] and len(table) == 3
    assert table["entropy"].between(0.999, 1.001).all()


def test_grad_norms():
    lin = torch.nn.Linear(3, 2)
    lin.weight.grad = torch.full((2, 3), 2.0)
    lin.bias.grad = torch.tensor([3.0, 4.0])
    assert math.isclose(grad_norms(lin)["bias"], 5.0)
    assert math.isclose(global_grad_norm(lin), math.sqrt(24 + 25))


def test_tracked_training_records_every_step_before_clipping():
    torch.manual_seed(0)
    lin, x, y = torch.nn.Linear(3, 1), torch.randn(8, 3), torch.randn(8, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (s + 1))
    df = tracked_training(lin, lambda step: F.mse_loss(lin(x), y), opt, 4, sched, clip_norm=1e-3)
    assert list(df.columns) == ["step", "loss", "grad_norm", "lr"] and df.step.tolist() == [0, 1, 2, 3]
    assert df.lr.tolist() == pytest.approx([0.1, 0.05, 0.1 / 3, 0.025])  # the rate each step used
    assert (df.grad_norm > 1e-2).all() and not lin.training  # measured before clipping


def test_loss_spikes():
    losses = [2.0] * 10 + [9.0] + [2.0] * 5 + [float("nan")]
    assert loss_spikes(losses, window=5, factor=2.0) == [10, 16]
    assert loss_spikes([3.0, 2.5, 2.0, 1.8, 1.7, 1.6]) == []


def test_causal_leak_and_permutation_tests():
    torch.manual_seed(0)
    gpt = GPT(11, 8, 1, 2, 16).eval()
    idx = torch.randint(11, (2, 8))
    assert causal_leak(lambda i: gpt(i)[0], idx, 11).max() == 0  # a correct decoder
    emb = torch.nn.Embedding(11, 16)
    layer = EncoderLayer(16, 2).eval()
    leaky = causal_leak(lambda i: layer(emb(i)), idx, 11)  # bidirectional: leaks
    assert (leaky[:-1] > 0).all() and leaky[-1] == 0
    x = torch.randn(2, 6, 16)
    assert permutation_sensitivity(lambda h: layer(h), x) < 1e-5  # no positions: equivariant
    assert permutation_sensitivity(lambda i: gpt(i)[0], idx) > 1e-3


def test_saved_activation_bytes_scales_with_batch():
    lin = torch.nn.Linear(16, 16)
    one = saved_activation_bytes(lambda: lin(torch.randn(10, 16)).relu().sum(), lin)
    two = saved_activation_bytes(lambda: lin(torch.randn(20, 16)).relu().sum(), lin)
    assert one > 0 and two == 2 * one


def test_power_law_fit_and_published_constants():
    x = [10.0, 100.0, 1000.0]
    slope, a = fit_power_law(x, [5 * v**-0.3 for v in x])
    assert math.isclose(slope, -0.3, rel_tol=1e-9) and math.isclose(a, 5.0, rel_tol=1e-9)
    assert KAPLAN_2020["N"]["alpha"] == 0.076 and KAPLAN_2020["D"]["alpha"] == 0.095
    assert KAPLAN_2020["C"]["alpha"] == 0.050
    assert math.isclose(kaplan_loss(8.8e13, "N"), 1.0)
