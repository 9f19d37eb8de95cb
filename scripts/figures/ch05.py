"""Chapter 5's figures: attention without positions, sinusoidal bands, where positions enter, RoPE.

The symbols are the chapter's: ``PE_{pos, 2i} = sin(pos ω_i)``, ``PE_{pos, 2i+1} = cos(pos ω_i)`` with
``ω_i = 10000^{-2i/d}``; RoPE rotates pair ``j`` of a query at position ``m`` by ``m θ_j`` and of a key at
position ``n`` by ``n θ_j`` (``R(α)`` turns anticlockwise, as ``minitransformer.rotary``), so that
``<R_m q, R_n k> = q^T R_{n-m} k``. The curves and the scores are computed here with numpy.
"""

from __future__ import annotations

import numpy as np
import style
from svg import Figure


def _arc(cx, cy, r, a0, a1, n=48):
    """Points of a circular arc (angles in radians, anticlockwise in the maths sense, y up)."""
    t = np.linspace(a0, a1, n)
    return [(cx + r * np.cos(u), cy - r * np.sin(u)) for u in t]


def permutation() -> Figure:
    """'the dog bit the man' and 'the man bit the dog' give the same output vectors, swapped."""
    fig = Figure(
        720,
        430,
        "Attention without positions is permutation-equivariant",
        "The sentences 'the dog bit the man' and 'the man bit the dog' go through the same self-attention "
        "layer without positional information. Each word gets the same output vector in both sentences; "
        "swapping positions 1 and 4 of the input swaps positions 1 and 4 of the output, and nothing else changes.",
    )
    small, muted = style.SMALL, style.MUTED
    bw, gap = 58, 8
    panels = [(24, ["the", "dog", "bit", "the", "man"], "sentence 1: $X$", ""),
              (374, ["the", "man", "bit", "the", "dog"], "sentence 2: $PX$", "positions 1 and 4 swapped")]  # fmt: skip
    y_out, y_att, y_in = 110, 196, 282
    centres = {}
    for x0, words, title, note in panels:
        w = 5 * bw + 4 * gap
        fig.box(x0, y_att, w, 48, kind="model")
        fig.text(x0 + w / 2, y_att + 16, "self-attention", bold=True)
        fig.text(x0 + w / 2, y_att + 35, "same weights, no positions", size=small)
        for p, word in enumerate(words):
            x = x0 + p * (bw + gap)
            cx = x + bw / 2
            swapped = word in ("dog", "man")
            fig.box(x, y_in, bw, 36, word, kind="neutral", bold=swapped)
            fig.text(cx, y_in + 52, str(p), size=small, color=muted)
            fig.arrow(cx, y_in, cx, y_att + 50)
            fig.arrow(cx, y_att, cx, y_out + 38)
            fig.box(x, y_out, bw, 36, kind="weight")
            fig.text(cx, y_out + 18, f"$y$({word})", size=small, bold=swapped)
            centres[(x0, word, p)] = cx
        fig.text(x0 + w / 2, y_in + 80, title)
        if note:
            fig.text(x0 + w / 2, y_in + 100, note, size=small, color=muted)
    # identical output vectors, joined across the panels
    a_dog, b_dog = centres[(24, "dog", 1)], centres[(374, "dog", 4)]
    a_man, b_man = centres[(24, "man", 4)], centres[(374, "man", 1)]
    fig.curve(a_dog, y_out - 2, (a_dog + b_dog) / 2, y_out - 110, b_dog, y_out - 2, stroke=style.WEIGHT, dash="5 4",
              arrow=False)  # fmt: skip
    fig.curve(a_man, y_out - 2, (a_man + b_man) / 2, y_out - 60, b_man, y_out - 2, stroke=style.WEIGHT, dash="5 4",
              arrow=False)  # fmt: skip
    fig.text(360, 30, "the same vectors, in swapped places", size=small, color=style.WEIGHT)
    fig.text(360, 410, "Attn($PX$) = $P$ Attn($X$)", bold=True)
    return fig


