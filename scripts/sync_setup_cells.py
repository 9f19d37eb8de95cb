"""Write the repository URL of `_config.yml` into every chapter's setup cell.

    python scripts/sync_setup_cells.py          # rewrite the notebooks
    python scripts/sync_setup_cells.py --check  # exit 1 if any is out of date

`_config.yml` (repository.url) is the one place that names the repository:
the launch buttons read it, and this script copies it into the
`pip install ... git+URL` line each chapter runs on Colab.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIP_LINE = re.compile(r'(!pip install -q "minitransformer\[gpu\] @ git\+)([^"]+)(")')


def repo_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def chapter_notebooks() -> list[Path]:
    return sorted(p for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def setup_cell(nb) -> nbformat.NotebookNode | None:
    return next((c for c in nb.cells if c.cell_type == "code"), None)


def sync(check: bool) -> int:
    url, stale = repo_url(), []
    for path in chapter_notebooks():
        nb = nbformat.read(path, as_version=4)
        cell = setup_cell(nb)
        if cell is None or not PIP_LINE.search(cell.source):
            print(f"{path.name}: first code cell is not the setup cell (no `!pip install ... git+URL` line)")
            stale.append(path)
            continue
        new = PIP_LINE.sub(lambda m: m.group(1) + url + m.group(3), cell.source)
        if new != cell.source:
            stale.append(path)
            if not check:
                cell.source = new
                nbformat.write(nb, path)
                print(f"{path.name}: updated")
    if check and stale:
        print("out of date:", ", ".join(p.name for p in stale), "- run python scripts/sync_setup_cells.py")
    return 1 if (check and stale) else 0


if __name__ == "__main__":
    sys.exit(sync(check="--check" in sys.argv))
