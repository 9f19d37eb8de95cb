"""Sphinx extension: draw altair charts and ipywidgets in the built book with NO internet.

By default altair's HTML and myst-nb's widget support load vega, vega-lite,
vega-embed and the widget manager from CDNs, so a reader offline (or behind a
firewall) sees empty boxes. This extension

1. writes the vega + vega-lite + vega-embed bundle that ships inside the
   pinned ``vl-convert-python`` wheel, and the non-AMD ``@jupyter-widgets/html-manager``
   bundle and MathJax installed by ``npm ci`` in this folder, into ``_static/mt-vendor/``
   (a generated static path, not the book's ``_static/`` folder, so the
   libraries are only added to the pages that need them);
2. renders the notebooks' vega-lite outputs (``application/vnd.vegalite.v*+json``,
   what altair shows in Jupyter and Colab) as a ``<div>`` drawn by ``vegaEmbed``,
   adding the bundle to that page only;
3. serves the local html-manager and MathJax at the path that ``_config.yml`` gives
   myst-nb's ``nb_ipywidgets_js`` (instead of require.js + the CDN's embed-amd.js),
   with two small patches (``EMBED_PATCHES``) so that it logs nothing on a healthy page,
   and ``static/mathjax2-shim.js`` (served by ``page_fixes.py``): the manager speaks
   MathJax 2 (``MathJax.Hub.Queue``), the book ships MathJax 3.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from docutils import nodes

HERE = Path(__file__).parent
VEGA_MIMES = tuple(f"application/vnd.vegalite.v{v}+json" for v in (6, 5, 4))
VEGA_LITE_VERSION = "6.4"  # altair 6 writes v6 specs; v6 draws v5 specs too
VEGA_JS = "mt-vendor/vega-bundle.js"
WIDGETS_JS = "mt-vendor/widgets/embed.js"
WIDGETS_DIST = HERE / "node_modules" / "@jupyter-widgets" / "html-manager" / "dist"
MATHJAX_DIST = HERE / "node_modules" / "mathjax" / "es5"
# MathJax's combined TeX bundle and what it loads lazily (extensions, fonts, menu);
# the speech-rule engine (sre/) and the other combined bundles are left out.
MATHJAX_PARTS = ("tex-mml-chtml.js", "input", "output/chtml", "a11y", "ui", "adaptors")
# Exact edits to the minified html-manager 1.0.15 bundle (each must match exactly as often
# as stated, so that a new version of the bundle fails the build instead of going unpatched):
EMBED_PATCHES = (
    # The widget-state schema has union types; ajv's default strict mode warned about it
    # on every page ("strict mode: use allowUnionTypes ...").
    ("gt=new(ft()),mt=gt.compile(pt)", "gt=new(ft())({allowUnionTypes:!0}),mt=gt.compile(pt)", 1),
    # MathJax 2's Hub exists only once MathJax 3 has started and the shim has put it
    # there; before that MathJax 3 typesets the whole page itself.
    (
        'void 0!==window.MathJax&&MathJax.Hub.Queue(["Typeset",MathJax.Hub,e])',
        'void 0!==window.MathJax&&void 0!==MathJax.Hub&&MathJax.Hub.Queue(["Typeset",MathJax.Hub,e])',
        2,
    ),
)


class VegaLitePlugin:
    """A myst-nb mime renderer plugin for vega-lite outputs."""

    mime_priority_overrides = [("html", m, 5) for m in VEGA_MIMES]
    _count = 0

    @staticmethod
    def handle_mime(renderer, data, inline):
        if data.mime_type not in VEGA_MIMES:
            return None
        VegaLitePlugin._count += 1
        div_id = f"mt-vega-{VegaLitePlugin._count}"
        spec = data.content if isinstance(data.content, dict) else json.loads(data.string)
        spec_json = json.dumps(spec, sort_keys=True).replace("</", "<\\/")
        renderer.add_js_file("mt_vega_bundle", VEGA_JS, {})
        html = (
            f'<div class="mt-vega-chart" id="{div_id}"></div>\n'
            "<script>\n"
            "(function () {\n"
            f"  var spec = {spec_json};\n"
            "  function draw() {\n"
            f"    vegaEmbed('#{div_id}', spec, {{actions: false, renderer: 'svg'}})\n"
            "      .catch(function (e) { document.getElementById("
            f"'{div_id}').textContent = 'chart failed to draw: ' + e; }});\n"
            "  }\n"
            "  if (window.vegaEmbed) { draw(); } else { window.addEventListener('load', draw); }\n"
            "})();\n"
            "</script>"
        )
        return [nodes.raw(text=html, format="html", classes=["output", "vega-lite"])]


def _install_plugin() -> None:
    """Register the plugin with myst-nb (which otherwise only reads entry points)."""
    from myst_nb.core import render

    original = render.load_mime_renders
    if getattr(original, "_mt_patched", False):
        return

    def load_mime_renders():
        return [*original(), VegaLitePlugin]

    load_mime_renders._mt_patched = True
    render.load_mime_renders = load_mime_renders


def _write_vendor(app) -> None:
    """Create the generated static folder with the two JS bundles."""
    import vl_convert

    root = Path(app.doctreedir).parent / ".mt_static"
    vendor = root / "mt-vendor"
    vendor.mkdir(parents=True, exist_ok=True)
    bundle = vendor / "vega-bundle.js"
    if not bundle.exists():
        # Wrapped in a function so its top-level names (e.g. `_`) do not clash with
        # the page's other scripts; it publishes window.vegaEmbed / vega / vegaLite itself.
        js = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)
        bundle.write_text("(function () {\n" + js + "\n})();\n", encoding="utf-8")
    for needed in (WIDGETS_DIST / "embed.js", MATHJAX_DIST / "tex-mml-chtml.js"):
        if not needed.exists():
            raise RuntimeError(f"{needed} is missing: run `npm ci --prefix book/_ext` (make book does this)")
    widgets = vendor / "widgets"
    if not (widgets / "embed.js").exists():
        shutil.copytree(WIDGETS_DIST, widgets, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.map", "*amd*"))
    embed = _patched_embed()
    if (widgets / "embed.js").read_text(encoding="utf-8") != embed:  # also patches a folder left by an older build
        (widgets / "embed.js").write_text(embed, encoding="utf-8")
    mathjax = vendor / "mathjax"
    for part in MATHJAX_PARTS:
        src, dst = MATHJAX_DIST / part, mathjax / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        elif not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    app.config.html_static_path.append(str(root))


def _patched_embed() -> str:
    js = (WIDGETS_DIST / "embed.js").read_text(encoding="utf-8")
    for old, new, count in EMBED_PATCHES:
        if js.count(old) != count:
            raise RuntimeError(f"{WIDGETS_DIST / 'embed.js'}: expected {count} x {old!r}; update EMBED_PATCHES")
        js = js.replace(old, new)
    return js


def setup(app):
    _install_plugin()
    app.connect("builder-inited", _write_vendor)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
