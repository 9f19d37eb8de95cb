"""A small SVG writer for the book's diagrams: boxes, arrows, grids and math labels.

Every figure is drawn by code in ``scripts/figures/`` with these primitives and
the colours of :mod:`style`, so that the book has one visual language and the
files are reproducible byte for byte (coordinates rounded, no dates, no random
ids). Text stays text: readable by screen readers and search, sharp at any size.

Labels accept a little TeX-like markup, rendered with ``<tspan>``:
``s_{t-1}`` (subscript), ``d^{2}`` (superscript), ``$q$`` (math italic, in the
serif face the equations use) and ``\\alpha``-style Greek names (see ``GREEK``).
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

import style

GREEK = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "theta": "θ",
    "lambda": "λ", "mu": "μ", "pi": "π", "sigma": "σ", "tau": "τ", "phi": "φ", "omega": "ω",
    "Sigma": "Σ", "Delta": "Δ", "Omega": "Ω", "times": "×", "cdot": "·", "to": "→",
    "sqrt": "√", "top": "⊤", "odot": "⊙", "oplus": "⊕", "ell": "ℓ", "infty": "∞",
    "leq": "≤", "geq": "≥", "approx": "≈", "partial": "∂", "nabla": "∇", "prod": "∏",
}  # fmt: skip


def _n(x: float) -> str:
    """A coordinate with at most two decimals (reproducible output, small files)."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _greek(s: str) -> str:
    return re.sub(r"\\([A-Za-z]+)", lambda m: GREEK.get(m.group(1), m.group(0)), s)


def markup(s: str, size: float) -> str:
    """``s_{t-1}``, ``x^{2}``, ``$q$`` and ``\\alpha`` as escaped SVG ``<tspan>`` runs."""
    out: list[str] = []
    math = False
    i = 0
    small = _n(size * 0.72)
    while i < len(s):
        c = s[i]
        if c == "$":
            math = not math
            out.append(f'<tspan font-family="{style.MATH_FONT}" font-style="italic">' if math else "</tspan>")
            i += 1
        elif c in "_^" and i + 1 < len(s) and s[i + 1] == "{":
            j = s.index("}", i)
            shift = "-0.3em" if c == "^" else "0.25em"
            body = escape(_greek(s[i + 2 : j]))
            back = "0.3em" if c == "^" else "-0.25em"
            out.append(f'<tspan dy="{shift}" font-size="{small}">{body}</tspan><tspan dy="{back}">\u200b</tspan>')
            i = j + 1
        else:
            j = i
            while j < len(s) and s[j] not in "$_^":
                j += 1
            if j == i:  # a lone _ or ^ without braces
                j = i + 1
            out.append(escape(_greek(s[i:j])))
            i = j
    if math:
        out.append("</tspan>")
    return "".join(out)


