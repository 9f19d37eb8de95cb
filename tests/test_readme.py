"""The README's code blocks run as printed."""

from __future__ import annotations

import re

import pytest
import torch

from helpers import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")


def readme_code(section: str) -> str:
    """The first ```python block under the README heading ``## {section}``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    match = re.search(r"```python\n(.*?)```", text[start : None if end < 0 else end], flags=re.S)
    assert match, f"no python block under '## {section}'"
    return match.group(1)


def test_llama_style_block_snippet_runs():
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(readme_code("A Llama-style block"), "README.md", "exec"), scope)
    assert scope["y"].shape == (2, 10, 256) and scope["packed"].shape == (1, 10, 256)
    assert scope["tokens"].shape == (1, 21)
    block = scope["block"]
    assert not any(name.endswith("bias") for name, _ in block.named_parameters())
    assert type(block.norm1).__name__ == "RMSNorm" and block.ffn.activation == "swiglu"


def test_library_in_one_screen_snippet_runs():
    scope: dict = {}
    exec(compile(readme_code("Library in one screen"), "README.md", "exec"), scope)
    assert scope["y"].shape == (2, 10, 512) and scope["w"].shape == (2, 8, 10, 10)
