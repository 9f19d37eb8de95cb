"""Chapter 4's figures: multi-head attention, the reshapes that split and merge heads, GQA/MQA.

The symbols are the chapter's: ``h`` heads of width ``d_k = d_model / h``,
``(B, T, d)`` tensors split as ``view(B, T, h, d_k).transpose(1, 2)`` (exactly
``MultiHeadAttention._split_heads``) and merged as ``transpose(1, 2).reshape(B, T, d)``
before ``W^O``; grouped-query attention with ``h_kv`` key/value heads, query head
``i`` reading key/value head ``i // (h / h_kv)`` (``repeat_interleave``).
"""

from __future__ import annotations

import style
from svg import Figure

Q_FILL, K_FILL, V_FILL, W_FILL = (style.KINDS[k][0] for k in ("query", "key", "value", "weight"))
Q_DARK = "#f5b27f"  # a second, deeper orange: the features of head 1 (head 0 keeps the light tint)
W_DARK = "#c9aedd"  # a second purple: head 1's output


def _tensor(fig: Figure, x, y, rows, cols, cell, fills, *, outline=style.INK):
    """A grid of cells (one tensor slice) with a thin outline around it."""
    fig.grid(x, y, rows, cols, cell, fills, stroke="#ffffff", width=1.0)
    fig.rect(x, y, cols * cell, rows * cell, stroke=outline, width=1.2, rx=0)


def _head_fills(rows, cols, split, light, dark):
    """Fills of a ``rows x cols`` grid whose columns ``< split`` are head 0 (light), the rest head 1 (dark)."""
    return [[light if j < split else dark for j in range(cols)] for _ in range(rows)]


def multihead_block() -> Figure:
    """h parallel heads, each with its own projections and attention, concatenated and mixed by W^O."""
    fig = Figure(
        720,
        526,
        "Multi-head attention",
        "The input X is projected by each head's own matrices W_i^Q, W_i^K and W_i^V; every head runs "
        "scaled dot-product attention and outputs an n by d_v matrix; the h outputs are concatenated side by "
        "side into n by h d_v and multiplied by W^O, giving the n by d_model output.",
    )
    cards = [(30, "1"), (240, "2"), (510, "h")]  # left edge and index of the three heads drawn
    cw = 180  # card width
    # output and W^O
    fig.box(240, 18, 240, 40, "MultiHead($Q$, $K$, $V$)", kind="neutral")
    fig.text(492, 38, "n × d_model", anchor="start", size=style.SMALL, color=style.MUTED)
    fig.arrow(360, 100, 360, 60)
    fig.box(240, 100, 240, 40, "$W^{O}$", kind="model")
    fig.text(492, 120, "h d_v × d_model", anchor="start", size=style.SMALL, color=style.MUTED)
    fig.arrow(360, 180, 360, 142)
    fig.text(348, 161, "Concat", anchor="end", size=style.SMALL)
    fig.text(372, 161, "n × h d_v = n × d_model", anchor="start", size=style.SMALL, color=style.MUTED)
    # the concatenation: one bar, one segment per head
    bounds = [30, 225, 435, 495, 690]
    for a, b, label in zip(bounds, bounds[1:], ["head_{1}", "head_{2}", "⋯", "head_{h}"]):
        fill, stroke = style.KINDS["weight"] if label != "⋯" else style.KINDS["plain"]
        fig.rect(a, 180, b - a, 36, fill=fill, stroke=stroke, rx=0)
        fig.text((a + b) / 2, 198, label)
    fig.text(465, 330, "⋯", size=22)
    for x0, i in cards:
        cx = x0 + cw / 2
        fig.rect(x0 - 8, 246, cw + 16, 166, stroke=style.MUTED, width=1.2, dash="5 4", rx=8)
        fig.arrow(cx, 262, cx, 218)
        fig.text(cx + 8, 231, "n × d_v", anchor="start", size=style.SMALL, color=style.MUTED)
        fig.box(x0, 262, cw, 50, kind="weight")
        fig.text(cx, 278, "Attention", bold=True)
        fig.text(cx, 298, "scaled by 1/\\sqrt$d_{k}$", size=style.SMALL)
        for j, (role, kind) in enumerate([("Q", "query"), ("K", "key"), ("V", "value")]):
            bx = x0 + j * 64
            fig.box(bx, 356, 52, 40, f"$W^{{{role}}}_{{{i}}}$", kind="model")
            fig.arrow(bx + 26, 356, bx + 26, 314, stroke=style.KINDS[kind][1], width=2)
            fig.arrow(bx + 26, 456, bx + 26, 398)
    fig.box(30, 456, 660, 50, kind="neutral")
    fig.text(360, 473, "$X$   (n × d_model)")
    fig.text(360, 492, "self-attention: $Q$ = $K$ = $V$ = $X$", size=style.SMALL, color=style.MUTED)
    return fig


