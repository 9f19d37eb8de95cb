"""Small helpers the test files share (import them: `from helpers import rand`).

pytest puts `tests/` on `sys.path` (the folder has no `__init__.py`), so this
module imports as `helpers`. Fixtures live in `conftest.py`; the float64
reference implementations live in `minitransformer/reference.py` (exercise
checkers use them too).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]  # the repository root


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    """A float64 standard-normal tensor of `shape` from its own generator: the same
    numbers for the same seed, whatever ran before (the global RNG is untouched)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def load_benchmark(name: str) -> ModuleType:
    """Import `benchmarks/<name>.py` (a script, not a package module) as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
