"""Chapter 7 (encoder, decoder, encoder–decoder): the figures.

* ``ch07_three_families``: encoder-only, decoder-only and encoder–decoder models
  side by side, each with the mask pattern of its attention(s).
* ``ch07_decoder_layer``: one Pre-LN decoder layer, its three sub-layers, and where
  the queries, keys and values of cross-attention come from.
* ``ch07_stack_wiring``: the encoder's final output (``memory``) goes to every
  decoder layer (2 encoder and 3 decoder layers, as the chapter's toy model).
* ``ch07_teacher_forcing``: one teacher-forced pass over the shifted target against
  generation, one token per forward pass, fed back.

The masks follow the package: ``True`` (dark) = may attend; rows are queries,
columns keys.
"""

from __future__ import annotations

import style
from svg import Figure

TOKEN_SIZE = 14  # labels inside the small token boxes


# -- helpers --------------------------------------------------------------------------
def mask_grid(fig: Figure, x: float, y: float, rows: int, cols: int, cell: float, allowed) -> None:
    """A boolean mask, ``allowed(i, j)`` True = query ``i`` may attend to key ``j`` (dark)."""
    fills = [[style.MAY_ATTEND if allowed(i, j) else style.BLOCKED for j in range(cols)] for i in range(rows)]
    fig.grid(x, y, rows, cols, cell, fills)


def tokens(fig: Figure, x: float, y: float, labels, *, w=34, h=26, gap=8, kind="neutral", size=TOKEN_SIZE):
    """A row of small token boxes; returns the centre x of each."""
    centres = []
    for k, label in enumerate(labels):
        left = x + k * (w + gap)
        fig.box(left, y, w, h, label, kind=kind, size=size, rx=4)
        centres.append(left + w / 2)
    return centres


def plus(fig: Figure, cx: float, cy: float, r: float = 10) -> None:
    """The residual addition: a circled plus."""
    fig.circle(cx, cy, r, fill=style.PAPER, stroke=style.INK)
    fig.line(cx - r + 4, cy, cx + r - 4, cy)
    fig.line(cx, cy - r + 4, cx, cy + r - 4)


def legend_mask(fig: Figure, x: float, y: float) -> None:
    """The mask legend: dark = may attend, light = blocked."""
    fig.text(x, y, "In every grid, row = query, column = key:", anchor="start", size=style.SMALL + 1)
    x2 = x + 292
    fig.rect(x2, y - 7, 14, 14, fill=style.MAY_ATTEND, stroke=style.MAY_ATTEND, rx=0)
    fig.text(x2 + 20, y, "may attend", anchor="start", size=style.SMALL + 1)
    x3 = x2 + 110
    fig.rect(x3, y - 7, 14, 14, fill=style.BLOCKED, stroke="#c8c8c8", width=1, rx=0)
    fig.text(x3 + 20, y, "blocked", anchor="start", size=style.SMALL + 1)


