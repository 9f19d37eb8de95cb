/* Search results without raw TeX.
 *
 * Sphinx's search page shows, under each hit, a summary cut from the text of the page it
 * fetches; formulas are in that HTML as TeX source (MathJax typesets them in the reader's
 * browser), so summaries read "\(\mathrm{softmax}(QK^\top/\sqrt{d})\)". This wraps
 * `Search.htmlToText` (searchtools.js) to put "…" in place of every formula first.
 * Loaded with `defer` on search.html only (page_fixes.py), i.e. after searchtools.js.
 */
(function () {
  "use strict";
  if (typeof Search === "undefined" || typeof Search.htmlToText !== "function") { return; }
  var htmlToText = Search.htmlToText;
  Search.htmlToText = function (htmlString, anchor) {
    var doc = new DOMParser().parseFromString(htmlString, "text/html");
    doc.querySelectorAll(".math, mjx-container, script[type^='math/tex']").forEach(function (el) {
      el.replaceWith(doc.createTextNode(el.tagName === "DIV" ? " … " : "…"));
    });
    return htmlToText(doc.documentElement.outerHTML, anchor);
  };
})();