def head_reshapes() -> Figure:
    """The four steps of section 2 as reshapes of one sequence's tensors (T = 4, d = 8, h = 2)."""
    fig = Figure(
        720,
        540,
        "Splitting and merging the heads",
        "For one sequence with T = 4 and d = 8 split into h = 2 heads: Q of shape (B, T, d) is viewed as "
        "(B, T, h, d_k) and transposed to (B, h, T, d_k), one T by d_k slice per head; attention runs in every "
        "head at once; the heads are transposed back to (B, T, h, d_k), reshaped to (B, T, d) and multiplied "
        "by W^O.",
    )
    c = 12  # cell size
    T, d, dk = 4, 8, 4
    small, muted = style.SMALL, style.MUTED
    wT, wd, wk = T * c, d * c, dk * c  # 48, 96, 48
    wb = 2 * wk + 8  # two head blocks side by side
    hc = 2 * wT + 8  # two head blocks stacked

    def labels(x, y, name, shape):
        if name:
            fig.text(x, y, name)
        fig.text(x, y + 20, shape, size=small, color=muted)

    def heads_side_by_side(x, y, fills):
        for hh, fill in enumerate(fills):
            _tensor(fig, x + hh * (wk + 8), y, T, dk, c, _head_fills(T, dk, dk, fill, fill))

    def heads_stacked(x, y, fills):
        for hh, fill in enumerate(fills):
            _tensor(fig, x, y + hh * (wT + 8), T, dk, c, _head_fills(T, dk, dk, fill, fill))

    def op_arrow(x1, x2, y, label):
        fig.arrow(x1, y, x2, y)
        fig.text((x1 + x2) / 2, y - 13, label, size=small)

    # row 1: project and split
    fig.text(30, 24, "2. split the heads", anchor="start", bold=True)
    fig.text(30, 46, "(1. project: $Q$ = $XW^{Q}$; $K$ and $V$ alike)", anchor="start", size=small, color=muted)
    y1 = 86
    xa, xb, xc = 50, 266, 520
    _tensor(fig, xa, y1, T, d, c, _head_fills(T, d, dk, Q_FILL, Q_DARK))
    fig.text(xa - 10, y1 + wT / 2, "$T$", anchor="end")
    fig.text(xa + wd / 2, y1 - 12, "$d$")
    labels(xa + wd / 2, y1 + wT + 20, "$Q$", "(B, T, d)")
    op_arrow(xa + wd + 12, xb - 12, y1 + wT / 2, "view")
    heads_side_by_side(xb, y1, [Q_FILL, Q_DARK])
    for hh in range(2):
        fig.text(xb + hh * (wk + 8) + wk / 2, y1 - 12, f"head {hh}", size=small)
    labels(xb + wb / 2, y1 + wT + 20, "same memory", "(B, T, h, d_k)")
    op_arrow(xb + wb + 12, xc - 12, y1 + wT / 2, "transpose(1, 2)")
    yc = y1 + wT / 2 - hc / 2
    heads_stacked(xc, yc, [Q_FILL, Q_DARK])
    for hh in range(2):
        fig.text(xc + wk + 8, yc + hh * (wT + 8) + wT / 2, f"head {hh}", anchor="start", size=small)
    labels(xc + wk / 2, yc + hc + 20, "$q$", "(B, h, T, d_k)")

    # 3: attention in every head at once
    ym = 250
    fig.arrow(xc + wk / 2, yc + hc + 52, xc + wk / 2, ym)
    fig.box(300, ym, 400, 58, kind="weight")
    fig.text(500, ym + 19, "3. attend in every head at once", bold=True)
    fig.text(500, ym + 41, "softmax($q$ $k$^{\\top} / \\sqrt$d_{k}$) $v$,  weights (B, h, T, T)", size=small)

    # row 2: merge and project
    xe, y2 = 40, 354
    fig.polyline([(300, ym + 29), (xe + wk / 2, ym + 29), (xe + wk / 2, y2 - 6)], arrow=True)
    fig.text(110, 330, "4. concatenate and project", anchor="start", bold=True)
    heads_stacked(xe, y2, [W_FILL, W_DARK])
    labels(xe + wk / 2, y2 + hc + 20, "heads", "(B, h, T, d_k)")
    ymid = y2 + hc / 2
    yf = ymid - wT / 2
    xf, xg, xw, xo = 213, 399, 519, 587
    op_arrow(xe + wk + 12, xf - 12, ymid, "transpose(1, 2)")
    heads_side_by_side(xf, yf, [W_FILL, W_DARK])
    labels(xf + wb / 2, yf + wT + 20, "", "(B, T, h, d_k)")
    op_arrow(xf + wb + 12, xg - 12, ymid, "reshape")
    _tensor(fig, xg, yf, T, d, c, _head_fills(T, d, dk, W_FILL, W_DARK))
    labels(xg + wd / 2, yf + wT + 20, "Concat", "(B, T, d)")
    fig.arrow(xg + wd + 4, ymid, xw - 4, ymid)
    fig.box(xw, ymid - 20, 44, 40, "$W^{O}$", kind="model")
    fig.arrow(xw + 48, ymid, xo - 4, ymid)
    _tensor(fig, xo, yf, T, d, c, [["#f0f0f0"] * d for _ in range(T)])
    labels(xo + wd / 2, yf + wT + 20, "out", "(B, T, d)")
    fig.text(360, 522, "one of the B sequences is drawn: rows are positions, columns features", size=small, color=muted)
    return fig


