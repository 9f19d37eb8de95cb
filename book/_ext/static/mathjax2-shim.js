/* MathJax 2's `MathJax.Hub.Queue` on top of MathJax 3, for the widget manager.
 *
 * The vendored @jupyter-widgets/html-manager typesets widget labels and outputs with
 * `MathJax.Hub.Queue(["Typeset", MathJax.Hub, node])` (the MathJax 2 API) whenever
 * `window.MathJax` exists; the book ships MathJax 3, which has no `Hub`, so every widget
 * threw "Cannot read properties of undefined (reading 'Queue')". This script runs after
 * Sphinx's `window.MathJax = {...}` configuration and before MathJax 3 loads (deferred):
 * it puts a `Hub` on the configuration object (used until MathJax is ready) and, through
 * `startup.ready`, on the real MathJax object, and typesets the queued nodes with
 * `MathJax.typesetPromise` once MathJax has started. Loaded just before embed.js on pages
 * with widgets (see `nb_ipywidgets_js` in _config.yml).
 */
(function () {
  "use strict";
  var pending = [];

  function typeset(nodes) {
    var mj = window.MathJax;
    if (!mj || typeof mj.typesetPromise !== "function") {
      pending.push.apply(pending, nodes);  // MathJax 3 has not started yet
      return;
    }
    var started = (mj.startup && mj.startup.promise) || Promise.resolve();
    started
      .then(function () { return mj.typesetPromise(nodes.filter(function (n) { return n && n.isConnected; })); })
      .catch(function (err) { console.log("MathJax could not typeset a widget: " + err); });
  }

  var hub = {
    // Queue(["Typeset", MathJax.Hub, node], ...): typeset the nodes; other MathJax 2
    // commands (and callbacks) have no MathJax 3 meaning here and are ignored.
    Queue: function () {
      var nodes = [];
      for (var i = 0; i < arguments.length; i++) {
        var job = arguments[i];
        if (Array.isArray(job) && job[0] === "Typeset") { nodes.push(job[2] || document.body); }
      }
      if (nodes.length) { typeset(nodes); }
    },
    Typeset: function (node) { typeset([node || document.body]); },
  };

  var mj = window.MathJax = window.MathJax || {};
  if (typeof mj.typesetPromise === "function") {  // MathJax 3 already running
    mj.Hub = mj.Hub || hub;
    return;
  }
  mj.Hub = hub;  // MathJax 3 moves unknown configuration keys aside: harmless
  mj.startup = mj.startup || {};
  var ready = mj.startup.ready;
  mj.startup.ready = function () {
    if (ready) { ready(); } else { window.MathJax.startup.defaultReady(); }
    window.MathJax.Hub = hub;
    if (pending.length) { typeset(pending.splice(0)); }
  };
})();
