"""Run every chapter as Colab would: Python 3.12, Colab's pinned packages, the package from git.

Colab's runtime is imitated in a virtual environment made beforehand with Colab's own pins
(Python 3.12, ipywidgets 7.7.1, numpy 2.0.2, pandas 2.2.2, altair 5.5.0, a CUDA build of
torch, ipykernel and nbclient), for instance::

    python3.12 -m venv /work/colab/venv
    /work/colab/venv/bin/pip install torch==2.9.1 numpy==2.0.2 pandas==2.2.2 \\
        ipywidgets==7.7.1 altair==5.5.0 ipykernel nbclient nbformat
    /work/colab/venv/bin/python scripts/simulate_colab.py [--repo /work/main] [book/0*.ipynb]

Each chapter is executed from a copy, in a kernel that has ``google.colab`` imported (an
empty stand-in module, as Colab's kernel has the real one), so the setup cell takes its Colab
branch and runs its ``pip install`` lines: the package from the repository's committed HEAD
(``git+file://``, not the working tree; the GitHub address in the cell is replaced by the
local repository, which this machine can reach) and the chapter's data wheels. A chapter
passes when every cell runs without an error; outputs are not compared (another torch
prints other digits). Not run by the test suite: it installs a CUDA torch (GBs).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the git repository to install from")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args()
    notebooks = args.notebooks or sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))

    work = Path(tempfile.mkdtemp(prefix="colab-"))
    stand_in = work / "site" / "google" / "colab"
    stand_in.mkdir(parents=True)
    (stand_in.parent / "__init__.py").write_text("")
    (stand_in / "__init__.py").write_text(
        '"""A stand-in for Colab\'s module: its presence is what the setup cell checks."""\n'
    )
    startup = work / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab  # noqa: F401\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(work / "site"),
        "IPYTHONDIR": str(work / "ipython"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    os.environ.update(env)

    # A fresh runtime: no minitransformer installed yet (so the setup cell's install is what runs).
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "minitransformer"], check=False)
    url = f"git+file://{args.repo.resolve()}"
    github = re.search(r"^\s+url:\s*(\S+)", (ROOT / "_config.yml").read_text(), flags=re.M).group(1)
    failures = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        setup = next(c for c in nb.cells if c.cell_type == "code")
        setup.source = setup.source.replace(f"git+{github}", url)
        assert url in setup.source, f"{path.name}: the setup cell does not install the package from git"
        start = time.perf_counter()
        client = NotebookClient(
            nb, timeout=args.timeout, kernel_name="python3", resources={"metadata": {"path": str(work)}}
        )
        try:
            client.execute()
            status = "ok"
        except Exception as error:  # noqa: BLE001 - report and go on with the next chapter
            status = f"FAILED: {str(error).strip().splitlines()[-1][:300]}"
            failures.append(path.name)
        print(f"{path.name}: {status} ({time.perf_counter() - start:.0f} s)", flush=True)
        nbformat.write(nb, work / path.name)
    print(f"executed copies in {work}")
    print("every chapter ran" if not failures else f"failed: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
