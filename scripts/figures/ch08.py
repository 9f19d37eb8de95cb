"""Chapter 8 (efficient attention): the figures.

* ``ch08_kv_cache``: one layer's KV cache during generation: step ``t`` appends one
  key and one value per KV head, and ``q_t`` attends to the ``t`` cached positions.
* ``ch08_split_kv``: flash-decoding (``kernels/decode.cu``): one query, the cache cut
  into pieces scanned by different thread blocks, partial ``m, ℓ, o`` combined at the end.
* ``ch08_memory_hierarchy``: registers, shared memory (SRAM) and HBM, with published
  sizes and bandwidths of the T4, A100 and H100, and what flash attention keeps where.
* ``ch08_flash_tiling``: the tiles of the flash forward pass (``tiled_numpy.py`` and
  ``teaching_forward.cu``): query tiles ``Q_i`` of ``B_r`` rows in the outer loop, key and
  value tiles of ``B_c`` rows in the inner loop, and the ``N x N`` scores never stored.
* ``ch08_linear_attention``: ``(φ(Q)φ(K)^T)V`` against ``φ(Q)(φ(K)^T V)``, drawn to scale.
"""

from __future__ import annotations

import style
from svg import Figure

FILL = {kind: style.KINDS[kind][0] for kind in style.KINDS}
EDGE = {kind: style.KINDS[kind][1] for kind in style.KINDS}
NOTE = style.SMALL + 1  # annotations


# -- helpers --------------------------------------------------------------------------
def slots(fig: Figure, x, y, n, w, h, pitch, kind, *, filled, new=None, dashed_after=True):
    """A row of ``n`` cache slots: the first ``filled`` in the ``kind`` tint, slot ``new``
    emphasised, the rest empty (dashed outline: allocated, not yet written)."""
    for s in range(n):
        sx = x + s * pitch
        if s == new:
            fig.rect(sx, y, w, h, fill=EDGE[kind], stroke=EDGE[kind], width=2, rx=2)
        elif s < filled:
            fig.rect(sx, y, w, h, fill=FILL[kind], stroke=EDGE[kind], width=1, rx=2)
        else:
            fig.rect(
                sx, y, w, h, fill=style.PAPER, stroke="#b0b0b0", width=1, rx=2, dash="3 2" if dashed_after else None
            )


def blocked(fig: Figure, x, y, w, h, n, kind, *, vertical, highlight=None, labels=None, size=style.FONT_SIZE):
    """A matrix drawn as ``n`` tiles along one axis; tile ``highlight`` filled, the others tinted."""
    for k in range(n):
        if vertical:
            tx, ty, tw, th = x, y + k * h / n, w, h / n
        else:
            tx, ty, tw, th = x + k * w / n, y, w / n, h
        strong = k == highlight
        fig.rect(tx, ty, tw, th, fill=EDGE[kind] if strong else FILL[kind], stroke=EDGE[kind], width=1.2, rx=0)
        if labels and labels[k]:
            fig.text(tx + tw / 2, ty + th / 2, labels[k], size=size, color=style.PAPER if strong else style.INK)


def brace_h(fig: Figure, x1, x2, y, depth=7, *, up=False):
    """A horizontal square bracket from ``x1`` to ``x2`` (its ends point up or down)."""
    e = -depth if up else depth
    fig.polyline([(x1, y - e), (x1, y), (x2, y), (x2, y - e)], stroke=style.MUTED, width=1.3)
    fig.line((x1 + x2) / 2, y, (x1 + x2) / 2, y + e * 0.8, stroke=style.MUTED, width=1.3)


