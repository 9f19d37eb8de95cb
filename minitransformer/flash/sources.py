"""Where the CUDA sources live, and how they are read: defined once for every user.

The ``.cu`` / ``.cuh`` files in ``minitransformer/flash/kernels`` ship as
package data. Three kinds of code read them:

* the GPU launcher (:mod:`.cupy_bridge`) and the NVRTC tests hand NVRTC one
  self-contained string, so local ``#include "..."`` lines are inlined;
* the CPU emulation (:mod:`.cpu_cuda`) compiles that same string with g++
  from a temporary directory (where no include path would find the header);
* the book's listings (:mod:`minitransformer.book.kernel_listing`) show the
  file exactly as it is, with its own line numbers: no inlining.

:data:`KERNEL_DIR` is found with :mod:`importlib.resources`, so it works
whether the package is a directory or a zip.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from importlib.resources.abc import Traversable

__all__ = ["KERNEL_DIR", "kernel_source"]

KERNEL_DIR: Traversable = importlib.resources.files(__package__).joinpath("kernels")

_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_.]+)"[ \t]*$', re.MULTILINE)


@functools.cache
def kernel_source(filename: str, *, inline_includes: bool = True) -> str:
    """The text of ``kernels/<filename>``.

    Args:
        filename: e.g. ``"teaching_forward.cu"`` or ``"fast_common.cuh"``.
        inline_includes: replace each local ``#include "x.cuh"`` by the text of
            ``kernels/x.cuh`` (recursively, each header once), framed by
            ``#line`` directives so that compiler messages still name the
            original file and line. ``False``: the file exactly as stored.

    Returns:
        The source text (self-contained when ``inline_includes``).

    Raises:
        FileNotFoundError: if ``kernels/<filename>`` (or an included file) does not exist.
    """
    if not inline_includes:
        return KERNEL_DIR.joinpath(filename).read_text(encoding="utf-8")
    seen: set[str] = set()

    def expand(name: str) -> str:
        text = KERNEL_DIR.joinpath(name).read_text(encoding="utf-8")

        def include(match: re.Match) -> str:
            inc = match.group(1)
            if inc in seen:
                return f"// (already included: {inc})"
            seen.add(inc)
            resume = text.count("\n", 0, match.start()) + 2  # the line after the #include
            return f'#line 1 "{inc}"\n{expand(inc)}\n#line {resume} "{name}"'

        return _INCLUDE.sub(include, text)

    return expand(filename)
