"""Kernel-free interactive charts of chapters 1 and 2 (the GRU encoder-decoders).

Each builder runs the models once for every position of its controls and returns a
Vega-Lite chart whose sliders and drop-downs pick among the precomputed rows
(:func:`minitransformer.book.viz.at_control`), so the chart responds in the static HTML
book exactly as in Jupyter and on Colab.

* :func:`reversal_explorer` (chapter 1): the model without attention reverses a random
  digit string of the chosen length; wrong digits are drawn in red.
* :func:`gain_chart` (chapter 1): ``||dh_t/dh_0||`` of a tanh RNN whose recurrent matrix
  has every singular value equal to the chosen gain.
* :func:`alignment_explorer` (chapter 2): the alignment heatmap of a chosen attention
  model on a chosen held-out string.

And two static charts of the stored multi-seed experiments
(:mod:`minitransformer.book.reversal_sweeps`): :func:`capacity_chart` (chapter 1) and
:func:`seed_band_chart` (chapter 2), each a mean over seeds with its min-max band.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..data import Example, Tokenizer
from ..rnn import Seq2Seq, hidden_jacobian_norms
from . import viz
from .seq2seq_experiments import decode_examples

__all__ = [
    "random_reversal",
    "reversal_explorer",
    "gain_norms",
    "gain_chart",
    "sparse_cells",
    "alignment_explorer",
    "capacity_chart",
    "seed_band_chart",
]

LINES = ["input", "reversed", "model"]


def random_reversal(length: int, example: int) -> Example:
    """The digit string that chapter 1's explorer shows for a ``length`` and ``example`` number.

    Drawn with ``numpy.random.default_rng(1000 * length + example)``, so it is the same
    string on every machine (and, with overwhelming probability, not a training string).
    """
    rng = np.random.default_rng(1000 * length + example)
    src = "".join(map(str, rng.integers(0, 10, length)))
    return Example(src, src[::-1], length)


def examples_of(examples: Sequence[Example], length: int) -> list[Example]:
    """The examples of one length, in order."""
    return [e for e in examples if e.length == length]


def _wrong_digits(out: str, tgt: str) -> int:
    """Positions of ``tgt`` whose digit the output misses or gets wrong."""
    return sum(i >= len(out) or out[i] != c for i, c in enumerate(tgt))


def reversal_explorer(
    model: Seq2Seq,
    tokenizer: Tokenizer,
    lengths: tuple[int, int] = (5, 35),
    n_examples: int = 21,
    length: int = 12,
    example: int = 0,
) -> alt.LayerChart:
    """Chapter 1's "ask the model yourself": a length slider and an example slider.

    For every length in ``lengths`` (inclusive) and example number ``0 .. n_examples - 1``
    the model greedily reverses :func:`random_reversal`; the chart draws the input, the
    correct reversal and the model's output digit by digit, the wrong output digits in
    red, and counts the wrong digits.

    Args:
        model: a trained :class:`~minitransformer.rnn.Seq2Seq`.
        tokenizer: the task's tokenizer.
        lengths: the slider's smallest and largest length.
        n_examples: how many strings per length.
        length, example: the position shown first.

    Returns:
        the chart; its data has one row per (length, example) with the three strings and
        the number of wrong digits (columns ``len`` and ``example``, named after the two
        controls, ``input``, ``reversed``, ``model``, ``wrong`` and ``verdict``).
    """
    lo, hi = lengths
    examples = [random_reversal(L, e) for L in range(lo, hi + 1) for e in range(n_examples)]
    # one batch per length: the decoder's step limit depends on the longest target of the
    # batch, so each string is decoded exactly as on its own
    outputs = [out for L in range(lo, hi + 1) for out in decode_examples(model, examples_of(examples, L), tokenizer)[0]]
    rows = []
    for i, (ex, out) in enumerate(zip(examples, outputs)):
        wrong = _wrong_digits(out, ex.tgt)
        verdict = "exact match" if out == ex.tgt else f"{wrong} of {ex.length} digits wrong"
        rows.append(
            {
                "len": ex.length,
                "example": i % n_examples,
                "input": ex.src,
                "reversed": ex.tgt,
                "model": out,
                "wrong": wrong,
                "verdict": verdict,
            }
        )
    df = pd.DataFrame(rows)
    p_length = viz.slider("len", lo, hi, 1, value=length, label="length")
    p_example = viz.slider("example", 0, n_examples - 1, 1, value=example, label="example")
    base = alt.Chart(df).transform_filter(viz.at_control(p_length)).transform_filter(viz.at_control(p_example))
    # the decoder stops after at most hi + 1 tokens
    x = alt.X(
        "pos:O",
        scale=alt.Scale(domain=list(range(1, hi + 2))),
        title="position",
        axis=alt.Axis(labelAngle=0, labelFontSize=9),
    )
    y = alt.Y("line:N", sort=[*LINES, "result"], title=None)
    digits = (
        base.transform_fold(LINES, as_=["line", "text"])
        .transform_calculate(ch="split(datum.text, '')")
        .transform_flatten(["ch"])
        .transform_window(pos="row_number()", groupby=["line"])
        .transform_calculate(
            status="datum.line == 'model' && substring(datum.reversed, datum.pos - 1, datum.pos) != datum.ch"
            " ? 'wrong' : 'right'"
        )
        .mark_text(font="monospace", fontSize=14)
        .encode(
            x=x,
            y=y,
            text="ch:N",
            color=alt.Color(
                "status:N", scale=alt.Scale(domain=["right", "wrong"], range=["#333333", "#d62728"]), legend=None
            ),
        )
    )
    verdict = (
        base.transform_calculate(line="'result'")
        .mark_text(align="left", fontSize=13)
        .encode(x=alt.value(4), y=y, text="verdict:N")
    )
    return (
        alt.layer(digits, verdict)
        .add_params(p_length, p_example)
        .properties(
            width=14 * (hi + 1),
            height=110,
            title="The model without attention reverses a random string (wrong digits in red)",
        )
    )


def gain_norms(make_cell: Callable[[float], nn.RNNCellBase], inputs: Tensor, gains: Sequence[float]) -> pd.DataFrame:
    """``||dh_t/dh_0||`` for t = 0..T of the cell ``make_cell(gain)``, for every gain.

    Args:
        make_cell: returns the (seeded) cell for a gain.
        inputs: ``(T, input_size)`` the sequence the cells read.
        gains: the gains.

    Returns:
        a long table with columns ``gain``, ``t`` and ``norm`` (3 significant digits).
    """
    rows = []
    for g in gains:
        norms = hidden_jacobian_norms(make_cell(g), inputs)  # (T + 1,)
        rows += [{"gain": g, "t": t, "norm": float(f"{v:.3g}")} for t, v in enumerate(norms.tolist())]
    return pd.DataFrame(rows)


def gain_chart(
    make_cell: Callable[[float], nn.RNNCellBase],
    inputs: Tensor,
    gains: tuple[float, float, float] = (0.2, 3.0, 0.1),
    gain: float = 1.0,
    steps: Sequence[int] = (1, 2, 5, 10, 20, 30, 40),
) -> alt.LayerChart:
    """Chapter 1's gain slider: how ``||dh_t/dh_0||`` of a tanh RNN shrinks or grows.

    One bar per step ``t`` in ``steps``, its height ``log10 ||dh_t/dh_0||`` (below zero:
    the norm shrinks; above: it grows), labelled with the norm itself. The y axis is
    the same for every gain, so moving the slider shows the change.

    Args:
        make_cell: returns the cell for a gain (see :func:`gain_norms`).
        inputs: ``(T, input_size)``, with ``T >= max(steps)``.
        gains: the slider's ``(lo, hi, step)``.
        gain: the position shown first.
        steps: the steps drawn.

    Returns:
        the chart; its data has columns ``gain``, ``t``, ``norm``, ``log10`` and ``change``.
    """
    lo, hi, step = gains
    positions = viz._positions(lo, hi, step)
    df = gain_norms(make_cell, inputs, positions)
    df = df[df.t.isin(steps)].reset_index(drop=True)
    df["log10"] = [round(math.log10(max(v, 1e-300)), 3) for v in df.norm]
    df["change"] = np.where(df.log10 < 0, "shrinks", "grows")
    p = viz.slider("gain", lo, hi, step, value=gain, label="recurrent gain")
    domain = [math.floor(df.log10.min()), max(1, math.ceil(df.log10.max()))]
    base = alt.Chart(df).transform_filter(viz.at_control(p))
    x = alt.X("t:O", title="steps t", axis=alt.Axis(labelAngle=0))
    bars = base.mark_bar().encode(
        x=x,
        y=alt.Y("log10:Q", scale=alt.Scale(domain=domain), title="log10 ||dh_t / dh_0||"),
        color=alt.Color(
            "change:N",
            scale=alt.Scale(domain=["shrinks", "grows"], range=["#4c78a8", "#e45756"]),
            legend=alt.Legend(orient="bottom", title=None),
        ),
        tooltip=["t", alt.Tooltip("norm:Q", format=".3g"), "log10"],
    )
    labels = base.mark_text(dy=-8, fontSize=11).encode(x=x, y=alt.Y("label_y:Q"), text=alt.Text("norm:Q", format=".1e"))
    labels = labels.transform_calculate(label_y="max(datum.log10, 0)")
    return (
        alt.layer(bars, labels)
        .add_params(p)
        .properties(width=420, height=260, title="A tanh RNN: ||dh_t / dh_0|| for the gain you choose")
    )


def sparse_cells(w: Tensor, digits: int) -> str:
    """The cells of ``w (T, S)`` that round to a non-zero ``digits``-decimal weight, packed.

    Returns:
        ``"t:j:w t:j:w ..."``: row, column (0-based) and the weight in units of
        ``10**-digits``, one triple per cell (one string keeps the stored notebook small;
        the chart unpacks it with Vega expressions).
    """
    scaled = (w.double() * 10**digits).round().long()  # (T, S)
    q, k = torch.nonzero(scaled, as_tuple=True)
    return " ".join(f"{a}:{b}:{c}" for a, b, c in zip(q.tolist(), k.tolist(), scaled[q, k].tolist()))


def alignment_explorer(
    models: Mapping[str, Seq2Seq],
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    n_examples: int = 5,
    model: str | None = None,
    length: int = 33,
    example: int = 0,
    digits: int = 2,
    size: int = 340,
) -> alt.VConcatChart:
    """Chapter 2's "pick an example": a model picker, a length slider, an example slider.

    For every model, every length of ``examples`` and the first ``n_examples`` strings of
    each length, the model decodes the string greedily; the chart shows the input, the
    target and the output, and the alignment heatmap (one row per output step, the last
    one emitting ``<eos>``; one column per source position). An orange ring marks the
    largest weight of each step. Weights are kept to ``digits`` decimals; cells that
    round to zero are left blank.

    Args:
        models: display label -> trained model with attention.
        examples: held-out examples; every length present gets a slider position.
        tokenizer: the task's tokenizer.
        n_examples: the strings offered per length (the first ones of each length).
        model: the label shown first (default: the first).
        length, example: the string shown first.
        digits: decimals of the weights kept.
        size: the heatmap's width and height in pixels.

    Returns:
        the chart; its data has one row per (model, length, example) with the strings and
        the non-zero cells packed by :func:`sparse_cells` in ``cells``.
    """
    labels = list(models)
    lengths = sorted({e.length for e in examples})
    chosen = [examples_of(examples, L)[:n_examples] for L in lengths]
    if min(len(c) for c in chosen) < n_examples:
        raise ValueError(f"n_examples={n_examples}, but some length has fewer held-out examples")
    flat = [e for group in chosen for e in group]
    rows = []
    for label, m in models.items():
        decoded = [decode_examples(m, group, tokenizer) for group in chosen]  # one batch per length
        if decoded[0][1] is None:
            raise ValueError(f"model {label!r} has no attention: it draws no alignment")
        outputs = [out for outs, _ in decoded for out in outs]
        weights = [w for _, ws in decoded for w in ws]
        for i, (ex, out, w) in enumerate(zip(flat, outputs, weights)):
            verdict = "right" if out == ex.tgt else "WRONG"
            rows.append(
                {
                    "model": label,
                    "len": ex.length,
                    "example": i % n_examples,
                    "input": ex.src,
                    "target": ex.tgt,
                    "out": out,
                    "output": f"{out}   ({verdict})",
                    "cells": sparse_cells(w, digits),
                }
            )
    df = pd.DataFrame(rows)
    p_model = viz.picker("model", labels, value=model or labels[0], label="model")
    p_length = viz.slider("len", lengths[0], lengths[-1], 1, value=length, label="length")
    p_example = viz.slider("example", 0, n_examples - 1, 1, value=example, label="example")
    base = alt.Chart(df)
    for p in (p_model, p_length, p_example):
        base = base.transform_filter(viz.at_control(p))
    text = (
        base.transform_fold(["input", "target", "output"], as_=["line", "text"])
        .mark_text(align="left", font="monospace", fontSize=12)
        .encode(
            x=alt.value(0),
            y=alt.Y("line:N", sort=["input", "target", "output"], title=None),
            text="text:N",
        )
        .properties(width=size, height=54)
    )
    cells = (
        base.transform_calculate(cell="split(datum.cells, ' ')")
        .transform_flatten(["cell"])
        .transform_calculate(triple="split(datum.cell, ':')")
        .transform_calculate(
            t="toNumber(datum.triple[0])", j="toNumber(datum.triple[1])", w="toNumber(datum.triple[2])"
        )
        .transform_calculate(
            step="datum.t + 1",
            source="datum.j + 1",
            alpha=f"datum.w / {10**digits}",
            emits="datum.t < length(datum.out) ? substring(datum.out, datum.t, datum.t + 1) : '<eos>'",
            digit="substring(datum.input, datum.j, datum.j + 1)",
        )
        .transform_joinaggregate(top="max(w)", groupby=["t"])
    )
    # every source position gets a column (one nobody attends to has no cells); every
    # output step has at least one non-zero cell, so the rows come from the data
    columns = alt.Scale(domain=alt.ExprRef(expr="sequence(1, len + 1)"))
    x = alt.X("source:O", scale=columns, title="source position j")
    y = alt.Y("step:O", title="target step t (the last emits <eos>)")
    heat = cells.mark_rect().encode(
        x=x,
        y=y,
        color=alt.Color(
            "alpha:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="alpha", legend=alt.Legend(orient="right")
        ),
        tooltip=["step:O", "emits:N", "source:O", "digit:N", alt.Tooltip("alpha:Q", format=".2f")],
    )
    peaks = (
        cells.transform_filter("datum.w == datum.top")
        .mark_point(shape="circle", color="#ff7f0e", size=40, strokeWidth=1.5)
        .encode(x=x, y=y)
    )
    heatmap = alt.layer(heat, peaks).properties(width=size, height=size)
    return alt.vconcat(text, heatmap, spacing=6).add_params(p_model, p_length, p_example)


def _trained_range_rule(last_trained: int) -> alt.Chart:
    """A dashed vertical line between the last trained length and the first unseen one."""
    return alt.Chart().mark_rule(strokeDash=[4, 3], color="gray").encode(x=alt.datum(last_trained + 0.5))


def capacity_chart(spread: pd.DataFrame, last_trained: int = 30, panel_width: int = 170) -> alt.FacetChart:
    """Chapter 1's capacity sweep: exact match against length, one panel per training budget.

    Args:
        spread: :func:`minitransformer.book.reversal_sweeps.seed_spread` by ``["hidden", "steps"]``
            (columns hidden, steps, length, mean, min, max, seeds).
        last_trained: the longest training length (a dashed line follows it).
        panel_width: the width of each of the three panels, in pixels.

    Returns:
        a faceted chart: a line per hidden size (the mean over seeds) in a band from the
        worst to the best seed.
    """
    data = spread.assign(budget=spread.steps.map(lambda s: f"{s} steps"))
    order = [f"{s} steps" for s in sorted(spread.steps.unique())]
    color = alt.Color("hidden:O", title="hidden size H", scale=alt.Scale(scheme="viridis"))
    base = alt.Chart().encode(x=alt.X("length:Q", title="input length (digits)"))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("min:Q", title="exact match"), y2="max:Q", color=color)
    line = base.mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        y=alt.Y("mean:Q", scale=alt.Scale(domain=[0, 1])),
        color=color,
        tooltip=["hidden", "steps", "length", "mean", "min", "max", "seeds"],
    )
    return (
        alt.layer(band, line, _trained_range_rule(last_trained), data=data)
        .properties(width=panel_width, height=200)
        .facet(column=alt.Column("budget:N", sort=order, title=None))
        .properties(title="No attention: exact match by hidden size and training steps (mean, min-max over seeds)")
        .configure_legend(orient="bottom")
    )


def seed_band_chart(
    spread: pd.DataFrame, order: Sequence[str], last_trained: int = 30, width: int = 480
) -> alt.LayerChart:
    """Chapter 2's equal-budget comparison: exact match against length per model.

    Args:
        spread: :func:`minitransformer.book.reversal_sweeps.seed_spread` by ``["model"]``.
        order: the models in legend order.
        last_trained: the longest training length (a dashed line follows it).
        width: the plotting area's width in pixels.

    Returns:
        a line per model (the mean over seeds) in a band from the worst to the best seed.
    """
    color = alt.Color("model:N", sort=list(order), title=None, legend=alt.Legend(orient="bottom", columns=3))
    base = alt.Chart().encode(x=alt.X("length:Q", title="input length (digits)"))
    band = base.mark_area(opacity=0.15).encode(y=alt.Y("min:Q", title="exact match"), y2="max:Q", color=color)
    line = base.mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        y=alt.Y("mean:Q", scale=alt.Scale(domain=[0, 1])),
        color=color,
        tooltip=["model", "length", "mean", "min", "max", "seeds"],
    )
    return alt.layer(band, line, _trained_range_rule(last_trained), data=spread).properties(
        width=width, height=280, title="Digit reversal, equal budgets: exact match (mean, min-max over seeds)"
    )
