"""Chapter 6's figures: the two sub-layers, the residual stream, Post-LN versus Pre-LN, the gated FFN.

The blocks are drawn as ``minitransformer/layers.py`` computes them: Post-LN
``Z = LN(X + MHA(X))``, ``out = LN(Z + FFN(Z))`` (``norm_first=False``); Pre-LN
``x = x + MHA(LN(x))``, ``x = x + FFN(LN(x))`` (``norm_first=True``), with one final
norm after the last block; ``FFN(x) = max(0, x W_1 + b_1) W_2 + b_2`` and SwiGLU
``(SiLU(x W_1) ⊙ x W_3) W_2`` at two thirds of the hidden width.
"""

from __future__ import annotations

import style
from svg import Figure

SMALL, MUTED = style.SMALL, style.MUTED


def _plus(fig: Figure, cx, cy, r=13):
    """A residual addition: a circle with a plus."""
    fig.circle(cx, cy, r, fill="#ffffff", stroke=style.INK, width=1.5)
    fig.line(cx - r + 4, cy, cx + r - 4, cy, width=1.8)
    fig.line(cx, cy - r + 4, cx, cy + r - 4, width=1.8)


def _times(fig: Figure, cx, cy, r=13):
    """An elementwise product: a circle with a dot (⊙)."""
    fig.circle(cx, cy, r, fill="#ffffff", stroke=style.INK, width=1.5)
    fig.circle(cx, cy, 3, fill=style.INK, stroke=style.INK, width=1)


def two_sublayers() -> Figure:
    """Attention connects every output position to every input position; the FFN maps each position alone."""
    fig = Figure(
        720,
        360,
        "Two sub-layers: mixing across positions, transforming each position",
        "Left: in self-attention every output position depends on every input position, drawn as lines "
        "from each of five inputs to each of five outputs. Right: the feed-forward network maps each "
        "position's vector on its own, with the same weights W_1, b_1, W_2, b_2 at every position, so "
        "output i depends on input i only.",
    )
    T, bw, gap = 5, 50, 14
    w = T * bw + (T - 1) * gap
    y_out, y_in = 84, 262
    for x0, title, sub in [(36, "multi-head self-attention", "mixes across positions"),
                           (398, "position-wise FFN", "transforms each position alone")]:  # fmt: skip
        fig.text(x0 + w / 2, 24, title, bold=True)
        fig.text(x0 + w / 2, 46, sub, size=SMALL, color=MUTED)
        xs = [x0 + t * (bw + gap) + bw / 2 for t in range(T)]
        attention = x0 < 300
        if attention:
            for xi in xs:
                for xo in xs:
                    fig.line(xi, y_in, xo, y_out + 34, stroke=style.WEIGHT, width=1.1)
        for t, x in enumerate(xs):
            fig.box(x - bw / 2, y_in, bw, 34, f"$x_{{{t + 1}}}$", kind="neutral")
            fig.box(x - bw / 2, y_out, bw, 34, f"out_{{{t + 1}}}", kind="neutral", size=SMALL)
            if not attention:
                fig.arrow(x, y_in, x, 200)
                fig.box(x - bw / 2, 158, bw, 40, "FFN", kind="model", size=SMALL)
                fig.arrow(x, 158, x, y_out + 36)
        note = "out_{i} depends on every $x_{j}$" if attention else "out_{i} depends on $x_{i}$ only"
        fig.text(x0 + w / 2, 318, note)
    fig.text(398 + w / 2, 340, "the same $W_{1}$, $b_{1}$, $W_{2}$, $b_{2}$ at every position", size=SMALL, color=MUTED)
    fig.text(36 + w / 2, 340, "weights computed from the input", size=SMALL, color=MUTED)
    return fig


