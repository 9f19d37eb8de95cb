"""Write the CUDA kernels' resource table (ptxas, no GPU) into benchmarks/RESULTS.md.

    python scripts/kernel_resources.py              # rewrite the table between the markers
    python scripts/kernel_resources.py --stdout     # print it instead
    python scripts/kernel_resources.py --check      # exit 1 if RESULTS.md is out of date

Every kernel instantiation is compiled with NVRTC for sm_75, sm_80 and sm_90
exactly as the launcher compiles it, with ptxas' verbose report
(:func:`minitransformer.flash.resources.resource_table`): registers per thread,
shared memory per block (static + the dynamic amount the launcher requests),
stack frame and spills, and the blocks that fit on one SM. Needs
``cupy-cuda12x`` and ``nvidia-cuda-nvrtc-cu12``; about half a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from minitransformer.flash.resources import (  # noqa: E402
    ARCH_LIMITS,
    OCCUPANCY_EXCEPTIONS,
    markdown_table,
    resource_table,
)

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BEGIN = "<!-- kernel-resources:begin (scripts/kernel_resources.py writes this part) -->"
END = "<!-- kernel-resources:end -->"


def section() -> str:
    """The generated text between the markers."""
    from cupy_backends.cuda.libs import nvrtc

    major, minor = nvrtc.getVersion()
    limits = "; ".join(
        f"sm_{a}: {lim.smem_per_sm // 1024} KB shared memory per SM ({lim.smem_per_block_optin // 1024} KB per "
        f"block), {lim.max_threads_per_sm} threads and {lim.max_blocks_per_sm} blocks per SM"
        for a, lim in ARCH_LIMITS.items()
    )
    lines = [
        BEGIN,
        "",
        f"NVRTC {major}.{minor}, `--ptxas-options=-v`, options and name expressions of the launcher. "
        f"Limits: {limits}; 64K registers per SM.",
        "",
        markdown_table(resource_table()),
        "",
    ]
    if OCCUPANCY_EXCEPTIONS:
        lines.append("Exceptions to the required blocks per SM:")
        lines.append("")
        lines += [f"* `{name}` on sm_{arch}: {why}" for (name, arch), why in OCCUPANCY_EXCEPTIONS.items()]
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def replace_section(text: str, new: str) -> str:
    """``text`` with the part between the markers (markers included) replaced by ``new``."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"{RESULTS} lacks the markers {BEGIN!r} ... {END!r}")
    return text[:start] + new + text[stop + len(END) :]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(RESULTS), help=f"the Markdown file with the markers (default {RESULTS})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--stdout", action="store_true", help="print the section instead of writing it")
    mode.add_argument("--check", action="store_true", help="exit 1 if the file's section is out of date")
    args = p.parse_args(argv)
    new = section()
    if args.stdout:
        print(new)
        return 0
    path = Path(args.out)
    text = path.read_text(encoding="utf-8")
    updated = replace_section(text, new)
    if args.check:
        if updated != text:
            print(f"{path} is out of date: run python scripts/kernel_resources.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(updated, encoding="utf-8")
    print(f"wrote the kernel resource table to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
