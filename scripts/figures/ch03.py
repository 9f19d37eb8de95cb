"""Chapter 3's diagrams: the soft lookup, the Q/K/V dataflow with shapes, masks, and the fully masked row.

The numbers are the chapter's own examples, computed here with numpy as the
package computes them: the toy dictionary of section 1 (query (0.6, 0.5, 0.1),
values 10, 20, 30, 40), the masks of section 5 (tokens ``5 7 2 9 0 0``,
``causal_mask(6)``) and the two score rows of the fully masked example.
Masks follow the package's convention: True (dark blue) = may attend.
"""

from __future__ import annotations

import numpy as np
import style
from svg import Figure

MATH = 17  # symbols in boxes


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def shade(weight: float) -> str:
    """White to the weights' purple: the colour of an attention weight in ``[0, 1]``."""
    ends = ((0xFF, 0x8E), (0xFF, 0x5E), (0xFF, 0xA2))
    return "#" + "".join(f"{round(a + (b - a) * weight):02x}" for a, b in ends)


def soft_lookup() -> Figure:
    keys = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.7, 0.7, 0.0], [0.0, 0.0, 1.0]])
    values = np.array([10.0, 20.0, 30.0, 40.0])
    q = np.array([0.6, 0.5, 0.1])
    scores = keys @ q
    columns = [("soft, $\\tau$ = 1", softmax(scores / 1.0)), ("soft, $\\tau$ = 0.1", softmax(scores / 0.1))]
    hard = np.eye(4)[scores.argmax()]
    columns.append(("hard ($\\tau$ \\to 0)", hard))
    fig = Figure(
        720,
        420,
        "Attention as a soft dictionary lookup",
        "The chapter's toy dictionary: four keys with values 10, 20, 30 and 40, and the query (0.6, 0.5, "
        "0.1). Its scores, the dot products with the keys, are 0.6, 0.5, 0.77 and 0.1. Bars show the softmax "
        "weights at temperature 1 and 0.1 and for the hard lookup, which puts all weight on the third key; "
        "the outputs, the weighted sums of the values, are 23.78, 26.55 and 30.",
    )
    x_key, x_val, x_score, x_cols = 20, 168, 275, [345, 470, 595]
    ys = [142, 190, 238, 286]
    fig.box(165, 18, 220, 36, "query $q$ = (0.6, 0.5, 0.1)", kind="query", size=15)
    fig.arrow(x_score, 54, x_score, 82)
    head = 100
    fig.text(x_key + 65, head, "key $k_{j}$", size=15)
    fig.text(x_val + 32, head, "value $v_{j}$", size=15)
    fig.text(x_score, head, "$q$\u00b7$k_{j}$", size=15)
    for x, (name, _) in zip(x_cols, columns):
        fig.text(x + 55, head, name, size=15)
    fig.text(x_cols[1] + 55, head - 28, "weights $\\alpha_{j}$ = softmax($q$\u00b7$k_{j}$ / $\\tau$)", size=15)
    for j, y in enumerate(ys):
        vec = ", ".join(f"{v:g}" for v in keys[j])
        fig.box(x_key, y - 17, 130, 34, f"({vec})", kind="key", size=15)
        fig.box(x_val, y - 17, 64, 34, f"{values[j]:g}", kind="value", size=15)
        fig.text(x_score, y, f"{scores[j]:.2f}", size=15, bold=bool(j == scores.argmax()))
        for x, (_, w) in zip(x_cols, columns):
            length = 80 * w[j]
            if length > 0.5:
                fig.rect(x, y - 10, length, 20, fill=style.KINDS["weight"][0], stroke=style.WEIGHT, rx=2)
            fig.text(x + length + 6, y, f"{w[j]:.3f}" if 0 < w[j] < 1 else f"{w[j]:g}", size=14,
                     anchor="start")  # fmt: skip
    y_out = 345
    fig.line(x_cols[0] - 10, y_out - 27, 700, y_out - 27, stroke=style.MUTED, width=1)
    fig.text(x_cols[0] - 18, y_out, "output \u03a3$_{j}$ $\\alpha_{j}$ $v_{j}$", size=15, anchor="end")
    for x, (_, w) in zip(x_cols, columns):
        out = float(w @ values)
        fig.box(x, y_out - 17, 100, 34, f"{out:.2f}" if out != round(out) else f"{out:g}", kind="neutral", size=15)
    fig.text(360, 395, "The lower the temperature, the closer the blend to the one value whose key matches best.",
             size=14.5, color=style.MUTED)  # fmt: skip
    return fig


