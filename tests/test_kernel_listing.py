"""kernel_listing shows the package's own CUDA sources, with the file's line numbers."""

from __future__ import annotations

import pytest

from minitransformer.book.kernel_listing import KERNEL_DIR, kernel_listing


def test_listing_is_the_file_itself():
    lines = (KERNEL_DIR / "teaching_forward.cu").read_text().splitlines()
    shown = kernel_listing("teaching_forward.cu", "// ---- Epilogue")
    assert shown.lines == lines[shown.first - 1 : shown.last]
    assert shown.lines[0].strip().startswith("// ---- Epilogue") and shown.last == len(lines)
    assert f"{shown.first:4d}  " in shown.text() and "```cuda" in shown._repr_markdown_()


def test_markers_match_line_beginnings_not_comments():
    # the kernel's signature is also quoted in the header comment; the listing must start at the code
    shown = kernel_listing("teaching_forward.cu", 'extern "C" __global__', "// ---- Shared memory")
    assert shown.lines[0].startswith('extern "C" __global__ void flash_fwd_teaching(')
    assert not any(line.lstrip().startswith("// ---- Shared memory") for line in shown.lines)
    whole_header = kernel_listing("teaching_forward.cu", None, "#define NEG_INF")
    assert whole_header.first == 1 and whole_header.lines[-1].strip()  # trailing blank lines dropped


def test_bad_names_and_markers_raise():
    with pytest.raises(ValueError, match="no kernel source"):
        kernel_listing("missing.cu")
    with pytest.raises(ValueError, match="no line begins with start"):
        kernel_listing("teaching_forward.cu", "no such line")
    with pytest.raises(ValueError, match="begins with stop"):
        kernel_listing("teaching_forward.cu", "// ---- Epilogue", "// ---- Shared memory")


def test_listings_highlight_without_lexing_errors():
    # the book is built with -W: a listing the CUDA highlighter cannot lex fails the build
    from pygments.lexers import CudaLexer
    from pygments.token import Error

    for path in sorted(KERNEL_DIR.iterdir()):
        md = kernel_listing(path.name)._repr_markdown_()
        code = md.split("```cuda\n", 1)[1].rsplit("\n```", 1)[0]
        errors = [v for tok, v in CudaLexer().get_tokens(code) if tok is Error]
        assert not errors, f"{path.name}: the CUDA lexer fails on {errors[:3]}"