def split_contents() -> Figure:
    """Where each number goes: view + transpose versus a direct view (T = 4, d = 8, h = 2)."""
    fig = Figure(
        720,
        430,
        "The reshape needs its transpose",
        "A 4 by 8 table whose entry pf is position p, feature f, is split into two heads. "
        "view(T, h, d_k) then transpose gives head 0 features 0 to 3 of every position and head 1 features "
        "4 to 7; a direct view(h, T, d_k) gives head 0 all features of positions 0 and 1 and head 1 those of "
        "positions 2 and 3.",
    )
    c = 28
    T, d, dk = 4, 8, 4
    small, muted = style.SMALL, style.MUTED

    def fills_of(entries):
        return [[Q_FILL if f < dk else Q_DARK for (_, f) in row] for row in entries]

    def draw(x, y, entries):
        _tensor(fig, x, y, len(entries), len(entries[0]), c, fills_of(entries))
        for r, row in enumerate(entries):
            for j, (p, f) in enumerate(row):
                fig.text(x + j * c + c / 2, y + r * c + c / 2 + 1, f"{p}{f}", size=small)

    table = [[(p, f) for f in range(d)] for p in range(T)]
    x0, y0 = 40, 160
    fig.text(x0 + d * c / 2, y0 - 32, "labels  (T, d)", bold=True)
    fig.text(x0 + d * c / 2, y0 - 12, "entry pf: position p, feature f", size=small, color=muted)
    draw(x0, y0, table)
    fig.text(x0 + dk * c / 2, y0 + T * c + 16, "features 0–3", size=small, color=muted)
    fig.text(x0 + dk * c * 1.5, y0 + T * c + 16, "features 4–7", size=small, color=muted)

    right = [[[(p, f + hh * dk) for f in range(dk)] for p in range(T)] for hh in range(2)]
    flat = [(p, f) for p in range(T) for f in range(d)]
    wrong = [[[flat[(hh * T + p) * dk + f] for f in range(dk)] for p in range(T)] for hh in range(2)]
    xr = 410
    for (title, verdict, heads), yy in [
        (("view(B, T, h, d_k).transpose(1, 2)", "correct", right), 48),
        (("view(B, h, T, d_k)", "wrong", wrong), 262),
    ]:
        fig.text(xr - 8, yy - 22, title, anchor="start", bold=True, size=14)
        for hh, entries in enumerate(heads):
            draw(xr + hh * (dk * c + 22), yy, entries)
            fig.text(xr + hh * (dk * c + 22) + dk * c / 2, yy + T * c + 14, f"head {hh}", size=small)
        note = "every position, one block of features" if verdict == "correct" else "whole positions, mixed features"
        fig.text(xr + dk * c + 11, yy + T * c + 36, f"{verdict}: {note}", size=small, color=muted)
        fig.arrow(x0 + d * c + 14, y0 + T * c / 2, xr - 14, yy + T * c / 2)
    return fig


