"""Chapter 5's interactive charts: sinusoidal similarity and one RoPE pair.

Both compute what they draw in the page with Vega expressions (see the controls at the
end of :mod:`minitransformer.book.viz`), so they respond without a kernel: the formulas are
those of :func:`minitransformer.positional.sinusoidal_encoding` and
:class:`minitransformer.rotary.RotaryEmbedding`; the tests run the chart's expressions in
Python and compare them with the package.
"""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd

from minitransformer.book import viz

__all__ = ["SIMILARITY_OFFSETS", "similarity_chart", "rope_pair_chart"]

SIMILARITY_OFFSETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)


def similarity_chart(d_model: int = 64, base: int = 10000, width: int = 360) -> alt.LayerChart:
    """The cosine of ``PE[0]`` and ``PE[k]`` at a few offsets ``k``, with a width slider and a base menu.

    ``PE[0] · PE[k] = sum_i cos(k · base^(-2i/d))`` over the ``d/2`` pairs, and its maximum
    is ``d/2``; the chart draws the mean over the pairs, which is that cosine. It is
    computed in the page: one row per offset, the pair index ``i = 0 .. d/2 - 1`` generated
    with ``sequence``, then averaged.

    Args:
        d_model: the slider's starting width (even, 2 to 512).
        base: the menu's starting base (10, 100, 1000, 10000 or 100000).
        width: the plotting width in pixels.

    Returns:
        the chart; its bars are the unit chart named ``"cosine"``.
    """
    controls = [
        viz.slider("d_model", 2, 512, 2, value=d_model, label="d_model"),
        viz.picker("base", [10, 100, 1000, 10000, 100000], value=base, label="base"),
    ]
    offsets = pd.DataFrame({"k": list(SIMILARITY_OFFSETS)})
    order = [f"k = {k}" for k in SIMILARITY_OFFSETS]
    bars = (
        alt.Chart(offsets)
        .transform_calculate(i="sequence(0, d_model / 2)")
        .transform_flatten(["i"])
        .transform_calculate(c="cos(datum.k * pow(base, -2 * datum.i / d_model))")
        .transform_aggregate(cosine="mean(c)", groupby=["k"])
        .transform_calculate(offset="'k = ' + format(datum.k, 'd')")
        .encode(
            y=alt.Y("offset:N", sort=order, title=None),
            x=alt.X("cosine:Q", scale=alt.Scale(domain=[-1, 1]), title="cosine of PE[0] and PE[k]"),
        )
    )
    text = bars.mark_text(align="left", dx=4, fontSize=11).encode(
        text=alt.Text("cosine:Q", format=".3f"), x=alt.value(width + 2)
    )
    return (
        alt.layer(bars.mark_bar(color="#4c78a8").properties(name="cosine"), text.properties(name="cosine_labels"))
        .properties(width=width, height=260, title="Similarity of two sinusoidal codes k positions apart")
        .add_params(*controls)
    )


