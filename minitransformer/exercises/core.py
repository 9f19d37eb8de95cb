"""The exercise framework: a checker with specific feedback, hints, and solutions.

In a chapter, an exercise is three cells:

1. a stub the reader fills in (tagged ``exercise``)::

       def my_softmax(x):
           ...  # your code here

2. a one-line check, which says which input failed, what was expected and what
   came back, and a hint (an untouched stub prints "not attempted yet" and
   never raises, so the notebook always runs top to bottom)::

       check("ch03.softmax", my_softmax)

3. the reference solution, revealed on demand (collapsed in the HTML book)::

       solution("ch03.softmax")

Each exercise is an :class:`Exercise` registered under a key. Its reference
solution lives here, once; the tests prove that it passes its own checker and
that plausible wrong answers fail it.
"""

from __future__ import annotations

import html
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Case", "Exercise", "CheckResult", "register", "get", "check", "hint", "solution", "EXERCISES"]

EXERCISES: dict[str, Exercise] = {}


@dataclass(frozen=True)
class Case:
    """One input the checker tries: a description for the feedback, and the arguments."""

    description: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer: if the reader's output equals ``wrong(*args)``, say ``hint``."""

    wrong: Callable
    hint: str


@dataclass
class CheckResult:
    """What a check found. ``passed`` is True only when every case matched."""

    key: str
    attempted: bool
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message

    def _repr_html_(self) -> str:
        colour = "#1b7f3b" if self.passed else ("#8a6d00" if not self.attempted else "#b3261e")
        body = html.escape(self.message).replace("\n", "<br>")
        return (
            f'<div class="mt-check" style="border-left:4px solid {colour};padding:4px 10px;'
            f'font-family:monospace;white-space:pre-wrap">{body}</div>'
        )


def _to_numpy(x: Any) -> np.ndarray | None:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy() if x.dtype != torch.bool else x.cpu().numpy()
    if isinstance(x, (np.ndarray, list, tuple, float, int, np.generic)):
        try:
            return np.asarray(x)
        except Exception:  # ragged lists and the like
            return None
    return None


def _fmt(a: np.ndarray) -> str:
    """A short, rounded rendering of an array for feedback messages."""
    with np.printoptions(precision=4, suppress=True, threshold=24, edgeitems=3, linewidth=100):
        return np.array2string(np.asarray(a), separator=", ")


