"""Execute chapter notebooks in place, storing outputs and widget state.

    python scripts/execute_notebooks.py book/03_queries_keys_values.ipynb [...]

This is how a chapter's committed outputs are produced (nbval then checks
that they reproduce). Runs from the repository root with the installed
package; cells tagged ``skip-execution`` are left as they are.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

# The kernel inherits these: MKL's strict reproducible mode (results independent of
# memory alignment, see minitransformer.book.notebook.setup), and threads that sleep
# rather than spin while they wait (a loaded machine otherwise crawls).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def execute(path: Path, timeout: int = 1200) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    # Do not imitate a front end's Output widgets: what a widget callback prints is
    # then stored as the cell's own output, exactly as nbval (which has no front end)
    # sees it, and the static book shows it under the widget's saved controls.
    client.widget_registry = {}
    client.execute()
    elapsed = time.perf_counter() - start
    nbformat.write(nb, path)
    return elapsed


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        seconds = execute(Path(arg))
        print(f"{arg}: executed in {seconds:.1f} s")