def rope_pair_chart(
    head_dim: int = 8,
    base: float = 10000.0,
    query: tuple[float, float] = (1.0, 0.5),
    key: tuple[float, float] = (0.8, -0.3),
    m: int = 3,
    n: int = 5,
    size: int = 260,
) -> alt.VConcatChart:
    """One RoPE pair of a query and a key, rotated to positions ``m`` and ``n`` (two sliders and a pair menu).

    Pair ``j`` of a ``head_dim``-wide head turns by ``theta_j = base^(-2j/head_dim)`` per
    position: the query pair, at position ``m``, by ``m theta_j``, the key pair, at ``n``, by
    ``n theta_j`` (counter-clockwise, ``(x, y) -> (x cos a - y sin a, x sin a + y cos a)``,
    as :class:`~minitransformer.rotary.RotaryEmbedding`). The plane shows both arrows and the
    unrotated pairs (faint); the text above gives the angles, the rotated pairs, their norms
    and the score ``<R_m q, R_n k>`` of the pair.

    Args:
        head_dim: the head width ``d`` (even); the menu offers pairs ``0 .. d/2 - 1``.
        base: the RoPE base.
        query, key: the pair's two coordinates before rotation.
        m, n: the sliders' starting positions (0 to 40).
        size: the plane's width and height in pixels.

    Returns:
        the chart; its unit charts are named ``"readout"`` (the text lines) and ``"arrows"``.
    """
    if head_dim % 2 or head_dim < 2:
        raise ValueError(f"rope_pair_chart: head_dim must be even and >= 2, got {head_dim}")
    controls = [
        viz.slider("m", 0, 40, 1, value=m, label="query m"),
        viz.slider("n", 0, 40, 1, value=n, label="key n"),
        viz.picker("pair", list(range(head_dim // 2)), value=0, label="pair j"),
    ]
    theta = f"pow({base!r}, -2 * pair / {head_dim})"
    (qx, qy), (kx, ky) = query, key

    def turned(x: float, y: float, pos: str) -> tuple[str, str]:
        a = f"{pos} * {theta}"
        return f"{x!r} * cos({a}) - {y!r} * sin({a})", f"{x!r} * sin({a}) + {y!r} * cos({a})"

    q_turned, k_turned = turned(qx, qy, "m"), turned(kx, ky, "n")
    vectors = pd.DataFrame(
        {"vector": ["query", "key"], "x0": [qx, kx], "y0": [qy, ky], "norm": [math.hypot(qx, qy), math.hypot(kx, ky)]}
    )

    def line(name: str, pos: str, xy: tuple[str, str], norm: float) -> str:
        a = f"{pos} * {theta}"
        return (
            f"'{name} at ' + format({pos}, 'd') + ': turned ' + format({a}, '.4f') + ' rad ('"
            f" + format(({a}) * 180 / PI % 360, '.1f') + ' deg) -> [' + format({xy[0]}, '.4f') + ', '"
            f" + format({xy[1]}, '.4f') + '], norm ' + format({norm!r}, '.4f')"
        )

    score = f"({q_turned[0]}) * ({k_turned[0]}) + ({q_turned[1]}) * ({k_turned[1]})"
    lines = [
        f"'pair ' + format(pair, 'd') + ': theta = ' + format({theta}, '~g') + ' rad per position'",
        line("query", "m", q_turned, math.hypot(qx, qy)),
        line("key", "n", k_turned, math.hypot(kx, ky)),
        f"'score <R_m q, R_n k> = ' + format({score}, '+.4f') + '   (n - m = ' + format(n - m, 'd') + ')'",
    ]
    text = "if(datum.line == 0, {}, if(datum.line == 1, {}, if(datum.line == 2, {}, {})))".format(*lines)
    readout = viz.text_lines(text, 4, "readout", size).add_params(*controls)
    lim = round(1.1 * max(math.hypot(qx, qy), math.hypot(kx, ky)), 2)
    scale = alt.Scale(domain=[-lim, lim], nice=False)

    def xy(x: str, y: str) -> dict:
        return dict(
            x=alt.X(x, scale=scale, title="coordinate 2j"),
            y=alt.Y(y, scale=scale, title="coordinate 2j + 1"),
        )

    legend = alt.Legend(orient="bottom", title=None)
    color = alt.Color("vector:N", scale=alt.Scale(domain=["query", "key"], range=["#1f77b4", "#d62728"]), legend=legend)
    pos = "if(datum.vector == 'query', m, n)"
    arrows = (
        alt.Chart(vectors)
        .transform_calculate(a=f"{pos} * {theta}")
        .transform_calculate(x="datum.x0 * cos(datum.a) - datum.y0 * sin(datum.a)")
        .transform_calculate(y="datum.x0 * sin(datum.a) + datum.y0 * cos(datum.a)")
        .transform_calculate(zero="0")
        .encode(color=color)
    )
    circle = pd.DataFrame(
        [
            (v, t, r * math.cos(t), r * math.sin(t))
            for v, r in zip(vectors.vector, vectors.norm)
            for t in np.linspace(0, 2 * math.pi, 73)
        ],
        columns=["vector", "t", "x", "y"],
    ).round(4)
    plane = alt.layer(
        alt.Chart(circle)
        .mark_line(strokeDash=[2, 3], opacity=0.5)
        .encode(order="t:Q", color=color, **xy("x:Q", "y:Q")),
        alt.Chart(vectors).mark_point(opacity=0.6).encode(color=color, **xy("x0:Q", "y0:Q")),
        arrows.mark_rule(strokeWidth=2).encode(x2="x:Q", y2="y:Q", **xy("zero:Q", "zero:Q")).properties(name="arrows"),
        arrows.mark_point(filled=True, size=60).encode(
            tooltip=["vector:N", alt.Tooltip("x:Q", format=".4f"), alt.Tooltip("y:Q", format=".4f")],
            **xy("x:Q", "y:Q"),
        ),
    ).properties(width=size, height=size, title="The pair j of q and k (hollow: before rotation)")
    return alt.vconcat(readout, plane)
