"""Chapter 2's diagrams: the bidirectional annotations, Bahdanau's and Luong's decoder steps, the alignment matrix.

The symbols are the chapter's: annotations ``h_j = [fwd h_j; bwd h_j]``, decoder
states ``s_{t-1}``, ``s_t``, scores ``e_tj``, weights ``alpha_tj``, context
``c_t``, Luong's attentional hidden state ``h~_t = tanh(W_c [c_t; s_t])``. The
two decoder steps are drawn on one template, so that the reader sees the one
difference: which state is the query (orange), the previous one or the current one.
"""

from __future__ import annotations

import style
from svg import Figure

MATH = 17  # size of the symbols in boxes
TILDE_H = "h\u0303"  # h with a combining tilde: Luong's attentional hidden state


def vec(fig: Figure, x: float, y: float, sub: str, direction: int, *, size: float = MATH) -> None:
    """``h_sub`` with a small arrow above the h (right: the forward GRU's state, left: the backward's)."""
    h_w, sub_w = 0.58 * size, 0.72 * size * 0.6 * len(sub)
    left = x - (h_w + sub_w) / 2
    fig.text(left, y, f"$h_{{{sub}}}$", size=size, anchor="start")
    cx, ay, half = left + h_w / 2 + 1.5, y - 0.78 * size, 0.36 * size
    tip, tail = (cx + half, cx - half) if direction > 0 else (cx - half, cx + half)
    fig.line(tail, ay, tip, ay, width=1.2)
    back = -4 if direction > 0 else 4
    fig.polyline([(tip + back, ay - 3), (tip, ay), (tip + back, ay + 3)], width=1.2)


def shade(weight: float) -> str:
    """White to the weights' purple: the colour of an attention weight in ``[0, 1]``."""
    r0, g0, b0 = 0xFF, 0xFF, 0xFF
    r1, g1, b1 = 0x8E, 0x5E, 0xA2
    mix = [round(a + (b - a) * weight) for a, b in ((r0, r1), (g0, g1), (b0, b1))]
    return "#" + "".join(f"{v:02x}" for v in mix)


def annotations() -> Figure:
    fig = Figure(
        720,
        360,
        "The annotations of a bidirectional encoder",
        "The digits 4, 0, 7, 1 are read by a forward GRU from left to right and by a backward GRU from right "
        "to left. At each position j the two states are stacked into the annotation h(j), one column per "
        "position; the forward state at the last position and the backward state at the first are outlined in "
        "dashes: they are all that chapter 1's decoder kept.",
    )
    xs = [210, 340, 470, 600]
    w, h, top = 84, 42, 120
    y_f, y_b = top + h / 2, top + 1.5 * h
    fig.text(12, y_f, "forward GRU", size=14.5, anchor="start", color=style.MUTED)
    fig.text(12, y_b, "backward GRU", size=14.5, anchor="start", color=style.MUTED)
    fig.text(405, 42, "annotation $h_{j}$: both states stacked, $H$/2 + $H$/2 = $H$ numbers", size=15)
    for j, (x, digit) in enumerate(zip(xs, "4071"), start=1):
        fig.rect(x - w / 2, top, w, h, fill=style.KINDS["neutral"][0], stroke=style.KINDS["neutral"][1], rx=0)
        fig.rect(x - w / 2, top + h, w, h, fill=style.KINDS["neutral"][0], stroke=style.KINDS["neutral"][1], rx=0)
        fig.rect(x - w / 2, top, w, 2 * h, stroke=style.INK, width=2, rx=4)
        vec(fig, x, y_f + 4, str(j), +1)
        vec(fig, x, y_b + 4, str(j), -1)
        fig.text(x, top - 22, f"$h_{{{j}}}$", size=MATH)
        fig.rect(x - 18, 252, 36, 28, fill="#ffffff", stroke=style.MUTED, rx=4)
        fig.text(x, 266, digit, size=15)
        fig.text(x, 298, f"$x_{{{j}}}$", size=15, color=style.MUTED)
        fig.arrow(x, 252, x, top + 2 * h)
    for a, b in zip(xs, xs[1:]):
        fig.arrow(a + w / 2, y_f, b - w / 2, y_f)
        fig.arrow(b - w / 2, y_b, a + w / 2, y_b)
    # chapter 1's summary: the two final states
    for x, y in ((xs[-1], top), (xs[0], top + h)):
        fig.rect(x - w / 2 + 4, y + 4, w - 8, h - 8, stroke=style.WEIGHT, width=2, dash="5 3", rx=3)
    fig.text(360, 335, "dashed: the two final states, all that chapter 1 kept as $c$; attention keeps every column",
             size=14.5)  # fmt: skip
    return fig


