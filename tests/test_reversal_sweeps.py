"""Chapters 1-2's multi-seed reversal experiments: the helpers, and the stored results the prose quotes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from minitransformer.book.encdec_experiments import RNN_CURVES_PATH, reversal_setup_dict
from minitransformer.book.reversal_sweeps import (
    CAPACITY_HIDDEN,
    CAPACITY_STEPS,
    SEED_MODELS,
    SEEDS,
    load_attention_seeds,
    load_capacity,
    reach,
    run_table,
    runs_frame,
    seed_spread,
)
from minitransformer.book.seq2seq_experiments import (
    REVERSAL,
    _AverageAttention,
    ablate_attention,
    fixed_gate_norms,
    gru_update_gates,
    model_label,
    reversal_data,
)
from minitransformer.data import collate, make_pairs, task_tokenizer
from minitransformer.exercises.ch01 import fixed_gate_step_solution
from minitransformer.exercises.ch02 import uniform_context_solution
from minitransformer.rnn import Seq2Seq, Seq2SeqConfig
from minitransformer.train import accuracy_by_length

# -- helpers ---------------------------------------------------------------------------


def test_update_gates_equal_the_sigmoid_of_the_biases_when_the_gate_weights_are_zero():
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 4)
    with torch.no_grad():
        cell.weight_ih[4:8].zero_()
        cell.weight_hh[4:8].zero_()
    z = gru_update_gates(cell, torch.randn(6, 3))  # (6, 4)
    expected = torch.sigmoid(cell.bias_ih[4:8] + cell.bias_hh[4:8]).detach()
    assert z.shape == (6, 4)
    torch.testing.assert_close(z, expected.expand(6, 4))


def test_update_gates_reproduce_the_cell_step():
    """h_t = (1 - z) n + z h_{t-1}, with n computed independently from the candidate rows."""
    torch.manual_seed(1)
    cell = nn.GRUCell(3, 5).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    z = gru_update_gates(cell, x)  # (4, 5)
    h = torch.zeros(1, 5, dtype=torch.float64)
    with torch.no_grad():
        for t in range(4):
            gi, gh = x[t : t + 1] @ cell.weight_ih.T + cell.bias_ih, h @ cell.weight_hh.T + cell.bias_hh
            r = torch.sigmoid(gi[:, :5] + gh[:, :5])
            n = torch.tanh(gi[:, 10:] + r * gh[:, 10:])
            h_next = cell(x[t : t + 1], h)
            torch.testing.assert_close(h_next, (1 - z[t]) * n + z[t] * h)
            h = h_next
    batch = gru_update_gates(cell, x[:, None].expand(4, 2, 3))  # (T, B, I) -> (T, B, H)
    torch.testing.assert_close(batch[:, 1], z)


def test_fixed_gate_norms_are_one_when_the_gate_is_one_and_shrink_without_memory():
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 4)
    out = fixed_gate_norms(fixed_gate_step_solution, cell, torch.randn(5, 3), [1.0, 0.0])
    assert list(out.columns) == ["z", "t", "norm"] and len(out) == 2 * 6
    np.testing.assert_allclose(out[out.z == 1.0].norm, 1.0, rtol=1e-6)  # h_t = h_{t-1}: the identity
    assert out[out.z == 0.0].norm.iloc[-1] < 1.0


def _tiny_model(attention):
    torch.manual_seed(0)
    config = Seq2SeqConfig(vocab_size=len(task_tokenizer("reverse")), emb_dim=8, hidden_size=8, attention=attention)
    return Seq2Seq(config)


def test_ablation_changes_nothing_on_one_digit_inputs_and_leaves_the_model_alone():
    """With one source position every attention gives it weight 1: the uniform average is the same context."""
    tok = task_tokenizer("reverse")
    model = _tiny_model("bahdanau").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ones = make_pairs("reverse", 10, range(1, 2), seed=3)
    same = ablate_attention(model, ones, tok, uniform_context_solution)
    pd.testing.assert_frame_equal(same, accuracy_by_length(model, ones, tok))
    ablated = copy.deepcopy(model)
    ablated.attn = _AverageAttention(uniform_context_solution)
    batch = collate(ones, tok)
    with torch.no_grad():
        torch.testing.assert_close(ablated(batch.src, None, batch.tgt_in), model(batch.src, None, batch.tgt_in))
        three = collate(make_pairs("reverse", 10, range(3, 4), seed=3), tok)
        assert not torch.allclose(ablated(three.src, None, three.tgt_in), model(three.src, None, three.tgt_in))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="needs a model with attention"):
        ablate_attention(_tiny_model(None), ones, tok, uniform_context_solution)


def test_reach_and_run_table():
    assert reach([5, 6, 7, 8], [1.0, 0.6, 0.4, 0.9]) == 6
    assert reach([5, 6], [0.2, 1.0]) == 4
    runs = [
        {
            "model": "m",
            "hidden": 8,
            "steps": 10,
            "seed": s,
            "lengths": list(range(5, 36)),
            "exact_match": [1.0 - 0.03 * i + 0.01 * s for i in range(31)],
            "char_accuracy": [0.5] * 31,
        }
        for s in (0, 1)
    ]
    df = runs_frame(runs)
    table = run_table(df, ["model"])
    assert list(table.seed) == [0, 1] and (table.digits_long == 0.5).all()
    assert table.reach.tolist() == [21, 22]  # 1 - 0.03 i (+ 0.01) >= 0.5 up to i = 16 (17): lengths 21, 22
    spread = seed_spread(df, ["model"])
    assert (spread.seeds == 2).all() and (spread["min"] <= spread["mean"]).all()


# -- the stored results ----------------------------------------------------------------


@pytest.fixture(scope="module")
def capacity():
    return load_capacity()


@pytest.fixture(scope="module")
def attention():
    return load_attention_seeds()


def _check_runs(blob, expected_keys):
    assert blob["setup"] == reversal_setup_dict(REVERSAL), "REVERSAL changed: rerun scripts/reversal_sweeps.py"
    keys = [(r["model"], r["hidden"], r["steps"], r["seed"]) for r in blob["runs"]]
    assert sorted(keys) == sorted(expected_keys) and len(set(keys)) == len(keys)
    lo, hi = REVERSAL.test_lengths
    for r in blob["runs"]:
        assert r["lengths"] == list(range(lo, hi + 1))
        for name in ("exact_match", "char_accuracy"):
            assert all(0.0 <= v <= 1.0 for v in r[name])
        assert all(e <= c + 1e-9 for e, c in zip(r["exact_match"], r["char_accuracy"]))  # whole string <= digits
        assert r["cpu_seconds"] > 0 and 0 < r["final_loss"] < 3


def test_capacity_results_cover_the_sweep(capacity):
    df, blob = capacity
    _check_runs(blob, [("no attention", h, s, seed) for h in CAPACITY_HIDDEN for s in CAPACITY_STEPS for seed in SEEDS])
    params = {r["hidden"]: r["params"] for r in blob["runs"]}
    assert [params[h] for h in CAPACITY_HIDDEN] == sorted(params[h] for h in CAPACITY_HIDDEN)


def test_attention_results_have_equal_budgets(attention):
    df, blob = attention
    _check_runs(blob, [(model_label(k), 64, REVERSAL.steps, seed) for k in SEED_MODELS for seed in SEEDS])


@pytest.mark.skipif(not RNN_CURVES_PATH.exists(), reason="RNN curves not stored")
def test_seed_zero_is_the_chapters_model(capacity, attention):
    """Seed 0, H = 64, 600 steps is chapters 1-2's recipe: the model without attention gives the same
    curve as reversal_rnn.json's (the attention models' curves differ slightly with the thread count)."""
    stored = pd.DataFrame(json.loads(RNN_CURVES_PATH.read_text())["accuracy"])
    for df in (capacity[0], attention[0]):
        ours = df[(df.seed == 0) & (df.hidden == 64) & (df.steps == REVERSAL.steps)]
        group = ours[ours.model == "no attention"]
        ref = stored[stored.model == "no attention"]
        np.testing.assert_allclose(group.exact_match.to_numpy(), ref.exact_match.to_numpy(), atol=1e-4)


def test_reversal_data_is_shared_by_every_seed():
    """The sweeps pass reversal_data(REVERSAL) to every run: a seed changes the model, not the data."""
    a, b = reversal_data(REVERSAL), reversal_data(REVERSAL)
    assert [e.src for e in a[0][:50]] == [e.src for e in b[0][:50]]


# -- the claims the chapters' prose makes about them -------------------------------------


def _capacity_means(capacity):
    df, blob = capacity
    per_run = run_table(df, ["hidden", "steps"])
    losses = pd.DataFrame(blob["runs"]).set_index(["hidden", "steps", "seed"]).final_loss
    per_run = per_run.join(losses, on=["hidden", "steps", "seed"])
    return per_run, per_run.groupby(["hidden", "steps"]).mean()


def test_capacity_claims_of_chapter_1(capacity):
    per_run, means = _capacity_means(capacity)
    em = means.em_trained.unstack("steps")  # (hidden, steps)
    # "a larger vector gives a higher mean exact match at every budget, more steps at every size"
    for s in em.columns:
        assert em[s].is_monotonic_increasing and em[s].is_unique, em
    for h in em.index:
        assert em.loc[h].is_monotonic_increasing and em.loc[h].is_unique, em
    # "the training loss is still falling" at the largest budget, for every size
    loss = means.final_loss.unstack("steps")
    assert (loss[max(CAPACITY_STEPS)] < loss[REVERSAL.steps]).all()
    # "doubling the steps helps about as much as doubling the vector"
    assert abs(em.loc[64, 1200] - em.loc[128, 600]) < 0.05
    # "every run gets 0.00 on the unseen lengths"; the best reach stays far below the 30 trained digits
    assert per_run.em_longer.max() < 0.005
    assert per_run.reach.max() < 20
    # the seeds agree: no configuration's seeds differ by more than 0.05 in mean exact match
    spread = per_run.groupby(["hidden", "steps"]).em_trained.agg(lambda v: v.max() - v.min())
    assert spread.max() < 0.05


def test_attention_claims_of_chapter_2(attention):
    df, _ = attention
    per_run = run_table(df, ["model"]).set_index("model")
    label = {k: model_label(k) for k in SEED_MODELS}
    none = per_run.loc[label[None]]
    with_attention = per_run.drop(label[None])
    assert with_attention.em_trained.min() > none.em_trained.max() + 0.5
    assert (none.em_longer == 0).all()
    # no attention: zero from some length on in every seed; attention: no trained length below 0.8
    attn_rows = df[(df.model != label[None]) & df.trained_length]
    assert attn_rows.exact_match.min() >= 0.8
    # "the two additive scores ahead of the two multiplicative ones on the trained lengths, in every seed"
    additive = per_run.loc[[label["bahdanau"], label["luong-concat"]]].em_trained
    multiplicative = per_run.loc[[label["luong-dot"], label["luong-general"]]].em_trained
    assert additive.min() > multiplicative.max()
    # "beyond the trained lengths the order changes: dot ahead of Bahdanau in every seed"
    assert per_run.loc[label["luong-dot"]].em_longer.min() > per_run.loc[label["bahdanau"]].em_longer.max()


def test_charts_draw_the_mean_in_a_min_max_band(capacity, attention):
    from minitransformer.book.seq2seq_charts import capacity_chart, seed_band_chart

    spread = seed_spread(capacity[0], ["hidden", "steps"])
    spec = capacity_chart(spread).to_dict()
    assert spec["facet"]["column"]["sort"] == [f"{s} steps" for s in CAPACITY_STEPS]
    data = next(iter(spec["datasets"].values()))
    assert len(data) == len(spread) == len(CAPACITY_HIDDEN) * len(CAPACITY_STEPS) * 31
    assert all(r["min"] <= r["mean"] <= r["max"] for r in data)
    area, line, _ = spec["spec"]["layer"]
    assert (area["encoding"]["y"]["field"], area["encoding"]["y2"]["field"]) == ("min", "max")
    assert line["encoding"]["y"]["field"] == "mean"
    assert 3 * spec["spec"]["width"] <= 660
    order = [model_label(k) for k in SEED_MODELS]
    spec2 = seed_band_chart(seed_spread(attention[0], ["model"]), order).to_dict()
    assert spec2["width"] <= 660 and spec2["layer"][1]["encoding"]["color"]["sort"] == order
    assert all(r["seeds"] == len(SEEDS) for r in next(iter(spec2["datasets"].values())))