def qkv_dataflow() -> Figure:
    fig = Figure(
        720,
        740,
        "Scaled dot-product attention: dataflow and shapes",
        "From the bottom: the input X of shape (B, n, d_model) is multiplied by three learned matrices W_Q, W_K, "
        "W_V into queries Q (B, n, d_k), keys K (B, m, d_k) and values V (B, m, d_v). Q times K transposed, "
        "divided by the square root of d_k, gives the scores S (B, n, m); an optional mask sets blocked scores "
        "to minus infinity; a softmax over the keys gives the weights A, each row summing to 1; and A times V "
        "gives the output O (B, n, d_v).",
    )
    xq, xk, xv, xop = 160, 360, 560, 260
    y_x, y_w, y_qkv = 700, 620, 540
    y_s1, y_s, y_mask, y_soft, y_a, y_av, y_o = 458, 388, 318, 248, 178, 108, 38

    def shape(x, y, s, **kw):
        fig.text(x, y, s, size=14.5, anchor="start", color=style.MUTED, **kw)

    # input and projections
    fig.box(xk - 40, y_x - 20, 80, 40, "$X$", kind="neutral", size=MATH)
    shape(xk + 50, y_x, "(B, $n$, $d$_{model})")
    fig.lines(20, y_x - 10, ["self-attention: $Q$, $K$, $V$ all from $X$", "cross-attention: $K$, $V$ from the source"],
              size=13.5, anchor="start", color=style.MUTED)  # fmt: skip
    fig.line(xk, y_x - 20, xk, y_w + 35)
    fig.line(xq, y_w + 35, xv, y_w + 35)
    for x, name, kind, sym, dim, L in [
        (xq, "Q", "query", "$Q$", "$d_{k}$", "$n$"),
        (xk, "K", "key", "$K$", "$d_{k}$", "$m$"),
        (xv, "V", "value", "$V$", "$d_{v}$", "$m$"),
    ]:
        fig.arrow(x, y_w + 35, x, y_w + 18)
        fig.box(x - 40, y_w - 18, 80, 36, f"$W_{{{name}}}$", kind="model", size=MATH)
        shape(x + 48, y_w, f"$d$_{{model}} \\times {dim}")
        fig.arrow(x, y_w - 18, x, y_qkv + 20)
        fig.box(x - 35, y_qkv - 20, 70, 40, sym, kind=kind, size=MATH)
        shape(x + 43, y_qkv, f"(B, {L}, {dim})")

    # scores, mask, softmax, weighted sum
    def op(y, label, dash=None):
        fig.box(xop - 140, y - 18, 280, 36, label, kind="plain", size=15, dash=dash)

    op(y_s1, "$Q$ $K$^{\\top} / \\sqrt$d_{k}$")
    fig.arrow(xq, y_qkv - 20, xq, y_s1 + 18)
    fig.arrow(xk, y_qkv - 20, xk, y_s1 + 18)
    fig.arrow(xop, y_s1 - 18, xop, y_s + 18)
    fig.box(xop - 60, y_s - 18, 120, 36, "$S$  scores", kind="weight", size=15)
    shape(xop + 70, y_s, "(B, $n$, $m$)")
    fig.arrow(xop, y_s - 18, xop, y_mask + 18)
    op(y_mask, "mask: \u2212\u221e where False", dash="6 4")
    # a small mask as its input: True = may attend (dark blue)
    gx, gy, c = 425, y_mask - 27, 12
    fig.grid(gx, gy, 3, 3, c, [[style.MAY_ATTEND if j <= i else style.BLOCKED for j in range(3)] for i in range(3)])
    fig.arrow(gx - 4, y_mask, xop + 140, y_mask)
    fig.lines(gx + 3 * c + 10, y_mask - 10, ["optional bool mask,", "True = may attend"], size=13.5, anchor="start",
              color=style.MUTED)  # fmt: skip
    fig.arrow(xop, y_mask - 18, xop, y_soft + 18)
    op(y_soft, "softmax over the keys (each row)")
    fig.arrow(xop, y_soft - 18, xop, y_a + 18)
    fig.box(xop - 60, y_a - 18, 120, 36, "$A$  weights", kind="weight", size=15)
    shape(xop + 70, y_a, "(B, $n$, $m$), each row sums to 1")
    fig.arrow(xop, y_a - 18, xop, y_av + 18)
    op(y_av, "$A$ $V$")
    fig.polyline([(xv, y_qkv - 20), (xv, y_av), (xop + 140, y_av)], arrow=True)
    fig.text(xv + 8, (y_av + y_a) / 2, "$V$", size=16, anchor="start")
    fig.arrow(xop, y_av - 18, xop, y_o + 18)
    fig.box(xop - 40, y_o - 18, 80, 36, "$O$", kind="neutral", size=MATH)
    shape(xop + 50, y_o, "(B, $n$, $d_{v}$): row $i$ is query $i$'s soft lookup")
    return fig


