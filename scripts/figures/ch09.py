"""Chapter 9 (attention beyond text): the figures.

* ``ch09_vit_patches``: the chapter's ``TinyViT``: a 32 x 32 image cut into 8 x 8 patches,
  flattened, projected, given 2-D positions, a CLS token prepended, encoded, classified.
* ``ch09_graph_mask``: the chapter's graph (a ring 0-4 with the chain 4-5-6-7) and its
  adjacency mask with self-loops (``True`` = may attend).
* ``ch09_multimodal``: concatenation against cross-attention, and cross-attention as the
  text rows of a masked concatenation.
* ``ch09_session_recommender``: ``SessionRecommender.forward``: one query from the most
  recent click, attention over the history, a residual read-out, scores over the catalogue.
"""

from __future__ import annotations

import math

import style
from svg import Figure

FILL = {kind: style.KINDS[kind][0] for kind in style.KINDS}
EDGE = {kind: style.KINDS[kind][1] for kind in style.KINDS}
NOTE = style.SMALL + 1


# -- helpers --------------------------------------------------------------------------
def mask_grid(fig: Figure, x, y, n_rows, n_cols, cell, allowed, *, skip_row=None):
    """A boolean mask (rows = queries, columns = keys): dark = may attend, light = blocked.
    Rows for which ``skip_row(i)`` is true are left out (drawn as empty outlines)."""
    for i in range(n_rows):
        for j in range(n_cols):
            cx, cy = x + j * cell, y + i * cell
            if skip_row and skip_row(i):
                fig.rect(cx, cy, cell, cell, fill=style.PAPER, stroke="#d0d0d0", width=0.8, rx=0)
            else:
                fill = style.MAY_ATTEND if allowed(i, j) else style.BLOCKED
                fig.rect(cx, cy, cell, cell, fill=fill, stroke=style.PAPER, width=1, rx=0)


def legend(fig: Figure, x, y, *, size=NOTE):
    """Dark = may attend, light = blocked."""
    fig.rect(x, y - 7, 14, 14, fill=style.MAY_ATTEND, stroke=style.MAY_ATTEND, rx=0)
    fig.text(x + 20, y, "may attend", anchor="start", size=size)
    fig.rect(x + 116, y - 7, 14, 14, fill=style.BLOCKED, stroke="#c8c8c8", width=1, rx=0)
    fig.text(x + 136, y, "blocked", anchor="start", size=size)


def plus(fig: Figure, cx: float, cy: float, r: float = 10) -> None:
    fig.circle(cx, cy, r, fill=style.PAPER, stroke=style.INK)
    fig.line(cx - r + 4, cy, cx + r - 4, cy)
    fig.line(cx, cy - r + 4, cx, cy + r - 4)


