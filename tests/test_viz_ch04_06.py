"""The kernel-free charts of chapters 4-6: controls bound, every position covered, and what
the chart shows at a few positions equal to what the package computes.

Charts that compute in the page are checked by running their own Vega expressions in
Python (tests/vega_eval.py) against the package's functions.
"""

import html
import math
import re

import pytest
import torch
import torch.nn.functional as F

from minitransformer.book import viz
from minitransformer.book.block_charts import NOAM_STEPS, PREDICTIONS, noam_chart, smoothing_chart
from minitransformer.book.heads import AttentionOnlyTransformer, encode, head_scores, repeated_sequences
from minitransformer.book.multihead_charts import head_picker_chart, kv_cache_chart
from minitransformer.book.position_charts import SIMILARITY_OFFSETS, rope_pair_chart, similarity_chart
from minitransformer.kv_cache import kv_cache_bytes, kv_cache_report
from minitransformer.positional import sinusoidal_encoding
from minitransformer.rotary import RotaryEmbedding
from minitransformer.train import noam_lr, smoothed_targets
from vega_eval import evaluate, shown


def _fits(chart, column: int = viz.COLUMN_WIDTH) -> None:
    """Plotting areas side by side (hconcat) stay well inside the text column."""
    spec = chart.to_dict()
    width = sum(p.get("width", 0) for p in spec.get("hconcat", [])) or max(
        [p.get("width", 0) for p in spec.get("vconcat", [])] + [spec.get("width", 0)]
    )
    assert 0 < width <= column - 200, width


# ---------------------------------------------------------------- chapter 4: KV cache


def test_kv_cache_chart_controls():
    chart = kv_cache_chart()
    positions = viz.control_positions(chart)
    assert positions["layers"] == list(range(1, 129)) and positions["batch"] == list(range(1, 65))
    assert positions["query_heads"] == [8, 12, 16, 32, 64, 96, 128]
    assert positions["kv_heads"] == [1, 2, 4, 8, 16, 32, 64]
    assert positions["head_dim"] == [64, 128, 256] and positions["precision"] == [4, 2, 1]
    assert positions["tokens"] == [1024, 4096, 8192, 32768, 131072]
    assert viz.uncovered_positions(chart) == {}  # computed in the page: no precomputed column
    _fits(chart)


@pytest.mark.parametrize(
    "shape",
    [
        dict(layers=80, query_heads=64, kv_heads=8, head_dim=128, tokens=4096, batch=1, precision=2),
        dict(layers=3, query_heads=8, kv_heads=1, head_dim=64, tokens=1024, batch=5, precision=1),
        dict(layers=128, query_heads=32, kv_heads=32, head_dim=256, tokens=131072, batch=64, precision=4),
    ],
)
def test_kv_cache_chart_shows_the_package_report(shape):
    spec = kv_cache_chart().to_dict()
    lines = [r["text"] for r in shown(spec, "report", **shape)]
    args = [shape[k] for k in ("layers", "query_heads", "kv_heads", "head_dim", "tokens", "batch", "precision")]
    report = kv_cache_report("your model", *args)
    assert " ".join(lines[:2]).strip() == report
    per_token = kv_cache_bytes(shape["layers"], shape["kv_heads"], shape["head_dim"], 1, 1, shape["precision"])
    group = shape["query_heads"] // shape["kv_heads"]
    assert lines[2].startswith("per token: ") and f"group size: {group} query heads" in lines[2]
    n = float(lines[2].split()[2])
    unit = {"B": 1, "KiB": 2**10, "MiB": 2**20}[lines[2].split()[3].rstrip(";")]
    assert abs(n * unit - per_token) <= 0.05 * unit
    bars = {r["attention"]: r for r in shown(spec, "cache", **shape)}
    L, hd, T, B, P = (shape[k] for k in ("layers", "head_dim", "tokens", "batch", "precision"))
    for name, kv in (("multi-head", shape["query_heads"]), ("your model", shape["kv_heads"]), ("multi-query", 1)):
        assert bars[name]["kv"] == kv
        assert bars[name]["GiB"] == pytest.approx(kv_cache_bytes(L, kv, hd, T, B, P) / 2**30, rel=1e-12)


def test_kv_cache_chart_says_when_kv_heads_do_not_divide():
    spec = kv_cache_chart().to_dict()
    lines = [r["text"] for r in shown(spec, "report", query_heads=12, kv_heads=8)]
    assert lines[0] == "kv heads = 8 must divide query heads = 12" and lines[1:] == ["", ""]
    assert {r["attention"] for r in shown(spec, "cache", query_heads=12, kv_heads=8)} == {"multi-head", "multi-query"}