# -- figures --------------------------------------------------------------------------
def three_families() -> Figure:
    S, T, cell = 5, 4, 14
    fig = Figure(
        720,
        684,
        "The three transformer families and their masks",
        "Three rows. Encoder-only (BERT): five input tokens go through an encoder stack without a mask "
        "and come out as five vectors; its mask is a full grid, every token sees every token. "
        "Decoder-only (GPT): the stack is causal and position t predicts token t+1; its mask is the lower "
        "triangle. Encoder-decoder (the Transformer, T5): an encoder reads the source with a full mask, "
        "a causal decoder reads the target shifted right and, through cross-attention, the encoder output "
        "(memory); its masks are a full source grid, a causal target grid and a full target-by-source grid.",
    )
    rows_y = [18, 226, 434]
    heads = [
        ("Encoder-only", "BERT, RoBERTa", "every token sees every token · trained to fill in masked tokens"),
        ("Decoder-only", "GPT, Llama", "token t sees tokens ≤ t · trained to predict the next token"),
        ("Encoder–decoder", "the Transformer, T5", "bidirectional encoder · causal decoder with cross-attention"),
    ]
    for y0, (name, examples, what) in zip(rows_y, heads):
        fig.text(24, y0 + 14, name, anchor="start", size=17, bold=True)
        fig.text(24 + 11 * len(name) + 14, y0 + 14, examples, anchor="start", size=15, color=style.MUTED)
        fig.text(24, y0 + 38, what, anchor="start", size=14)
        if y0 != rows_y[-1]:
            fig.line(16, y0 + 198, 704, y0 + 198, stroke="#dddddd", width=1)

    def stack_row(y0, x, labels_in, labels_out, stack_label, *, w=36, gap=8, stack_kind="model"):
        """Inputs (bottom), one stack, outputs (top); returns the stack's box (x, y, w, h)."""
        width = len(labels_in) * (w + gap) - gap
        y_out, y_stack, y_in = y0 + 62, y0 + 108, y0 + 166
        cx_out = tokens(fig, x, y_out, labels_out, w=w, gap=gap)
        fig.box(x - 12, y_stack, width + 24, 40, stack_label, kind=stack_kind)
        cx_in = tokens(fig, x, y_in, labels_in, w=w, gap=gap)
        for c in cx_in:
            fig.arrow(c, y_in, c, y_stack + 40)
        for c in cx_out:
            fig.arrow(c, y_stack, c, y_out + 26)
        return (x - 12, y_stack, width + 24, 40)

    xs = [f"$x_{{{k}}}$" for k in range(1, S + 1)]
    # encoder-only
    y0 = rows_y[0]
    stack_row(y0, 110, xs, [f"$h_{{{k}}}$" for k in range(1, S + 1)], "encoder: N layers, no mask")
    mx = 555
    mask_grid(fig, mx, y0 + 80, S, S, cell, lambda i, j: True)
    fig.text(mx + S * cell / 2, y0 + 168, "S × S", size=style.SMALL + 1)
    fig.text(mx + S * cell / 2, y0 + 66, "self-attention", size=style.SMALL + 1)
    # decoder-only
    y0 = rows_y[1]
    stack_row(y0, 110, xs, [f"$x_{{{k}}}$" for k in range(2, S + 2)], "decoder: N layers, causal")
    mask_grid(fig, mx, y0 + 80, S, S, cell, lambda i, j: j <= i)
    fig.text(mx + S * cell / 2, y0 + 168, "T × T", size=style.SMALL + 1)
    fig.text(mx + S * cell / 2, y0 + 66, "self-attention", size=style.SMALL + 1)
    # encoder–decoder
    y0 = rows_y[2]
    ex, ey, ew, eh = stack_row(y0, 24, xs[:S], [], "encoder", w=26, gap=4)
    tgt_in = ["<bos>", "$y_{1}$", "$y_{2}$", "$y_{3}$"]
    tgt_out = ["$y_{1}$", "$y_{2}$", "$y_{3}$", "<eos>"]
    dx, dy, dw, dh = stack_row(y0, 232, tgt_in, tgt_out, "decoder (causal)", w=53, gap=4)
    # memory: the encoder's output enters every decoder layer's cross-attention
    fig.arrow(ex + ew, ey + eh / 2, dx, dy + eh / 2)
    fig.text((ex + ew + dx) / 2, ey - 10, "memory", size=style.SMALL + 1)
    grids = [
        (480, S, S, lambda i, j: True, "encoder", "S × S"),
        (568, T, T, lambda i, j: j <= i, "decoder self", "T × T"),
        (638, T, S, lambda i, j: True, "cross", "T × S"),
    ]
    for gx, r, c, allowed, top, bottom in grids:
        mask_grid(fig, gx, y0 + 80, r, c, cell, allowed)
        fig.text(gx + c * cell / 2, y0 + 66, top, size=style.SMALL + 1)
        fig.text(gx + c * cell / 2, y0 + 80 + r * cell + 18, bottom, size=style.SMALL + 1)
    legend_mask(fig, 24, 662)
    return fig