# -- figures --------------------------------------------------------------------------
def kv_cache() -> Figure:
    fig = Figure(
        700,
        530,
        "The KV cache of one layer during generation",
        "Two rows of slots for the key cache and two for the value cache, one row per KV head, preallocated "
        "for the whole context. Slots 1 to t-1 are already filled; at step t the new token's key k_t and "
        "value v_t are written into slot t of every KV head; the remaining slots are still empty. The query "
        "q_t attends to the t stored keys and values. Each step adds 2 times H_kv times d_head numbers per "
        "layer, so the cache grows linearly with the sequence.",
    )
    n, t = 14, 8  # slots drawn, the current step (1-based)
    x0, pitch, sw, sh = 150, 30, 24, 34
    xt = x0 + (t - 1) * pitch  # slot t
    k_rows, v_rows = (112, 152), (272, 312)
    for rows, kind, name in ((k_rows, "key", "K cache"), (v_rows, "value", "V cache")):
        for row_y, label in zip(rows, ("KV head 1", "KV head 2")):
            fig.text(x0 - 12, row_y + sh / 2, label, anchor="end", size=NOTE)
            slots(fig, x0, row_y, n, sw, sh, pitch, kind, filled=t - 1, new=t - 1)
        right = x0 + n * pitch + 8
        fig.text(right, rows[0] + 6, name, anchor="start", bold=True, color=EDGE[kind])
        fig.lines(right, rows[0] + 30, ["(B, $H_{kv}$,", "$S_{max}$, $d_{head}$)"], anchor="start", size=NOTE)
    # positions
    for s, label in ((0, "1"), (t - 2, "t−1"), (n - 1, "$S_{max}$")):
        fig.text(x0 + s * pitch + sw / 2, v_rows[1] + sh + 18, label, size=NOTE, color=style.MUTED)
    fig.text(x0 + (t + 2.5) * pitch + sw / 2, k_rows[0] - 14, "allocated, still empty", size=NOTE, color=style.MUTED)
    # k_t and v_t are appended at slot t
    fig.box(xt - 10, 30, sw + 20, 30, "$k_{t}$", kind="key")
    fig.arrow(xt + sw / 2, 60, xt + sw / 2, k_rows[0] - 2, stroke=style.KEY, width=1.8)
    fig.box(xt - 10, 392, sw + 20, 30, "$v_{t}$", kind="value")
    fig.arrow(xt + sw / 2, 392, xt + sw / 2, v_rows[1] + sh + 2, stroke=style.VALUE, width=1.8)
    fig.text(xt + sw + 18, 45, "append", anchor="start", size=NOTE, color=style.KEY)
    fig.text(xt + sw + 18, 407, "append", anchor="start", size=NOTE, color=style.VALUE)
    # q_t reads positions 1..t
    brace_h(fig, x0, xt + sw, 200)
    fig.box(x0 + 40, 218, 42, 30, "$q_{t}$", kind="query")
    fig.text(x0 + 92, 233, "attends to the t stored keys and values", anchor="start", size=14)
    # the cost of one step, and of T steps
    fig.lines(
        24,
        444,
        [
            "One slot holds one vector of $d_{head}$ numbers.",
            "Each step writes 2 · $H_{kv}$ · $d_{head}$ numbers per layer (a key and a value per KV head).",
            "After T tokens: 2 · layers · $H_{kv}$ · $d_{head}$ · T · bytes per number — linear in T.",
        ],
        anchor="start",
        size=14,
        leading=1.5,
    )
    return fig


def split_kv() -> Figure:
    fig = Figure(
        700,
        560,
        "Split-KV decoding",
        "One query vector q at the top is sent to four pieces of a long key and value cache; each piece is "
        "scanned by its own thread block, which keeps a partial running max m_p, sum l_p and un-normalised "
        "output o_p. A second pass combines the four partials: M is the largest m_p, each partial is rescaled "
        "by exp(m_p - M), and the sum of the rescaled outputs divided by the sum of the rescaled l_p is the "
        "attention output O.",
    )
    # the query
    fig.box(40, 20, 130, 36, "$q$  (1 × $d_{head}$)", kind="query", size=14)
    fig.lines(
        190,
        30,
        ["pass 1 (flash_decode_partial): one thread block per piece,", "all in parallel, each with its own m, ℓ, o"],
        anchor="start",
        size=NOTE,
    )
    pieces = 4
    pw, gap, x0 = 140, 14, 49
    per = 10
    bus_y = 88
    centres = [x0 + p * (pw + gap) + pw / 2 for p in range(pieces)]
    fig.line(105, 56, 105, bus_y, stroke=style.QUERY, width=1.6)
    fig.line(centres[0], bus_y, centres[-1], bus_y, stroke=style.QUERY, width=1.6)
    for p, c in enumerate(centres):
        px = x0 + p * (pw + gap)
        fig.arrow(c, bus_y, c, 116, stroke=style.QUERY, width=1.6)
        for k in range(per):
            fig.rect(px + k * pw / per, 118, pw / per, 24, fill=FILL["key"], stroke=EDGE["key"], width=1, rx=0)
            fig.rect(px + k * pw / per, 146, pw / per, 24, fill=FILL["value"], stroke=EDGE["value"], width=1, rx=0)
        fig.text(c, 186, f"piece {p + 1}: block {p + 1}", size=NOTE, color=style.MUTED)
        fig.arrow(c, 196, c, 220)
        fig.box(px + 6, 222, pw - 12, 36, f"$m_{{{p + 1}}}$, $\\ell_{{{p + 1}}}$, $o_{{{p + 1}}}$", kind="weight")
    fig.text(x0 - 10, 130, "K", anchor="end", bold=True, color=style.KEY)
    fig.text(x0 - 10, 158, "V", anchor="end", bold=True, color=style.VALUE)
    # the combine pass
    cw, ch, cy = 340, 112, 330
    cx = 350 - cw / 2
    for k, c in enumerate(centres):
        fig.arrow(c, 258, cx + 50 + k * (cw - 100) / 3, cy)
    fig.box(cx, cy, cw, ch, "", kind="weight")
    fig.lines(
        350,
        cy + 24,
        [
            "M = max$_{p}$ $m_{p}$",
            "ℓ = Σ$_{p}$ exp($m_{p}$ − M) $\\ell_{p}$",
            "O = Σ$_{p}$ exp($m_{p}$ − M) $o_{p}$ / ℓ",
        ],
        size=15,
        leading=1.7,
    )
    fig.lines(24, cy + 40, ["pass 2:", "rescale to one", "common max"], anchor="start", size=NOTE)
    fig.arrow(350, cy + ch, 350, 476)
    fig.box(270, 478, 160, 36, "$O$  (1 × $d_{head}$)", kind="weight", size=14)
    fig.text(350, 538, "exactly the attention output over the whole cache", size=NOTE, color=style.MUTED)
    return fig


