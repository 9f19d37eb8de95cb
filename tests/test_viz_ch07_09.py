"""The kernel-free charts of chapters 7, 8 and 9: controls bound, data for every control
position, and the values shown equal what the library computes."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from minitransformer import GPT, scaled_dot_product_attention
from minitransformer.book import viz
from minitransformer.book.char_lm import head_browser_chart, sample_text, sampling_chart
from minitransformer.book.efficient_views import MASK_PATTERNS, mask_drawer_chart, mask_expression, tile_stepper_chart
from minitransformer.book.recsys import PAD, Catalogue, session_picker_chart
from minitransformer.book.vision import SHAPE_CLASSES, image_picker_chart
from minitransformer.data import Tokenizer
from minitransformer.efficient import global_token_mask, random_mask, sliding_window_mask, strided_mask
from minitransformer.flash.tiled_numpy import flash_forward_steps


def _rows(chart, *columns):
    """Every data row of a chart that has all of ``columns``."""
    spec = chart.to_dict()
    return [r for data in spec["datasets"].values() for r in data if all(c in r for c in columns)]


def _at(rows, **control):
    return [
        r for r in rows if all(np.isclose(r[k], v) if isinstance(v, float) else r[k] == v for k, v in control.items())
    ]


def _params(chart):
    return {p["name"]: p for p in chart.to_dict().get("params", [])}


def test_text_panel_draws_lines_of_its_field():
    import pandas as pd

    spec = viz.text_panel(pd.DataFrame({"text": ["a\nb"]}), "text", width=100, height=30).to_dict()
    assert spec["mark"]["lineBreak"] == "\n" and spec["encoding"]["text"]["field"] == "text"
    assert (spec["width"], spec["height"]) == (100, 30)


# ---- chapter 7 -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm():
    tok = Tokenizer.from_text("abcdefgh ijk\nKING:")
    torch.manual_seed(0)
    return GPT(len(tok), 16, n_layer=1, n_head=2, d_model=16), tok


@pytest.fixture(scope="module")
def sampling(tiny_lm):
    model, tok = tiny_lm
    return sampling_chart(model, tok, "KING:\nabc ", top_ks=(0, 1, 3), n_new=12, shown=4)


def test_sampling_chart_binds_temperature_and_top_k_and_covers_them(sampling):
    positions = viz.control_positions(sampling)
    assert positions["top_k"] == [0, 1, 3]
    assert len(positions["temperature"]) == 21 and positions["temperature"][::10] == [0.0, 1.0, 2.0]
    assert viz.uncovered_positions(sampling) == {}
    assert _params(sampling)["temperature"]["value"] == 0.8


@pytest.mark.parametrize("temperature, top_k", [(0.5, 0), (1.3, 0), (1.0, 3), (0.0, 0)])
def test_sampling_chart_shows_the_softmax_of_the_scaled_logits(tiny_lm, sampling, temperature, top_k):
    model, tok = tiny_lm
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode("KING:\nabc ")]))[0][0, -1].double()  # (V,)
    if temperature == 0:
        expected = torch.zeros_like(logits)
        expected[logits.argmax()] = 1.0
    else:
        z = logits / temperature
        if top_k:
            z = z.masked_fill(z < z.topk(top_k).values[-1], float("-inf"))
        expected = torch.softmax(z, -1)
    order = logits.argsort(descending=True)[:4]
    bars = sorted(_at(_rows(sampling, "p", "rank"), temperature=temperature, top_k=top_k), key=lambda r: r["rank"])
    assert [b["char"] for b in bars][-1] == "others" and len(bars) == 5
    np.testing.assert_allclose([b["p"] for b in bars[:4]], expected[order].numpy(), atol=6e-4)
    np.testing.assert_allclose(bars[4]["p"], 1 - expected[order].sum().item(), atol=6e-4)


def test_sampling_chart_shows_the_sample_drawn_at_that_setting(tiny_lm, sampling):
    model, tok = tiny_lm
    (row,) = _at(_rows(sampling, "text"), temperature=1.2, top_k=3)
    sample = sample_text(model, tok, "KING:\nabc ", 12, temperature=1.2, top_k=3, seed=0)
    shown = row["text"].replace("\u200b", "").replace("\n", "")  # wrapped, blank lines marked
    assert shown == ("KING:\nabc " + sample).replace("\n", "")
    assert "\n\n" not in row["text"]  # an empty line would collapse in the SVG
    assert all(len(line) <= 72 for line in row["text"].split("\n"))


def test_head_browser_shows_the_picked_head():
    torch.manual_seed(0)
    w = torch.softmax(3 * torch.randn(2, 3, 7, 7), -1)  # (L, H, T, T)
    chart = head_browser_chart(w, "KING:\na", roles=list("abcdef"), layer=1, head=2)
    assert viz.control_positions(chart) == {"layer": [0, 1], "head": [0, 1, 2]}
    assert viz.uncovered_positions(chart) == {}
    (row,) = _at(_rows(chart, "q", "k", "w"), layer=1, head=0)
    kept = (w[1, 0] * 100).round() > 0
    assert len(row["q"]) == int(kept.sum())
    for q, k, value, top in zip(row["q"], row["k"], row["w"], row["top"]):
        assert abs(value / 100 - w[1, 0, q, k].item()) <= 0.005
        assert top == int(w[1, 0, q].argmax())
    with pytest.raises(ValueError, match="characters"):
        head_browser_chart(w, "short")


# ---- chapter 8 -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flash_case():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(n, 4, generator=g, dtype=torch.float64) for n in (8, 12, 12))
    steps = list(flash_forward_steps(q.numpy(), k.numpy(), v.numpy(), Br=4, Bc=4))
    return steps, scaled_dot_product_attention(q, k, v).numpy()


def test_tile_stepper_covers_every_step(flash_case):
    steps, exact = flash_case
    chart = tile_stepper_chart(steps, exact, step=4)
    assert viz.control_positions(chart) == {"step": list(range(len(steps)))} and len(steps) == 6
    assert viz.uncovered_positions(chart) == {}


@pytest.mark.parametrize("step", [0, 4, 5])
def test_tile_stepper_shows_the_state_of_the_step(flash_case, step):
    steps, exact = flash_case
    st = steps[step]
    chart = tile_stepper_chart(steps, exact)
    tiles = _at(_rows(chart, "tile"), step=step)
    assert [t["tile"] for t in tiles].count("this step") == 1 and len(tiles) == 6
    assert [t["tile"] for t in tiles].count("done") == step
    table = _at(_rows(chart, "column", "value"), step=step)
    for line in range(4):
        cells = {r["column"]: float(r["value"]) for r in table if r["line"] == line}
        assert cells["row"] == st.rows[0] + line
        np.testing.assert_allclose(
            [cells["m"], cells["alpha"], cells["l"]], [st.m[line], st.alpha[line], st.l[line]], atol=5e-5
        )
        error = np.abs(st.O_now[line] - exact[st.rows[0] + line]).max()
        assert abs(cells["max |o/l − exact|"] - error) < 5e-5
        if st.last:
            assert error < 1e-12
    (note,) = _at(_rows(chart, "text"), step=step)
    assert f"query tile i = {st.i}" in note["text"] and ("exact attention output" in note["text"]) == st.last
    if step == 0:
        assert all(cells == 0 for cells in st.alpha)  # what the prose says of step 0


def _mask_from_chart(chart, pattern, n, parameter, causal):
    """Evaluate the chart's own expression, as Vega would, on its data for ``n``."""
    expr = mask_expression().replace("&&", " and ").replace("||", " or ")
    controls = {"pattern": pattern, "n": n, "parameter": parameter, "causal": "yes" if causal else "no"}
    out = np.zeros((n, n), dtype=bool)
    for row in _at(_rows(chart, "i", "r", "c"), n=n):
        for j, (r, c) in enumerate(zip(row["r"], row["c"])):
            datum = SimpleNamespace(i=row["i"], j=j, r=r, c=c)
            out[row["i"], j] = eval(expr, {"abs": abs, "min": min, "max": max}, {"datum": datum, **controls})
    return out