def decoder_layer() -> Figure:
    fig = Figure(
        680,
        640,
        "A Pre-LN decoder layer",
        "A decoder layer drawn bottom to top: the decoder input goes through three sub-layers, each a "
        "LayerNorm, the sub-layer and a residual addition: masked self-attention with a causal mask, "
        "cross-attention and the feed-forward network. Cross-attention takes its queries Q from the decoder "
        "and its keys K and values V from the memory, the final encoder output, with no causal mask.",
    )
    cx, bw = 300, 240
    bx = cx - bw / 2
    stream_x = bx - 46  # residual path, left of the boxes
    # input
    base = 586
    fig.box(bx, base, bw, 34, "decoder input $x$", kind="neutral")
    fig.text(bx + bw + 14, base + 17, "(B, T, d_model)", anchor="start", size=style.SMALL + 1, color=style.MUTED)
    y = base  # where the stream leaves the previous part
    subs = [
        ("1  masked self-attention", "Q, K, V"),
        ("2  cross-attention", "Q"),
        ("3  feed-forward network", ""),
    ]
    boxes = []
    for label, arrow_label in subs:
        branch = y - 18
        ln_y = branch - 20 - 30
        sub_y = ln_y - 18 - 44
        plus_y = sub_y - 26
        fig.line(cx, y, cx, ln_y + 30)  # stream into LayerNorm (arrowhead below)
        fig.arrow(cx, branch, cx, ln_y + 30)
        fig.box(bx + 40, ln_y, bw - 80, 30, "LayerNorm", kind="model", size=14)
        colour = style.QUERY if arrow_label == "Q" else style.INK
        fig.arrow(cx, ln_y, cx, sub_y + 44, stroke=colour)
        if arrow_label:
            fig.text(cx + 8, ln_y - 9, arrow_label, anchor="start", size=14, color=colour, bold=arrow_label == "Q")
        fig.box(bx, sub_y, bw, 44, label, kind="model")
        fig.arrow(cx, sub_y, cx, plus_y + 10)
        plus(fig, cx, plus_y)
        # residual: from the branch point around the sub-layer into the addition
        fig.circle(cx, branch, 2.5, fill=style.INK)
        fig.polyline([(cx, branch), (stream_x, branch), (stream_x, plus_y), (cx - 10, plus_y)], arrow=True)
        boxes.append((sub_y, plus_y))
        y = plus_y - 10
    # output
    fig.arrow(cx, y, cx, 52)
    fig.box(bx, 18, bw, 34, "to the next decoder layer", kind="neutral", size=14)
    fig.text(bx + bw + 14, 35, "(B, T, d_model)", anchor="start", size=style.SMALL + 1, color=style.MUTED)
    fig.text(stream_x - 8, (boxes[0][1] + base) / 2 + 18, "residual", anchor="end", size=style.SMALL, color=style.MUTED)
    # the causal mask beside masked self-attention
    sa_y = boxes[0][0]
    mx, cell = bx + bw + 30, 11
    mask_grid(fig, mx, sa_y - 2, 4, 4, cell, lambda i, j: j <= i)
    fig.text(mx + 4 * cell + 10, sa_y + 8, "causal mask", anchor="start", size=style.SMALL + 1)
    fig.text(mx + 4 * cell + 10, sa_y + 28, "(T × T)", anchor="start", size=style.SMALL + 1, color=style.MUTED)
    # the memory feeds keys and values of cross-attention
    ca_y = boxes[1][0]
    mem_x, mem_w = 520, 140
    fig.box(mem_x, ca_y - 10, mem_w, 64, "", kind="neutral")
    fig.text(mem_x + mem_w / 2, ca_y + 8, "memory", size=15, bold=True)
    fig.text(mem_x + mem_w / 2, ca_y + 32, "(B, S, d_model)", size=style.SMALL + 1, color=style.MUTED)
    fig.arrow(mem_x, ca_y + 12, bx + bw, ca_y + 12, stroke=style.KEY)
    fig.arrow(mem_x, ca_y + 32, bx + bw, ca_y + 32, stroke=style.VALUE)
    fig.text((mem_x + bx + bw) / 2, ca_y + 2, "K", size=14, color=style.KEY, bold=True)
    fig.text((mem_x + bx + bw) / 2, ca_y + 44, "V", size=14, color=style.VALUE, bold=True)
    fig.lines(
        mem_x + mem_w / 2,
        ca_y + 74,
        ["final encoder output,", "the same for every", "decoder layer; no", "causal mask"],
        size=style.SMALL + 1,
        color=style.MUTED,
    )
    return fig


