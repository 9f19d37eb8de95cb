"""The kernel-free controls of minitransformer.book.viz: bound parameters and data coverage."""

import altair as alt
import numpy as np
import pandas as pd
import pytest

from minitransformer.book import viz


def _chart(df, *params):
    chart = alt.Chart(df).mark_bar().encode(y="y:Q").add_params(*params)
    for p in params:
        chart = chart.transform_filter(viz.at_control(p))
    return chart


def test_slider_positions_and_binding():
    t = viz.slider("t", 0.1, 3.0, 0.1, value=1.0, label="temperature")
    spec = alt.Chart(pd.DataFrame({"y": [1]})).mark_bar().add_params(t).to_dict()
    (param,) = spec["params"]
    assert param["bind"] == {"input": "range", "min": 0.1, "max": 3.0, "step": 0.1, "name": "temperature "}
    positions = viz.control_positions(spec)["t"]
    assert len(positions) == 30 and positions[0] == 0.1 and positions[-1] == 3.0 and 0.3 in positions


def test_coverage_finds_a_missing_position():
    t = viz.slider("t", 0.1, 3.0, 0.1, value=1.0)
    full = pd.DataFrame({"t": np.round(np.arange(1, 31) / 10, 6), "y": range(30)})
    assert viz.uncovered_positions(_chart(full, t)) == {}
    assert viz.uncovered_positions(_chart(full.drop(index=[2, 29]), t)) == {"t": [0.3, 3.0]}


def test_picker_coverage_and_labels():
    p = viz.picker("s", ["a", "b", "c"], value="b", labels=["A", "B", "C"])
    df = pd.DataFrame({"s": ["a", "b"], "y": [1, 2]})
    assert viz.uncovered_positions(_chart(df, p)) == {"s": ["c"]}
    assert viz.at_control(p) == "datum['s'] == s"
    bind = _chart(df, p).to_dict()["params"][0]["bind"]
    assert bind["options"] == ["a", "b", "c"] and bind["labels"] == ["A", "B", "C"]


def test_controls_inside_layers_and_concats_are_found():
    t = viz.slider("t", 0, 4, 1)
    p = viz.picker("s", ["a", "b"])
    df = pd.DataFrame({"t": [0, 1, 2, 3, 4], "s": ["a", "b", "a", "b", "a"], "y": range(5)})
    chart = alt.hconcat(_chart(df, t), _chart(df, p) + alt.Chart(df).mark_point())
    assert viz.control_positions(chart) == {"t": [0, 1, 2, 3, 4], "s": ["a", "b"]}
    assert viz.uncovered_positions(chart) == {}


def test_the_filter_matches_slider_values_with_rounding_error():
    t = viz.slider("t", 0.0, 1.0, 0.1)
    expr = viz.at_control(t)  # this expression reads the same in Vega and in Python
    assert eval(expr, {"abs": abs}, {"datum": {"t": 0.3}, "t": 0.1 * 3})  # 0.30000000000000004
    assert not eval(expr, {"abs": abs}, {"datum": {"t": 0.4}, "t": 0.1 * 3})


@pytest.mark.parametrize(
    "args, message",
    [
        (("t", 1.0, 0.0, 0.1), "lo < hi"),
        (("t", 0.0, 1.0, 0.3), "whole number"),
        (("t", 0.0, 1.0, 0.5, 0.7), "not a position"),
    ],
)
def test_slider_rejects_bad_ranges(args, message):
    with pytest.raises(ValueError, match=message):
        viz.slider(*args)


def test_picker_rejects_bad_arguments():
    with pytest.raises(ValueError, match="not one of the options"):
        viz.picker("s", ["a"], value="b")
    with pytest.raises(ValueError, match="labels"):
        viz.picker("s", ["a", "b"], labels=["A"])
    with pytest.raises(ValueError, match="at least one"):
        viz.picker("s", [])
