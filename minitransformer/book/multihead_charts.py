"""Chapter 4's interactive charts: a KV-cache sizer and a head picker.

Both work without a kernel (see the controls at the end of :mod:`minitransformer.book.viz`):
the KV-cache sizer computes the cache from its seven controls with Vega expressions (the
formula of :func:`minitransformer.kv_cache.kv_cache_bytes`), the head picker holds the
attention maps of every layer, head and example sequence and shows the one picked.
"""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import torch
from torch import nn

from minitransformer.book import viz
from minitransformer.book.heads import encode

__all__ = ["human_bytes_expr", "kv_cache_chart", "head_picker_chart"]


def _one_decimal(x: str) -> str:
    """A Vega expression formatting ``x`` with one decimal, halves to even as Python does.

    (Vega's ``format`` rounds halves up: 1.25 GiB would read "1.3 GiB" where the package
    prints "1.2 GiB". Byte counts over powers of 1024 are dyadic fractions, so ``10 x`` is
    exact and the test for a half is exact.)
    """
    t = f"({x}) * 10"
    return f"format(if({t} - floor({t}) == 0.5 && floor({t}) % 2 == 0, floor({t}), round({t})) / 10, '.1f')"


def human_bytes_expr(n: str) -> str:
    """A Vega expression printing the byte count ``n`` (an expression) as the package does.

    The same units and rounding as ``kv_cache_report``: ``"512 B"``, ``"320.0 KiB"``,
    ``"1.2 GiB"``, up to TiB.
    """
    units = ["KiB", "MiB", "GiB"]
    expr = f"{_one_decimal(f'({n}) / pow(1024, 4)')} + ' TiB'"
    for k in range(3, 0, -1):
        scaled = _one_decimal(f"({n}) / pow(1024, {k})")
        expr = f"if(({n}) < pow(1024, {k + 1}), {scaled} + ' {units[k - 1]}', {expr})"
    return f"if(({n}) < 1024, format({n}, 'd') + ' B', {expr})"


def kv_cache_chart(
    layers: int = 80,
    query_heads: int = 64,
    kv_heads: int = 8,
    head_dim: int = 128,
    tokens: int = 4096,
    batch: int = 1,
    bytes_per_number: int = 2,
    width: int = 380,
) -> alt.VConcatChart:
    """A KV-cache sizer: seven controls, the filled-in formula, and the cache as bars.

    The bars compare the chosen number of kv heads with multi-head attention (one kv
    head per query head) and multi-query attention (one kv head), for the same model;
    the text above them is what :func:`minitransformer.kv_cache.kv_cache_report` prints,
    plus the cache per token and the group size. Everything is computed in the page with
    Vega expressions, ``2 · layers · kv_heads · head_dim · tokens · batch · bytes``.
    When the kv heads do not divide the query heads the text says so and the chosen bar
    is left out.

    Args:
        layers, query_heads, kv_heads, head_dim, tokens, batch, bytes_per_number: the
            controls' starting positions (each must be one of the control's positions).
        width: the bars' plotting width in pixels.

    Returns:
        the chart; its unit charts are named ``"report"`` (the text lines) and ``"cache"``
        (the bars).
    """
    controls = [
        viz.slider("layers", 1, 128, 1, value=layers, label="layers"),
        viz.picker("query_heads", [8, 12, 16, 32, 64, 96, 128], value=query_heads, label="query heads"),
        viz.picker("kv_heads", [1, 2, 4, 8, 16, 32, 64], value=kv_heads, label="kv heads"),
        viz.picker("head_dim", [64, 128, 256], value=head_dim, label="head dim"),
        viz.picker("tokens", [1024, 4096, 8192, 32768, 131072], value=tokens, label="tokens"),
        viz.slider("batch", 1, 64, 1, value=batch, label="batch"),
        viz.picker(
            "precision", [4, 2, 1], value=bytes_per_number, label="precision", labels=["fp32", "fp16/bf16", "int8"]
        ),
    ]
    per_head = "2 * layers * head_dim * tokens * batch * precision"  # bytes per kv head
    ok = "query_heads % kv_heads == 0"
    used = human_bytes_expr(f"{per_head} * kv_heads")
    lines = [  # kv_cache_report's line, cut in two, then the cache per token and the group size
        "'your model: 2 x ' + format(layers, 'd') + ' layers x ' + format(kv_heads, 'd') + ' kv-heads x '"
        " + format(head_dim, 'd') + ' x ' + format(tokens, 'd') + ' tokens x ' + format(batch, 'd')"
        f" + ' x ' + format(precision, 'd') + ' B = ' + {used}",
        "if(kv_heads != query_heads, '(' + format(query_heads / kv_heads, 'd') + 'x smaller than '"
        f" + {human_bytes_expr(f'{per_head} * query_heads')} + ' with ' + format(query_heads, 'd')"
        " + ' kv-heads)', '')",
        f"'per token: ' + {human_bytes_expr('2 * layers * kv_heads * head_dim * precision')}"
        " + '; group size: ' + format(query_heads / kv_heads, 'd') + ' query heads share each kv head'",
    ]
    wrong = "'kv heads = ' + format(kv_heads, 'd') + ' must divide query heads = ' + format(query_heads, 'd')"
    text = f"if(datum.line == 0, {lines[0]}, if(datum.line == 1, {lines[1]}, {lines[2]}))"
    report = viz.text_lines(f"if({ok}, {text}, if(datum.line == 0, {wrong}, ''))", 3, "report", width)
    report = report.add_params(*controls)
    kinds = pd.DataFrame({"attention": ["multi-head", "your model", "multi-query"]})
    bars = (
        alt.Chart(kinds)
        .transform_calculate(
            kv="if(datum.attention == 'multi-head', query_heads, if(datum.attention == 'multi-query', 1, kv_heads))"
        )
        .transform_filter(f"datum.attention != 'your model' || {ok}")
        .transform_calculate(GiB=f"{per_head} * datum.kv / pow(1024, 3)")
        .transform_calculate(
            label=f"{human_bytes_expr(f'{per_head} * datum.kv')} + ', ' + format(datum.kv, 'd')"
            " + ' kv head' + if(datum.kv == 1, '', 's')"
        )
        .encode(
            y=alt.Y("attention:N", sort=list(kinds["attention"]), title=None),
            x=alt.X("GiB:Q", title="KV cache (GiB)"),
        )
    )
    chart = alt.layer(
        bars.mark_bar(color="#4c78a8").properties(name="cache"),
        bars.mark_text(align="left", dx=4, fontSize=11).encode(text="label:N").properties(name="cache_labels"),
    )
    return alt.vconcat(report, chart.properties(width=width, height=90))