def residual_stream() -> Figure:
    """A Pre-LN stack as a stream: every sub-layer reads x through a norm and adds its output back."""
    fig = Figure(
        720,
        640,
        "The residual stream",
        "A vertical residual stream runs from the embeddings x_0 at the bottom to a final LayerNorm at the top. "
        "Two blocks branch off it: each sub-layer, attention and then the FFN, reads the stream through its own "
        "LayerNorm and adds its output back to it, giving x_1 to x_4. A red dashed arrow runs down the stream: "
        "the backward path through the identities.",
    )
    sx = 285  # the stream x
    bottom = 596
    fig.box(sx - 110, 22, 220, 40, "final LN, output layer", kind="model")
    fig.box(sx - 110, bottom, 220, 36, "embeddings + positions", kind="neutral", size=SMALL)
    fig.line(sx, bottom, sx, 74, stroke=style.INK, width=5)
    fig.arrow(sx, 76, sx, 64, width=2)
    subs = ["MHA", "FFN", "MHA", "FFN"]
    step = 122
    y_ws = [bottom - 110 - s * step for s in range(4)]  # where each sub-layer writes (its +)
    for s, name in enumerate(subs):
        y_w = y_ws[s]
        y_r = y_w + 80  # where it reads
        y_c = (y_w + y_r) / 2
        fig.polyline([(sx, y_r), (sx + 90, y_r), (sx + 90, y_c + 17)], arrow=True)
        fig.box(sx + 60, y_c - 17, 60, 34, "LN", kind="model", size=SMALL)
        fig.arrow(sx + 120, y_c, sx + 152, y_c)
        fig.box(sx + 154, y_c - 19, 110, 38, name, kind="model")
        fig.polyline([(sx + 209, y_c - 19), (sx + 209, y_w), (sx + 15, y_w)], arrow=True)
        _plus(fig, sx, y_w)
        fig.text(sx - 14, y_r - 10, f"$x_{{{s}}}$", anchor="end")
        if s == 0:
            fig.text(sx + 98, y_r, "reads", anchor="start", size=SMALL, color=MUTED)
            fig.text(sx + 56, y_w - 11, "writes: adds its output", anchor="start", size=SMALL, color=MUTED)
    fig.text(sx - 14, (y_ws[3] + 62) / 2, "$x_{4}$", anchor="end")
    for block, first in [(1, 0), (2, 2)]:
        y_top = y_ws[first + 1] - 18
        y_bot = y_ws[first] + 40 + 28
        fig.rect(sx + 44, y_top, 300, y_bot - y_top, stroke=MUTED, width=1.2, dash="5 4", rx=8)
        fig.text(sx + 334, y_top + 16, f"block {block}", anchor="end", size=SMALL, color=MUTED)
    # the gradient's identity path
    gx = sx - 66
    fig.arrow(gx, 72, gx, bottom - 8, stroke=style.GRADIENT, dash=style.GRADIENT_DASH, width=1.8)
    fig.lines(gx - 12, 300, ["backward:", "the identity", "path, +$I$", "at every +"], size=SMALL, anchor="end",
              color=style.GRADIENT)  # fmt: skip
    fig.text(sx + 124, 614, "$x_{l+1}$ = $x_{l}$ + $f_{l}$(LN($x_{l}$))", anchor="start")
    return fig


