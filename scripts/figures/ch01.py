"""Chapter 1's diagrams: the encoder-decoder bottleneck, the GRU cell, and the gradient as a product of Jacobians.

The symbols are the chapter's: input ``x_1..x_S``, encoder states ``h_j``, the
context ``c = h_S``, decoder states ``s_t``, outputs ``y_t``; the example is the
chapter's task, reversing a digit string (``4071 -> 1704``).
"""

from __future__ import annotations

import re

import style
from svg import Figure

TOKEN_FILL = "#ffffff"


def text_width(s: str, size: float) -> float:
    """Rough rendered width of a label with mini-markup (enough to centre a formula)."""
    s = s.replace("$", "")
    small = sum(len(m) for m in re.findall(r"[_^]\{([^}]*)\}", s))
    plain = re.sub(r"[_^]\{[^}]*\}", "", s)
    plain = re.sub(r"\\[A-Za-z]+", "x", plain)
    return 0.6 * size * (len(plain) + 0.72 * small)


def frac(fig: Figure, x: float, y: float, num: str, den: str, *, size: float = 16, color: str = style.INK) -> float:
    """A fraction ``num / den`` centred on ``(x, y)``, as in the equations; returns its width."""
    w = max(text_width(num, size), text_width(den, size)) + 6
    fig.text(x, y - 0.68 * size, num, size=size, color=color)
    fig.line(x - w / 2, y, x + w / 2, y, stroke=color, width=1.2)
    fig.text(x, y + 0.72 * size, den, size=size, color=color)
    return w


def thick_arrow(fig: Figure, x1: float, y1: float, x2: float, y2: float, *, width: float = 2.5) -> None:
    """A heavier arrow (the path the text is about) with the usual arrowhead."""
    length = ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5
    ux, uy = (x2 - x1) / length, (y2 - y1) / length
    fig.line(x1, y1, x2 - 8 * ux, y2 - 8 * uy, width=width)
    fig.arrow(x2 - 10 * ux, y2 - 10 * uy, x2, y2)


def token(fig: Figure, x: float, y: float, s: str, *, w: float = 40, h: float = 28, size: float = 15) -> None:
    """A token of the digit task: a small white box with the digit (or ``<bos>``, ``<eos>``)."""
    fig.rect(x - w / 2, y - h / 2, w, h, fill=TOKEN_FILL, stroke=style.MUTED, rx=4)
    fig.text(x, y, s, size=size)


def encoder_decoder() -> Figure:
    fig = Figure(
        720,
        500,
        "The RNN encoder-decoder and its bottleneck",
        "An encoder reads the digits 4, 0, 7, 1 one at a time into states h1 to h4; only the last state, the "
        "context vector c, is passed on. A decoder starts from s0 = tanh(Ws c) and writes 1, 7, 0, 4 and an "
        "end token, each step fed its previous output token and the same vector c.",
    )
    x0, dx = 165, 100
    dec = [x0 + dx * (t + 1) for t in range(5)]  # s_1 .. s_5
    enc = dec[:4]  # h_1 .. h_4
    y_out, y_s, y_in, y_c, y_h, y_x = 50, 125, 205, 280, 365, 442
    bw, bh = 70, 40
    # row labels
    for y, s in [
        (y_out, "output $y_{t}$"),
        (y_s, "decoder $s_{t}$"),
        (y_in, "previous $y_{t-1}$"),
        (y_c, "context"),
        (y_h, "encoder $h_{j}$"),
        (y_x, "input $x_{j}$"),
    ]:
        fig.text(12, y, s, size=14.5, anchor="start", color=style.MUTED)

    # encoder
    fig.box(x0 - 36, y_h - bh / 2, 72, bh, "$h_{0}$ = 0", kind="plain", size=16)
    for j, (x, digit) in enumerate(zip(enc, "4071"), start=1):
        fig.box(x - bw / 2, y_h - bh / 2, bw, bh, f"$h_{{{j}}}$", kind="neutral", size=17)
        token(fig, x, y_x, digit)
        fig.arrow(x, y_x - 14, x, y_h + bh / 2)
        prev = x0 + 36 if j == 1 else enc[j - 2] + bw / 2
        fig.arrow(prev, y_h, x - bw / 2, y_h)
    fig.text(enc[3] + bw / 2 + 14, y_h - 9, "only $h_{S}$", size=14.5, anchor="start", color=style.MUTED)
    fig.text(enc[3] + bw / 2 + 14, y_h + 9, "goes on", size=14.5, anchor="start", color=style.MUTED)

    # the context vector: one bar that every decoder step reads
    left, right = x0 - 40, dec[-1] + bw / 2
    fig.box(left, y_c - 17, right - left, 34, kind="weight")
    fig.text((enc[1] + enc[2]) / 2 + 40, y_c, "$c$ = $h_{S}$: $H$ numbers, whatever the input length", size=14)
    thick_arrow(fig, enc[3], y_h - bh / 2, enc[3], y_c + 17)

    # decoder
    fig.box(x0 - 40, y_s - bh / 2, 80, bh, "$s_{0}$", kind="neutral", size=17)
    fig.arrow(x0, y_c - 17, x0, y_s + bh / 2)
    fig.text(x0 + 7, y_c - 38, "tanh($W_{s}$ $c$)", size=14, anchor="start", color=style.MUTED)
    for t, (x, y_prev, y_t) in enumerate(zip(dec, ["<bos>", "1", "7", "0", "4"], ["1", "7", "0", "4", "<eos>"])):
        fig.box(x - bw / 2, y_s - bh / 2, bw, bh, f"$s_{{{t + 1}}}$", kind="neutral", size=17)
        prev = x0 + 40 if t == 0 else dec[t - 1] + bw / 2
        fig.arrow(prev, y_s, x - bw / 2, y_s)
        token(
            fig, x - 24, y_in, y_prev, w=46 if y_prev.startswith("<") else 34, size=13 if y_prev.startswith("<") else 15
        )
        fig.arrow(x - 24, y_in - 14, x - 24, y_s + bh / 2)
        fig.arrow(x + 20, y_c - 17, x + 20, y_s + bh / 2)
        token(fig, x, y_out, y_t, w=50 if y_t.startswith("<") else 34, size=13 if y_t.startswith("<") else 15)
        fig.arrow(x, y_s - bh / 2, x, y_out + 14)
    return fig


