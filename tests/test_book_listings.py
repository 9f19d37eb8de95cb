"""The package code the chapters show (``notebook.show_source``) fits the code column.

The page's code column holds 88 characters at the book's code size (book/_ext/static/mt-book.css);
the package is written to 120 columns, so the functions a chapter lists are kept to 88. The
stored outputs are what the reader sees, so they are checked (nbval keeps them equal to the
package's current source)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
WIDTH = 88


def _listings(stem: str) -> list[tuple[str, str]]:
    nb = nbformat.read(ROOT / "book" / f"{stem}.ipynb", as_version=4)
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "show_source(" not in cell.source:
            continue
        for out in cell.outputs:
            markdown = out.get("data", {}).get("text/markdown", "")
            if markdown.startswith("`") and "```python" in markdown:
                found.append((markdown.split("`")[1], markdown.split("```python\n", 1)[1]))
    return found


def test_the_chapters_show_listings():
    assert sum(len(_listings(s)) for s in CHAPTERS) >= 30


@pytest.mark.parametrize("stem", CHAPTERS)
def test_listed_code_fits_88_columns(stem):
    long = [
        f"{name}: {len(line)} columns: {line.strip()[:60]}"
        for name, source in _listings(stem)
        for line in source.splitlines()
        if len(line) > WIDTH
    ]
    assert not long, f"{stem}: listed lines over {WIDTH} columns:\n" + "\n".join(long)