def post_pre_ln() -> Figure:
    """Post-LN and Pre-LN encoder blocks side by side, drawn from minitransformer's EncoderLayer.forward."""
    fig = Figure(
        720,
        676,
        "Post-LN and Pre-LN blocks",
        "Two encoder blocks, input at the bottom. Post-LN: X goes through MHA, is added to X, then normalised "
        "(giving Z); Z goes through the FFN, is added to Z, then normalised. Pre-LN: x is normalised and passed "
        "through MHA, and the result is added to x; then normalised again, passed through the FFN and added; "
        "the residual path itself is never normalised, and one final norm follows the last block.",
    )
    bw, bh = 150, 38
    rows = [582, 502, 422, 342, 262, 182]  # node centres, bottom to top
    y_in, y_out = 652, 132
    columns = [
        (190, "Post-LN (2017 paper)", ["MHA", "+", "LN norm1", "FFN", "+", "LN norm2"], [(0, 1), (3, 4)],
         "$Z$ = LN($X$ + MHA($X$))", "out = LN($Z$ + FFN($Z$))", "$X$", "$Z$"),
        (530, "Pre-LN (GPT-2 and later)", ["LN norm1", "MHA", "+", "LN norm2", "FFN", "+"], [(0, 2), (3, 5)],
         "$x$ ← $x$ + MHA(LN($x$))", "$x$ ← $x$ + FFN(LN($x$))", "$x$", "$x$"),
    ]  # fmt: skip
    for cx, title, nodes, skips, eq1, eq2, x_in, x_mid in columns:
        fig.text(cx, 24, title, bold=True)
        fig.text(cx, 50, eq1)
        fig.text(cx, 74, eq2)
        fig.text(cx, y_in + 2, x_in)
        fig.arrow(cx, y_in - 8, cx, rows[0] + (13 if nodes[0] == "+" else bh / 2))
        for r, node in enumerate(nodes):
            y = rows[r]
            top = y - (13 if node == "+" else bh / 2)
            if node == "+":
                _plus(fig, cx, y)
            else:
                name, _, code = node.partition(" ")
                fig.box(cx - bw / 2, y - bh / 2, bw, bh, name, kind="model")
                if code:
                    fig.text(cx + bw / 2 + 8, y, code, anchor="start", size=SMALL, color=MUTED)
            nxt = rows[r + 1] if r + 1 < len(nodes) else y_out
            nxt_bottom = nxt + (
                13 if r + 1 < len(nodes) and nodes[r + 1] == "+" else (bh / 2 if r + 1 < len(nodes) else 0)
            )
            fig.arrow(cx, top, cx, nxt_bottom + 2)
        for a, b in skips:  # the residual: from below node a around to the + at node b
            y_from = rows[a] + 40
            xl = cx - bw / 2 - 34
            fig.polyline([(cx, y_from), (xl, y_from), (xl, rows[b]), (cx - 15, rows[b])], arrow=True)
            fig.circle(cx, y_from, 3.5, fill=style.INK, stroke=style.INK, width=1)
        fig.text(cx + 10, rows[3] + 40, x_mid, anchor="start")
    fig.text(190, y_out - 12, "out")
    fig.text(530, y_out - 12, "$x$ (to the next block)")
    fig.text(530, 100, "after the last block: one final LN", size=SMALL, color=MUTED)
    fig.text(190, 100, "every sub-layer's sum is normalised", size=SMALL, color=MUTED)
    fig.line(360, 20, 360, 656, stroke="#e4e4e4", width=1)
    return fig


