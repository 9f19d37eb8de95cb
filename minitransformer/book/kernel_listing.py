"""Show sections of the package's CUDA sources in a notebook (chapter 8 reads them line by line).

The book never copies kernel code: it displays the ``.cu`` files shipped in
``minitransformer/flash/kernels`` with :func:`kernel_listing`, which picks a
section by how its first line begins (and how the line after its last begins), and
numbers the lines as they are numbered in the file.
"""

from __future__ import annotations

from ..flash.sources import KERNEL_DIR, kernel_source

__all__ = ["KERNEL_DIR", "kernel_listing", "Listing"]


class Listing:
    """Numbered source lines: highlighted Markdown in Jupyter and the book, plain text elsewhere."""

    def __init__(self, filename: str, first: int, lines: list[str]):
        self.filename, self.first, self.lines = filename, first, lines

    @property
    def last(self) -> int:
        return self.first + len(self.lines) - 1

    def text(self) -> str:
        return "\n".join(f"{self.first + i:4d}  {line}" for i, line in enumerate(self.lines))

    def __repr__(self) -> str:
        return f"{self.filename}, lines {self.first}-{self.last}:\n{self.text()}"

    def _repr_markdown_(self) -> str:
        # Line numbers as C comments: a bare number before a ``#if`` would be a lexing
        # error for the CUDA highlighter (a directive must start its line, comments aside).
        numbered = "\n".join(f"/*{self.first + i:4d} */  {line}" for i, line in enumerate(self.lines))
        return f"`{self.filename}`, lines {self.first}–{self.last}:\n\n```cuda\n{numbered}\n```\n"


def kernel_listing(filename: str, start: str | None = None, stop: str | None = None) -> Listing:
    """Lines of ``kernels/<filename>`` from the first line that begins with ``start``
    (ignoring indentation) up to, not including, the next line that begins with ``stop``.

    Matching the beginning of a line (not any substring) keeps a marker such as
    ``extern "C" __global__`` from matching the kernel's description in a comment.

    Args:
        filename: e.g. ``"teaching_forward.cu"``.
        start: how the first line to show begins (None: the file's first line).
        stop: how the line after the last one to show begins (None: to the end).

    Raises:
        ValueError: if the file does not exist or a marker is not found.
    """
    if not KERNEL_DIR.joinpath(filename).is_file():
        known = sorted(p.name for p in KERNEL_DIR.iterdir())
        raise ValueError(f"no kernel source {filename!r}; known: {known}")
    lines = kernel_source(filename, inline_includes=False).splitlines()  # the file as stored
    begin = 0
    if start is not None:
        hits = [i for i, line in enumerate(lines) if line.lstrip().startswith(start)]
        if not hits:
            raise ValueError(f"{filename}: no line begins with start={start!r}")
        begin = hits[0]
    end = len(lines)
    if stop is not None:
        hits = [i for i, line in enumerate(lines) if line.lstrip().startswith(stop) and i > begin]
        if not hits:
            raise ValueError(f"{filename}: no line after line {begin + 1} begins with stop={stop!r}")
        end = hits[0]
    while end > begin + 1 and not lines[end - 1].strip():  # no trailing blank lines
        end -= 1
    return Listing(filename, begin + 1, lines[begin:end])
