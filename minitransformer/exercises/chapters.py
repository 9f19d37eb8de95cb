"""Importing this module registers every chapter's exercises (the modules named chNN.py)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

for _info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
    if _info.name.startswith("ch") and _info.name[2:].isdigit():
        importlib.import_module(f"{__package__}.{_info.name}")
