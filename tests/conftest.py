"""Shared pytest configuration: the `gpu` marker skips without CUDA + CuPy."""
from __future__ import annotations

import importlib.util

import pytest
import torch


def _has_gpu() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("cupy") is not None


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and CuPy (run these where a GPU is lent)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