class Exercise:
    """An exercise: cases, a reference solution, known mistakes and a general hint.

    Args:
        key: registry key, e.g. ``"ch03.softmax"``.
        title: one line shown in the feedback.
        solution: the reference implementation (displayed by :func:`solution`).
        cases: a function returning the list of :class:`Case` to try (built with
            fixed seeds, so feedback is reproducible).
        hint: the general hint.
        mistakes: known wrong answers with targeted hints.
        rtol, atol: tolerances for numeric outputs.
        reference: where the expected outputs come from, when the package has an
            independent float64 reference (a function of :mod:`minitransformer.reference`
            taking the same arguments); None: the solution itself. With a
            reference, the tests prove that the solution agrees with it.
    """

    def __init__(
        self,
        key: str,
        title: str,
        solution: Callable,
        cases: Callable[[], list[Case]],
        hint: str,
        mistakes: list[Mistake] | tuple = (),
        rtol: float = 1e-5,
        atol: float = 1e-6,
        reference: Callable | None = None,
    ):
        self.key, self.title, self.solution, self.cases = key, title, solution, cases
        self.hint, self.mistakes, self.rtol, self.atol = hint, list(mistakes), rtol, atol
        self.reference = reference

    # -- comparison ----------------------------------------------------------
    def _mismatch(self, got: Any, expected: Any) -> str | None:
        """None if ``got`` matches ``expected``, else a sentence saying how it differs."""
        e = _to_numpy(expected)
        g = _to_numpy(got)
        if g is None:
            return f"expected an array/tensor of shape {tuple(e.shape)}, got a {type(got).__name__}"
        if g.shape != e.shape:
            return f"expected shape {tuple(e.shape)}, got shape {tuple(g.shape)}"
        if e.dtype == bool:
            if g.dtype != bool:
                return f"expected a boolean mask, got dtype {g.dtype}"
            if not np.array_equal(g, e):
                return f"expected\n{_fmt(e.astype(int))}\ngot\n{_fmt(g.astype(int))}  (1 = True)"
            return None
        if not np.all(np.isfinite(g)) and np.all(np.isfinite(e)):
            return f"your output contains NaN or inf:\n{_fmt(g)}"
        if not np.allclose(g, e, rtol=self.rtol, atol=self.atol, equal_nan=True):
            worst = float(np.nanmax(np.abs(g - e)))
            return f"expected\n{_fmt(e)}\ngot\n{_fmt(g)}\n(largest difference {worst:.3g})"
        return None

    # -- the check -----------------------------------------------------------
    def check(self, fn: Callable | None) -> CheckResult:
        """Run ``fn`` on every case and compare with the reference (or the solution)."""
        head = f"[{self.key}] {self.title}"
        not_yet = CheckResult(
            self.key, False, False, f"{head}\n- not attempted yet: fill in the function above and run this cell again."
        )
        if fn is None:
            return not_yet
        if not callable(fn):
            return CheckResult(self.key, True, False, f"{head}\n✗ expected a function, got {type(fn).__name__}.")
        cases = self.cases()
        expect = self.solution if self.reference is None else self.reference
        for n, case in enumerate(cases, 1):
            expected = expect(*case.args, **case.kwargs)
            try:
                got = fn(*case.args, **case.kwargs)
            except NotImplementedError:
                return not_yet
            except Exception as exc:  # the reader's code raised: show where
                return CheckResult(
                    self.key,
                    True,
                    False,
                    f"{head}\n✗ case {n}/{len(cases)} ({case.description}) raised "
                    f"{type(exc).__name__}: {exc}\nHint: {self.hint}",
                )
            if got is None or got is Ellipsis:
                if n == 1:
                    return not_yet
                return CheckResult(
                    self.key,
                    True,
                    False,
                    f"{head}\n✗ case {n}/{len(cases)} ({case.description}): your function returned None.",
                )
            problem = self._mismatch(got, expected)
            if problem is not None:
                hint = self.hint
                for mistake in self.mistakes:
                    try:
                        if self._mismatch(got, mistake.wrong(*case.args, **case.kwargs)) is None:
                            hint = mistake.hint
                            break
                    except Exception:
                        continue
                return CheckResult(
                    self.key,
                    True,
                    False,
                    f"{head}\n✗ case {n}/{len(cases)} ({case.description}): {problem}\nHint: {hint}",
                )
        return CheckResult(self.key, True, True, f"{head}\n✓ correct: all {len(cases)} cases match the reference.")


def register(exercise: Exercise) -> Exercise:
    if exercise.key in EXERCISES:
        raise ValueError(f"exercise {exercise.key!r} is registered twice")
    EXERCISES[exercise.key] = exercise
    return exercise


def get(key: str) -> Exercise:
    from . import chapters  # noqa: F401  (registers every chapter's exercises)

    if key not in EXERCISES:
        raise KeyError(f"no exercise {key!r}; known: {', '.join(sorted(EXERCISES))}")
    return EXERCISES[key]


def check(key: str, fn: Callable | None) -> CheckResult:
    """Check the reader's ``fn`` for exercise ``key``; the result displays as feedback."""
    return get(key).check(fn)


def hint(key: str) -> str:
    """The general hint of an exercise."""
    return get(key).hint


class _Solution:
    """Displays a reference solution's source (Markdown in Jupyter, plain text elsewhere)."""

    def __init__(self, key: str, source: str):
        self.key, self.source = key, source

    def __repr__(self) -> str:
        return f"# reference solution of {self.key}\n{self.source}"

    def _repr_markdown_(self) -> str:
        return f"Reference solution of `{self.key}`:\n\n```python\n{self.source}```\n"


def solution(key: str) -> _Solution:
    """Reveal the reference solution of exercise ``key`` (its source code, from the package)."""
    return _Solution(key, textwrap.dedent(inspect.getsource(get(key).solution)))