# -- figures --------------------------------------------------------------------------
def vit_patches() -> Figure:
    fig = Figure(
        720,
        720,
        "Image patches as tokens",
        "Bottom: a 32 by 32 image with a disk, cut into a 4 by 4 grid of 8 by 8 patches numbered 0 to 15 row "
        "by row. Each patch is flattened to 64 numbers, a linear layer maps each to a 32-dimensional token, "
        "and a fixed 2-D position code of its row and column is added. A learned CLS token is put in front, "
        "the 17 tokens go through two encoder layers, and a linear classifier reads the CLS token's output "
        "to give 4 class scores.",
    )
    pitch, w = 37, 31
    col = [96 + k * pitch for k in range(16)]  # left edges of the 16 patch columns
    cls_x = 50
    right = col[-1] + w

    flow_x = col[-1] + w / 2  # the arrows between the stages run up the last column

    def caption(y, s):
        fig.text(col[0], y, s, anchor="start", size=14)

    # the image
    ix, iy, size = 60, 540, 160
    fig.rect(ix, iy, size, size, fill="#e4e4e4", stroke=style.INK, width=1.2, rx=0)
    fig.circle(ix + 98, iy + 70, 36, fill="#9a9a9a", stroke="#9a9a9a", width=1)
    cell = size / 4
    for k in range(1, 4):
        fig.line(ix + k * cell, iy, ix + k * cell, iy + size, stroke=style.PAPER, width=2.5)
        fig.line(ix, iy + k * cell, ix + size, iy + k * cell, stroke=style.PAPER, width=2.5)
    for n in range(16):
        r, c = divmod(n, 4)
        fig.text(ix + c * cell + 11, iy + r * cell + 11, str(n), size=style.SMALL, bold=True)
    fig.lines(
        250,
        566,
        [
            "image (B, C, 32, 32), C = 1",
            "patch size p = 8: a 4 × 4 grid,",
            "N = (32/8)$^{2}$ = 16 patches,",
            "numbered row by row",
        ],
        anchor="start",
        size=14,
        leading=1.5,
    )
    fig.arrow(ix + size / 2, iy, ix + size / 2, 486)
    fig.text(ix + size / 2 + 8, 512, "patchify", anchor="start", size=14)
    # flattened patches
    caption(410, "each patch flattened to C·p·p = 64 numbers: (B, 16, 64)")
    for k, x in enumerate(col):
        fig.box(x, 428, w, 56, str(k), kind="neutral", size=style.SMALL, rx=3)
    fig.arrow(flow_x, 428, flow_x, 392)
    fig.box(
        col[0],
        350,
        right - col[0],
        40,
        "linear patch embedding, 64 → 32 (shared by all patches)",
        kind="model",
        size=14,
    )
    fig.arrow(flow_x, 350, flow_x, 334)
    # tokens + positions
    for k, x in enumerate(col):
        r, c = divmod(k, 4)
        fig.box(x, 300, w, 32, str(k), kind="neutral", size=style.SMALL, rx=3)
        fig.rect(x, 262, w, 28, fill=style.PAPER, stroke=style.MUTED, width=1, rx=3, dash="3 2")
        fig.text(x + w / 2, 276, f"{r},{c}", size=style.SMALL, color=style.MUTED)
    fig.text(col[0] - 12, 276, "+", size=18)
    caption(244, "+ fixed 2-D sinusoidal positions (row, column): half of the 32 numbers each")
    fig.arrow(flow_x, 262, flow_x, 206)
    # the sequence with CLS
    caption(150, "prepend the learned CLS token (it gets no position): (B, 17, 32)")
    fig.box(cls_x, 168, w + 4, 36, "CLS", kind="neutral", size=style.SMALL, bold=True, rx=3)
    for k, x in enumerate(col):
        fig.box(x, 172, w, 32, str(k), kind="neutral", size=style.SMALL, rx=3)
    fig.arrow(cls_x + (w + 4) / 2, 168, cls_x + (w + 4) / 2, 132)
    fig.box(cls_x - 10, 92, right - cls_x + 10, 40, "", kind="model")
    fig.text(
        (cls_x + right) / 2,
        112,
        "2 pre-LN encoder layers (width 32, 2 heads): all 17 tokens attend to each other",
        size=14,
    )
    fig.arrow(cls_x + (w + 4) / 2, 92, cls_x + (w + 4) / 2, 58)
    fig.box(cls_x - 10, 22, 330, 36, "LayerNorm → linear → 4 class scores", kind="model", size=14)
    fig.text(right, 40, "the other 16 outputs are not used", anchor="end", size=NOTE, color=style.MUTED)
    return fig


