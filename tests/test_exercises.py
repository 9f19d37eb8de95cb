"""Every exercise's reference solution passes its checker; plausible wrong answers fail it.

Adding an exercise means adding at least two wrong answers to WRONG below
(test_every_exercise_has_two_wrong_answers enforces it).
"""
from __future__ import annotations

import math

import pytest
import torch

from minitransformer.exercises import EXERCISES, check, get, solution
from minitransformer.exercises import chapters  # noqa: F401  (registers all exercises)


def _sdpa(q, k, v, axis=-1, scale=True):
    s = q @ k.transpose(-2, -1)
    if scale:
        s = s / math.sqrt(q.shape[-1])
    return torch.softmax(s, axis) @ v


WRONG = {
    "ch03.softmax": [
        lambda x: torch.exp(x) / torch.exp(x).sum(-1, keepdim=True),        # overflows at 1000
        lambda x: torch.softmax(x, dim=0),                                    # wrong axis
        lambda x: torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(),     # normalised over everything
        lambda x: x / x.sum(-1, keepdim=True),                                # no exponential
    ],
    "ch03.attention": [
        lambda q, k, v: _sdpa(q, k, v, scale=False),                          # forgot the scale
        lambda q, k, v: _sdpa(q, k, v, axis=-2),                              # softmax over queries
        lambda q, k, v: (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])) @ v,  # raw scores as weights
        lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], -1) @ v,  # divided by d_k
    ],
    "ch03.causal_mask": [
        lambda Lq, Lk: torch.triu(torch.ones(Lq, Lk, dtype=torch.bool)),      # inverted (future instead of past)
        lambda Lq, Lk: torch.tril(torch.ones(Lq, Lk, dtype=torch.bool), -1 + Lk - Lq),  # diagonal dropped
        lambda Lq, Lk: torch.tril(torch.ones(Lq, Lk, dtype=torch.bool)),      # not shifted when Lk > Lq
        lambda Lq, Lk: torch.tril(torch.ones(Lq, Lk)).float(),                # float, not bool
    ],
    "ch03.masked_attention": [
        lambda q, k, v, m: (torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) * m) @ v,
        lambda q, k, v, m: torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~m, 0), -1) @ v,
        lambda q, k, v, m: torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~m, float("-inf")), -1) @ v,  # NaN row
    ],
}


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
    def stub(*args):
        ...  # your code here

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
