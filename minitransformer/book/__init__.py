"""The book's floor: code that exists for the chapters, built on the core library.

Experiments, charts and controls, notebook setup, worked examples, lab recipes,
checkpoints and stored results live here. The core library (the modules at the
package top level) never imports this sub-package; a test checks it.

Chapters import what they need from the modules directly, e.g.
``from minitransformer.book import notebook`` or
``from minitransformer.book.viz import heatmap``.
"""
