"""Kernel-free interactive charts of chapter 3 (queries, keys and values).

* :func:`query_lookup_chart`: one slider per feature of the query; the chart computes
  ``softmax(q K^T / sqrt(d_k))`` and the output ``weights @ V`` with Vega expressions,
  so every slider position works in the static HTML book as in Jupyter.
* :func:`saturation_chart`: a head-size picker; the softmax of one random query against
  8 random keys, unscaled and scaled by ``1/sqrt(d_k)``, precomputed for every size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import altair as alt
import pandas as pd
import torch
from torch import Tensor

from . import viz

__all__ = ["lookup_score_expr", "query_lookup_chart", "random_scores", "saturation_chart"]


def lookup_score_expr(params: Sequence[str], d_k: int) -> str:
    """The Vega expression of one key's scaled score: ``sum_f q_f * datum.k<f> / sqrt(d_k)``.

    Args:
        params: the names of the query's parameters, one per feature, in feature order.
        d_k: the key size (``len(params)``).

    Returns:
        an expression over the parameters and the row's key features ``datum.k0``, ...
    """
    terms = " + ".join(f"{name} * datum.k{f}" for f, name in enumerate(params))
    return f"({terms}) / {math.sqrt(d_k)!r}"


def query_lookup_chart(
    words: Sequence[str],
    keys: Tensor,
    values: Tensor,
    features: Sequence[str],
    query: Tensor,
    lo: float = 0.0,
    hi: float = 3.0,
    step: float = 0.1,
) -> alt.HConcatChart:
    """Chapter 3's "move the query": a slider per query feature, the weights and the output.

    Left: the attention weight of every word, ``softmax(q K^T / sqrt(d_k))``; right: the
    output ``weights @ V``, one bar per value feature. Both are computed in the chart
    from the sliders (Vega expressions), with the softmax shifted by its maximum as
    :func:`torch.softmax` does.

    Args:
        words: the ``m`` words.
        keys: ``(m, d_k)``; values: ``(m, d_v)``.
        features: ``d_k`` names of the query's features (the sliders' labels).
        query: ``(1, d_k)`` or ``(d_k,)``, the sliders' first position (rounded to ``step``).
        lo, hi, step: the sliders' range.

    Returns:
        the chart; its data has one row per (word ``i``, value feature ``c``) with the
        key features ``k0 ..`` and the value ``v``.
    """
    m, d_k = keys.shape
    if len(words) != m or values.shape[0] != m or len(features) != d_k:
        raise ValueError(
            f"need one word, key row and value row per word and one feature name per key column: got "
            f"{len(words)} words, keys {tuple(keys.shape)}, values {tuple(values.shape)}, {len(features)} features"
        )
    d_v = values.shape[1]
    q = query.reshape(-1).tolist()
    params = [
        viz.slider(f"q_{f}", lo, hi, step, value=round(round(v / step) * step, 6), label=f) for f, v in zip(features, q)
    ]
    value_names = list(features) if d_v == d_k else [f"v{c}" for c in range(d_v)]
    rows = [
        {
            "i": i,
            "word": f"{i}: {w}",
            **{f"k{f}": round(float(keys[i, f]), 6) for f in range(d_k)},
            "c": c,
            "feature": value_names[c],
            "v": round(float(values[i, c]), 6),
        }
        for i, w in enumerate(words)
        for c in range(d_v)
    ]
    base = (
        alt.Chart(pd.DataFrame(rows))
        .transform_calculate(score=lookup_score_expr([p.name for p in params], d_k))
        .transform_joinaggregate(top="max(score)", groupby=["c"])
        .transform_calculate(e="exp(datum.score - datum.top)")
        .transform_joinaggregate(total="sum(e)", groupby=["c"])
        .transform_calculate(weight="datum.e / datum.total")
    )
    weights = base.transform_filter("datum.c == 0")
    y_words = alt.Y("word:N", sort=[f"{i}: {w}" for i, w in enumerate(words)], title=None)
    x_weight = alt.X("weight:Q", scale=alt.Scale(domain=[0, 1]), title="attention weight")
    left = alt.layer(
        weights.mark_bar(color="#4c78a8").encode(x=x_weight, y=y_words),
        weights.mark_text(align="left", dx=3, fontSize=11).encode(
            x=x_weight, y=y_words, text=alt.Text("weight:Q", format=".3f")
        ),
    ).properties(width=220, height=180, title="weights softmax(q·k / √d_k)")
    output = base.transform_calculate(part="datum.weight * datum.v").transform_aggregate(
        out="sum(part)", groupby=["c", "feature"]
    )
    top = max(1.0, float(values.abs().max()))
    y_out = alt.Y("feature:N", sort=value_names, title=None)
    x_out = alt.X("out:Q", scale=alt.Scale(domain=[0, top]), title="output (weights @ V)")
    right = alt.layer(
        output.mark_bar(color="#f58518").encode(x=x_out, y=y_out),
        output.mark_text(align="left", dx=3, fontSize=11).encode(
            x=x_out, y=y_out, text=alt.Text("out:Q", format=".3f")
        ),
    ).properties(width=200, height=120, title="output, one bar per value feature")
    return alt.hconcat(left, right, spacing=30).add_params(*params)


def random_scores(d_k: int, n_keys: int = 8, seed: int = 0) -> Tensor:
    """Scores ``q·k`` of one random query against ``n_keys`` random keys (N(0, 1) entries).

    Returns:
        ``(n_keys,)`` float64, drawn with ``torch.Generator().manual_seed(seed)`` (the query first).
    """
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(1, d_k, generator=g, dtype=torch.float64)  # (1, d_k)
    keys = torch.randn(n_keys, d_k, generator=g, dtype=torch.float64)  # (n_keys, d_k)
    return (query @ keys.T).squeeze(0)  # (n_keys,)


def saturation_chart(
    d_values: Sequence[int] = tuple(2**i for i in range(11)), d_k: int = 64, n_keys: int = 8, seed: int = 0
) -> alt.FacetChart:
    """Chapter 3's head-size picker: softmax of raw and of scaled scores, side by side.

    For every ``d_k`` in ``d_values``: the scores of :func:`random_scores`, their standard
    deviation, and the softmax weights of ``s`` (left) and of ``s / sqrt(d_k)`` (right),
    each bar labelled with its weight.

    Args:
        d_values: the picker's head sizes.
        d_k: the size shown first.
        n_keys, seed: as in :func:`random_scores`.

    Returns:
        the chart; its data has columns ``d_k``, ``panel`` (with the scores' standard
        deviation), ``order``, ``key`` and ``weight`` (3 decimals).
    """
    rows = []
    for d in d_values:
        s = random_scores(d, n_keys, seed)  # (n_keys,)
        for order, (name, scores) in enumerate((("unscaled q·k", s), (f"q·k / √{d}", s / math.sqrt(d)))):
            w = torch.softmax(scores, dim=-1)  # (n_keys,)
            panel = f"{name}: std {scores.std().item():.2f}"
            rows += [
                {"d_k": d, "panel": panel, "order": order, "key": f"key {j}", "weight": round(w[j].item(), 3)}
                for j in range(n_keys)
            ]
    p = viz.picker("d_k", list(d_values), value=d_k, label="head size d_k")
    x = alt.X("weight:Q", scale=alt.Scale(domain=[0, 1]), title="softmax weight")
    y = alt.Y("key:N", title=None)
    label = alt.Text("weight:Q", format=".3f")
    layer = alt.layer(
        alt.Chart().mark_bar(color="#4c78a8").encode(x=x, y=y),
        alt.Chart().mark_text(align="left", dx=3, fontSize=11).encode(x=x, y=y, text=label),
    ).properties(width=230, height=170)
    column = alt.Column("panel:N", sort=alt.SortField("order"), title=None, header=alt.Header(labelFontSize=12))
    return (
        layer.facet(column=column, data=pd.DataFrame(rows), spacing=30)
        .transform_filter(viz.at_control(p))
        .add_params(p)
        .properties(title=f"One query against {n_keys} random keys: the softmax before and after scaling")
    )
