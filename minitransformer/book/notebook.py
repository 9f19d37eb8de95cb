"""What every chapter's first cell calls: seed everything, pick the device, set display options.

Also :func:`show_source` (the package's own source in a cell) and :func:`glue` (a number
for the prose, pasted with myst-nb's ``{glue:text}`name``` role)."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from ..train import set_seed

__all__ = ["setup", "set_seed", "pick_device", "in_colab", "show_source", "glue"]


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


def pick_device(prefer: str | None = None) -> torch.device:
    """``cuda`` when a GPU is present (or ``prefer`` says so), else ``cpu``."""
    if prefer is not None:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def setup(seed: int = 0, *, threads: int | None = None, quiet: bool = False) -> torch.device:
    """Prepare a chapter: seeds, device, print options, reproducible CPU arithmetic.

    Args:
        seed: the seed of every random generator.
        threads: torch CPU threads (defaults to ``MT_THREADS`` or torch's choice).
        quiet: do not print the summary line.

    Returns:
        the device to use.
    """
    # MKL's results can depend on how its inputs happen to be aligned in memory, so the
    # same cell could print a different last digit from one run to the next. Its strict
    # "conditional numerical reproducibility" mode removes that (it must be set before
    # the first matrix product; `make` and scripts/execute_notebooks.py set it earlier).
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    set_seed(seed)
    torch.set_printoptions(precision=4, sci_mode=False)
    np.set_printoptions(precision=4, suppress=True)
    threads = threads or int(os.environ.get("MT_THREADS", "0")) or None
    if threads:
        torch.set_num_threads(threads)
    device = pick_device()
    from .viz import enable_book_renderer

    enable_book_renderer()
    if not quiet:
        where = "Colab" if in_colab() else "local"
        name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
        print(f"device: {device} ({name}), torch {torch.__version__}, {where}, seed {seed}")
    return device


class _Source:
    """Displays Python source: highlighted Markdown in Jupyter and the book, plain text elsewhere."""

    def __init__(self, title: str, source: str):
        self.title, self.source = title, source

    def __repr__(self) -> str:
        return self.source

    def _repr_markdown_(self) -> str:
        return f"`{self.title}`:\n\n```python\n{self.source}```\n"


def show_source(obj) -> _Source:
    """Show the package's own source of a function or class (never a copy that can drift)."""
    import inspect
    import textwrap

    name = f"{obj.__module__}.{obj.__qualname__}"
    return _Source(name, textwrap.dedent(inspect.getsource(obj)))


def glue(name: str, value, fmt: str | None = None) -> None:
    """Store ``value`` under ``name`` for the chapter's prose (formatted as text).

    The Markdown pastes it with myst-nb's role, ``{glue:text}`name```, so a measured
    number in the text comes from the code that measured it (never typed in by hand).
    ``value`` is formatted here, ``format(value, fmt)`` (``str(value)`` without ``fmt``),
    and the STRING is glued, so the book shows exactly these characters. The glue is
    stored without being displayed (``myst_nb.glue(name, text, display=False)``, a hidden
    output of the cell); where myst-nb is not installed (Colab) nothing is stored. It
    returns nothing, so a call on a cell's last line does not print a stray ``'2.38'``
    under the cell; the value is in the page where the prose uses it.

    Args:
        name: the key the Markdown refers to.
        value: a number, a string, anything ``format`` accepts.
        fmt: a format spec such as ``".3f"`` or ``",d"``; ``None``: ``str(value)``.

    """
    text = str(value) if fmt is None else format(value, fmt)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # e.g. on Colab: the prose is not built there
        return
    myst_glue(name, text, display=False)