def masks() -> Figure:
    n, cell = 6, 28
    tokens = [5, 7, 2, 9, 0, 0]
    pad = np.array([t != 0 for t in tokens])
    causal = np.tril(np.ones((n, n), dtype=bool))
    both = pad[None, :] & causal
    fig = Figure(
        720,
        430,
        "Padding and causal masks, and how they combine",
        "Three 6 by 6 grids, rows are queries and columns are keys; dark blue means True, may attend, and light "
        "grey means False, blocked. The padding mask of the tokens 5, 7, 2, 9, 0, 0 is one row, True for the "
        "four real tokens, repeated for every query; the causal mask is the lower triangle; their AND blocks "
        "both the padding and the future.",
    )
    y0 = 150
    xs = [100, 315, 530]

    def colours(m):
        return [[style.MAY_ATTEND if v else style.BLOCKED for v in row] for row in m]

    fig.text(xs[0] + 84, 28, "padding mask (B, 1, 1, S)", size=15, bold=True)
    fig.text(xs[1] + 84, 28, "causal mask (n, n)", size=15, bold=True)
    fig.text(xs[2] + 84, 28, "padding AND causal", size=15, bold=True)
    # the padding mask: one row per sequence, from the token ids
    fig.text(xs[0] - 10, 62, "tokens", size=13.5, anchor="end", color=style.MUTED)
    for j, t in enumerate(tokens):
        fig.text(xs[0] + (j + 0.5) * cell, 62, str(t), size=15)
    fig.grid(xs[0], 80, 1, n, cell, colours(pad[None, :]))
    fig.text(xs[0] + 3 * cell, 130, "the same row for every query", size=13.5, color=style.MUTED)
    fig.text(xs[1] + 3 * cell, 62, "query $i$ sees keys $j$ \\leq $i$", size=13.5, color=style.MUTED)
    fig.text(xs[2] + 3 * cell, 62, "what a decoder uses", size=13.5, color=style.MUTED)
    for x, m in zip(xs, (np.repeat(pad[None, :], n, 0), causal, both)):
        fig.grid(x, y0, n, n, cell, colours(m))
    for i in range(n):
        fig.text(xs[0] - 10, y0 + (i + 0.5) * cell, str(i), size=13.5, anchor="end", color=style.MUTED)
    for j in range(n):
        for x in xs:
            fig.text(x + (j + 0.5) * cell, y0 + n * cell + 14, str(j), size=13.5, color=style.MUTED)
    fig.text(xs[0] - 30, y0 + 3 * cell, "query $i$", size=14, anchor="end")
    fig.text((xs[0] + xs[0] + n * cell) / 2 - 10, y0 + n * cell + 36, "key $j$", size=14)
    mid = y0 + 3 * cell
    fig.text((xs[0] + n * cell + xs[1]) / 2, mid, "&", size=26, bold=True)
    fig.text((xs[1] + n * cell + xs[2]) / 2, mid, "=", size=26, bold=True)
    # legend
    y_l = 400
    fig.rect(120, y_l - 9, 18, 18, fill=style.MAY_ATTEND, stroke=style.MAY_ATTEND, rx=2)
    fig.text(146, y_l, "True: may attend", size=15, anchor="start")
    fig.rect(330, y_l - 9, 18, 18, fill=style.BLOCKED, stroke="#bbbbbb", rx=2)
    fig.text(356, y_l, "False: blocked, score set to \u2212\u221e", size=15, anchor="start")
    return fig


