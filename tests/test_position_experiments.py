"""Chapter 5's extrapolation experiment: the toy task, the window mask, the toy model (fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minitransformer.book.position_experiments import (
    POSITION_KINDS,
    CopyTask,
    PositionToyModel,
    accuracy,
    accuracy_by_position,
    attention_by_offset,
    copy_task_loss,
    extrapolation_experiment,
    extrapolation_seeds,
    train_position_model,
    window_mask,
)


def test_copy_task_targets_are_the_tokens_offset_back():
    task = CopyTask(vocab_size=7, offset=2)
    x, y = task.batch(5, 9, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 9) and x.dtype == torch.long
    assert (y[:, :2] == -100).all()
    assert torch.equal(y[:, 2:], x[:, :-2])
    assert int(x.max()) < 7 and int(x.min()) >= 0
    x2, _ = task.batch(5, 9, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2), "the same generator seed gives the same batch"
    with pytest.raises(ValueError, match="offset"):
        task.batch(2, 2)


def test_window_mask():
    m = window_mask(5, 2)
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(m, expected)
    assert torch.equal(window_mask(4, 10), torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    with pytest.raises(ValueError, match="window"):
        window_mask(3, 0)


@pytest.mark.parametrize("kind", POSITION_KINDS)
def test_model_shapes(kind):
    model = PositionToyModel(11, d_model=16, num_heads=2, position=kind, max_len=20)
    x = torch.randint(11, (3, 20))
    logits, w = model(x, need_weights=True)
    assert logits.shape == (3, 20, 11) and w.shape == (3, 2, 20, 20)
    assert torch.allclose(w.sum(-1), torch.ones(3, 2, 20))
    assert (w.triu(1) == 0).all(), "causal"
    with pytest.raises(ValueError, match="position"):
        PositionToyModel(11, position="relative")


def test_rope_model_depends_only_on_relative_positions_inside_a_window():
    torch.manual_seed(0)
    model = PositionToyModel(8, d_model=16, num_heads=2, position="rope").eval()
    x = torch.randint(8, (2, 12))
    prefix = torch.randint(8, (2, 5))
    w = 4
    a = model(x, window=w)  # (2, 12, 8)
    b = model(torch.cat([prefix, x], 1), window=w)[:, 5:]  # the same tokens, 5 positions later
    assert torch.allclose(a[:, w - 1 :], b[:, w - 1 :], atol=1e-5)
    learned = PositionToyModel(8, d_model=16, num_heads=2, position="learned", max_len=32).eval()
    with torch.no_grad():
        learned.pos.embedding.weight.normal_()
    a, b = learned(x, window=w), learned(torch.cat([prefix, x], 1), window=w)[:, 5:]
    assert not torch.allclose(a[:, w - 1 :], b[:, w - 1 :], atol=1e-3), "absolute positions do move the output"


def test_training_learns_the_task_quickly():
    task = CopyTask(vocab_size=8, offset=1)
    model, losses = train_position_model(
        "rope", task, train_len=8, steps=30, batch_size=32, d_model=32, num_heads=2, lr=1e-2, seed=0
    )
    assert len(losses) == 30 and losses[-1] < losses[0] * 0.5
    assert not model.training
    torch.manual_seed(0)  # the weights come from seed, the batches from seed + 1
    fresh = PositionToyModel(8, 32, 2, "rope")
    x, y = task.batch(32, 8, torch.Generator().manual_seed(1))
    assert copy_task_loss(fresh, x, y).item() == losses[0]
    acc = accuracy_by_position(model, task, 8, num_sequences=32)
    assert acc.shape == (7,) and 0.0 <= float(acc.min()) <= float(acc.max()) <= 1.0


def test_experiment_table_and_determinism():
    kw = dict(
        kinds=("learned", "rope"),
        task=CopyTask(vocab_size=6, offset=1),
        train_len=6,
        test_lengths=(6, 10),
        steps=5,
        batch_size=8,
        d_model=16,
        num_heads=2,
    )
    table, models = extrapolation_experiment(**kw)
    assert list(table.columns) == ["position", "test_length", "accuracy"] and len(table) == 4
    assert set(models) == {"learned", "rope"} and models["learned"].pos.num_positions == 10
    again, _ = extrapolation_experiment(**kw)
    assert table.equals(again)
    assert accuracy(models["rope"], kw["task"], 10, window=3) >= 0.0


def test_attention_by_offset_finds_the_attended_offset():
    model = PositionToyModel(6, d_model=8, num_heads=1, position="none").eval()
    # Attention weights that put everything on the key 2 places back (or on key 0 early on).
    T = 10
    target = torch.zeros(T, T)
    for t in range(T):
        target[t, max(t - 2, 0)] = 1.0

    class Fixed(torch.nn.Module):
        def forward(self, h, mask=None, is_causal=False, need_weights=False):
            B = h.shape[0]
            return h, target.expand(B, 1, T, T)

    model.attn = Fixed()
    by_offset = attention_by_offset(model, CopyTask(6, 2), T, first_query=2, num_sequences=4)
    assert by_offset.shape == (T,)
    assert torch.allclose(by_offset[2], torch.tensor(1.0, dtype=torch.float64))
    assert float(by_offset[[0, 1, 3, 4]].abs().max()) == 0.0
    with pytest.raises(ValueError, match="first_query"):
        attention_by_offset(model, CopyTask(6, 2), T, first_query=T)


def test_alibi_model_uses_only_the_alibi_bias_for_positions():
    """With content-blind scores (W_Q = W_K = 0) the weights are softmax(-slope_h * (t - s)) over s <= t,
    computed here from the formula; and a translated window gives the same output (relative positions only)."""
    from minitransformer.reference import alibi_slopes_ref, softmax_ref

    torch.manual_seed(0)
    model = PositionToyModel(8, d_model=16, num_heads=4, position="alibi").eval()
    with torch.no_grad():
        model.attn.qkv.weight[:32].zero_()  # the query and key rows
        model.attn.qkv.bias[:32].zero_()
    T = 7
    _, w = model(torch.randint(8, (2, T)), need_weights=True)  # (2, 4, T, T)
    slopes = alibi_slopes_ref(4)
    for h in range(4):
        for t in range(T):
            expected = softmax_ref(np.array([-slopes[h] * (t - s) for s in range(t + 1)]))
            np.testing.assert_allclose(
                w[:, h, t, : t + 1].detach().numpy(), np.broadcast_to(expected, (2, t + 1)), atol=1e-6
            )
    torch.manual_seed(1)
    model = PositionToyModel(8, d_model=16, num_heads=2, position="alibi").eval()
    x, prefix = torch.randint(8, (2, 12)), torch.randint(8, (2, 5))
    a = model(x, window=4)
    b = model(torch.cat([prefix, x], 1), window=4)[:, 5:]
    assert torch.allclose(a[:, 3:], b[:, 3:], atol=1e-5)


def test_seeded_experiment_table_and_determinism():
    kw = dict(
        kinds=("rope", "alibi"),
        task=CopyTask(vocab_size=6, offset=1),
        train_len=6,
        test_lengths=(6, 10),
        steps=5,
        seeds=(0, 1),
        windows=(None, 3),
        batch_size=8,
        d_model=16,
        num_heads=2,
    )
    table, models = extrapolation_seeds(**kw)
    assert list(table.columns) == ["position", "seed", "window", "test_length", "accuracy"]
    assert len(table) == 2 * 2 * 2 * 2 and set(table.window) == {0, 3}
    assert set(models) == {("rope", 0), ("rope", 1), ("alibi", 0), ("alibi", 1)}
    row = table[(table.position == "alibi") & (table.seed == 1) & (table.window == 3) & (table.test_length == 10)]
    assert row.accuracy.item() == accuracy(models["alibi", 1], kw["task"], 10, window=3)
    assert table.equals(extrapolation_seeds(**kw)[0])
