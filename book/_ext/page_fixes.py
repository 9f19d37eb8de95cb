"""Sphinx extension: what the reader sees in the browser, fixed in one place.

1. Each ``<script>``/stylesheet once per page. sphinx-thebe and sphinx-togglebutton
   register their inline configuration scripts after the HTML builder has started, and
   Sphinx 7 then writes them twice (once as filename None, once as ""); the second ``const THEBE_JS_URL = ...`` threw
   "Identifier 'THEBE_JS_URL' has already been declared" on every page.
2. Solution toggles say "Show solution" / "Hide solution" (cells tagged ``solution``;
   they are also tagged ``hide-output``, whose myst-nb prompt is "Show code cell output").
3. ``static/mt-book.css``: long inline code wraps, wide outputs and charts scroll inside
   their own box, so that no page scrolls sideways on a phone (390 px).
4. ``static/mt-search-summary.js`` on the search page: summaries without raw TeX.
5. ``static/mathjax2-shim.js``: served for ``nb_ipywidgets_js`` (see offline_assets.py).
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform

STATIC = Path(__file__).parent / "static"
SOLUTION_TAG = "solution"
SOLUTION_PROMPTS = {"prompt_show": "Show solution", "prompt_hide": "Hide solution"}


class SolutionPrompts(SphinxPostTransform):
    """Name the toggle of a solution cell before myst-nb's HideInputCells (priority 199)
    copies the cell's prompts onto the ``<details>`` it wraps the output in."""

    default_priority = 198
    formats = ("html",)

    def run(self, **kwargs) -> None:
        for node in self.document.findall(nodes.container):
            if node.get("nb_element") != "cell_code" or not node.get("hide_mode"):
                continue
            if SOLUTION_TAG in node.get("cell_metadata", {}).get("tags", []):
                for key, prompt in SOLUTION_PROMPTS.items():
                    node[key] = prompt


def _unique(assets: list) -> list:
    seen, kept = set(), []
    for asset in assets:
        # an inline script is registered with filename None and copied by Sphinx with ""
        filename = getattr(asset, "filename", asset) or ""
        key = (str(filename), repr(sorted(getattr(asset, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(asset)
    return kept


def _page_context(app, pagename, templatename, context, doctree) -> None:
    if pagename == "search":
        app.add_js_file("mt-search-summary.js", loading_method="defer")  # this page only


def _deduplicate(app, pagename, templatename, context, doctree) -> None:
    for key in ("script_files", "css_files"):
        if key in context:
            context[key][:] = _unique(context[key])


def _static_path(app) -> None:
    app.config.html_static_path.append(str(STATIC))


def setup(app):
    app.add_post_transform(SolutionPrompts)
    app.connect("builder-inited", _static_path)
    app.add_css_file("mt-book.css")
    app.connect("html-page-context", _page_context)
    # early: html-page-context stops at the first handler that returns a template name
    app.connect("html-page-context", _deduplicate, priority=100)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