def sinusoid_bands() -> Figure:
    """Columns 2i (sin) and 2i+1 (cos) of the table over 64 positions, d = 16: wavelengths 2π/ω_i grow by 10^{1/2}."""
    d, P = 16, 64
    pairs = [0, 1, 2, 3, 7]
    fig = Figure(
        720,
        545,
        "The sinusoidal encoding's frequency bands",
        "For d = 16, the two columns 2i (sine) and 2i+1 (cosine) of pairs i = 0, 1, 2, 3 and 7 plotted over "
        "positions 0 to 64. Pair 0 oscillates with wavelength 2π; each next pair is slower, its wavelength "
        "growing by a factor 10000^(2/d) = 10^(1/2), until pair 7 is almost constant (sine near 0, cosine near 1) "
        "over these positions.",
    )
    small, muted = style.SMALL, style.MUTED
    x0, x1 = 150, 560  # plot area
    row_h, amp = 76, 24
    top = 70
    fig.text(360, 22, "$PE_{pos, 2i}$ = sin($pos$ $\\omega_{i}$),   $PE_{pos, 2i+1}$ = cos($pos$ $\\omega_{i}$),   "
             "$\\omega_{i}$ = 10000^{−2i/d},   d = 16", size=style.FONT_SIZE)  # fmt: skip
    fig.line(150, 48, 180, 48, stroke=style.INK, width=2)
    fig.text(186, 48, "sin: column 2i", anchor="start", size=small)
    fig.line(320, 48, 350, 48, stroke=style.MUTED, width=2, dash="6 4")
    fig.text(356, 48, "cos: column 2i+1", anchor="start", size=small)
    fig.text(x1 + 22, 48, "wavelength 2π/$\\omega_{i}$", anchor="start", size=small, color=muted)
    pos = np.linspace(0, P, 641)
    ys = {}
    for r, i in enumerate(pairs):
        yc = top + row_h / 2 + r * row_h + (22 if i == 7 else 0)
        ys[i] = yc
        omega = 10000.0 ** (-2 * i / d)
        fig.line(x0, yc, x1, yc, stroke="#dddddd", width=1)
        fig.text(x0 - 12, yc - 9, f"pair $i$ = {i}", anchor="end")
        fig.text(x0 - 12, yc + 11, f"columns {2 * i}, {2 * i + 1}", anchor="end", size=small, color=muted)
        sx = x0 + pos / P * (x1 - x0)
        fig.polyline(list(zip(sx, yc - amp * np.sin(pos * omega))), stroke=style.INK, width=1.8)
        fig.polyline(list(zip(sx, yc - amp * np.cos(pos * omega))), stroke=style.MUTED, width=1.8, dash="6 4")
        wl = 2 * np.pi / omega
        fig.text(x1 + 22, yc, f"{wl:,.1f}" if wl < 100 else f"{wl:,.0f}", anchor="start")
    fig.text((x0 + x1) / 2, (ys[3] + ys[7]) / 2, "⋮", size=20, color=muted)
    fig.text(x1 + 40, (ys[3] + ys[7]) / 2, "⋮", size=20, color=muted)
    # the position axis
    ya = ys[7] + amp + 24
    fig.line(x0, ya, x1, ya, stroke=style.INK, width=1.2)
    for p in range(0, P + 1, 16):
        x = x0 + p / P * (x1 - x0)
        fig.line(x, ya, x, ya + 5, stroke=style.INK, width=1.2)
        fig.text(x, ya + 16, str(p), size=small)
    fig.text((x0 + x1) / 2, ya + 36, "position $pos$")
    return fig