@pytest.fixture(scope="module")
def drawer():
    return mask_drawer_chart(n_range=(4, 12), parameter_max=6, n=8, parameter=2)


def test_mask_drawer_binds_its_four_controls(drawer):
    positions = viz.control_positions(drawer)
    assert positions == {
        "pattern": list(MASK_PATTERNS),
        "n": list(range(4, 13)),
        "parameter": list(range(7)),
        "causal": ["yes", "no"],
    }
    assert viz.uncovered_positions(drawer) == {}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n, parameter", [(4, 0), (9, 2), (12, 5), (5, 6)])
def test_mask_drawer_draws_the_library_masks(drawer, n, parameter, causal):
    library = {
        "sliding window": sliding_window_mask(n, parameter, causal=causal),
        "strided": strided_mask(n, max(parameter, 1), causal=causal),
        "global + window 1": global_token_mask(n, min(parameter, n), window=1, causal=causal),
        "random": random_mask(n, parameter, causal=causal, seed=0),
    }
    for pattern, mask in library.items():
        drawn = _mask_from_chart(drawer, pattern, n, parameter, causal)
        assert np.array_equal(drawn, mask.numpy()), (pattern, n, parameter, causal)


# ---- chapter 9 -------------------------------------------------------------------------


def test_image_picker_shows_each_image_its_prediction_and_attention():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 1, 8, 8, generator=g)
    att = torch.softmax(torch.randn(5, 4, generator=g), -1)  # (N, 2x2 patches)
    on = torch.rand(5, 4, generator=g) > 0.5
    labels, logits = torch.tensor([0, 1, 2, 3, 0]), torch.randn(5, 4, generator=g)
    chart = image_picker_chart(images, att, on, labels, logits, index=2, preview=4)
    assert viz.control_positions(chart) == {"image": [0, 1, 2, 3, 4]}
    assert viz.uncovered_positions(chart) == {}
    for n in (1, 4):
        cells = sorted(_at(_rows(chart, "weight", "label"), image=n), key=lambda r: (r["row"], r["col"]))
        np.testing.assert_allclose([c["weight"] for c in cells], att[n].numpy(), atol=0.005)
        assert [c["label"].endswith("*") for c in cells] == on[n].tolist()
        (pixels,) = _at(_rows(chart, "v"), image=n)
        pooled = images[n, 0].reshape(4, 2, 4, 2).mean((1, 3)).flatten()
        np.testing.assert_allclose(pixels["v"], pooled.numpy(), atol=0.005)
        (title,) = _at(_rows(chart, "text"), image=n)
        pred = int(logits[n].argmax())
        assert f"true {SHAPE_CLASSES[int(labels[n])]}, predicted {SHAPE_CLASSES[pred]}" in title["text"]
        assert f"p = {torch.softmax(logits[n], -1)[pred].item():.2f}" in title["text"]


