"""Charts (altair) and small text displays used by the book.

Every chart rounds its data so that the stored notebook outputs reproduce
exactly on another machine (nbval compares them). Charts render natively in
Jupyter and Colab, and in the static HTML book through the vendored vega
bundle (see ``book/_ext/offline_assets.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd
import torch

__all__ = [
    "bar_chart",
    "heatmap",
    "line_chart",
    "text_bars",
    "mask_chart",
    "enable_book_renderer",
    "slider",
    "picker",
    "at_control",
    "control_positions",
    "uncovered_positions",
    "COLUMN_WIDTH",
    "text_lines",
]

# The book's text column is 740 px wide; a chart (with its axis titles, legend and
# padding) must fit inside it, so the plotting area of one panel stays well below.
COLUMN_WIDTH = 740

DIGITS = 4


def _book_renderer(spec: dict, **metadata) -> dict:
    """Altair renderer: the vega-lite spec under its own mime type, plus altair's HTML.

    The static book draws the vega-lite mime output with its vendored, offline
    vega bundle; JupyterLab and Colab pick whichever of the two they can show
    (the HTML one loads vega from a CDN, which is fine online).
    """
    major = alt.SCHEMA_VERSION.lstrip("v").split(".")[0]
    bundle = alt.renderers._plugins["html"](spec, **metadata)
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    return {f"application/vnd.vegalite.v{major}+json": spec, **bundle}


def enable_book_renderer() -> None:
    """Make altair charts display with :func:`_book_renderer` (called by ``notebook.setup``)."""
    if "book" not in alt.renderers.names():
        alt.renderers.register("book", _book_renderer)
    alt.renderers.enable("book")


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x)


def bar_chart(
    labels: Sequence[str], values, title: str = "", y_title: str = "weight", width: int = 360, height: int = 200
) -> alt.Chart:
    """A bar per label, in the given order, with the value printed above each bar."""
    v = np.round(_np(values).astype(float), DIGITS)
    df = pd.DataFrame({"label": [f"{i}: {l}" for i, l in enumerate(labels)], y_title: v})
    order = list(df["label"])
    base = alt.Chart(df, title=title).encode(
        x=alt.X("label:N", sort=order, title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y(f"{y_title}:Q", title=y_title),
    )
    bars = base.mark_bar(color="#4c78a8")
    text = base.mark_text(dy=-6, fontSize=11).encode(text=alt.Text(f"{y_title}:Q", format=".3f"))
    return (bars + text).properties(width=width, height=height)


def heatmap(
    matrix,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    title: str = "",
    x_title: str = "key",
    y_title: str = "query",
    value_title: str = "weight",
    scheme: str = "blues",
    width: int = 300,
    height: int = 300,
    annotate: bool = False,
) -> alt.Chart:
    """A heatmap of a 2-D matrix ``(rows = y, cols = x)``."""
    m = np.round(_np(matrix).astype(float), DIGITS)
    rows, cols = m.shape
    xl = [f"{j}: {l}" for j, l in enumerate(x_labels)] if x_labels is not None else [str(j) for j in range(cols)]
    yl = [f"{i}: {l}" for i, l in enumerate(y_labels)] if y_labels is not None else [str(i) for i in range(rows)]
    df = pd.DataFrame(
        [(yl[i], xl[j], m[i, j]) for i in range(rows) for j in range(cols)], columns=[y_title, x_title, value_title]
    )
    base = alt.Chart(df, title=title).encode(
        x=alt.X(f"{x_title}:N", sort=xl, axis=alt.Axis(labelAngle=-45 if x_labels is not None else 0)),
        y=alt.Y(f"{y_title}:N", sort=yl),
    )
    chart = base.mark_rect().encode(
        color=alt.Color(f"{value_title}:Q", scale=alt.Scale(scheme=scheme)),
        tooltip=[y_title, x_title, alt.Tooltip(f"{value_title}:Q", format=".3f")],
    )
    if annotate:
        chart = chart + base.mark_text(fontSize=10).encode(text=alt.Text(f"{value_title}:Q", format=".2f"))
    return chart.properties(width=width, height=height)


def mask_chart(mask, title: str, width: int = 160, height: int = 160) -> alt.Chart:
    """A boolean mask drawn as dark (may attend) and light (blocked) squares."""
    m = _np(mask).astype(bool)
    rows, cols = m.shape
    df = pd.DataFrame(
        [(i, j, "may attend" if m[i, j] else "blocked") for i in range(rows) for j in range(cols)],
        columns=["query", "key", "mask"],
    )
    return (
        alt.Chart(df, title=title)
        .mark_rect(stroke="white")
        .encode(
            x=alt.X("key:O"),
            y=alt.Y("query:O"),
            color=alt.Color("mask:N", scale=alt.Scale(domain=["may attend", "blocked"], range=["#2f5d8a", "#e8e8e8"])),
        )
        .properties(width=width, height=height)
    )


def line_chart(
    df: pd.DataFrame,
    x: str,
    y: str,
    color: str | None = None,
    title: str = "",
    log_x: bool = False,
    log_y: bool = False,
    width: int = 380,
    height: int = 240,
    points: bool = True,
) -> alt.Chart:
    """Lines of ``y`` against ``x`` (one per ``color`` group), values rounded for reproducibility."""
    df = df.copy()
    for col in (x, y):
        if pd.api.types.is_float_dtype(df[col]):
            df[col] = df[col].astype(float).round(DIGITS)
    enc = dict(
        x=alt.X(f"{x}:Q", scale=alt.Scale(type="log") if log_x else alt.Undefined),
        y=alt.Y(f"{y}:Q", scale=alt.Scale(type="log") if log_y else alt.Undefined),
        tooltip=list(df.columns),
    )
    if color:
        enc["color"] = alt.Color(f"{color}:N")
    chart = alt.Chart(df, title=title).mark_line(point=points).encode(**enc)
    return chart.properties(width=width, height=height)


def text_bars(labels: Sequence[str], values, width: int = 30, digits: int = 3) -> str:
    """A bar chart in plain text (shows everywhere, including saved widget state)."""
    v = _np(values).astype(float)
    top = float(np.max(np.abs(v))) or 1.0
    pad = max(len(l) for l in labels)
    lines = []
    for label, value in zip(labels, v):
        n = int(round(width * abs(value) / top))
        lines.append(f"{label:>{pad}} {'█' * n}{' ' * (width - n)} {value:.{digits}f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Controls that work without a kernel.
#
# A control is a Vega-Lite parameter bound to an HTML input (a slider or a drop-down). The
# chart's data holds a row group for every position of the control, in a column named
# after the parameter, and the chart shows the rows whose column matches the control
# (:func:`at_control`); or the chart computes what it draws from the parameter with a Vega
# expression. Either way the static HTML page responds exactly as Jupyter does.
# :func:`uncovered_positions` checks that precomputed data covers every position.
# ----------------------------------------------------------------------------------------


def _positions(lo: float, hi: float, step: float) -> list[float]:
    n = int(round((hi - lo) / step))
    return [round(lo + k * step, 6) for k in range(n + 1)]


def slider(name: str, lo: float, hi: float, step: float, value: float | None = None, label: str | None = None):
    """A parameter bound to a slider from ``lo`` to ``hi`` in steps of ``step``.

    Args:
        name: the parameter's name; precomputed data keeps the control's position in a
            column of the same name (see :func:`at_control`).
        lo, hi, step: the slider's range; ``(hi - lo) / step`` must be a whole number.
        value: the starting position (default ``lo``); must be one of the positions.
        label: the text beside the slider (default ``name``).

    Returns:
        an ``alt.Parameter`` to pass to ``Chart.add_params``.
    """
    if not step > 0 or not hi > lo:
        raise ValueError(f"slider {name!r}: need lo < hi and step > 0, got lo={lo}, hi={hi}, step={step}")
    if abs((hi - lo) / step - round((hi - lo) / step)) > 1e-6:
        raise ValueError(f"slider {name!r}: (hi - lo) / step must be a whole number, got ({hi} - {lo}) / {step}")
    value = lo if value is None else value
    if min(abs(value - p) for p in _positions(lo, hi, step)) > 1e-6 * step:
        raise ValueError(f"slider {name!r}: value {value} is not a position of the slider ({lo}:{hi}:{step})")
    bind = alt.binding_range(min=lo, max=hi, step=step, name=f"{label or name} ")
    return alt.param(name=name, value=value, bind=bind)


def picker(name: str, options: Sequence, value=None, label: str | None = None, labels: Sequence[str] | None = None):
    """A parameter bound to a drop-down of ``options`` (shown as ``labels`` when given).

    Returns:
        an ``alt.Parameter`` to pass to ``Chart.add_params``.
    """
    options = list(options)
    if not options:
        raise ValueError(f"picker {name!r}: needs at least one option")
    value = options[0] if value is None else value
    if value not in options:
        raise ValueError(f"picker {name!r}: value {value!r} is not one of the options {options}")
    if labels is not None and len(labels) != len(options):
        raise ValueError(f"picker {name!r}: {len(labels)} labels for {len(options)} options")
    kwargs = {"labels": list(labels)} if labels is not None else {}
    bind = alt.binding_select(options=options, name=f"{label or name} ", **kwargs)
    return alt.param(name=name, value=value, bind=bind)


def at_control(param, field: str | None = None) -> str:
    """A filter expression: the rows whose ``field`` (default: the parameter's name) is the control's value.

    Slider positions are compared with a tolerance of half a step (a slider's value
    0.30000000000000004 matches the stored 0.3).
    """
    bind = param.param.bind
    field = field or param.name
    ref = f"datum[{field!r}]"
    if isinstance(bind, alt.BindRange) or getattr(bind, "input", None) == "range":
        return f"abs({ref} - {param.name}) < {bind.step / 2}"
    return f"{ref} == {param.name}"


def _spec(chart) -> dict:
    return chart if isinstance(chart, dict) else chart.to_dict()


def _walk(spec: dict):
    yield spec
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in spec.get(key, []):
            yield from _walk(sub)
    if "spec" in spec:
        yield from _walk(spec["spec"])


def control_positions(chart) -> dict[str, list]:
    """Every bound parameter of a chart and the positions its control can take."""
    out = {}
    for part in _walk(_spec(chart)):
        for p in part.get("params", []):
            bind = p.get("bind")
            if not isinstance(bind, dict) or "input" not in bind:
                continue
            if bind["input"] == "range":
                out[p["name"]] = _positions(bind["min"], bind["max"], bind["step"])
            elif "options" in bind:
                out[p["name"]] = list(bind["options"])
    return out


def uncovered_positions(chart) -> dict[str, list]:
    """For each control whose name is a column of the chart's data: the positions with no rows.

    An empty dict means every precomputed control position has data to show. Controls
    whose name is no data column (charts that compute from the parameter with a Vega
    expression) are not listed.
    """
    spec = _spec(chart)
    rows = [r for data in spec.get("datasets", {}).values() for r in data]
    missing = {}
    for name, positions in control_positions(spec).items():
        values = [r[name] for r in rows if name in r]
        if not values:
            continue
        if isinstance(positions[0], (int, float)) and not isinstance(positions[0], bool):
            have = np.asarray(values, dtype=float)
            lack = [p for p in positions if not np.any(np.abs(have - p) < 1e-6 + 1e-9 * abs(p))]
        else:
            lack = [p for p in positions if p not in set(values)]
        if lack:
            missing[name] = lack
    return missing


# ----------------------------------------------------------------------------------------
# Helpers of chapters 4-6's interactive charts (multihead_charts, position_charts,
# block_charts).
# ----------------------------------------------------------------------------------------


def text_lines(expr: str, lines: int, name: str, width: int, font_size: int = 11) -> alt.Chart:
    """A borderless panel of ``lines`` left-aligned text lines computed in the page.

    Args:
        expr: a Vega expression giving the text of line ``datum.line`` (0, 1, ...); it may
            use the chart's parameters, so the text follows the controls.
        lines: how many lines.
        name: the unit chart's name (tests find it by this name).
        width: the panel's width in pixels (text longer than this widens the chart).
        font_size: in pixels; each line takes ``font_size + 5`` pixels.

    Returns:
        a text chart; add the controls' parameters to it or to the chart it joins.
    """
    return (
        alt.Chart(pd.DataFrame({"line": list(range(lines))}), name=name)
        .transform_calculate(text=expr)
        .mark_text(align="left", baseline="middle", fontSize=font_size)
        .encode(y=alt.Y("line:O", axis=None), x=alt.value(0), text="text:N")
        .properties(width=width, height=lines * (font_size + 5), view=alt.ViewBackground(stroke=None))
    )