def memory_hierarchy() -> Figure:
    fig = Figure(
        700,
        470,
        "The GPU memory hierarchy",
        "Three memory levels stacked like a pyramid, fastest and smallest on top. Registers: 256 KB per "
        "streaming multiprocessor on the T4, A100 and H100, private to each thread; flash attention keeps "
        "each row's m, l and output there. Shared memory (SRAM), on chip: 64 KB per multiprocessor on the T4, "
        "164 KB on the A100, 228 KB on the H100; it holds the tiles. Off-chip GPU memory: 16 GB at 0.32 TB/s "
        "(T4, GDDR6), 40 or 80 GB at 1.6 to 2.0 TB/s (A100), 80 GB at 3.35 TB/s (H100); it holds Q, K, V, O.",
    )
    cx = 140
    levels = [  # y, width, height, name, where, holds
        (70, 150, 80, "registers", "per thread", "$m$, $\\ell$, $o$ of a row"),
        (170, 210, 92, "shared memory", "(SRAM), per SM", "tiles $Q_{i}$, $K_{j}$, $V_{j}$, $P$"),
        (300, 260, 92, "HBM", "GPU memory, off chip", "$Q$, $K$, $V$, $O$, $L$"),
    ]
    for y, w, h, name, where, holds in levels:
        fig.box(cx - w / 2, y, w, h, "", kind="memory")
        fig.text(cx, y + 20, name, bold=True)
        fig.text(cx, y + 42, where, size=NOTE)
        fig.text(cx, y + 66, holds, size=14)
    fig.line(14, 282, 690, 282, stroke=style.MUTED, width=1.2, dash="6 4")
    fig.text(686, 272, "on chip", anchor="end", size=NOTE, color=style.MUTED)
    fig.text(686, 294, "off chip", anchor="end", size=NOTE, color=style.MUTED)
    # the published numbers
    cols = [("T4", 370), ("A100", 500), ("H100 SXM", 630)]
    for name, x in cols:
        fig.text(x, 40, name, bold=True)
    fig.line(300, 54, 690, 54, stroke="#cccccc", width=1)
    rows = [
        (110, ["256 KB / SM", "256 KB / SM", "256 KB / SM"], None),
        (204, ["64 KB / SM", "164 KB / SM", "228 KB / SM"], ["× 40 SMs", "× 108 SMs", "× 132 SMs"]),
        (334, ["16 GB (GDDR6)", "40 or 80 GB", "80 GB"], ["0.32 TB/s", "1.6–2.0 TB/s", "3.35 TB/s"]),
    ]
    for y, first, second in rows:
        for k, (_, x) in enumerate(cols):
            fig.text(x, y, first[k], size=14)
            if second:
                fig.text(x, y + 24, second[k], size=14, color=style.MUTED)
    fig.lines(
        24,
        420,
        [
            "Shared memory moves roughly ten times more bytes per second than HBM",
            "(A100: about 19 TB/s against 1.5–2.0 TB/s, as Dao et al. 2022 estimate).",
        ],
        anchor="start",
        size=14,
        leading=1.45,
    )
    return fig


