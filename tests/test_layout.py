"""The package's two floors: the core library never imports the book's sub-package.

Core = every module of ``minitransformer`` outside ``minitransformer/book`` and
``minitransformer/exercises`` (the exercise checkers sit beside the chapters and
may use the book's helpers). Every import statement is checked, including the
lazy ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import minitransformer as mt

PACKAGE = Path(mt.__file__).resolve().parent
BOOK_FLOOR = ("book", "exercises")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def core_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in BOOK_FLOOR]


def test_core_never_imports_the_book():
    offenders = {}
    for path in core_modules():
        bad = sorted(
            m for m in _imported_modules(path) if m == "minitransformer.book" or m.startswith("minitransformer.book.")
        )
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = bad
    assert not offenders, f"core modules import the book's sub-package: {offenders}"


def test_the_checker_sees_relative_imports():
    # A check that cannot fail proves nothing: the resolver must see a book module's own imports.
    imports = _imported_modules(PACKAGE / "book" / "char_lm.py")
    assert "minitransformer.gpt" in imports and "minitransformer.configs" in imports
    assert len(core_modules()) > 15


def test_top_level_exports_the_contract_and_configs_only():
    chapter_helpers = {"notebook", "viz", "train_char_lm", "CharLMRecipe", "fit", "collate"}
    assert not chapter_helpers & set(mt.__all__)
    assert len(mt.__all__) <= 25