def masked_row() -> Figure:
    s = np.array([[0.5, -1.0, 2.0], [0.3, 0.2, 0.1]])
    m = np.array([[True, False, True], [False, False, False]])
    row0 = softmax(np.where(m[0], s[0], -np.inf))
    fig = Figure(
        720,
        430,
        "Masking before the softmax, and the fully masked row",
        "Two rows of scores, 0.5, -1.0, 2.0 and 0.3, 0.2, 0.1, with a mask that blocks the middle key of the "
        "first row and every key of the second. Blocked scores become minus infinity. The first row's softmax "
        "is 0.18, 0, 0.82; for the second a plain softmax computes 0/0 = NaN, while the package's masked "
        "softmax gives all zeros, so that query receives nothing.",
    )
    cw, ch = 52, 36

    def matrix(x, y, cells, fills, colours=None, title=None):
        for i, row in enumerate(cells):
            for j, v in enumerate(row):
                fig.rect(x + j * cw, y + i * ch, cw, ch, fill=fills[i][j], stroke="#ffffff", width=2, rx=0)
                fig.text(x + (j + 0.5) * cw, y + (i + 0.5) * ch, v, size=15,
                         color=colours[i][j] if colours else style.INK)  # fmt: skip
        if title:
            fig.text(x + 1.5 * cw, y - 18, title, size=15)

    def num(v):
        return "\u2212\u221e" if v == -np.inf else f"{v:.1f}".replace("-", "\u2212")

    purple = style.KINDS["weight"][0]
    y1, y2 = 70, 285
    xs, xm, xf = 30, 262, 520
    matrix(xs, y1, [[num(v) for v in row] for row in s], [[purple] * 3] * 2, title="scores")
    matrix(xm, y1, [["True" if v else "False" for v in row] for row in m],
           [[style.MAY_ATTEND if v else style.BLOCKED for v in row] for row in m],
           [["#ffffff" if v else style.INK for v in row] for row in m], title="mask")  # fmt: skip
    masked = np.where(m, s, -np.inf)
    matrix(xf, y1, [[num(v) for v in row] for row in masked],
           [[purple if v else style.BLOCKED for v in row] for row in m], title="scores, masked")  # fmt: skip
    fig.arrow(xm + 3 * cw + 10, y1 + ch, xf - 10, y1 + ch)
    fig.text((xm + 3 * cw + xf) / 2, y1 + ch - 14, "\u2212\u221e where", size=13.5, color=style.MUTED)
    fig.text((xm + 3 * cw + xf) / 2, y1 + ch + 16, "False", size=13.5, color=style.MUTED)
    fig.text((xs + 3 * cw + xm) / 2, y1 + ch, "and", size=15, color=style.MUTED)
    fig.text(xs - 8, y1 + 0.5 * ch, "1", size=13.5, anchor="end", color=style.MUTED)
    fig.text(xs - 8, y1 + 1.5 * ch, "2", size=13.5, anchor="end", color=style.MUTED)

    # two softmaxes of the masked scores
    src_x, src_y = xf + 1.5 * cw, y1 + 2 * ch + 6
    naive_x, pkg_x = 150, xf
    fig.curve(src_x - 30, src_y, (naive_x + 1.5 * cw + src_x) / 2, src_y + 10, naive_x + 1.5 * cw + 20, y2 - 6)
    fig.arrow(src_x, src_y, src_x, y2 - 6)
    fig.text(250, 190, "torch.softmax", size=15)
    fig.text(src_x - 10, 205, "masked_softmax", size=15, anchor="end")
    fig.text(src_x - 10, 225, "(the package)", size=13.5, anchor="end", color=style.MUTED)
    w0 = [f"{v:.2f}".replace("0.00", "0") for v in row0]
    matrix(naive_x, y2, [w0, ["NaN"] * 3], [[shade(v) for v in row0], ["#ffffff"] * 3],
           [[style.INK] * 3, [style.GRADIENT] * 3])  # fmt: skip
    matrix(pkg_x, y2, [w0, ["0", "0", "0"]], [[shade(v) for v in row0], ["#ffffff"] * 3])
    for x in (naive_x, pkg_x):
        fig.rect(x, y2, 3 * cw, 2 * ch, stroke=style.MUTED, width=1, rx=0)
    fig.text(naive_x + 1.5 * cw, y2 + 2 * ch + 24, "row 2: 0/0 = NaN, which spreads", size=14.5)
    fig.text(pkg_x + 1.5 * cw, y2 + 2 * ch + 24, "row 2: all zeros, output 0", size=14.5)
    fig.text(360, 412, "Row 1 is the same in both: weights 0 where blocked, the rest sums to 1.", size=14.5,
             color=style.MUTED)  # fmt: skip
    return fig


def figures() -> dict[str, Figure]:
    return {
        "ch03_soft_lookup": soft_lookup(),
        "ch03_qkv_dataflow": qkv_dataflow(),
        "ch03_masks": masks(),
        "ch03_masked_row": masked_row(),
    }
