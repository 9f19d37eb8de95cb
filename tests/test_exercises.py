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


# -- the checkers catch what values alone cannot: library calls, dtype, in-place changes, complexity ----------


def _problem_line(result) -> str:
    return result.message.split("\n")[1]


def test_forbidden_functions_still_exist():
    """A ban on a renamed or removed function would silently stop working: every one must resolve."""
    from minitransformer.exercises.core import _resolve

    for key, exercise in sorted(EXERCISES.items()):
        for rule in exercise.forbidden:
            for spec in rule.functions:
                if spec.startswith(("minitransformer", "torch")):
                    assert _resolve(spec) is not None, (key, spec)


def test_linear_attention_rejects_the_n_by_m_matrix():
    """Issue 14's example: exact values, but computed through phi(Q) phi(K)^T."""
    import torch.nn.functional as F

    def quadratic(q, k, v):
        A = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-2, -1)  # (n, m)
        return (A @ v) / A.sum(-1, keepdim=True)

    result = check("ch08.linear_attention", quadratic)
    assert not result.passed
    assert "the values are right" in result.message and "(4, 6)" in result.message
    assert "n x m" in result.message and "phi(K)^T V" in result.message


def test_library_call_is_found_however_it_was_imported():
    import torch
    import torch.nn.functional as F

    import minitransformer
    from minitransformer import scaled_dot_product_attention as sdpa

    def helper(x):
        return F.softmax(x, dim=-1)  # one call deeper than the reader's function

    for fn, name in [
        (lambda x: torch.softmax(x, -1), "torch.softmax"),
        (lambda x: x.softmax(-1), "Tensor.softmax"),
        (lambda x: helper(x), "Tensor.softmax"),
    ]:
        result = check("ch03.softmax", fn)
        assert not result.passed and f"calls {name}" in result.message, result.message
    for fn in (lambda q, k, v: sdpa(q, k, v), lambda q, k, v: minitransformer.scaled_dot_product_attention(q, k, v)):
        result = check("ch03.attention", fn)
        assert "calls minitransformer.attention.scaled_dot_product_attention" in result.message, result.message


def test_library_calls_allowed_where_they_are_not_the_exercise():
    """torch.softmax inside attention, F.unfold's cousin Tensor.unfold, matrix_power: legitimate tools."""
    import math

    import torch

    cases = {
        "ch03.attention": lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v,
        "ch04.split_heads": lambda x, h: x.unflatten(-1, (h, -1)).transpose(1, 2),
        "ch09.patchify": lambda im, p: (
            im.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(im.shape[0], -1, im.shape[1] * p * p)
        ),
        "ch09.receptive_field": lambda m, L: (
            torch.linalg.matrix_power((m | torch.eye(m.shape[0], dtype=torch.bool)).double(), L) > 0
        ),
        "ch09.entropy": lambda w: -(w * w.log()).nansum(-1),
    }
    for key, fn in cases.items():
        result = check(key, fn)
        assert result.passed, result.message


def test_in_place_change_of_an_input_names_it():
    def softmax_in_place(x):
        x -= x.max(-1, keepdim=True).values
        return x.exp() / x.exp().sum(-1, keepdim=True)

    result = check("ch03.softmax", softmax_in_place)
    assert not result.passed and "changed its input `x` in place" in _problem_line(result)


def test_float32_result_from_float64_inputs_is_rejected():
    result = check(
        "ch03.softmax", lambda x: (e := (x - x.max(-1, keepdim=True).values).float().exp()) / e.sum(-1, keepdim=True)
    )
    assert not result.passed and "float32 while the inputs are float64" in result.message
    result = check("ch05.relative_positions", lambda n, K: get("ch05.relative_positions").solution(n, K).float())
    assert not result.passed and "must stay integers" in result.message


def test_check_restores_the_profiler_even_when_the_reader_raises():
    import sys

    def boom(x):
        raise ValueError("oops")

    before = sys.getprofile()
    check("ch03.softmax", boom)
    check("ch03.softmax", lambda x: x.softmax(-1))
    assert sys.getprofile() is before


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_success_message_is_unchanged(key):
    """The wording the book's readers see for a correct answer (the probes add nothing to it)."""
    exercise = get(key)
    expected = f"[{key}] {exercise.title}\n✓ correct: all {len(exercise.cases())} cases match the reference."
    assert check(key, exercise.solution).message == expected