def stack_wiring() -> Figure:
    fig = Figure(
        700,
        574,
        "The encoder output feeds every decoder layer",
        "Two stacks side by side, bottom to top. Left: source tokens, embedding and positions, encoder "
        "layers 1 and 2, a final LayerNorm, and the memory. Right: the target shifted right, embedding and "
        "positions, decoder layers 1 to 3, a LayerNorm and the output projection to logits. One line "
        "carries the memory to the cross-attention of every decoder layer; no decoder layer reads an "
        "intermediate encoder layer.",
    )
    ex, dx, w, h = 40, 440, 220, 40
    enc = [
        (496, "source tokens", "neutral"),
        (426, "embedding + positions", "model"),
        (356, "encoder layer 1", "model"),
        (286, "encoder layer 2", "model"),
        (216, "final LayerNorm", "model"),
    ]
    dec = [
        (496, "target, shifted right", "neutral"),
        (426, "embedding + positions", "model"),
        (346, "decoder layer 1", "model"),
        (256, "decoder layer 2", "model"),
        (166, "decoder layer 3", "model"),
        (96, "final LayerNorm", "model"),
        (26, "linear → logits", "neutral"),
    ]
    for column, x in ((enc, ex), (dec, dx)):
        for k, (y, label, kind) in enumerate(column):
            tall = label.startswith("decoder layer")
            fig.box(x, y, w, 56 if tall else h, "" if tall else label, kind=kind)
            if tall:
                fig.text(x + w / 2, y + 18, label, size=15)
                fig.text(x + w / 2, y + 39, "self-attn · cross-attn · FFN", size=style.SMALL, color=style.MUTED)
            if k:
                prev_y = column[k - 1][0]
                fig.arrow(x + w / 2, prev_y, x + w / 2, y + (56 if tall else h))
    fig.text(dx - 10, 46, "(B, T, V)", anchor="end", size=style.SMALL + 1, color=style.MUTED)
    fig.text(ex + w / 2, 554, "(B, S)", size=style.SMALL + 1, color=style.MUTED)
    fig.text(dx + w / 2, 554, "(B, T)", size=style.SMALL + 1, color=style.MUTED)
    # the memory box above the encoder
    my = 136
    fig.arrow(ex + w / 2, 216, ex + w / 2, my + 52)
    fig.box(ex, my, w, 52, "", kind="neutral")
    fig.text(ex + w / 2, my + 17, "memory", size=15, bold=True)
    fig.text(ex + w / 2, my + 37, "(B, S, d_model)", size=style.SMALL + 1, color=style.MUTED)
    # the bus: one tensor, to every decoder layer
    bus_x = 350
    fig.line(ex + w, my + 26, bus_x, my + 26, width=1.8)
    fig.line(bus_x, my + 26, bus_x, 346 + 28, width=1.8)
    for y in (346, 256, 166):
        fig.circle(bus_x, y + 28, 3, fill=style.INK)
        fig.arrow(bus_x, y + 28, dx, y + 28, width=1.8)
        fig.text((bus_x + dx) / 2, y + 16, "memory", size=style.SMALL)
    fig.lines(
        350,
        420,
        ["the same memory", "to every decoder layer;", "each projects it with", "its own $W_{K}$, $W_{V}$"],
        size=style.SMALL + 1,
        color=style.MUTED,
    )
    return fig


