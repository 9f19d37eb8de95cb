"""The kernel-free charts of chapters 1-3: bound controls, data for every position, and the
values they show equal what the library computes."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from minitransformer import scaled_dot_product_attention
from minitransformer.book import viz
from minitransformer.book.qkv_charts import query_lookup_chart, random_scores, saturation_chart
from minitransformer.book.seq2seq_charts import alignment_explorer, gain_chart, random_reversal, reversal_explorer
from minitransformer.book.seq2seq_experiments import decode_examples
from minitransformer.book.worked_examples import cat_sat_on_the_mat
from minitransformer.data import Example, task_tokenizer
from minitransformer.rnn import Seq2Seq, Seq2SeqConfig, hidden_jacobian_norms


def _rows(chart) -> list[dict]:
    spec = chart.to_dict()
    (rows,) = spec["datasets"].values()
    return rows


def _units(spec: dict, mark: str) -> list[dict]:
    """The unit specs drawing ``mark``, in the order they appear."""
    return [p for p in viz._walk(spec) if p.get("mark") == mark or (p.get("mark") or {}).get("type") == mark]


def _run(rows: list[dict], transforms: list[dict], params: dict) -> list[dict]:
    """The few Vega-Lite transforms these charts use, evaluated in Python."""
    env = {"exp": math.exp, "sqrt": math.sqrt, "abs": abs, **params}
    rows = [dict(r) for r in rows]
    for t in transforms:
        if "calculate" in t:
            for r in rows:
                r[t["as"]] = eval(t["calculate"], env, {"datum": SimpleNamespace(**r)})
        elif "filter" in t:
            rows = [r for r in rows if eval(t["filter"], env, {"datum": SimpleNamespace(**r)})]
        elif "joinaggregate" in t or "aggregate" in t:
            groups: dict = {}
            for r in rows:
                groups.setdefault(tuple(r[g] for g in t.get("groupby", [])), []).append(r)
            ops = {"sum": sum, "max": max}
            out = []
            for key, group in groups.items():
                specs = t.get("joinaggregate", t.get("aggregate"))
                agg = {a["as"]: ops[a["op"]](r[a["field"]] for r in group) for a in specs}
                if "joinaggregate" in t:
                    out += [{**r, **agg} for r in group]
                else:
                    out.append({**dict(zip(t["groupby"], key)), **agg})
            rows = out
        else:
            raise NotImplementedError(t)
    return rows


# ---- chapter 3 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cat():
    return cat_sat_on_the_mat()


def test_query_lookup_has_a_slider_per_feature(cat):
    chart = query_lookup_chart(cat["words"], cat["keys"], cat["values"], cat["features"], cat["query"])
    positions = viz.control_positions(chart)
    assert list(positions) == [f"q_{f}" for f in cat["features"]]
    for p in positions.values():
        assert len(p) == 31 and p[0] == 0.0 and p[-1] == 3.0
    assert viz.uncovered_positions(chart) == {}  # computed by expressions: no precomputed column
    start = {p["name"]: p["value"] for p in chart.to_dict()["params"]}
    assert start == {f"q_{f}": v for f, v in zip(cat["features"], [0.9, 0.1, 0.2, 0.3])}


@pytest.mark.parametrize("q", [[0.9, 0.1, 0.2, 0.3], [0.0, 3.0, 0.0, 0.0], [2.5, 0.4, 1.7, 3.0]])
def test_query_lookup_computes_softmax_attention(cat, q):
    chart = query_lookup_chart(cat["words"], cat["keys"], cat["values"], cat["features"], cat["query"])
    spec = chart.to_dict()
    rows = _rows(chart)
    params = {f"q_{f}": v for f, v in zip(cat["features"], q)}
    weights_unit, output_unit = _units(spec, "bar")
    query = torch.tensor([q], dtype=torch.float64)
    out, w = scaled_dot_product_attention(query, cat["keys"], cat["values"], return_weights=True)
    shown = sorted(_run(rows, weights_unit["transform"], params), key=lambda r: r["i"])
    np.testing.assert_allclose([r["weight"] for r in shown], w.squeeze().numpy(), rtol=1e-12)
    shown = sorted(_run(rows, output_unit["transform"], params), key=lambda r: r["c"])
    np.testing.assert_allclose([r["out"] for r in shown], out.squeeze().numpy(), rtol=1e-12)


def test_query_lookup_rejects_mismatched_shapes(cat):
    with pytest.raises(ValueError, match="one word"):
        query_lookup_chart(cat["words"][:5], cat["keys"], cat["values"], cat["features"], cat["query"])


def test_saturation_chart_covers_every_head_size_and_shows_the_softmax():
    chart = saturation_chart()
    sizes = [2**i for i in range(11)]
    assert viz.control_positions(chart) == {"d_k": sizes}
    assert viz.uncovered_positions(chart) == {}
    rows = _rows(chart)
    for d in (1, 64, 1024):
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, d, generator=g, dtype=torch.float64)
        k = torch.randn(8, d, generator=g, dtype=torch.float64)
        s = (q @ k.T).squeeze(0)
        torch.testing.assert_close(random_scores(d), s)
        for order, scores in enumerate((s, s / math.sqrt(d))):
            shown = [r for r in rows if r["d_k"] == d and r["order"] == order]
            assert [r["key"] for r in shown] == [f"key {j}" for j in range(8)]
            np.testing.assert_allclose([r["weight"] for r in shown], torch.softmax(scores, -1).numpy(), atol=5e-4)
            assert f"std {scores.std().item():.2f}" in shown[0]["panel"]


# ---- chapters 1 and 2 ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    return task_tokenizer("reverse")


def _model(tok, attention=None, seed=0):
    torch.manual_seed(seed)
    return Seq2Seq(Seq2SeqConfig(vocab_size=len(tok), emb_dim=8, hidden_size=16, attention=attention)).eval()


def test_reversal_explorer_shows_the_models_output(tok):
    model = _model(tok)
    chart = reversal_explorer(model, tok, lengths=(5, 9), n_examples=3, length=7, example=1)
    assert viz.control_positions(chart) == {"len": [5, 6, 7, 8, 9], "example": [0, 1, 2]}
    assert viz.uncovered_positions(chart) == {}
    rows = _rows(chart)
    assert len(rows) == 15
    for length, example in ((5, 0), (7, 1), (9, 2)):
        (row,) = [r for r in rows if r["len"] == length and r["example"] == example]
        ex = random_reversal(length, example)
        (out,), _ = decode_examples(model, [ex], tok)
        assert (row["input"], row["reversed"], row["model"]) == (ex.src, ex.src[::-1], out)
        wrong = sum(i >= len(out) or out[i] != c for i, c in enumerate(ex.tgt))
        assert row["wrong"] == wrong and str(wrong) in row["verdict"]


def test_random_reversal_is_reproducible():
    a, b = random_reversal(12, 3), random_reversal(12, 3)
    assert a == b and len(a.src) == 12 and a.tgt == a.src[::-1] and a != random_reversal(12, 4)


def test_gain_chart_shows_the_jacobian_norms():
    inputs = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))  # (12, 4)

    def make_cell(gain):
        torch.manual_seed(0)
        cell = nn.RNNCell(4, 8)
        with torch.no_grad():
            cell.weight_hh.mul_(gain)
        return cell

    chart = gain_chart(make_cell, inputs, gains=(0.5, 2.0, 0.5), gain=1.0, steps=(1, 5, 12))
    assert viz.control_positions(chart) == {"gain": [0.5, 1.0, 1.5, 2.0]}
    assert viz.uncovered_positions(chart) == {}
    rows = _rows(chart)
    for g in (0.5, 2.0):
        norms = hidden_jacobian_norms(make_cell(g), inputs)
        shown = [r for r in rows if r["gain"] == g]
        assert [r["t"] for r in shown] == [1, 5, 12]
        np.testing.assert_allclose([r["norm"] for r in shown], norms[[1, 5, 12]].numpy(), rtol=2e-3)
        for r in shown:
            assert r["log10"] == pytest.approx(math.log10(r["norm"]), abs=1e-3)
            assert r["change"] == ("shrinks" if r["norm"] < 1 else "grows")


def test_alignment_explorer_holds_every_alignment(tok):
    rng = np.random.default_rng(0)
    examples = []
    for length in (4, 5, 6):
        for _ in range(3):
            src = "".join(map(str, rng.integers(0, 10, length)))
            examples.append(Example(src, src[::-1], length))
    models = {"Bahdanau": _model(tok, "bahdanau", 1), "Luong dot": _model(tok, "luong-dot", 2)}
    chart = alignment_explorer(models, examples, tok, n_examples=2, model="Luong dot", length=5)
    assert viz.control_positions(chart) == {"model": ["Bahdanau", "Luong dot"], "len": [4, 5, 6], "example": [0, 1]}
    assert viz.uncovered_positions(chart) == {}
    rows = _rows(chart)
    assert len(rows) == 2 * 3 * 2
    for label, length, example in (("Bahdanau", 4, 1), ("Luong dot", 6, 0)):
        (row,) = [r for r in rows if (r["model"], r["len"], r["example"]) == (label, length, example)]
        ex = [e for e in examples if e.length == length][example]
        (out,), (w,) = decode_examples(models[label], [ex], tok)
        assert (row["input"], row["target"], row["out"]) == (ex.src, ex.tgt, out)
        dense = np.zeros(tuple(w.shape))
        for cell in row["cells"].split(" "):
            t, j, value = map(int, cell.split(":"))
            dense[t, j] = value / 100
        np.testing.assert_allclose(dense, w.double().numpy(), atol=0.005 + 1e-9)
    with pytest.raises(ValueError, match="no attention"):
        alignment_explorer({"none": _model(tok)}, examples, tok, n_examples=2)
    with pytest.raises(ValueError, match="fewer held-out"):
        alignment_explorer(models, examples, tok, n_examples=4)