def gqa_sharing() -> Figure:
    """MHA, GQA and MQA with h = 8 query heads: which key/value head each query head reads, and the cache."""
    h = 8
    fig = Figure(
        720,
        550,
        "Multi-head, grouped-query and multi-query attention",
        "Eight query heads with eight, two and one key/value heads. In multi-head attention each query head "
        "has its own key/value head; in grouped-query attention with two key/value heads query heads 0 to 3 "
        "share key/value head 0 and 4 to 7 share head 1; in multi-query attention all eight share one. "
        "The KV cache holds 2 h_kv d_head numbers per token and layer: 1, 1/4 and 1/8 of the multi-head cache.",
    )
    small, muted = style.SMALL, style.MUTED
    fig.text(360, 24, "query head $i$ reads key/value head ⌊$i$ / ($h$ / $h_{kv}$)⌋", bold=False)
    x_heads, bw, gap = 166, 32, 10  # query heads: 8 boxes from x_heads
    x_cache = 540
    fig.text(x_heads + (h * bw + (h - 1) * gap) / 2, 56, "query heads and key/value heads", size=small, color=muted)
    fig.text(x_cache + 72, 56, "KV cache per token", size=small, color=muted)
    fig.text(x_cache + 72, 72, "and layer: 2 $h_{kv}$ $d_{head}$", size=small, color=muted)
    rows = [("multi-head", 8, "$h_{kv}$ = $h$ = 8", "×1"), ("grouped-query", 2, "$h_{kv}$ = 2", "×1/4"),
            ("multi-query", 1, "$h_{kv}$ = 1", "×1/8")]  # fmt: skip
    for r, (name, kv, sub, frac) in enumerate(rows):
        y = 100 + r * 140
        if r:
            fig.line(20, y - 16, 700, y - 16, stroke="#dddddd", width=1)
        fig.text(24, y + 34, name, anchor="start", bold=True)
        fig.text(24, y + 56, sub, anchor="start")
        group = h // kv
        qx = [x_heads + i * (bw + gap) for i in range(h)]
        kv_x = [sum(qx[g * group : (g + 1) * group]) / group for g in range(kv)]  # under its group's centre
        for i in range(h):
            g = i // group
            fig.line(qx[i] + bw / 2, y + 30, kv_x[g] + bw / 2, y + 76, stroke=style.MUTED, width=1.3)
        for i in range(h):
            fig.box(qx[i], y, bw, 30, str(i), kind="query", size=small)
        for g in range(kv):
            fig.rect(kv_x[g], y + 76, bw / 2, 30, fill=K_FILL, stroke=style.KEY, rx=3)
            fig.rect(kv_x[g] + bw / 2, y + 76, bw / 2, 30, fill=V_FILL, stroke=style.VALUE, rx=3)
            fig.text(kv_x[g] + bw / 2, y + 118, str(g), size=small)
        # the cache: h_kv key slots and h_kv value slots (one slot = d_head numbers)
        slot = 8
        for j in range(2 * kv):
            fill, stroke = style.KINDS["memory"]
            fig.rect(x_cache + j * slot, y + 76, slot, 30, fill=fill, stroke=stroke, width=1, rx=0)
        fig.text(x_cache, y + 62, f"{2 * kv} $d_{{head}}$ numbers", anchor="start", size=small)
        fig.text(x_cache + 2 * kv * slot + 10, y + 91, frac, anchor="start", bold=True)
    fig.rect(150, 516, 14, 14, fill=Q_FILL, stroke=style.QUERY, rx=2)
    fig.text(170, 523, "query head", anchor="start", size=small)
    fig.rect(275, 516, 7, 14, fill=K_FILL, stroke=style.KEY, rx=1)
    fig.rect(282, 516, 7, 14, fill=V_FILL, stroke=style.VALUE, rx=1)
    fig.text(295, 523, "key | value head", anchor="start", size=small)
    fig.rect(425, 516, 8, 14, fill=style.KINDS["memory"][0], stroke=style.KINDS["memory"][1], width=1, rx=0)
    fig.text(439, 523, "cached $d_{head}$ numbers (a key or a value)", anchor="start", size=small)
    return fig


def figures() -> dict[str, Figure]:
    return {
        "ch04_multihead_block": multihead_block(),
        "ch04_head_reshapes": head_reshapes(),
        "ch04_split_contents": split_contents(),
        "ch04_gqa_sharing": gqa_sharing(),
    }
