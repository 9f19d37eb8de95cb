"""Draw the book's diagrams into ``book/figures/`` (one SVG per figure).

    python scripts/figures/draw.py           # (re)write every figure
    python scripts/figures/draw.py --check   # exit 1 if a stored file differs or is stale
    python scripts/figures/draw.py --only ch03 ch04   # just these chapters (others untouched)

Each chapter's figures are drawn by ``scripts/figures/chNN.py``, whose
``figures()`` returns ``{file stem: Figure}``; the stems start with ``chNN_``.
The output is reproducible byte for byte, so the test suite re-draws every
figure and compares (``tests/test_figures.py``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ROOT = HERE.parent.parent
OUT = ROOT / "book" / "figures"
CHAPTERS = [f"ch{n:02d}" for n in range(1, 10)]


def draw_all(chapters: list[str] = CHAPTERS) -> dict[str, str]:
    """``{file name: SVG text}`` for every figure of the given chapters."""
    out: dict[str, str] = {}
    for chapter in chapters:
        try:
            module = importlib.import_module(chapter)
        except ModuleNotFoundError as err:
            if err.name != chapter:
                raise
            continue
        for stem, figure in module.figures().items():
            if not stem.startswith(chapter + "_"):
                raise ValueError(f"{chapter}.figures(): {stem!r} must start with {chapter + '_'!r}")
            if stem + ".svg" in out:
                raise ValueError(f"two figures are named {stem!r}")
            out[stem + ".svg"] = figure.svg()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with book/figures instead of writing")
    parser.add_argument("--only", nargs="+", choices=CHAPTERS, help="draw only these chapters")
    args = parser.parse_args(argv)
    chapters = args.only or CHAPTERS
    drawn = draw_all(chapters)
    stored = {p.name for p in OUT.glob("*.svg") if p.name[:4] in chapters}
    if args.check:
        bad = sorted(n for n in drawn if not (OUT / n).exists() or (OUT / n).read_text(encoding="utf-8") != drawn[n])
        stale = sorted(stored - set(drawn))
        for n in bad:
            print(f"differs from the script's drawing: book/figures/{n}")
        for n in stale:
            print(f"drawn by no script: book/figures/{n}")
        return 1 if bad or stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for n in sorted(stored - set(drawn)):
        (OUT / n).unlink()
    for n, text in drawn.items():
        (OUT / n).write_text(text, encoding="utf-8")
    print(f"wrote {len(drawn)} figures to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