def graph_mask() -> Figure:
    fig = Figure(
        690,
        370,
        "A graph as an attention mask",
        "Left: the chapter's graph, a ring of nodes 0 to 4 with a chain 4, 5, 6, 7 hanging off node 4; every "
        "node also has a self-loop. Node 4 is highlighted with its neighbours 0, 3 and 5. Right: the 8 by 8 "
        "mask, rows the querying node and columns the node attended to, dark where the nodes share an edge or "
        "are the same node. Row 4 is dark in columns 0, 3, 4 and 5.",
    )
    cx, cy, R = 130, 180, 74
    pos = {}
    angles = {4: 0, 0: -72, 1: -144, 2: 144, 3: 72}
    for node, a in angles.items():
        pos[node] = (cx + R * math.cos(math.radians(a)), cy + R * math.sin(math.radians(a)))
    for k, node in enumerate((5, 6, 7)):
        pos[node] = (cx + R + 62 * (k + 1), cy)
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (4, 5), (5, 6), (6, 7)]
    q, nbrs = 4, {0, 3, 5}
    for a, b in edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        strong = q in (a, b)
        fig.line(x1, y1, x2, y2, stroke=style.KEY if strong else style.INK, width=2.4 if strong else 1.5)
    rn = 17
    for node, (x, y) in pos.items():
        # the self-loop: a small circle on the outer side of the node
        if node in angles and node != q:
            a = math.radians(angles[node])
            lx, ly = x + (rn + 6) * math.cos(a), y + (rn + 6) * math.sin(a)
        else:
            lx, ly = x, y - rn - 6
        fig.circle(lx, ly, 8, stroke=style.KEY if node == q else style.MUTED, width=1.3)
    for node, (x, y) in pos.items():
        kind = "query" if node == q else "key" if node in nbrs else "neutral"
        fig.circle(x, y, rn, fill=FILL[kind], stroke=EDGE[kind], width=1.8)
        fig.text(x, y, str(node), size=15, bold=node == q)
    fig.lines(
        24,
        298,
        ["Node 4 may attend to its neighbours 0, 3, 5", "and to itself (the self-loop)."],
        anchor="start",
        size=14,
        leading=1.45,
    )
    # the mask
    n, cell = 8, 26
    mx, my = 470, 70
    nb = {(a, b) for a, b in edges} | {(b, a) for a, b in edges} | {(i, i) for i in range(n)}
    mask_grid(fig, mx, my, n, n, cell, lambda i, j: (i, j) in nb)
    for k in range(n):
        fig.text(mx + k * cell + cell / 2, my - 12, str(k), size=NOTE)
        fig.text(mx - 12, my + k * cell + cell / 2, str(k), size=NOTE, bold=k == q)
    fig.rect(mx - 1.5, my + q * cell - 1.5, n * cell + 3, cell + 3, stroke=style.QUERY, width=2.5, rx=0)
    fig.text(mx + n * cell / 2, my - 38, "attended node k", size=14)
    fig.text(mx - 6, my - 12, "q", anchor="end", size=14, bold=True)
    fig.lines(mx - 30, my + 40, ["querying", "node q"], anchor="end", size=14)
    legend(fig, mx, my + n * cell + 26)
    fig.text(mx + n * cell / 2, my + n * cell + 54, "diagonal: the self-loops", size=NOTE, color=style.MUTED)
    return fig