def gru_cell() -> Figure:
    fig = Figure(
        720,
        420,
        "The GRU cell",
        "A GRU step: the previous state h(t-1) and the input x(t) feed the update gate z, the reset gate r "
        "and the candidate n, which also uses r. Along the top line the new state is (1 - z) times n plus z "
        "times h(t-1), so where z is near 1 the old state passes through almost unchanged.",
    )
    y_top, y_mid, y_box, y_bus = 70, 150, 238, 305
    xz, xr, xn, xc = 190, 350, 510, 620
    bw, bh, r = 120, 50, 14
    # states
    fig.box(20, y_top - 20, 80, 40, "$h_{t-1}$", kind="neutral", size=17)
    fig.box(650, y_top - 20, 62, 40, "$h_{t}$", kind="neutral", size=17)
    fig.box(20, 340, 80, 36, "$x_{t}$", kind="neutral", size=17)

    def node(x, y, s):
        fig.circle(x, y, r, fill="#ffffff", stroke=style.INK)
        fig.text(x, y, s, size=15)

    # the top line: the additive shortcut
    thick_arrow(fig, 100, y_top, xz - r, y_top)
    thick_arrow(fig, xz + r, y_top, xc - r, y_top)
    thick_arrow(fig, xc + r, y_top, 650, y_top)
    node(xz, y_top, "\\odot")
    node(xc, y_top, "+")
    fig.text((xz + xc) / 2, y_top - 18, "$z_{t}$ \\odot $h_{t-1}$", size=15)

    # gates and candidate, all reading [x_t, h_{t-1}]
    fig.line(60, y_top + 20, 60, y_bus)
    fig.line(60, 340, 60, y_bus)
    fig.circle(60, y_bus, 3.5, fill=style.INK)
    fig.line(60, y_bus, xn, y_bus)
    fig.text(112, y_bus + 18, "each part has its own weights on $x_{t}$ and on $h_{t-1}$", size=13.5, anchor="start",
             color=style.MUTED)  # fmt: skip
    for x, fn, name in [
        (xz, "\\sigma", "update $z_{t}$"),
        (xr, "\\sigma", "reset $r_{t}$"),
        (xn, "tanh", "candidate $n_{t}$"),
    ]:
        fig.box(x - bw / 2, y_box - bh / 2, bw, bh, kind="model")
        fig.text(x, y_box - 10, fn, size=16)
        fig.text(x, y_box + 11, name, size=14.5)
        fig.arrow(x, y_bus, x, y_box + bh / 2)
    fig.arrow(xr + bw / 2, y_box, xn - bw / 2, y_box)
    fig.text((xr + xn) / 2, y_box - 14, "$r_{t}$", size=15)

    # z_t: to the shortcut and, as 1 - z_t, to the candidate
    fig.arrow(xz, y_box - bh / 2, xz, y_top + r)
    fig.circle(xz, y_mid, 3.5, fill=style.INK)
    fig.text(xz - 8, y_mid + 30, "$z_{t}$", size=15, anchor="end")
    fig.arrow(xz, y_mid, xn - r, y_mid)
    node(xn, y_mid, "1\u2212")
    fig.arrow(xn + r, y_mid, xc - r, y_mid)
    node(xc, y_mid, "\\odot")
    fig.polyline([(xn + bw / 2, y_box), (xc, y_box), (xc, y_mid + r)], arrow=True)
    fig.text(xc + 8, y_box - 30, "$n_{t}$", size=15, anchor="start")
    fig.arrow(xc, y_mid - r, xc, y_top + r)
    fig.text(xc - 8, (y_top + y_mid) / 2, "(1 \u2212 $z_{t}$) \\odot $n_{t}$", size=15, anchor="end")

    fig.text(360, 400, "Where $z_{t}$ \\approx 1 the top line copies $h_{t-1}$, and its gradient, almost unchanged.",
             size=14)  # fmt: skip
    return fig