def flash_tiling() -> Figure:
    fig = Figure(
        720,
        722,
        "Tiles of the flash attention forward pass",
        "Q on the left is cut into four row tiles of B_r rows, K transposed on top into three column tiles of "
        "B_c keys, V above the output into the same three tiles of B_c rows, and the output O into four tiles "
        "of B_r rows. For query tile Q_i the inner loop visits the key tiles one by one: the current tile S_ij "
        "of the N by N score matrix exists only in SRAM, the tiles already visited are folded into the running "
        "max m, sum l and output of each row, and the rest of the score matrix is never stored.",
    )
    N, d, Tr, Tc, i, j = 240, 44, 4, 3, 1, 1
    Br, Bc = N / Tr, N / Tc
    qx, sx, top = 180, 240, 320  # Q's left edge, S's left edge, S's top edge
    ox = sx + N + 46  # O (and V above it)
    # Q, K^T, V, O
    blocked(fig, qx, top, d - 4, N, Tr, "query", vertical=True, highlight=i, labels=[None, "$Q_{i}$", None, None])
    blocked(fig, sx, top - 10 - d, N, d, Tc, "key", vertical=False, highlight=j, labels=[None, "$K_{j}^{\\top}$", None])
    blocked(fig, ox, top - 30 - N, d, N, Tc, "value", vertical=True, highlight=j, labels=[None, "$V_{j}$", None])
    blocked(fig, ox, top, d, N, Tr, "weight", vertical=True, highlight=i, labels=[None, "$O_{i}$", None, None])
    fig.text(qx - 8, top + Br / 2, "Q", anchor="end", bold=True)
    fig.text(sx - 14, top - 10 - d / 2, "$K^{\\top}$", anchor="end", bold=True)
    fig.text(ox - 12, top - 30 - N / 2, "V", anchor="end", bold=True)
    fig.text(ox + d / 2, top + N + 18, "O", bold=True)
    # the running statistics next to O
    for k, name in enumerate(("m", "ℓ")):
        mx = ox + d + 18 + k * 28
        blocked(fig, mx, top, 16, N, Tr, "weight", vertical=True, highlight=i)
        fig.text(mx + 8, top - 14, f"${name}$", size=15)
    # the score matrix: only row i's tiles are drawn
    fig.rect(sx, top, N, N, fill="none", stroke=style.MUTED, width=1.3, rx=0, dash="6 4")
    ry = top + i * Br
    fig.rect(sx, ry, Bc, Br, fill=FILL["weight"], stroke=EDGE["weight"], width=1.2, rx=0)
    fig.text(sx + Bc / 2, ry + Br / 2, "done", size=NOTE)
    fig.rect(sx + Bc, ry, Bc, Br, fill=EDGE["weight"], stroke=EDGE["weight"], width=2, rx=0)
    fig.text(sx + 1.5 * Bc, ry + Br / 2, "$S_{ij}$", color=style.PAPER)
    fig.rect(sx + 2 * Bc, ry, Bc, Br, fill=style.PAPER, stroke=EDGE["weight"], width=1.2, rx=0, dash="4 3")
    fig.text(sx + 2.5 * Bc, ry + Br / 2, "next", size=NOTE, color=style.MUTED)
    fig.lines(sx + N / 2, top + 2.6 * Br, ["N × N scores:", "never stored"], size=14, color=style.MUTED)
    # sizes
    fig.text(sx + 1.5 * Bc, top - 10 - d - 14, "$B_{c}$", size=15)
    fig.text(qx - 8, ry + Br / 2, "$B_{r}$", anchor="end", size=15)
    fig.text(qx + (d - 4) / 2, top + N + 18, "$d$", size=15)
    # the loops
    fig.arrow(sx, top - 10 - d - 40, sx + N, top - 10 - d - 40, stroke=style.INK, width=1.6)
    fig.text(sx + N / 2, top - 10 - d - 58, "inner loop: key tiles j", size=14)
    fig.arrow(qx - 44, top, qx - 44, top + N, stroke=style.INK, width=1.6)
    fig.lines(qx - 54, top + 22, ["outer", "loop:", "query", "tiles i"], anchor="end", size=14)
    fig.lines(qx - 54, top + 140, ["one", "thread", "block", "each"], anchor="end", size=NOTE, color=style.MUTED)
    # legend: states of a tile
    lx, ly = 24, 36
    fig.text(lx, ly, "For query tile i:", anchor="start", bold=True, size=14)
    for k, (fill, stroke, dash, text) in enumerate(
        [
            (EDGE["weight"], EDGE["weight"], None, "current tile: in SRAM"),
            (FILL["weight"], EDGE["weight"], None, "done: in $m$, $\\ell$, $o$"),
            (style.PAPER, EDGE["weight"], "4 3", "still to come"),
        ]
    ):
        y = ly + 28 + k * 26
        fig.rect(lx, y - 8, 22, 16, fill=fill, stroke=stroke, width=1.2, rx=0, dash=dash)
        fig.text(lx + 30, y, text, anchor="start", size=14)
    # the update, per tile and at the end
    fig.lines(
        24,
        top + N + 54,
        [
            "For each key tile j, in SRAM:  $S_{ij}$ = $Q_{i}$ $K_{j}^{\\top}$ / \\sqrt$d$  ($B_{r}$ × $B_{c}$),",
            "$m_{new}$ = max($m$, rowmax $S_{ij}$),  $P$ = exp($S_{ij}$ − $m_{new}$),  α = exp($m$ − $m_{new}$),",
            "$\\ell$ ← α$\\ell$ + rowsum $P$,  $o$ ← α$o$ + $P$$V_{j}$,  $m$ ← $m_{new}$.",
            "After the last j:  $O_{i}$ = $o$ / $\\ell$  and  $L_{i}$ = $m$ + log $\\ell$  are written to HBM.",
        ],
        anchor="start",
        size=15,
        leading=1.6,
    )
    return fig