# ---------------------------------------------------------------- chapter 4: head picker


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = AttentionOnlyTransformer(vocab_size=48, block_size=48, n_layer=2, n_head=4, d_model=32)
    idx, _ = repeated_sequences(16, seq_len=24, vocab_size=48, min_period=4, max_period=8)
    scores = head_scores(model.attention_maps(idx), idx)
    examples = {"ABC x3": "^" + "ABCDEFG" * 3, "short": "^XYZXYZ"}
    return model, examples, scores


def test_head_picker_covers_every_layer_head_and_sequence(small_model):
    model, examples, scores = small_model
    chart = head_picker_chart(model, examples, scores)
    assert viz.control_positions(chart) == {"layer": [0, 1], "head": [0, 1, 2, 3], "sequence": [0, 1]}
    assert viz.uncovered_positions(chart) == {}
    _fits(chart)


@pytest.mark.parametrize("layer, head, sequence", [(1, 0, 0), (0, 3, 1), (1, 2, 1)])
def test_head_picker_shows_the_models_weights(small_model, layer, head, sequence):
    model, examples, scores = small_model
    spec = head_picker_chart(model, examples, scores).to_dict()
    text = list(examples.values())[sequence]
    w = model.attention_maps(encode(text))[layer, 0, head]  # (T, T)
    cells = {(r["q"], r["k"]): r["weight"] for r in shown(spec, "map", layer=layer, head=head, sequence=sequence)}
    T = len(text)
    assert {(t, t) for t in range(T)} <= set(cells)  # every row and column is drawn
    for q in range(T):
        for k in range(T):
            assert cells.get((q, k), 0.0) == pytest.approx(round(w[q, k].item(), 2), abs=1e-9)
    (role,) = shown(spec, "role", layer=layer, head=head)
    row = scores[(scores.layer == layer) & (scores["head"] == head)].iloc[0]
    assert role["text"].startswith(f"layer {layer}, head {head}: {row.role} head (previous {row.previous:.2f}")


# ---------------------------------------------------------------- chapter 5


def test_similarity_chart_controls():
    chart = similarity_chart()
    assert viz.control_positions(chart) == {"d_model": list(range(2, 513, 2)), "base": [10, 100, 1000, 10000, 100000]}
    assert viz.uncovered_positions(chart) == {}
    _fits(chart)


@pytest.mark.parametrize("d_model, base", [(64, 10000), (2, 10), (512, 100), (130, 100000)])
def test_similarity_chart_is_the_cosine_of_two_encodings(d_model, base):
    pe = sinusoidal_encoding(1001, d_model, base=float(base), dtype=torch.float64)
    want = {k: (pe[0] @ pe[k]).item() / (d_model / 2) for k in SIMILARITY_OFFSETS}
    got = {r["k"]: r["cosine"] for r in shown(similarity_chart().to_dict(), "cosine", d_model=d_model, base=base)}
    assert got == pytest.approx(want, abs=1e-9)


def test_rope_pair_chart_controls():
    chart = rope_pair_chart()
    assert viz.control_positions(chart) == {"m": list(range(41)), "n": list(range(41)), "pair": [0, 1, 2, 3]}
    assert viz.uncovered_positions(chart) == {}
    _fits(chart)


@pytest.mark.parametrize("m, n, pair", [(3, 5, 0), (40, 0, 1), (17, 29, 3), (0, 0, 2)])
def test_rope_pair_chart_rotates_as_the_package(m, n, pair):
    rope = RotaryEmbedding(head_dim=8)
    q, k = torch.zeros(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    q[2 * pair : 2 * pair + 2] = torch.tensor([1.0, 0.5], dtype=torch.float64)
    k[2 * pair : 2 * pair + 2] = torch.tensor([0.8, -0.3], dtype=torch.float64)
    qm = rope(q[None], torch.tensor([m]))[0, 2 * pair : 2 * pair + 2]  # (2,)
    kn = rope(k[None], torch.tensor([n]))[0, 2 * pair : 2 * pair + 2]  # (2,)
    spec = rope_pair_chart().to_dict()
    arrows = {r["vector"]: (r["x"], r["y"]) for r in shown(spec, "arrows", m=m, n=n, pair=pair)}
    assert arrows["query"] == pytest.approx(qm.tolist(), abs=1e-12)
    assert arrows["key"] == pytest.approx(kn.tolist(), abs=1e-12)
    lines = [r["text"].replace("\u2212", "-") for r in shown(spec, "readout", m=m, n=n, pair=pair)]
    assert lines[0] == f"pair {pair}: theta = {rope.theta()[pair].item():g} rad per position"
    assert f"-> [{qm[0].item():.4f}, {qm[1].item():.4f}], norm {math.sqrt(1.25):.4f}" in lines[1]
    assert lines[3] == f"score <R_m q, R_n k> = {(qm @ kn).item():+.4f}   (n - m = {n - m})"


# ---------------------------------------------------------------- chapter 6


def test_noam_chart_controls():
    chart = noam_chart()
    positions = viz.control_positions(chart)
    assert positions == {"warmup": list(range(500, 16001, 500)), "d_model": [64, 128, 256, 512, 1024, 2048]}
    assert viz.uncovered_positions(chart) == {}
    _fits(chart)


@pytest.mark.parametrize("warmup, d_model", [(4000, 512), (500, 64), (16000, 2048), (7500, 128)])
def test_noam_chart_is_noam_lr(warmup, d_model):
    spec = noam_chart().to_dict()
    rates = {r["step"]: r["lr"] for r in shown(spec, "rate", warmup=warmup, d_model=d_model)}
    assert rates == pytest.approx({s: noam_lr(s, d_model, warmup) for s in NOAM_STEPS}, rel=1e-12)
    (peak,) = shown(spec, "peak", warmup=warmup, d_model=d_model)
    js = re.sub(r"e([+-])0", r"e\1", f"{noam_lr(warmup, d_model, warmup):.3e}")  # JavaScript: 7.0e-4
    assert peak["text"].startswith(f"peak lr {js} at step {warmup} ")


def test_smoothing_chart_controls():
    chart = smoothing_chart()
    assert viz.control_positions(chart) == {"epsilon": [round(0.05 * i, 2) for i in range(11)]}
    assert viz.uncovered_positions(chart) == {}
    _fits(chart)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.35, 0.5])
