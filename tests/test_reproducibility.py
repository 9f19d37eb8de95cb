"""The same cell prints the same digits on every run: the chapters' setup makes MKL reproducible."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import torch
import minitransformer as mt
from minitransformer.book import notebook
notebook.setup(seed=0, quiet=True)      # what every chapter's first cell does
torch.manual_seed(0)
W, b = torch.randn(64, 16, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
x0 = torch.randn(14, 16, dtype=torch.float64)
results = set()
for offset in range(16):                    # the same input at 16 different memory alignments
    buf = torch.empty(x0.numel() + offset, dtype=torch.float64)
    x = buf[offset:].view_as(x0)
    x.copy_(x0)
    results.add(torch.nn.functional.linear(x, W, b).sum().item().hex())
print(len(results))
"""


def test_matrix_products_do_not_depend_on_memory_alignment():
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}  # as a fresh Jupyter kernel has it
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1", "one input gave several results: MKL's reproducible mode is off"
