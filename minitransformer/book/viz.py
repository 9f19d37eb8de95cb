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

__all__ = ["bar_chart", "heatmap", "line_chart", "text_bars", "mask_chart", "enable_book_renderer"]

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