def multimodal() -> Figure:
    fig = Figure(
        720,
        560,
        "Two ways to join text and image tokens",
        "Left: concatenation. Three text tokens and five image tokens, each with a type embedding, form one "
        "sequence for self-attention; the 8 by 8 mask is all dark. Right: cross-attention. The text tokens "
        "give the queries and the image tokens the keys and values; in the 8 by 8 mask of the concatenation "
        "only the text rows are computed, dark in the image columns and blocked in the text columns: a T by "
        "N block of scores.",
    )
    T, N, cell = 3, 5, 20
    tw, gap = 30, 4

    def token_row(x, y):
        xs = []
        for k in range(T + N):
            left = x + k * (tw + gap) + (8 if k >= T else 0)
            kind = "neutral" if k < T else "plain"
            label = f"t{k + 1}" if k < T else f"i{k - T + 1}"
            fig.box(left, y, tw, 30, label, kind=kind, size=style.SMALL, rx=3)
            xs.append(left + tw / 2)
        return xs

    def group_labels(x, y, *, vertical):
        """'text' and 'image' brackets along the top (or the left) of a mask."""
        spans = [("text", 0, T), ("image", T, T + N)]
        for name, a, b in spans:
            if vertical:
                y1, y2 = y + a * cell + 2, y + b * cell - 2
                fig.line(x, y1, x, y2, stroke=style.MUTED, width=1.4)
                fig.text(x - 8, (y1 + y2) / 2, name, anchor="end", size=NOTE)
            else:
                x1, x2 = x + a * cell + 2, x + b * cell - 2
                fig.line(x1, y, x2, y, stroke=style.MUTED, width=1.4)
                fig.text((x1 + x2) / 2, y - 12, name, size=NOTE)

    for panel, (x0, title) in enumerate(((24, "Concatenation: one stream"), (384, "Cross-attention: two streams"))):
        fig.text(x0, 24, title, anchor="start", bold=True)
        xs = token_row(x0 + 6, 196)
        if panel == 0:
            fig.box(x0, 64, 290, 44, "self-attention over T + N tokens", kind="model", size=14)
            for c in xs:
                fig.arrow(c, 196, c, 108)
            fig.text(x0, 46, "+ a type embedding: text or image", anchor="start", size=NOTE, color=style.MUTED)
        else:
            fig.box(x0, 64, 290, 44, "cross-attention", kind="model", size=14)
            for k, c in enumerate(xs):
                if k < T:
                    fig.arrow(c, 196, c, 108, stroke=style.QUERY, width=1.6)
                else:
                    fig.arrow(c - 4, 196, c - 4, 108, stroke=style.KEY, width=1.4)
                    fig.arrow(c + 4, 196, c + 4, 108, stroke=style.VALUE, width=1.4)
            fig.text(
                x0, 46, "as the decoder's cross-attention of chapter 7", anchor="start", size=NOTE, color=style.MUTED
            )
        names = ("T text", "N image") if panel == 0 else ("T text: Q", "N image: K, V")
        colours = (style.MUTED, style.MUTED) if panel == 0 else (style.QUERY, style.KEY)
        fig.text(x0 + 6 + T * (tw + gap) / 2, 244, names[0], size=NOTE, color=colours[0], bold=panel == 1)
        fig.text(
            x0 + 14 + T * (tw + gap) + N * (tw + gap) / 2, 244, names[1], size=NOTE, color=colours[1], bold=panel == 1
        )
        # the mask of the concatenated sequence
        mx, my = x0 + 80, 300
        if panel == 0:
            mask_grid(fig, mx, my, T + N, T + N, cell, lambda i, j: True)
            note = ["(T + N)$^{2}$ scores"]
        else:
            mask_grid(fig, mx, my, T + N, T + N, cell, lambda i, j: i < T and j >= T, skip_row=lambda i: i >= T)
            note = ["T · N scores: the text rows,", "image columns only"]
        group_labels(mx, my - 6, vertical=False)
        group_labels(mx - 6, my, vertical=True)
        fig.lines(mx + (T + N) * cell / 2, my + (T + N) * cell + 22, note, size=NOTE)
    legend(fig, 24, 540)
    fig.text(
        220,
        540,
        "rows = queries, columns = keys; empty rows: not computed",
        anchor="start",
        size=NOTE,
        color=style.MUTED,
    )
    return fig