def head_picker_chart(
    model: nn.Module,
    examples: dict[str, str],
    scores: pd.DataFrame,
    layer: int = 1,
    head: int = 0,
    size: int = 300,
) -> alt.VConcatChart:
    """One head's attention map on one example sequence, picked with three drop-downs.

    The chart's data holds the ``(T, T)`` weights of every layer, head and example (one row
    per map, its cells as parallel lists, weights in hundredths; cells below 0.005 are left
    out except the diagonal, kept as invisible cells so every position keeps its row and
    column). Above the map, the head's role and scores from
    :func:`minitransformer.book.heads.head_scores`.

    Args:
        model: an :class:`~minitransformer.book.heads.AttentionOnlyTransformer` (anything
            with ``attention_maps(idx) -> (layers, 1, heads, T, T)``).
        examples: display name -> sequence of the model's symbols.
        scores: ``head_scores`` of the model (columns layer, head, role, previous,
            induction, content).
        layer, head: the head shown first; the first example is shown first.
        size: the map's width and height in pixels.

    Returns:
        the chart; its unit charts are named ``"role"`` and ``"map"``.
    """
    names = list(examples)
    rows = []
    with torch.no_grad():
        for s, name in enumerate(names):
            maps = model.attention_maps(encode(examples[name]))[:, 0]  # (L, H, T, T)
            w = (maps.double() * 100).round().long()  # (L, H, T, T) in hundredths
            L, H, T, _ = w.shape
            keep = (w > 0) | torch.eye(T, dtype=torch.bool)  # (L, H, T, T)
            for l in range(L):
                for h in range(H):
                    q, k = torch.nonzero(keep[l, h], as_tuple=True)
                    rows.append(
                        {
                            "layer": l,
                            "head": h,
                            "sequence": s,
                            "q": q.tolist(),
                            "k": k.tolist(),
                            "w": w[l, h, q, k].tolist(),
                        }
                    )
    pick = [
        viz.picker("layer", list(range(L)), value=layer, label="layer"),
        viz.picker("head", list(range(H)), value=head, label="head"),
        viz.picker("sequence", list(range(len(names))), label="sequence", labels=names),
    ]
    labels = json.dumps([[f"{i} {c}" for i, c in enumerate(examples[n])] for n in names])
    roles = scores.assign(
        text=[
            f"layer {r.layer}, head {r.head}: {r.role} head (previous {r.previous:.2f},"
            f" induction {r.induction:.2f}, content {r.content:.2f})"
            for r in scores.itertuples()
        ]
    )[["layer", "head", "text"]]
    role = (
        alt.Chart(roles, name="role")
        .mark_text(align="left", fontSize=12)
        .encode(text="text:N", x=alt.value(0))
        .transform_filter(viz.at_control(pick[0]))
        .transform_filter(viz.at_control(pick[1]))
        .properties(width=size, height=16, view=alt.ViewBackground(stroke=None))
        .add_params(*pick)
    )

    def axis(title: str, angle: int) -> alt.Axis:
        return alt.Axis(title=title, labelExpr=f"{labels}[sequence][datum.value]", labelAngle=angle, labelFontSize=9)

    heat = (
        alt.Chart(alt.Data(values=rows), name="map")
        .transform_filter(viz.at_control(pick[0]))
        .transform_filter(viz.at_control(pick[1]))
        .transform_filter(viz.at_control(pick[2]))
        .transform_flatten(["q", "k", "w"])
        .transform_calculate(weight="datum.w / 100")
        .mark_rect()
        .encode(
            x=alt.X("k:O", axis=axis("key", -90)),
            y=alt.Y("q:O", axis=axis("query", 0)),
            color=alt.Color(
                "weight:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), legend=alt.Legend(orient="bottom")
            ),
            tooltip=[alt.Tooltip("q:O", title="query"), alt.Tooltip("k:O", title="key"), alt.Tooltip("weight:Q")],
            opacity=alt.condition("datum.w == 0", alt.value(0), alt.value(1)),  # the diagonal's fillers
        )
        .properties(width=size, height=size)
    )
    return alt.vconcat(role, heat)