def gradient_path() -> Figure:
    fig = Figure(
        720,
        430,
        "Gradients through time: a product of Jacobians",
        "An unrolled recurrent network: states h0, h1, h2 and so on up to h(t-1) and h(t), each but h0 with "
        "its input below. Black arrows run forward, left to right; red dashed arrows run backward, one per "
        "step, each labelled with that step's Jacobian, the derivative of h(i) with respect to h(i-1). The "
        "formula on top writes the derivative of h(t) with respect to h0 as the product of these Jacobians.",
    )
    # the formula, as in the chapter
    size = 16
    items = [
        ("f", "\\partial$h_{t}$", "\\partial$h_{0}$"),
        ("t", "="),
        ("f", "\\partial$h_{t}$", "\\partial$h_{t-1}$"),
        ("f", "\\partial$h_{t-1}$", "\\partial$h_{t-2}$"),
        ("t", "\u22ef"),
        ("f", "\\partial$h_{1}$", "\\partial$h_{0}$"),
    ]
    widths = [
        max(text_width(i[1], size), text_width(i[2], size)) + 6 if i[0] == "f" else text_width(i[1], size)
        for i in items
    ]
    gap = 14
    x = 360 - (sum(widths) + gap * (len(items) - 1)) / 2
    y_f = 48
    for item, w in zip(items, widths):
        if item[0] == "f":
            frac(fig, x + w / 2, y_f, item[1], item[2], size=size)
        else:
            fig.text(x + w / 2, y_f, item[1], size=size + 2)
        x += w + gap
    fig.text(360, 98, "one $H$ \\times $H$ Jacobian per step, the newest on the left", size=14, color=style.MUTED)

    # the unrolled chain
    xs = [70, 190, 310, 430, 550, 670]
    names = ["$h_{0}$", "$h_{1}$", "$h_{2}$", None, "$h_{t-1}$", "$h_{t}$"]
    inputs = [None, "$x_{1}$", "$x_{2}$", None, "$x_{t-1}$", "$x_{t}$"]
    y_h, y_x, bw, bh = 250, 330, 76, 40
    for x, name, inp in zip(xs, names, inputs):
        if name is None:
            fig.text(x, y_h, "\u22ef", size=20)
            continue
        fig.box(x - bw / 2, y_h - bh / 2, bw, bh, name, kind="neutral", size=17)
        if inp:
            fig.box(x - 30, y_x - 16, 60, 32, inp, kind="neutral", size=16)
            fig.arrow(x, y_x - 16, x, y_h + bh / 2)
    for a, b in zip(xs, xs[1:]):
        left = a + (bw / 2 if a != 430 else 16)
        right = b - (bw / 2 if b != 430 else 16)
        fig.arrow(left, y_h, right, y_h)
    # backward: one Jacobian per step, right to left
    labels = {1: ("\\partial$h_{1}$", "\\partial$h_{0}$"), 2: ("\\partial$h_{2}$", "\\partial$h_{1}$"),
              5: ("\\partial$h_{t}$", "\\partial$h_{t-1}$")}  # fmt: skip
    for i in range(1, 6):
        a, b = xs[i], xs[i - 1]
        top_a = y_h - bh / 2 if names[i] else y_h - 12
        top_b = y_h - bh / 2 if names[i - 1] else y_h - 12
        fig.curve(a - 12, top_a, (a + b) / 2, y_h - 95, b + 12, top_b, stroke=style.GRADIENT, dash=style.GRADIENT_DASH)
        if i in labels:
            frac(fig, (a + b) / 2, y_h - 92, *labels[i], size=15, color=style.GRADIENT)

    fig.text(360, 378, "tanh cell: each factor is diag(1 \u2212 $h_{i}$^{2}) $U$, so "
             "\u2016\\partial$h_{t}$/\\partial$h_{0}$\u2016 \\leq \u2016$U$\u2016$^{t}$", size=15)  # fmt: skip
    # legend
    fig.arrow(150, 410, 190, 410)
    fig.text(198, 410, "forward", size=14.5, anchor="start")
    fig.arrow(330, 410, 290, 410, stroke=style.GRADIENT, dash=style.GRADIENT_DASH)
    fig.text(340, 410, "backward (gradient)", size=14.5, anchor="start")
    return fig


def figures() -> dict[str, Figure]:
    return {
        "ch01_encoder_decoder": encoder_decoder(),
        "ch01_gru_cell": gru_cell(),
        "ch01_gradient_path": gradient_path(),
    }