def test_session_picker_shows_the_history_weights_in_order():
    cat = Catalogue(num_series=2, episodes=5, num_trending=2)
    history = torch.tensor([[PAD, PAD, 1, 11, 2], [PAD, 6, 7, 12, 8]])
    weights = torch.tensor([[0.0, 0.0, 0.2, 0.1, 0.7], [0.0, 0.5, 0.1, 0.1, 0.3]])
    evidence, target = torch.tensor([4, 4]), torch.tensor([3, 9])
    chart = session_picker_chart(
        cat, history, evidence, target, torch.tensor([3, 9]), weights, torch.tensor([2, 7]), index=1
    )
    assert viz.control_positions(chart) == {"session": [0, 1]}
    assert viz.uncovered_positions(chart) == {}
    bars = sorted(_at(_rows(chart, "click", "weight"), session=1), key=lambda r: r["place"])
    assert [b["weight"] for b in bars] == [0.5, 0.1, 0.1, 0.3]
    assert [b["click"] for b in bars] == ["1. S1E0", "2. S1E1", "3. trend1", "4. ★ S1E2"]
    (note,) = _at(_rows(chart, "text"), session=1)
    assert "next item S1E3, recommended S1E3" in note["text"]
    assert "without its top-weighted click S1E0: recommended S1E1" in note["text"]
