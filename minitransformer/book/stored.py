"""Results that a script in ``scripts/`` stores and a chapter loads.

Long experiments run once in a script, which writes a JSON file into
``minitransformer/book/results/``; the chapter reads it back (and the tests
check it). This module is the one reader and the one writer of those files,
and the one description of the run that made them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["RESULTS_DIR", "run_info", "write_results", "read_results"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def run_info(script: str, argv: list[str] | None = None) -> dict[str, Any]:
    """What a stored result depends on: torch's version and threads, the wait policy, the date, the command.

    Args:
        script: the script's path from the repository root, e.g. ``"scripts/block_variants.py"``.
        argv: its arguments (``sys.argv[1:]`` when None).
    """
    args = sys.argv[1:] if argv is None else argv
    return {
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", script, *args]),
    }


def write_results(path: str | Path, blob: dict[str, Any]) -> Path:
    """Write ``blob`` as indented JSON (diff-friendly), creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(blob, indent=1, default=_builtin) + "\n")
    return path


def _builtin(value: Any) -> Any:
    """NumPy and torch scalars as Python numbers (``json`` knows only the built-in types)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_results(path: str | Path, script: str, format: str | None = None) -> dict[str, Any]:
    """Read what ``script`` stored at ``path``.

    Raises:
        FileNotFoundError: no file (the message gives the command that makes it).
        ValueError: a file whose ``"format"`` is not ``format`` (when one is given).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results at {path}; make them with:  python {script}")
    blob = json.loads(path.read_text())
    if format is not None and blob.get("format") != format:
        raise ValueError(f"{path} is not a {format} file")
    return blob
