"""The book's visual language for diagrams (written out in ``book/figures/STYLE.md``).

Queries are orange, keys blue, values green, attention weights purple, hidden
states and model parts grey; masks use the charts' colours (may attend: dark
blue, blocked: light grey). Fills are light tints with a darker outline of the
same hue, so black text stays readable; every figure sits on a white card, so
it reads the same in the light and the dark theme.
"""

FONT = "'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif"
MATH_FONT = "'DejaVu Serif', 'Times New Roman', serif"  # symbols as in the equations (MathJax's italic)
FONT_SIZE = 15
SMALL = 12.5

PAPER = "#ffffff"
INK = "#222222"  # text, outlines of neutral parts, arrows
MUTED = "#777777"  # secondary labels, shapes

# kind -> (fill, outline)
KINDS = {
    "query": ("#fde3cf", "#d9652b"),
    "key": ("#d6e6f5", "#3b75af"),
    "value": ("#d9efdc", "#3f8f4f"),
    "weight": ("#eadff2", "#8e5ea2"),  # attention scores / weights / context
    "neutral": ("#f0f0f0", "#555555"),  # hidden states, tokens, generic tensors
    "model": ("#fff4c2", "#b08d1a"),  # learned layers: linear maps, FFN, norms, RNN cells
    "memory": ("#ffe0e0", "#c0392b"),  # GPU memory levels, the KV cache
    "plain": ("#ffffff", "#555555"),
}

QUERY, KEY, VALUE, WEIGHT = (KINDS[k][1] for k in ("query", "key", "value", "weight"))
GRADIENT = "#c0392b"  # backward / gradient paths: red, dashed
GRADIENT_DASH = "6 4"
MAY_ATTEND = "#2f5d8a"  # as the mask charts (minitransformer.book.viz)
BLOCKED = "#e8e8e8"