def teacher_forcing() -> Figure:
    fig = Figure(
        720,
        626,
        "Teacher forcing against generation",
        "Top: training with teacher forcing. The decoder input is the target shifted right (bos, y1, y2, y3), "
        "and one forward pass with a causal mask predicts every label (y1, y2, y3, eos) at once. "
        "Bottom: generation. The decoder runs once per new token: from bos it predicts y1 hat, which is "
        "appended to the input of the next pass, which predicts y2 hat, and so on until eos.",
    )
    fig.text(24, 22, "Training: teacher forcing — every position in one forward pass", anchor="start", bold=True)
    tw, th, gap = 54, 30, 46
    x0 = 150
    cols = [x0 + k * (tw + gap) for k in range(4)]
    y_out, y_dec, y_in = 64, 134, 226
    fig.text(24, y_out + th / 2, "predicts tgt_out", anchor="start", size=14)
    fig.text(24, y_in + th / 2, "input tgt_in", anchor="start", size=14)
    labels = ["$y_{1}$", "$y_{2}$", "$y_{3}$", "<eos>"]
    inputs = ["<bos>", "$y_{1}$", "$y_{2}$", "$y_{3}$"]
    dec_w = cols[-1] + tw - cols[0] + 24
    fig.box(cols[0] - 12, y_dec, dec_w, 50, "decoder", kind="model")
    for k, x in enumerate(cols):
        fig.box(x, y_out, tw, th, labels[k], kind="weight", size=TOKEN_SIZE, rx=4)
        fig.box(x, y_in, tw, th, inputs[k], kind="neutral", size=TOKEN_SIZE, rx=4)
        fig.arrow(x + tw / 2, y_in, x + tw / 2, y_dec + 50)
        fig.arrow(x + tw / 2, y_dec, x + tw / 2, y_out + th)
        fig.text(x + tw / 2, y_in + th + 16, f"position {k}", size=style.SMALL, color=style.MUTED)
    # the causal mask that makes this legal
    mx, cell = 590, 16
    mask_grid(fig, mx, y_dec - 18, 4, 4, cell, lambda i, j: j <= i)
    fig.text(mx + 2 * cell, y_dec - 32, "causal mask", size=style.SMALL + 1)
    fig.text(mx + 2 * cell, y_dec + 4 * cell - 2, "position t sees", size=style.SMALL, color=style.MUTED)
    fig.text(mx + 2 * cell, y_dec + 4 * cell + 14, "inputs 0 … t", size=style.SMALL, color=style.MUTED)
    fig.line(16, 290, 704, 290, stroke="#dddddd", width=1)

    fig.text(24, 316, "Generation: one forward pass per new token, its output fed back", anchor="start", bold=True)
    y_out, y_dec, y_in = 364, 430, 516
    starts = [40, 200, 400]
    ins = [["<bos>"], ["<bos>", "$ŷ_{1}$"], ["<bos>", "$ŷ_{1}$", "$ŷ_{2}$"]]
    outs = ["$ŷ_{1}$", "$ŷ_{2}$", "$ŷ_{3}$"]
    sw, sg = 54, 6
    last_out = None
    for step, (x, row, out) in enumerate(zip(starts, ins, outs)):
        width = len(row) * (sw + sg) - sg
        fig.text(x + width / 2, y_in + th + 30, f"pass {step + 1}", size=style.SMALL + 1, color=style.MUTED)
        centres = tokens(fig, x, y_in, row, w=sw, h=th, gap=sg)
        fig.box(x - 8, y_dec, width + 16, 44, "decoder", kind="model", size=14)
        for c in centres:
            fig.arrow(c, y_in, c, y_dec + 44)
        ox = centres[-1] - sw / 2
        fig.box(ox, y_out, sw, th, out, kind="weight", size=TOKEN_SIZE, rx=4)
        fig.arrow(centres[-1], y_dec, centres[-1], y_out + th)
        if last_out is not None:  # the previous output becomes this pass's newest input
            lx, ly, gap_x = last_out
            low = y_in + th + 12
            fig.polyline(
                [
                    (lx + sw, ly + th / 2),
                    (gap_x, ly + th / 2),
                    (gap_x, low),
                    (centres[-1], low),
                    (centres[-1], y_in + th),
                ],
                stroke=style.INK,
                width=1.6,
                dash="5 3",
                arrow=True,
            )
        last_out = (ox, y_out, x + width + 8 + (starts[step + 1] - 8 - x - width - 8) / 2 if step < 2 else 0)
    fig.text(640, y_dec + 22, "… until <eos>", size=14)
    fig.text(360, 604, "dashed: each prediction becomes the newest input of the next pass", size=14, color=style.MUTED)
    return fig


def figures() -> dict[str, Figure]:
    return {
        "ch07_three_families": three_families(),
        "ch07_decoder_layer": decoder_layer(),
        "ch07_stack_wiring": stack_wiring(),
        "ch07_teacher_forcing": teacher_forcing(),
    }