def decoder_step(kind: str) -> Figure:
    """Bahdanau's step (query ``s_{t-1}``, before the GRU) or Luong's (query ``s_t``, after it)."""
    bahdanau = kind == "bahdanau"
    if bahdanau:
        fig = Figure(
            720,
            640,
            "Bahdanau attention: one decoder step",
            "One step of Bahdanau's decoder. The previous state s(t-1) is the query: with each annotation h(j) it "
            "gives a score e(t,j) = v_a transposed times tanh(W_a s(t-1) + U_a h(j)); a softmax over j turns the "
            "scores into weights alpha(t,j), and the context c(t) is the weighted sum of the annotations. Then "
            "the GRU takes s(t-1), the embedding of the previous token and c(t) to the new state s(t), and the "
            "output layer reads s(t), c(t) and that embedding to predict y(t).",
        )
    else:
        fig = Figure(
            720,
            640,
            "Luong attention: one decoder step",
            "One step of Luong's decoder. The GRU runs first, from s(t-1), the embedding of the previous token "
            "and the previous attentional state, to the current state s(t), which is the query: s(t) and each "
            "annotation h(j) give a score (dot, general or concat), a softmax over j gives the weights, and the "
            "weighted sum of the annotations is the context c(t). Then the attentional state tanh(W_c [c(t); "
            "s(t)]) predicts y(t) and is fed to the next step.",
        )
    y_row, bh = 110, 40
    xs = [330, 420, 510, 600]  # source positions j = 1..4
    band_l, band_r = 290, 640
    y_h, y_band, y_e, y_soft, y_a, y_c = 560, 475, 402, 335, 267, 195
    x_query = 75

    # the decoder row
    fig.box(30, y_row - bh / 2, 90, bh, "$s_{t-1}$", kind="neutral", size=MATH)
    fig.box(200, y_row - bh / 2, 100, bh, "GRU", kind="model", size=16)
    fig.box(380, y_row - bh / 2, 80, bh, "$s_{t}$", kind="neutral", size=MATH)
    fig.arrow(120, y_row, 200, y_row)
    fig.arrow(300, y_row, 380, y_row)
    if bahdanau:
        fig.box(195, 22, 110, 32, "$e$($y_{t-1}$)", kind="neutral", size=15)
        fig.arrow(250, 54, 250, y_row - bh / 2)
        fig.box(540, y_row - bh / 2, 110, bh, "$W_{o}$, softmax", kind="model", size=15)
        fig.arrow(460, y_row, 540, y_row)
        fig.polyline([(305, 38), (575, 38), (575, y_row - bh / 2)], arrow=True)
        fig.arrow(650, y_row, 682, y_row)
        fig.text(700, y_row, "$y_{t}$", size=MATH)
    else:
        fig.box(148, 22, 92, 32, "$e$($y_{t-1}$)", kind="neutral", size=15)
        fig.box(258, 22, 92, 32, f"${TILDE_H}_{{t-1}}$", kind="neutral", size=16)
        fig.arrow(215, 54, 215, y_row - bh / 2)
        fig.arrow(285, 54, 285, y_row - bh / 2)
        fig.box(520, y_row - bh / 2, 185, bh, "tanh($W_{c}$[$c_{t}$; $s_{t}$])", kind="model", size=15)
        fig.arrow(460, y_row, 520, y_row)
        fig.box(545, 22, 110, 32, "$W_{o}$, softmax", kind="model", size=15)
        fig.arrow(612, y_row - bh / 2, 612, 54)
        fig.text(620, 72, f"${TILDE_H}_{{t}}$", size=16, anchor="start")
        fig.arrow(655, 38, 682, 38)
        fig.text(700, 38, "$y_{t}$", size=MATH)
        fig.text(705, 150, "fed to step $t$+1", size=14, anchor="end", color=style.MUTED)

    # the query: s_{t-1} before the GRU, or s_t after it
    if bahdanau:
        path = [(x_query, y_row + bh / 2), (x_query, y_band), (band_l, y_band)]
        fig.text(x_query + 10, 300, "query $s_{t-1}$", size=15, anchor="start", color=style.QUERY)
    else:
        path = [(420, y_row + bh / 2), (420, 150), (x_query, 150), (x_query, y_band), (band_l, y_band)]
        fig.text(x_query + 10, 300, "query $s_{t}$", size=15, anchor="start", color=style.QUERY)
    fig.polyline(path[:-1] + [(band_l - 9, y_band)], stroke=style.QUERY, width=2.5)
    fig.arrow(band_l - 11, y_band, band_l, y_band, stroke=style.QUERY)

    # the attention block: annotations -> scores -> softmax -> weights -> context
    fig.text(band_l - 12, y_h, "annotations", size=14.5, anchor="end", color=style.MUTED)
    score = "$v_{a}$^{\\top} tanh($W_{a}$ $s_{t-1}$ + $U_{a}$ $h_{j}$)" if bahdanau else "score($s_{t}$, $h_{j}$)"
    fig.box(band_l, y_band - 20, band_r - band_l, 40, score, kind="model", size=16)
    fig.box(band_l, y_soft - 15, band_r - band_l, 30, "softmax over $j$ (the source positions)", kind="plain", size=15)
    for j, x in enumerate(xs, start=1):
        fig.box(x - 32, y_h - 19, 64, 38, f"$h_{{{j}}}$", kind="neutral", size=MATH)
        fig.arrow(x, y_h - 19, x, y_band + 20)
        fig.box(x - 32, y_e - 17, 64, 34, f"$e_{{t{j}}}$", kind="weight", size=16)
        fig.arrow(x, y_band - 20, x, y_e + 17)
        fig.arrow(x, y_e - 17, x, y_soft + 15)
        fig.box(x - 32, y_a - 17, 64, 34, f"$\\alpha_{{t{j}}}$", kind="weight", size=16)
        fig.arrow(x, y_soft - 15, x, y_a + 17)
        fig.arrow(x, y_a - 17, 465 + (x - 465) * 0.45, y_c + 20)
    fig.box(355, y_c - 20, 220, 40, "$c_{t}$ = \\Sigma$_{j}$ $\\alpha_{tj}$ $h_{j}$", kind="weight", size=16)
    fig.polyline([(xs[-1] + 32, y_h), (682, y_h), (682, y_c), (575, y_c)], arrow=True)
    fig.text(690, (y_h + y_c) / 2, "$h_{j}$", size=16, anchor="start")
    if bahdanau:
        fig.polyline([(390, y_c - 20), (390, 150), (250, 150), (250, y_row + bh / 2)], arrow=True)
        fig.polyline([(540, y_c - 20), (540, 150), (595, 150), (595, y_row + bh / 2)], arrow=True)
        fig.text(320, 140, "$c_{t}$", size=16)
        fig.text(360, 618, "$U_{a}$ $h_{j}$ is computed once per input; $W_{a}$ $s_{t-1}$ once per step", size=14.5)
    else:
        fig.arrow(540, y_c - 20, 540, y_row + bh / 2)
        fig.text(360, 612, "dot $s_{t}$^{\\top}$h_{j}$   \u00b7   general $s_{t}$^{\\top}$W_{a}$ $h_{j}$   \u00b7   "
                 "concat $v_{a}$^{\\top}tanh($W_{a}$[$s_{t}$; $h_{j}$])", size=14.5)  # fmt: skip
    return fig


