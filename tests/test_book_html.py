"""The HTML build succeeds without warnings, and its pages draw offline in headless Chromium:
no console errors or warnings, no sideways scrolling at 1280 px or on a 390 px phone."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import pytest

from devtools import CHROMIUM_ARGS, Browser

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
        assert "mt-vendor/vega-bundle.js" in html, page.name
        if "application/vnd.jupyter.widget-view+json" in html:  # a page with a widget left
            assert "mt-vendor/widgets/embed.js" in html, page.name


def test_solution_toggles_say_show_solution(built_html):
    for page in sorted((built_html / "book").glob("[0-9][0-9]_*.html")):
        html = page.read_text()
        assert html.count('<p class="collapsed admonition-title">Show solution</p>') >= 3, page.name
        assert "Show code cell output" not in html, f"{page.name}: a solution toggle kept myst-nb's prompt"


def test_each_script_is_included_once(built_html):
    for page in [built_html / "search.html", *sorted((built_html / "book").glob("*.html"))]:
        scripts = re.findall(r"<script[^>]*>.*?</script>", page.read_text(), flags=re.S)
        repeated = {s[:120] for s in scripts if scripts.count(s) > 1}
        assert not repeated, f"{page.name}: included twice: {repeated}"


def _dump_dom(page: Path) -> str:
    profile = tempfile.mkdtemp()
    cmd = [
        CHROMIUM,
        *CHROMIUM_ARGS,  # headless, no network: every host lookup fails
        f"--user-data-dir={profile}",
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
    assert charts >= 1, "every chapter has at least one chart"
    dom = _dump_dom(built_html / "book" / f"{stem}.html")
    drawn = len(re.findall(r'class="marks"', dom))  # vega's drawn root element, one per chart
    assert drawn == charts, f"{drawn} of {charts} charts drawn"
    assert "chart failed to draw" not in dom.replace("'chart failed to draw: '", "")
    if widgets:
        assert len(re.findall(r'class="[^"]*widget-', dom)) >= widgets, "widgets did not render from their saved state"
    assert "mjx-container" in dom, "MathJax did not typeset the formulas"


@pytest.fixture(scope="module")
def browser():
    with Browser(CHROMIUM) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def served(built_html):
    """The built book over HTTP on 127.0.0.1 (the search page fetches pages; file:// may not)."""
    handler = functools.partial(_QuietHandler, directory=str(built_html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/favicon.ico":  # asked for by the browser itself, not by the page
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):
        pass


# What a reader's browser must reach before the page is judged: every chart drawn by
# vega, MathJax started and done with the page, widgets rendered from their saved state.
CHARTS_DRAWN = (
    "document.querySelectorAll('.mt-vega-chart svg.marks').length >= document.querySelectorAll('.mt-vega-chart').length"
)
WIDGETS_DRAWN = (
    "document.querySelectorAll('.jupyter-widgets').length >="
    " document.querySelectorAll('script[type=\"application/vnd.jupyter.widget-view+json\"]').length"
)
MATHJAX_DONE = "window.MathJax && MathJax.startup ? MathJax.startup.promise.then(() => true) : false"
SIDEWAYS = "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
VIEWPORTS = {"desktop": (1280, 900, False), "phone": (390, 844, True)}


# A chapter whose console is known not to be clean yet, with the reason (strict xfail: the
# entry must go once it is fixed). Empty: every chapter page is clean.
KNOWN_CONSOLE_ISSUES: dict[str, str] = {}  # chapter stem -> why its console is not clean yet (strict xfail)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it with apt where it can)")
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize(
    "stem",
    [
        pytest.param(s, marks=pytest.mark.xfail(reason=KNOWN_CONSOLE_ISSUES[s], strict=True))
        if s in KNOWN_CONSOLE_ISSUES
        else s
        for s in CHAPTERS
    ],
)
def test_chapter_logs_no_errors_and_never_scrolls_sideways(built_html, browser, stem, viewport):
    """Loaded as a reader would (DevTools protocol): nothing in the console (errors, warnings,
    uncaught exceptions, failed loads) and no sideways scrolling; what is wider than the text
    column (a code line, a chart, a table) scrolls inside its own box."""
    width, height, mobile = VIEWPORTS[viewport]
    page = browser.open((built_html / "book" / f"{stem}.html").as_uri(), width=width, height=height, mobile=mobile)
    try:
        drawn = page.wait_until(CHARTS_DRAWN, timeout=60) and page.wait_until(WIDGETS_DRAWN, timeout=30)
        typeset = page.evaluate(MATHJAX_DONE, timeout=60)
        time.sleep(0.5)  # let the widget manager's typesetting and late console messages arrive
        scroll_width, client_width = page.evaluate(SIDEWAYS)
        problems = page.console_errors()
    finally:
        page.close()
    if scroll_width > client_width + 1:
        problems.append(f"the page scrolls sideways: scrollWidth {scroll_width} > clientWidth {client_width}")
    assert not problems, f"{stem} at {width} px:\n" + "\n".join(problems)
    assert drawn and typeset, "the charts, widgets or formulas did not draw"


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it with apt where it can)")
def test_search_summaries_show_no_raw_tex(served, browser):
    page = browser.open(f"{served}/search.html?q=softmax")
    try:
        summaries = "document.querySelectorAll('#search-results p.context')"
        assert page.wait_until(f"{summaries}.length >= 5", 60), "the search found nothing"
        time.sleep(1)  # the summaries arrive one fetch at a time
        texts = page.evaluate(f"Array.from({summaries}, p => p.textContent)")
        errors = page.console_errors()
    finally:
        page.close()
    tex = [t for t in texts if re.search(r"\\[(\[)]|\\(frac|mathrm|sqrt|top|times|sum)\b|\$\$", t)]
    assert not tex, f"search summaries show raw TeX: {tex[:2]}"
    assert not errors, errors


# Every control of every chart (a slider, a drop-down, radio buttons, a check box that
# vega-embed binds to a parameter) is moved to another position; what the chart draws must
# change. Returns one record per control.
DRIVE_CONTROLS = r"""
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const fire = (el, ...types) => types.forEach(t => el.dispatchEvent(new Event(t, {bubbles: true})));
  const records = [];
  for (const chart of document.querySelectorAll('.mt-vega-chart')) {
    const svg = () => chart.querySelector('svg.marks').outerHTML;
    for (const bind of chart.querySelectorAll('.vega-bindings .vega-bind')) {
      const name = (bind.querySelector('.vega-bind-name') || {}).textContent || '?';
      const range = bind.querySelector('input[type=range]');
      const select = bind.querySelector('select');
      const radios = [...bind.querySelectorAll('input[type=radio]')];
      const box = bind.querySelector('input[type=checkbox]');
      const before = svg();
      let undo;
      if (range) {
        const old = range.value;
        range.value = old === range.max ? range.min : range.max;
        fire(range, 'input', 'change');
        undo = () => { range.value = old; fire(range, 'input', 'change'); };
      } else if (select) {
        const old = select.selectedIndex;
        select.selectedIndex = old === select.options.length - 1 ? 0 : select.options.length - 1;
        fire(select, 'input', 'change');
        undo = () => { select.selectedIndex = old; fire(select, 'input', 'change'); };
      } else if (radios.length) {
        const old = radios.find(r => r.checked);
        const other = radios.find(r => !r.checked);
        other.checked = true; fire(other, 'change');
        undo = () => { if (old) { old.checked = true; fire(old, 'change'); } };
      } else if (box) {
        box.click();
        undo = () => box.click();
      } else {
        records.push({chart: chart.id, name, kind: 'unknown', changed: false});
        continue;
      }
      let changed = false;
      for (let i = 0; i < 20 && !changed; i++) { await sleep(100); changed = svg() !== before; }
      records.push({chart: chart.id, name: name.trim(), changed});
      undo();
      await sleep(150);
    }
  }
  return records;
})()
"""


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it with apt where it can)")
@pytest.mark.parametrize("stem", CHAPTERS)
def test_every_control_changes_what_the_chart_shows(built_html, browser, stem):
    """The interactive charts respond in the static page, without a kernel: every control
    of every chart, moved to another position, changes what the chart draws."""
    page = browser.open((built_html / "book" / f"{stem}.html").as_uri(), width=1280, height=900)
    try:
        assert page.wait_until(CHARTS_DRAWN, timeout=60), "the charts did not draw"
        records = page.evaluate(DRIVE_CONTROLS, timeout=240)
    finally:
        page.close()
    assert records, f"{stem}: no chart has a control"
    dead = [f"{r['chart']}: {r['name']}" for r in records if not r["changed"]]
    assert not dead, f"{stem}: controls that change nothing: {dead}"


