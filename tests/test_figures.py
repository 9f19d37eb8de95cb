"""The book's diagrams: reproducible from their scripts, all used, each with alt text and a caption."""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "book" / "figures"
CHAPTERS = sorted((ROOT / "book").glob("0*.ipynb"))
SVG_NS = "{http://www.w3.org/2000/svg}"
# ```{figure} figures/NAME.svg  followed by its options and, after a blank line, the caption
DIRECTIVE = re.compile(r"```\{figure\}\s+(\S+)\n((?::[a-z]+:.*\n)*)\n(.*?)\n```", re.S)

sys.path.insert(0, str(ROOT / "scripts" / "figures"))
import draw  # noqa: E402


def _figures_in(path: Path) -> list[dict]:
    """Every figure directive in a chapter's markdown: file, options, caption."""
    nb = nbformat.read(path, as_version=4)
    found = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for m in DIRECTIVE.finditer(cell.source + "\n"):
            options = dict(re.findall(r":([a-z]+):\s*(.*)", m.group(2)))
            found.append({"file": m.group(1), "options": options, "caption": m.group(3).strip()})
    return found


def _text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_the_stored_figures_are_what_the_scripts_draw():
    assert draw.main(["--check"]) == 0, "run: python scripts/figures/draw.py"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_at_least_three_captioned_figures_referenced_from_the_text(path):
    figures = _figures_in(path)
    assert len(figures) >= 3, f"{path.name}: {len(figures)} figures, at least 3 expected"
    text = _text(path)
    chapter = "ch" + path.name[:2]
    for fig in figures:
        name, alt = fig["options"].get("name"), fig["options"].get("alt", "")
        assert fig["file"].startswith(f"figures/{chapter}_"), f"{path.name}: {fig['file']} is not this chapter's"
        assert (ROOT / "book" / fig["file"]).is_file(), f"{path.name}: {fig['file']} does not exist"
        assert name, f"{path.name}: {fig['file']} has no :name: to refer to"
        assert len(alt) >= 40, f"{path.name}: {fig['file']} needs alt text that describes it, got {alt!r}"
        assert len(fig["caption"]) >= 20, f"{path.name}: {fig['file']} needs a caption"
        assert f"{{numref}}`{name}`" in text, f"{path.name}: the text never refers to {name} with {{numref}}"


def test_every_figure_file_is_used_once_and_its_alt_text_is_its_description():
    uses: dict[str, list[str]] = {}
    for path in CHAPTERS:
        for fig in _figures_in(path):
            uses.setdefault(Path(fig["file"]).name, []).append(fig["options"].get("alt", ""))
    files = sorted(p.name for p in FIGURES.glob("*.svg"))
    assert files, "no figures in book/figures"
    for name in files:
        assert name in uses, f"book/figures/{name} is not used by any chapter"
        assert len(uses[name]) == 1, f"book/figures/{name} is used {len(uses[name])} times"
        desc = ET.parse(FIGURES / name).getroot().find(f"{SVG_NS}desc").text
        assert uses[name][0] == desc, f"{name}: the :alt: text and the SVG's <desc> differ"


@pytest.mark.parametrize("name", sorted(p.name for p in FIGURES.glob("*.svg")))
def test_each_svg_is_well_formed_fits_the_text_column_and_has_a_title(name):
    root = ET.parse(FIGURES / name).getroot()
    assert root.tag == f"{SVG_NS}svg"
    assert root.get("role") == "img"
    assert root.find(f"{SVG_NS}title").text.strip()
    width = float(root.get("width"))
    assert 300 <= width <= 740, f"{name}: width {width} (the text column is about 740 px)"
    referenced = set(re.findall(r"url\(#([^)]+)\)", (FIGURES / name).read_text()))
    defined = {e.get("id") for e in root.iter() if e.get("id")}
    assert referenced <= defined, f"{name}: undefined markers {referenced - defined}"
