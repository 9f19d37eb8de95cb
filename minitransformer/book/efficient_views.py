"""Chapter 8's kernel-free charts: the flash-attention tile stepper and the sparse-mask drawer.

Both charts hold their data for every position of their controls, or compute what
they draw from the controls with Vega expressions, so they respond in the static
book exactly as in Jupyter (see the controls section of :mod:`minitransformer.book.viz`).
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from ..efficient import random_mask
from ..flash.tiled_numpy import FlashStep
from . import viz

__all__ = ["tile_stepper_chart", "MASK_PATTERNS", "mask_expression", "mask_drawer_chart"]

TABLE_COLUMNS = ["row", "tile max", "m", "alpha", "l", "max |o/l − exact|"]


def tile_stepper_chart(steps: Sequence[FlashStep], exact: np.ndarray, step: int = 0) -> alt.VConcatChart:
    """The tiled forward pass one step at a time, chosen with a slider.

    The map shows the tile being processed, the tiles already done and those still to
    come; the table shows, for the rows of the current query tile, the tile's row
    maximum, the running max ``m``, the rescaling ``alpha``, the running sum ``l`` and
    how far the partial output ``O_acc / l`` is from the exact output.

    Args:
        steps: the states from :func:`~minitransformer.flash.tiled_numpy.flash_forward_steps`.
        exact: ``(n_queries, d)`` the exact attention output.
        step: the step shown first.

    Returns:
        a concatenated chart with one bound parameter, ``step`` (0 to ``len(steps) - 1``).
    """
    if not steps:
        raise ValueError("no steps to show: flash_forward_steps yielded nothing")
    param = viz.slider("step", 0, len(steps) - 1, 1, value=step, label="step")
    tiles = sorted({(st.i, st.j, st.rows, st.cols) for st in steps})
    grid, table, status = [], [], []
    for k, st in enumerate(steps):
        done = {(s.i, s.j) for s in steps[:k]}
        for i, j, rows, cols in tiles:
            state = "this step" if (i, j) == (st.i, st.j) else ("done" if (i, j) in done else "to come")
            grid.append(
                {
                    "step": k,
                    "keys": f"keys {cols[0]}-{cols[1] - 1}",
                    "queries": f"queries {rows[0]}-{rows[1] - 1}",
                    "tile": state,
                }
            )
        r0, r1 = st.rows
        for t in range(r1 - r0):
            err = float(np.abs(st.O_now[t] - exact[r0 + t]).max())
            values = [f"{r0 + t}", *(f"{x:.4f}" for x in (st.S[t].max(), st.m[t], st.alpha[t], st.l[t], err))]
            for col, value in zip(TABLE_COLUMNS, values):
                table.append({"step": k, "line": t, "column": col, "value": value})
        text = (
            f"step {k}: query tile i = {st.i} (rows {r0}-{r1 - 1}) meets key tile j = {st.j} "
            f"(keys {st.cols[0]}-{st.cols[1] - 1})"
        )
        if st.last:
            text += "\nlast key tile of this query tile: O = o / l is now the exact attention output."
        status.append({"step": k, "text": text})
    keys = sorted({g["keys"] for g in grid}, key=lambda s: int(s.split()[1].split("-")[0]))
    queries = sorted({g["queries"] for g in grid}, key=lambda s: int(s.split()[1].split("-")[0]))
    at = viz.at_control(param)
    tile_map = (
        alt.Chart(pd.DataFrame(grid), title="tiles")
        .mark_rect(stroke="white", strokeWidth=2)
        .encode(
            x=alt.X("keys:N", sort=keys, title=None, axis=alt.Axis(orient="top", labelAngle=0)),
            y=alt.Y("queries:N", sort=queries, title=None),
            color=alt.Color(
                "tile:N",
                scale=alt.Scale(domain=["this step", "done", "to come"], range=["#d62728", "#4c78a8", "#e8e8e8"]),
                legend=alt.Legend(orient="bottom", title=None),
            ),
        )
        .transform_filter(at)
        .properties(width=62 * len(keys), height=36 * len(queries))
    )
    numbers = (
        alt.Chart(pd.DataFrame(table), title="the rows of this query tile")
        .mark_text(font="monospace", fontSize=12)
        .encode(
            x=alt.X("column:N", sort=TABLE_COLUMNS, title=None, axis=alt.Axis(orient="top", labelAngle=0, ticks=False)),
            y=alt.Y("line:O", axis=None),
            text="value:N",
        )
        .transform_filter(at)
        .properties(width=62 * len(TABLE_COLUMNS), height=22 * max(st.rows[1] - st.rows[0] for st in steps))
    )
    note = viz.text_panel(pd.DataFrame(status), "text", width=600, height=32).transform_filter(at)
    return alt.vconcat(note, alt.hconcat(tile_map, numbers)).add_params(param)


#: The drawer's patterns and what its ``parameter`` slider means for each.
MASK_PATTERNS = {
    "sliding window": "window w",
    "strided": "stride (at least 1)",
    "global + window 1": "global tokens g",
    "random": "random keys r per query",
}


def mask_expression() -> str:
    """The drawer's mask as a Vega expression over ``datum.i``, ``datum.j`` (query, key), the
    controls ``pattern``, ``n``, ``parameter``, ``causal`` and the precomputed ranks of the
    random pattern (``datum.r``, ``datum.c``: the key's place in the query's random order,
    without and with the causal restriction).

    Written with operators that mean the same in Python (after ``&&``/``||`` become
    ``and``/``or``), so the tests evaluate this very string against the library's masks.
    """
    d = "(datum.i - datum.j)"
    future_ok = "(causal == 'no' || datum.i >= datum.j)"
    window = f"((causal == 'no' && abs({d}) <= parameter) || (causal == 'yes' && {d} >= 0 && {d} <= parameter))"
    stride = "max(parameter, 1)"
    strided = f"((abs({d}) < {stride} || {d} % {stride} == 0) && {future_ok})"
    glob = f"((abs({d}) <= 1 || datum.i < min(parameter, n) || datum.j < min(parameter, n)) && {future_ok})"
    rand = f"((causal == 'no' && datum.r < parameter) || (causal == 'yes' && datum.c < parameter && {d} >= 0))"
    return (
        f"(pattern == 'sliding window' && {window}) || (pattern == 'strided' && {strided})"
        f" || (pattern == 'global + window 1' && {glob}) || (pattern == 'random' && {rand})"
    )


def _random_ranks(n: int, causal: bool, seed: int) -> np.ndarray:
    """``(n, n)``: the place of key j in query i's random order (``n`` where never chosen).

    :func:`~minitransformer.efficient.random_mask` with ``r`` keys chooses the first ``r``
    of one fixed order, so the place is the number of ``r`` in ``1..n`` not choosing it.
    """
    ranks = np.zeros((n, n), dtype=int)
    for r in range(1, n + 1):
        ranks += ~random_mask(n, r, causal=causal, seed=seed).numpy()
    return ranks


def mask_drawer_chart(
    n_range: tuple[int, int] = (4, 32),
    parameter_max: int = 16,
    pattern: str = "strided",
    n: int = 20,
    parameter: int = 4,
    causal: bool = True,
    seed: int = 0,
    size: int = 360,
) -> alt.LayerChart:
    """Sparse attention masks drawn by the chart from four controls.

    The controls: the pattern (:data:`MASK_PATTERNS`), the length ``n``, the pattern's
    parameter (window, stride, number of global tokens or of random keys) and whether the
    mask is causal. The chart computes the mask with :func:`mask_expression` (the same
    masks as ``sliding_window_mask``, ``strided_mask``, ``global_token_mask(window=1)`` and
    ``random_mask(seed=seed)`` of :mod:`minitransformer.efficient`); the random orders are
    precomputed for every ``n``. The title gives the density and the number of pairs.

    Args:
        n_range: the lowest and highest ``n`` of the slider.
        parameter_max: the parameter slider runs from 0 to this.
        pattern, n, parameter, causal: the position shown first.
        seed: the seed of the random pattern.
        size: the map's width and height in pixels.

    Returns:
        an ``alt`` layered chart with bound parameters ``pattern``, ``n``, ``parameter``, ``causal``.
    """
    lo, hi = n_range
    p_pattern = viz.picker("pattern", list(MASK_PATTERNS), value=pattern, label="pattern")
    p_n = viz.slider("n", lo, hi, 1, value=n, label="n")
    p_par = viz.slider("parameter", 0, parameter_max, 1, value=parameter, label="w / stride / g / r")
    p_causal = viz.picker("causal", ["yes", "no"], value="yes" if causal else "no", label="causal")
    rows = []
    for m in range(lo, hi + 1):
        r, c = _random_ranks(m, False, seed), _random_ranks(m, True, seed)
        for i in range(m):
            rows.append({"n": m, "i": i, "r": r[i].tolist(), "c": c[i].tolist()})
    summary = (
        "pattern + ', n = ' + n + ', parameter = ' + parameter + ', causal: ' + causal + ' — '"
        " + format(datum.pairs / (n * n), '.1%') + ' of the n² scores, ' + datum.pairs + ' pairs'"
    )
    base = (
        alt.Chart(pd.DataFrame(rows))
        .transform_filter(viz.at_control(p_n))
        .transform_flatten(["r", "c"])
        .transform_window(j="row_number()", groupby=["i"])
        .transform_calculate(j="datum.j - 1")
        .transform_calculate(allowed=f"({mask_expression()}) ? 1 : 0")
        .transform_calculate(mask="datum.allowed == 1 ? 'may attend' : 'blocked'")
    )
    cells = base.mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=alt.X("j:O", title="key"),
        y=alt.Y("i:O", title="query"),
        color=alt.Color(
            "mask:N",
            scale=alt.Scale(domain=["may attend", "blocked"], range=["#2f5d8a", "#e8e8e8"]),
            legend=alt.Legend(orient="bottom", title=None),
        ),
        tooltip=[alt.Tooltip("i:O", title="query"), alt.Tooltip("j:O", title="key"), "mask:N"],
    )
    caption = (
        base.transform_aggregate(pairs="sum(allowed)")
        .transform_calculate(summary=summary)
        .mark_text(align="left", baseline="bottom", fontSize=12, dy=-8)
        .encode(x=alt.value(0), y=alt.value(0), text="summary:N")
    )
    return (
        (cells + caption)
        .add_params(p_pattern, p_n, p_par, p_causal)
        .properties(width=size, height=size, title=alt.TitleParams(" ", fontSize=16))
    )