class Figure:
    """An SVG drawing of ``width x height`` user units on a white card (readable on the dark theme too).

    Args:
        width, height: the viewBox size; the page scales the figure to the text column.
        title: a short name (the SVG ``<title>``).
        desc: what the figure shows, for screen readers (the SVG ``<desc>``); the
            book's ``:alt:`` text says the same.
    """

    def __init__(self, width: float, height: float, title: str, desc: str):
        self.width, self.height, self.title, self.desc = width, height, title, desc
        self.parts: list[str] = []

    # -- shapes -----------------------------------------------------------------
    def rect(self, x, y, w, h, *, fill="none", stroke=style.INK, width=1.5, rx=6, dash=None, opacity=None):
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        extra += f' fill-opacity="{_n(opacity)}"' if opacity is not None else ""
        self.parts.append(
            f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" rx="{_n(rx)}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{_n(width)}"{extra}/>'
        )

    def box(self, x, y, w, h, label="", *, kind="neutral", size=style.FONT_SIZE, rx=6, dash=None, bold=False):
        """A rounded box filled in the colour of ``kind`` (see ``style.KINDS``) with a centred label."""
        fill, stroke = style.KINDS[kind]
        self.rect(x, y, w, h, fill=fill, stroke=stroke, rx=rx, dash=dash)
        if label:
            self.text(x + w / 2, y + h / 2, label, size=size, bold=bold)

    def circle(self, cx, cy, r, *, fill="none", stroke=style.INK, width=1.5):
        self.parts.append(
            f'<circle cx="{_n(cx)}" cy="{_n(cy)}" r="{_n(r)}" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{_n(width)}"/>'
        )

    def line(self, x1, y1, x2, y2, *, stroke=style.INK, width=1.5, dash=None):
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" '
            f'stroke="{stroke}" stroke-width="{_n(width)}"{extra}/>'
        )

    def polyline(self, points, *, stroke=style.INK, width=1.5, fill="none", dash=None, arrow=False, close=False):
        """A path through ``points``; ``arrow=True`` puts an arrowhead at the last point."""
        d = "M " + " L ".join(f"{_n(x)} {_n(y)}" for x, y in points) + (" Z" if close else "")
        self.path(d, stroke=stroke, width=width, fill=fill, dash=dash, arrow=arrow)

    def path(self, d, *, stroke=style.INK, width=1.5, fill="none", dash=None, arrow=False):
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        extra += f' marker-end="url(#{self._marker(stroke)})"' if arrow else ""
        self.parts.append(f'<path d="{d}" fill="{fill}" stroke="{stroke}" stroke-width="{_n(width)}"{extra}/>')

    def arrow(self, x1, y1, x2, y2, *, stroke=style.INK, width=1.5, dash=None):
        """A straight arrow from ``(x1, y1)`` to ``(x2, y2)`` (the head ends exactly there)."""
        self.polyline([(x1, y1), (x2, y2)], stroke=stroke, width=width, dash=dash, arrow=True)

    def curve(self, x1, y1, cx, cy, x2, y2, *, stroke=style.INK, width=1.5, dash=None, arrow=True):
        """A quadratic Bézier arrow from ``(x1, y1)`` to ``(x2, y2)`` bent towards ``(cx, cy)``."""
        d = f"M {_n(x1)} {_n(y1)} Q {_n(cx)} {_n(cy)} {_n(x2)} {_n(y2)}"
        self.path(d, stroke=stroke, width=width, dash=dash, arrow=arrow)

    def grid(self, x, y, rows, cols, cell, fills, *, stroke="#ffffff", width=1.0):
        """A ``rows x cols`` matrix of squares; ``fills[i][j]`` is a colour (a mask, weights, tiles)."""
        for i in range(rows):
            for j in range(cols):
                self.rect(x + j * cell, y + i * cell, cell, cell, fill=fills[i][j], stroke=stroke, width=width, rx=0)

    # -- text -------------------------------------------------------------------
    def text(self, x, y, s, *, size=style.FONT_SIZE, anchor="middle", color=style.INK, bold=False, italic=False):
        """A one-line label centred vertically on ``y``; ``anchor`` is start, middle or end."""
        attrs = f'x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}" text-anchor="{anchor}" dominant-baseline="central"'
        if color != style.INK:
            attrs += f' fill="{color}"'
        if bold:
            attrs += ' font-weight="bold"'
        if italic:
            attrs += ' font-style="italic"'
        self.parts.append(f"<text {attrs}>{markup(s, size)}</text>")

    def lines(self, x, y, rows, *, size=style.FONT_SIZE, leading=1.3, **kw):
        """Several lines of text, the first centred on ``y``."""
        for i, s in enumerate(rows):
            self.text(x, y + i * size * leading, s, size=size, **kw)

    # -- output -----------------------------------------------------------------
    def _marker(self, color: str) -> str:
        return "arrow-" + color.lstrip("#")

    def svg(self) -> str:
        body = "\n".join(self.parts)
        colours = sorted(set(re.findall(r'marker-end="url\(#arrow-([0-9a-fA-F]+)\)"', body)))
        markers = "".join(
            f'<marker id="arrow-{c}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#{c}"/></marker>'
            for c in colours
        )
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(self.width)} {_n(self.height)}" '
            f'width="{_n(self.width)}" height="{_n(self.height)}" role="img" '
            f'aria-labelledby="title desc" font-family="{style.FONT}" fill="{style.INK}">\n'
            f'<title id="title">{escape(self.title)}</title>\n<desc id="desc">{escape(self.desc)}</desc>\n'
            f"<defs>{markers}</defs>\n"
            f'<rect x="0" y="0" width="{_n(self.width)}" height="{_n(self.height)}" rx="8" fill="{style.PAPER}"/>\n'
            f"{body}\n</svg>\n"
        )

    def save(self, path: Path) -> Path:
        path.write_text(self.svg(), encoding="utf-8")
        return path