# At 1280 px: the width of the cell column, every chart's own (designed) width and the
# code cells whose lines do not fit.
MEASURE = r"""
(() => {
  const column = document.querySelector('.bd-article section').getBoundingClientRect().width;
  const charts = [...document.querySelectorAll('.mt-vega-chart svg.marks')].map(s => ({
    id: s.parentElement.id, designed: +s.getAttribute('width'), shown: s.getBoundingClientRect().width}));
  const code = [...document.querySelectorAll('.bd-article div.cell_input pre')]
    .filter(p => p.scrollWidth > p.clientWidth + 1)
    .map(p => p.textContent.split('\n').reduce((a, l) => l.length > a.length ? l : a, ''));
  return {column, charts, code};
})()
"""


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it with apt where it can)")
@pytest.mark.parametrize("stem", CHAPTERS)
def test_charts_and_code_fit_the_text_column(built_html, browser, stem):
    """At 1280 px no chart is designed wider than the text column (a few pixels over shrink
    invisibly; more would shrink the lettering) and no chart is shown wider; code cells show
    their lines without scrolling."""
    page = browser.open((built_html / "book" / f"{stem}.html").as_uri(), width=1280, height=900)
    try:
        assert page.wait_until(CHARTS_DRAWN, timeout=60), "the charts did not draw"
        m = page.evaluate(MEASURE)
    finally:
        page.close()
    column = m["column"]
    wide = [f"{c['id']}: {c['designed']} px" for c in m["charts"] if c["designed"] > 1.04 * column]
    shown = [f"{c['id']}: {c['shown']:.0f} px" for c in m["charts"] if c["shown"] > column + 1]
    assert not wide, f"{stem}: charts designed wider than the {column:.0f}-px column: {wide}"
    assert not shown, f"{stem}: charts shown wider than the {column:.0f}-px column: {shown}"
    assert not m["code"], f"{stem}: code cells that scroll sideways, longest lines: {m['code']}"


def test_widgets_that_need_python_say_so():
    """An ipywidget left in a chapter runs Python: the page says so just above it."""
    for stem in CHAPTERS:
        nb = nbformat.read(ROOT / "book" / f"{stem}.ipynb", as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            if not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cell.outputs):
                continue
            above = next((c.source for c in reversed(nb.cells[:i]) if c.cell_type == "markdown"), "")
            assert "only in Jupyter or Colab" in above, f"{stem}, cell {i}: a widget without the note above it"
