"""Every exercise's reference solution passes its checker; plausible wrong answers fail it.

Adding an exercise means adding at least two wrong answers to the WRONG dict of
tests/wrong_answers/chNN.py (test_every_exercise_has_two_wrong_answers enforces it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from minitransformer.exercises import (
    EXERCISES,
    chapters,  # noqa: F401  (registers all exercises)
    check,
    get,
    solution,
)


def _load_wrong_answers() -> dict:
    """Collect WRONG from every tests/wrong_answers/chNN.py (one file per chapter)."""
    wrong = {}
    for path in sorted((Path(__file__).parent / "wrong_answers").glob("ch[0-9][0-9].py")):
        spec = importlib.util.spec_from_file_location(f"wrong_answers_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        wrong.update(module.WRONG)
    return wrong


WRONG = _load_wrong_answers()


def test_every_exercise_has_two_wrong_answers():
    assert set(WRONG) == set(EXERCISES), "each registered exercise needs wrong answers in WRONG (and vice versa)"
    assert all(len(w) >= 2 for w in WRONG.values())


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_reference_solution_passes(key):
    result = check(key, get(key).solution)
    assert result.passed and result.attempted, result.message
    assert "correct" in result.message


@pytest.mark.parametrize("key,i", [(k, i) for k, ws in WRONG.items() for i in range(len(ws))])
def test_wrong_answer_fails_with_specific_feedback(key, i):
    result = check(key, WRONG[key][i])
    assert result.attempted and not result.passed, f"wrong answer {i} of {key} passed"
    assert "✗ case" in result.message and "Hint:" in result.message


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_every_known_mistake_is_diagnosed(key):
    for mistake in get(key).mistakes:
        result = check(key, mistake.wrong)
        assert not result.passed and mistake.hint in result.message, (key, result.message)


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_untouched_stub_is_not_attempted_and_never_raises(key):
    def stub(*args): ...  # your code here

    def raises(*args):
        raise NotImplementedError

    for fn in (stub, raises, None):
        result = check(key, fn)
        assert not result.attempted and not result.passed and "not attempted yet" in result.message


def test_crash_is_reported_not_raised():
    result = check("ch03.attention", lambda q, k, v: q @ k)  # shape error inside the reader's code
    assert not result.passed and "raised RuntimeError" in result.message and "case 1/" in result.message


def test_solution_shows_package_source():
    shown = solution("ch03.softmax")
    assert "def softmax_solution" in repr(shown) and "```python" in shown._repr_markdown_()
    with pytest.raises(KeyError, match="no exercise"):
        get("ch99.nothing")