def linear_attention() -> Figure:
    fig = Figure(
        700,
        500,
        "Linear attention: the order of the products",
        "Top: phi of Q, n by r, times phi of K transposed, r by n, gives an n by n matrix, which times V, n by "
        "d_v, gives the output: quadratic in n. Bottom: phi of K transposed times V first gives a small r by "
        "d_v matrix; phi of Q times it gives the same n by d_v output: linear in n. The shapes are drawn to "
        "scale.",
    )
    n, r, dv = 150, 26, 26

    def mat(x, y, w, h, kind, inside="", above="", shape=""):
        fig.rect(x, y, w, h, fill=FILL[kind], stroke=EDGE[kind], width=1.4, rx=2)
        if inside:
            fig.text(x + w / 2, y + h / 2, inside, size=14)
        if above:
            fig.text(x + w / 2, y - 14, above, size=14)
        if shape:
            fig.text(x + w / 2, y + h + 16, shape, size=NOTE, color=style.MUTED)

    def op(x, y, s, size=18):
        fig.text(x, y, s, size=size)

    # top: (phi(Q) phi(K)^T) V
    fig.text(24, 22, "Left to right:  (φ(Q) φ(K)$^{\\top}$) V", anchor="start", bold=True)
    y0 = 62
    mid = y0 + n / 2
    mat(24, y0, r, n, "query", above="φ(Q)", shape="n × r")
    op(66, mid, "×")
    mat(84, mid - r / 2, n, r, "key", inside="φ(K)$^{\\top}$", shape="r × n")
    op(250, mid, "=")
    mat(268, y0, n, n, "weight", inside="n × n")
    op(436, mid, "×")
    mat(454, y0, dv, n, "value", above="V", shape="n × $d_{v}$")
    op(500, mid, "=")
    mat(520, y0, dv, n, "weight", above="O", shape="n × $d_{v}$")
    fig.lines(566, mid - 10, ["O($n^{2}$ r) time,", "n × n memory"], anchor="start", size=14)
    fig.line(16, 250, 684, 250, stroke="#dddddd", width=1)
    # bottom: phi(Q) (phi(K)^T V)
    fig.text(24, 274, "Right to left:  φ(Q) (φ(K)$^{\\top}$ V)", anchor="start", bold=True)
    y1 = 316
    mid = y1 + n / 2
    mat(24, mid - r / 2, n, r, "key", inside="φ(K)$^{\\top}$", shape="r × n")
    op(192, mid, "×")
    mat(210, y1, dv, n, "value", above="V", shape="n × $d_{v}$")
    op(256, mid, "=")
    mat(274, mid - r / 2, dv, r, "weight", shape="r × $d_{v}$")
    op(336, mid, "then", size=14)
    mat(370, y1, r, n, "query", above="φ(Q)", shape="n × r")
    op(414, mid, "×")
    mat(432, mid - r / 2, dv, r, "weight", shape="r × $d_{v}$")
    op(478, mid, "=")
    mat(496, y1, dv, n, "weight", above="O", shape="n × $d_{v}$")
    fig.lines(544, mid - 10, ["O(n r $d_{v}$) time:", "linear in n"], anchor="start", size=14)
    return fig


def figures() -> dict[str, Figure]:
    return {
        "ch08_kv_cache": kv_cache(),
        "ch08_split_kv": split_kv(),
        "ch08_memory_hierarchy": memory_hierarchy(),
        "ch08_flash_tiling": flash_tiling(),
        "ch08_linear_attention": linear_attention(),
    }