def alignment() -> Figure:
    fig = Figure(
        720,
        440,
        "An alignment: the attention weights of all decoder steps as a matrix",
        "A grid with one row per target step t, emitting 1, 7, 0, 4 and the end token, and one column per "
        "source position j, holding the digits 4, 0, 7, 1. Each row is the weight vector alpha(t) of one step "
        "and sums to 1; for reversal the dark cells lie on the anti-diagonal, where output t reads input S + "
        "1 - t.",
    )
    weights = [  # schematic: the ideal alignment of reversal, a little soft; the <eos> row spread out
        [0.02, 0.03, 0.05, 0.90],
        [0.03, 0.06, 0.86, 0.05],
        [0.05, 0.88, 0.05, 0.02],
        [0.91, 0.05, 0.02, 0.02],
        [0.30, 0.15, 0.15, 0.40],
    ]
    cell, x0, y0 = 56, 250, 110
    src, out = "4071", ["1", "7", "0", "4", "<eos>"]
    fig.text(x0 + 2 * cell, 34, "source position $j$ (input digit)", size=15)
    fig.grid(x0, y0, 5, 4, cell, [[shade(w) for w in row] for row in weights], stroke="#ffffff", width=2)
    fig.rect(x0, y0, 4 * cell, 5 * cell, stroke=style.MUTED, width=1, rx=0)
    for j, digit in enumerate(src):
        fig.text(x0 + (j + 0.5) * cell, 66, f"$j$ = {j + 1}", size=14, color=style.MUTED)
        fig.text(x0 + (j + 0.5) * cell, 90, digit, size=16)
    fig.text(x0 - 95, 66, "target step $t$", size=15)
    for t, y_t in enumerate(out):
        y = y0 + (t + 0.5) * cell
        fig.text(x0 - 140, y, f"$t$ = {t + 1}", size=14, color=style.MUTED)
        fig.text(x0 - 62, y, "emits " + ("\u27e8eos\u27e9" if y_t == "<eos>" else y_t), size=15)
        for j, w in enumerate(weights[t]):
            if w > 0.5:
                fig.text(x0 + (j + 0.5) * cell, y, f"$\\alpha_{{{t + 1}{j + 1}}}$", size=15, color="#ffffff")
    # a row is one step's alpha_t; it sums to 1
    y_r = y0 + 0.5 * cell
    fig.rect(x0 - 3, y0 - 3, 4 * cell + 6, cell + 6, stroke=style.INK, width=2, rx=3)
    fig.lines(x0 + 4 * cell + 16, y_r - 20, ["row $t$ = $\\alpha_{t}$, the weights", "of step $t$: softmax over $j$,",
              "sums to 1"], size=15, anchor="start")  # fmt: skip
    fig.text(x0 + 4 * cell + 16, y0 + 3 * cell, "columns need not", size=15, anchor="start", color=style.MUTED)
    fig.text(x0 + 4 * cell + 16, y0 + 3 * cell + 20, "sum to anything", size=15, anchor="start", color=style.MUTED)
    fig.text(
        360,
        y0 + 5 * cell + 32,
        "reversal: output digit $t$ is input digit $S$ + 1 \u2212 $t$, the anti-diagonal",
        size=15,
    )
    return fig


def figures() -> dict[str, Figure]:
    return {
        "ch02_annotations": annotations(),
        "ch02_bahdanau_step": decoder_step("bahdanau"),
        "ch02_luong_step": decoder_step("luong"),
        "ch02_alignment": alignment(),
    }