def rope_rotation() -> Figure:
    """One RoPE pair: q rotated by mθ, k by nθ; the angle between them, hence the score, depends on n − m only."""
    theta = 1.0  # θ_0 of an 8-dimensional head
    q, k = np.array([1.0, 0.5]), np.array([0.8, -0.3])  # the chapter's "rotate one pair" example
    cases = [(1, 3), (4, 6), (1, 5)]

    def rot(a):
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    scores = [float((rot(m * theta) @ q) @ (rot(n * theta) @ k)) for m, n in cases]
    fig = Figure(
        720,
        405,
        "RoPE rotates queries and keys",
        "One pair of coordinates of a query q = (1, 0.5) and a key k = (0.8, -0.3), with θ = 1 radian. "
        f"The query at position m is turned by mθ and the key at position n by nθ. For (m, n) = (1, 3) and "
        f"(4, 6) both vectors sit at new angles but the angle between them is the same, and so is the score, "
        f"{scores[0]:.2f}; for (1, 5) the offset is 4 and the score is {scores[2]:.2f}.",
    )
    small, muted = style.SMALL, style.MUTED
    scale, cy = 74, 186
    for c, ((m, n), s) in enumerate(zip(cases, scores)):
        cx = 125 + c * 235
        fig.line(cx - 100, cy, cx + 100, cy, stroke="#cccccc", width=1)
        fig.line(cx, cy + 104, cx, cy - 118, stroke="#cccccc", width=1)
        fig.text(cx + 104, cy + 12, "$x_{2j}$", anchor="end", size=small, color=muted)
        fig.text(cx, cy - 128, "$x_{2j+1}$", size=small, color=muted)
        qm, kn = rot(m * theta) @ q, rot(n * theta) @ k
        aq0, ak0 = np.arctan2(q[1], q[0]), np.arctan2(k[1], k[0])
        aq, ak = aq0 + m * theta, ak0 + n * theta
        # the rotations themselves, along the circles of the tips
        rq, rk = scale * np.hypot(*q), scale * np.hypot(*k)
        fig.polyline(_arc(cx, cy, rq, aq0, aq), stroke=style.QUERY, width=1, dash="2 3")
        fig.polyline(_arc(cx, cy, rk, ak0, ak), stroke=style.KEY, width=1, dash="2 3")
        # q and k before (faint) and after (solid) the rotation
        for v, colour in ((q, style.QUERY), (k, style.KEY)):
            fig.arrow(cx, cy, cx + scale * v[0], cy - scale * v[1], stroke=colour, width=1.2, dash="4 3")
        # the angle between the rotated vectors
        lo, hi = (aq, ak) if (ak - aq) % (2 * np.pi) < np.pi else (ak, aq)
        span = (hi - lo) % (2 * np.pi)
        fig.polyline(_arc(cx, cy, 26, lo, lo + span), stroke=style.WEIGHT, width=2.2)
        fig.arrow(cx, cy, cx + scale * qm[0], cy - scale * qm[1], stroke=style.QUERY, width=2.4)
        fig.arrow(cx, cy, cx + scale * kn[0], cy - scale * kn[1], stroke=style.KEY, width=2.4)
        for v, label, colour in ((qm, "$R_{m}q$", style.QUERY), (kn, "$R_{n}k$", style.KEY)):
            u = v / np.hypot(*v)
            fig.text(cx + scale * v[0] + 16 * u[0], cy - scale * v[1] - 14 * u[1], label, color=colour, bold=True)
        fig.text(cx, 312, f"$m$ = {m},  $n$ = {n}", bold=True)
        fig.text(cx, 334, f"offset $n$ − $m$ = {n - m}", size=small)
        fig.text(cx, 356, f"⟨$R_{{m}}q$, $R_{{n}}k$⟩ = {s:.2f}".replace("-", "−"), color=style.WEIGHT)
    for x in (242, 478):
        fig.line(x, 60, x, 366, stroke="#e4e4e4", width=1)
    fig.text(360, 22, "pair $j$ = 0 of a head,  $\\theta_{0}$ = 1 rad", size=small, color=muted)
    fig.text(360, 40, "dashed: $q$ and $k$ before;  dotted: the turns by $m\\theta_{0}$ and $n\\theta_{0}$", size=small,
             color=muted)  # fmt: skip
    fig.text(360, 390, "same offset, same angle between them, same score", size=small, color=muted)
    return fig