def ffn_swiglu() -> Figure:
    """The ReLU FFN and the SwiGLU FFN, with hidden widths drawn to scale (d_ff = 4 d_model vs 8/3 d_model)."""
    fig = Figure(
        720,
        536,
        "The feed-forward network and SwiGLU",
        "Left: the original FFN maps a d_model-wide vector with W_1 to d_ff = 4 d_model hidden units, applies "
        "max(0, .) and maps back with W_2. Right: SwiGLU maps the input with W_1 and with W_3 to two hidden "
        "vectors of width two thirds of d_ff, multiplies SiLU of the first elementwise by the second, and maps "
        "back with W_2; its three matrices hold as many parameters as the two of the FFN.",
    )
    unit = 30  # drawn width of d_model
    bh = 34

    def vec(cx, y, width_units, label, kind="neutral"):
        w = width_units * unit
        fill, stroke = style.KINDS[kind]
        fig.rect(cx - w / 2, y - 9, w, 18, fill=fill, stroke=stroke, rx=3)
        fig.text(cx + w / 2 + 8, y, label, anchor="start", size=SMALL, color=MUTED)

    # left: the original FFN
    cx = 180
    fig.text(cx, 24, "FFN of the 2017 paper (ReLU)", bold=True)
    fig.text(cx, 48, "max(0, $xW_{1}$ + $b_{1}$)$W_{2}$ + $b_{2}$", size=SMALL)
    vec(cx, 460, 1, "$x$: d_model")
    fig.arrow(cx, 450, cx, 412)
    fig.box(cx - 60, 376, 120, bh, "$W_{1}$", kind="model")
    fig.arrow(cx, 376, cx, 342)
    vec(cx, 332, 4, "")
    fig.text(cx + 68, 332, "d_ff = 4 d_model", anchor="start", size=SMALL, color=MUTED)
    fig.arrow(cx, 322, cx, 262)
    fig.box(cx - 60, 228, 120, bh, "max(0, ·)", kind="neutral")
    fig.arrow(cx, 228, cx, 194)
    vec(cx, 184, 4, "")
    fig.arrow(cx, 174, cx, 140)
    fig.box(cx - 60, 106, 120, bh, "$W_{2}$", kind="model")
    fig.arrow(cx, 106, cx, 80)
    vec(cx, 70, 1, "d_model")
    fig.text(cx, 494, "$W_{1}$: d_model × d_ff,  $W_{2}$: d_ff × d_model", size=SMALL, color=MUTED)
    fig.text(cx, 516, "2 d_model d_ff weights", size=SMALL)

    # right: SwiGLU
    cx, dx = 540, 100
    g = 8 / 3  # d_ff' / d_model
    fig.text(cx, 24, "SwiGLU (Llama, Qwen)", bold=True)
    fig.text(cx, 48, "(SiLU($xW_{1}$) ⊙ $xW_{3}$)$W_{2}$", size=SMALL)
    vec(cx, 460, 1, "$x$: d_model")
    for sign, name in ((-1, "$W_{1}$"), (1, "$W_{3}$")):
        bx = cx + sign * dx
        fig.polyline([(cx, 450), (cx, 432), (bx, 432), (bx, 412)], arrow=True)
        fig.box(bx - 40, 376, 80, bh, name, kind="model")
        fig.arrow(bx, 376, bx, 342)
    fig.rect(cx - dx - g * unit / 2, 323, g * unit, 18, fill="#f0f0f0", stroke="#555555", rx=3)
    fig.rect(cx + dx - g * unit / 2, 323, g * unit, 18, fill="#f0f0f0", stroke="#555555", rx=3)
    fig.text(cx, 300, "d_ff′ = 8/3 d_model", size=SMALL, color=MUTED)
    fig.arrow(cx - dx, 322, cx - dx, 262)
    fig.box(cx - dx - 40, 228, 80, bh, "SiLU", kind="neutral")
    fig.polyline([(cx - dx, 228), (cx - dx, 184), (cx - 15, 184)], arrow=True)
    fig.polyline([(cx + dx, 322), (cx + dx, 184), (cx + 15, 184)], arrow=True)
    _times(fig, cx, 184)
    fig.arrow(cx, 171, cx, 140)
    fig.box(cx - 60, 106, 120, bh, "$W_{2}$", kind="model")
    fig.arrow(cx, 106, cx, 80)
    vec(cx, 70, 1, "d_model")
    fig.text(cx, 494, "$W_{1}$, $W_{3}$: d_model × d_ff′,  $W_{2}$: d_ff′ × d_model", size=SMALL, color=MUTED)
    fig.text(cx, 516, "3 d_model d_ff′ = 2 d_model d_ff weights", size=SMALL)
    fig.line(360, 20, 360, 520, stroke="#e4e4e4", width=1)
    return fig


def figures() -> dict[str, Figure]:
    return {
        "ch06_two_sublayers": two_sublayers(),
        "ch06_residual_stream": residual_stream(),
        "ch06_post_pre_ln": post_pre_ln(),
        "ch06_ffn_swiglu": ffn_swiglu(),
    }
