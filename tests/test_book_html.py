"""The HTML build succeeds without warnings, and its pages draw offline in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# Builds the whole book (jupyter-book, minutes): not part of `make test-fast`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built_html(tmp_path_factory) -> Path:
    """Build the book exactly as `make book` does, into a temporary folder."""
    out = tmp_path_factory.mktemp("book")
    cmd = [
        sys.executable,
        "-c",
        "from jupyter_book.cli.main import main; main()",
        "build",
        str(ROOT),
        "--path-output",
        str(out),
        "-W",
        "-n",
        "--keep-going",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"jupyter-book build failed:\n{log[-4000:]}"
    assert "build succeeded" in log and not re.search(r"WARNING|ERROR", log), log[-4000:]
    return out / "_build" / "html"


def test_every_page_is_built(built_html):
    for nb in sorted((ROOT / "book").glob("*.ipynb")):
        assert (built_html / "book" / (nb.stem + ".html")).exists()
    assert (built_html / "_static" / "mt-vendor" / "vega-bundle.js").exists()


def test_no_cdn_is_needed_to_draw(built_html):
    for page in sorted((built_html / "book").glob("[0-9][0-9]_*.html")):
        html = page.read_text()
        srcs = re.findall(r'<script[^>]*src="([^"]+)"', html)
        remote = [s for s in srcs if s.startswith(("http:", "https:", "//"))]
        assert not remote, f"{page.name}: scripts loaded from the network: {remote}"
        assert "mt-vendor/vega-bundle.js" in html and "mt-vendor/widgets/embed.js" in html, page.name


def _dump_dom(page: Path) -> str:
    profile = tempfile.mkdtemp()
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no network at all: every host lookup fails
        "--virtual-time-budget=20000",
        "--dump-dom",
        page.as_uri(),
    ]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


CHAPTERS = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def _stored_outputs(stem: str) -> list:
    nb = nbformat.read(ROOT / "book" / f"{stem}.ipynb", as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it with apt where it can)")
@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_draws_charts_widgets_and_math_offline(built_html, stem):
    outputs = _stored_outputs(stem)
    charts = sum(any(k.startswith("application/vnd.vegalite") for k in o.get("data", {})) for o in outputs)
    widgets = sum("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert charts >= 1 and widgets >= 1, "every chapter has at least one chart and one widget"
    dom = _dump_dom(built_html / "book" / f"{stem}.html")
    drawn = len(re.findall(r'class="marks"', dom))  # vega's drawn root element, one per chart
    assert drawn == charts, f"{drawn} of {charts} charts drawn"
    assert "chart failed to draw" not in dom.replace("'chart failed to draw: '", "")
    assert len(re.findall(r'class="[^"]*widget-', dom)) >= widgets, "widgets did not render from their saved state"
    assert "mjx-container" in dom, "MathJax did not typeset the formulas"