def test_smoothing_chart_shows_targets_and_losses(epsilon):
    spec = smoothing_chart().to_dict()
    # the slider's value carries rounding error (3 * 0.05 + ...); the filter tolerates it
    at = epsilon + 1e-12
    q = {r["token"]: r["q"] for r in shown(spec, "target", epsilon=at)}
    want = smoothed_targets(torch.tensor([2]), 8, epsilon, dtype=torch.float64)[0]
    assert q == pytest.approx({f"token {c}": round(p, 4) for c, p in enumerate(want.tolist())}, abs=1e-12)
    assert q["token 2"] == pytest.approx(1 - epsilon + epsilon / 8, abs=1e-4)
    losses = {r["prediction"]: r["loss"] for r in shown(spec, "loss", epsilon=at)}
    confident = torch.full((8,), 0.001 / 7, dtype=torch.float64)
    confident[2] = 0.999
    uniform = torch.full((8,), 1 / 8, dtype=torch.float64)
    for name, p in zip(PREDICTIONS, (confident, None, uniform)):
        if p is None:  # the loss of q itself is its entropy
            ref = -sum(x * math.log(x) for x in want.tolist() if x > 0)
        else:  # cross-entropy with label smoothing, from log-probabilities
            ref = F.cross_entropy(torch.log(p)[None], torch.tensor([2]), label_smoothing=epsilon).item()
        assert losses[name] == pytest.approx(ref, abs=1e-4)
    best = min(losses, key=losses.get)
    assert best == PREDICTIONS[1]  # the smoothed target itself has the lowest loss


def test_vega_eval_rounds_as_javascript_and_rejects_what_it_does_not_understand():
    assert evaluate("format(1.25, '.1f')") == "1.3" and evaluate("format(2.5, 'd')") == "3"
    assert evaluate("format(0.00069877, '.3e')") == "6.988e-4"
    assert evaluate("format(-0.5, '.2f')") == "\u22120.50"  # d3's minus sign
    assert evaluate("if(a > 1 && b, 'x', 'y')", params={"a": 2, "b": True}) == "x"
    assert evaluate("format(datum.v, '.2f') + ' B'", datum={"v": 1.234}) == "1.23 B"
    with pytest.raises(NotImplementedError):
        evaluate("a ? 1 : 2", params={"a": 1})
    with pytest.raises(NotImplementedError):
        evaluate("format(1, '.2s')")


def _set_params(spec: dict, **values) -> dict:
    for part in [spec, *[s for k in ("layer", "hconcat", "vconcat", "concat") for s in spec.get(k, [])]]:
        for p in part.get("params", []):
            p["value"] = values.get(p["name"], p["value"])
    return spec


@pytest.mark.parametrize(
    "build, name, values",
    [
        (kv_cache_chart, "report", dict(layers=5, kv_heads=1, query_heads=8, head_dim=64, tokens=1024, precision=1)),
        (kv_cache_chart, "report", dict(layers=100, kv_heads=2, query_heads=96, tokens=131072, batch=3)),
        (rope_pair_chart, "readout", dict(m=40, n=0, pair=1)),
        (noam_chart, "peak", dict(warmup=7500, d_model=128)),
    ],
)
def test_vega_itself_draws_what_vega_eval_computes(build, name, values):
    """The Python evaluation of the expressions agrees with Vega's own (through vl-convert)."""
    vlc = pytest.importorskip("vl_convert")
    spec = _set_params(build().to_dict(), **values)
    svg = vlc.vegalite_to_svg(spec)
    drawn = {html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)}
    want = [r["text"] for r in shown(spec, name)]
    assert want and all(w in drawn for w in want if w), (want, drawn)