def where_positions_enter() -> Figure:
    """One attention layer, bottom to top, with the three places where the chapter's schemes put position."""
    fig = Figure(
        720,
        640,
        "Where each scheme puts the position",
        "One attention layer from the token embeddings at the bottom to the output at the top. Absolute "
        "encodings (sinusoidal or learned) are added to the embeddings before the projections; RoPE rotates "
        "the queries and keys after the projections, leaving the values alone; relative schemes (Shaw et al., "
        "T5, ALiBi) change the scores, T5 and ALiBi by adding a bias b(j - i) before the softmax.",
    )
    small, muted = style.SMALL, style.MUTED
    xv, xq, xk = 110, 230, 340  # the lanes of v, q and k (v on the left keeps its long arrow clear of the notes)
    xs = (xq + xk) / 2  # the scores' lane
    xm = (xv + xk) / 2  # the middle
    # the embeddings and the absolute encodings
    fig.box(xm - 160, 584, 320, 36, "token embeddings $X$", kind="neutral")
    fig.arrow(xm, 584, xm, 553)
    _plus(fig, xm, 540)
    fig.box(20, 522, 66, 36, "$PE$", kind="plain")
    fig.arrow(86, 540, xm - 15, 540)
    for x in (xv, xq, xk):
        fig.polyline([(xm, 527), (xm, 510), (x, 510), (x, 494)], arrow=True)
    for x, name in ((xq, "Q"), (xk, "K"), (xv, "V")):
        fig.box(x - 40, 458, 80, 36, f"$W_{{{name}}}$", kind="model")
    for x, name, kind in ((xq, "$q$", "query"), (xk, "$k$", "key"), (xv, "$v$", "value")):
        fig.arrow(x, 458, x, 424)
        fig.box(x - 24, 392, 48, 30, name, kind=kind)
    # RoPE: q and k only
    for x, name in ((xq, "$R_{m}$"), (xk, "$R_{n}$")):
        fig.arrow(x, 392, x, 362)
        fig.box(x - 42, 326, 84, 36, f"rotate {name}", kind="plain", size=small)
    # scores, bias, softmax
    for x in (xq, xk):
        fig.arrow(x, 326, x, 294)
    fig.box(xq - 42, 256, xk - xq + 84, 38, "scores $q$·$k$ / \\sqrt$d_{k}$", kind="weight")
    fig.arrow(xs, 256, xs, 221)
    _plus(fig, xs, 208)
    fig.box(xk + 8, 190, 74, 36, "$b$($j$ − $i$)", kind="plain", size=small)
    fig.arrow(xk + 8, 208, xs + 15, 208)
    fig.arrow(xs, 195, xs, 170)
    fig.box(xq - 42, 134, xk - xq + 84, 36, "softmax", kind="weight")
    fig.arrow(xs, 134, xs, 104)
    fig.arrow(xv, 392, xv, 104)
    fig.box(xv - 42, 66, xk - xv + 84, 38, "weighted sum of the values", kind="weight")
    fig.arrow(xm, 66, xm, 38)
    fig.text(xm, 26, "output")
    # the three places, explained on the right
    cx = 460
    notes = [
        (540, xm + 15, ["absolute positions", "(sinusoidal §2, learned §5):", "added to the embeddings"]),
        (344, xk + 44, ["RoPE (§7)", "rotates each query and key", "by its position; the values", "are not rotated"]),
        (
            208,
            xk + 84,
            ["relative (§6)", "T5 and ALiBi add a bias", "to the scores; Shaw et al.", "add vectors to the keys"]
            + ["and the values"],
        ),
    ]
    for y, x_from, rows in notes:
        fig.line(x_from, y, cx - 10, y, stroke=muted, width=1, dash="3 3")
        y0 = y - 9
        fig.text(cx, y0, rows[0], anchor="start", bold=True, size=14)
        for r, row in enumerate(rows[1:], start=1):
            fig.text(cx, y0 + r * 18, row, anchor="start", size=small)
    return fig


def _plus(fig: Figure, cx, cy, r=13):
    """An addition: a circle with a plus."""
    fig.circle(cx, cy, r, fill="#ffffff", stroke=style.INK, width=1.5)
    fig.line(cx - r + 4, cy, cx + r - 4, cy, width=1.8)
    fig.line(cx, cy - r + 4, cx, cy + r - 4, width=1.8)


def figures() -> dict[str, Figure]:
    return {
        "ch05_permutation": permutation(),
        "ch05_sinusoid_bands": sinusoid_bands(),
        "ch05_where_positions_enter": where_positions_enter(),
        "ch05_rope_rotation": rope_rotation(),
    }