def session_recommender() -> Figure:
    fig = Figure(
        720,
        600,
        "Attention over a session",
        "Bottom: a left-padded history of clicks, S2E5, S2E6, S2E7 and the trending item trend0, with recency "
        "0 for the most recent. Each click is embedded as item plus recency embedding. The query comes from the "
        "most recent click only; it attends over the keys of all clicks, padding masked, and the weighted sum "
        "of their values, projected, is added to the last click's state, normalised and passed through a "
        "feed-forward network. The result is scored against every item's embedding; the top item is S2E8.",
    )
    items = ["PAD", "PAD", "S2E5", "S2E6", "★ S2E7", "trend0"]
    L = len(items)
    bw, gap, x0 = 66, 10, 40
    xs = [x0 + k * (bw + gap) for k in range(L)]
    cxs = [x + bw / 2 for x in xs]
    y_items = 520
    fig.text(x0, 496, "history (left-padded)", anchor="start", size=14)
    for k, (x, name) in enumerate(zip(xs, items)):
        pad = name == "PAD"
        fig.box(
            x, y_items, bw, 32, name, kind="plain" if pad else "neutral", size=14, rx=4, dash="4 3" if pad else None
        )
        fig.text(x + bw / 2, y_items + 50, str(L - 1 - k), size=NOTE, color=style.MUTED)
    fig.text(xs[-1] + bw + 12, y_items + 50, "recency", anchor="start", size=NOTE, color=style.MUTED)
    fig.lines(
        x0,
        30,
        ["★ the evidence: the last episode watched.", "The right answer is the next episode, S2E8."],
        anchor="start",
        size=NOTE,
        color=style.MUTED,
    )
    # embeddings h_j
    y_h = 420
    fig.text(x0, 398, "$h_{j}$ = E[item] + R[recency]", anchor="start", size=14)
    for k, x in enumerate(xs):
        if items[k] == "PAD":
            continue
        fig.arrow(cxs[k], y_items, cxs[k], y_h + 30)
        fig.box(x + 10, y_h, bw - 20, 30, f"$h_{{{k}}}$", kind="neutral", size=14, rx=4)
    # keys and values of every real click
    y_kv = 310
    for k, x in enumerate(xs):
        if items[k] == "PAD":
            fig.text(cxs[k], y_kv + 15, "masked", size=NOTE, color=style.MUTED)
            continue
        fig.arrow(cxs[k], y_h, cxs[k], y_kv + 30)
        fig.box(x + 2, y_kv, bw / 2 - 4, 30, "k", kind="key", size=14, rx=4)
        fig.box(x + bw / 2 + 2, y_kv, bw / 2 - 4, 30, "v", kind="value", size=14, rx=4)
    fig.text(x0, y_kv - 16, "keys $W_{K}h_{j}$, values $W_{V}h_{j}$", anchor="start", size=14)
    # the query, from the most recent click only
    last_right = xs[-1] + bw - 10  # right edge of h_5
    qx, qy = 536, y_kv
    fig.box(qx, qy, 120, 30, "q = $W_{Q}h_{5}$", kind="query", size=14)
    fig.arrow(last_right, y_h + 8, qx + 30, qy + 30, stroke=style.QUERY, width=1.6)
    fig.lines(qx + 84, qy + 50, ["from the most", "recent click only"], size=NOTE, color=style.MUTED)
    # weights and the read-out
    y_w = 220
    fig.box(
        xs[2],
        y_w,
        xs[-1] + bw - xs[2],
        40,
        "α = softmax(q · $k_{j}$ / \\sqrt$d$) over the 4 clicks",
        kind="weight",
        size=14,
    )
    fig.polyline(
        [(qx + 60, qy), (qx + 60, y_w + 20), (xs[-1] + bw, y_w + 20)], stroke=style.QUERY, width=1.6, arrow=True
    )
    for k in range(2, L):
        fig.arrow(cxs[k], y_kv, cxs[k], y_w + 40)
    y_r = 140
    fig.arrow((xs[2] + xs[-1] + bw) / 2, y_w, (xs[2] + xs[-1] + bw) / 2, y_r + 36)
    fig.box(
        xs[2],
        y_r,
        xs[-1] + bw - xs[2],
        36,
        "read = Σ$_{j}$ $\\alpha_{j}$ $W_{V}h_{j}$, then $W_{O}$",
        kind="weight",
        size=14,
    )
    # residual, norm, FFN, scores
    px, py = 580, 158
    fig.arrow(xs[-1] + bw, py, px - 10, py)
    plus(fig, px, py)
    fig.polyline([(last_right, y_h + 22), (690, y_h + 22), (690, py), (px + 10, py)], arrow=True)
    fig.text(684, 300, "$h_{5}$", anchor="end", size=14)
    fig.arrow(px, py - 10, px, 118)
    fig.box(px - 110, 82, 220, 36, "z = LayerNorm(·); z + FFN(z)", kind="model", size=14)
    fig.arrow(px, 82, px, 62)
    fig.box(px - 130, 24, 250, 38, "scores = z $E^{\\top}$, 78 items", kind="weight", size=14)
    fig.text(px - 140, 43, "top: S2E8", anchor="end", size=14, bold=True)
    return fig


def figures() -> dict[str, Figure]:
    return {
        "ch09_vit_patches": vit_patches(),
        "ch09_graph_mask": graph_mask(),
        "ch09_multimodal": multimodal(),
        "ch09_session_recommender": session_recommender(),
    }
