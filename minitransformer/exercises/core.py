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

Right values are not enough. Once a case's values match, the check also rejects
an output that lost precision (float32 from float64 inputs) or integer ids turned
into floats; an input changed in place; a call to a library function that does the
exercise (:class:`Forbidden`: torch.softmax in the softmax exercise, the package's
own function, ...); and, with a :class:`Pairwise` probe, a tensor with one entry per
(query, key) pair where the exercise exists to avoid it. A wrong value is always
reported first, with its targeted hint; none of this changes the message a correct
answer gets.
"""

from __future__ import annotations

import html
import importlib
import inspect
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "Case",
    "Exercise",
    "Forbidden",
    "Pairwise",
    "CheckResult",
    "register",
    "get",
    "check",
    "hint",
    "solution",
    "EXERCISES",
]

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


@dataclass(frozen=True)
class Forbidden:
    """Library calls that do the exercise for the reader; calling one fails the check.

    ``torch_names``: names of PyTorch's built-in (C) functions and tensor methods, e.g.
    ``"softmax"`` matches ``torch.softmax``, ``x.softmax`` and what ``F.softmax`` calls.
    ``functions``: Python functions as ``"module:qualname"`` (the package's own, or
    ``torch.nn.functional``'s), matched however the reader reached them (imported by
    name, through the module, or inside another function). ``hint`` says what to do instead.
    """

    hint: str
    torch_names: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pairwise:
    """A complexity probe: no tensor created during the call may have one axis per (query, key) pair.

    ``sizes(*args, **kwargs)`` gives ``(n, m)`` for a case; a tensor whose shape holds both
    ``n`` and ``m`` (on different axes) is the ``n x m`` matrix the exercise avoids.
    """

    sizes: Callable[..., tuple[int, int]]
    hint: str


class _CallWatch:
    """Context manager: records the first forbidden call made inside it (a ``sys.setprofile`` hook).

    Calls are observed, not stopped: the reader's function runs as written, and the check
    reports the call afterwards. The function being checked is never flagged for being
    itself one of the forbidden functions (the reference solution may be the package's own).
    """

    def __init__(self, forbidden: list[Forbidden], fn: Callable):
        self.found: tuple[str, Forbidden] | None = None
        self._names: dict[str, Forbidden] = {}
        self._codes: dict[Any, tuple[str, Forbidden]] = {}
        own = getattr(fn, "__code__", None)
        for rule in forbidden:
            for name in rule.torch_names:
                self._names.setdefault(name, rule)
            for spec in rule.functions:
                obj = _resolve(spec)
                code = getattr(obj, "__code__", None)
                if code is not None and code is not own:
                    module, _, qualname = spec.partition(":")
                    public = ".".join(part for part in module.split(".") if not part.startswith("_"))
                    self._codes.setdefault(code, (f"{public}.{qualname}", rule))

    def _profile(self, frame, event, arg):
        if self.found is not None:
            return
        if event == "call":
            hit = self._codes.get(frame.f_code)
            if hit is not None:
                self.found = hit
        elif event == "c_call":
            name = getattr(arg, "__name__", None)
            rule = self._names.get(name) if name else None
            if rule is not None and _is_torch_builtin(arg):
                self.found = (_torch_name(arg, name), rule)

    def __enter__(self):
        self._previous = sys.getprofile()
        if self._names or self._codes:
            sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self._previous)
        return False


def _resolve(spec: str) -> Any:
    """``"module:qualname"`` -> the object, or None when the module is not importable.

    Modules outside this package are only looked up when already imported (a reader who
    calls scipy has imported it), so a check never pays for importing them.
    """
    module_name, _, qualname = spec.partition(":")
    if not module_name.startswith(("minitransformer", "torch")) and module_name not in sys.modules:
        return None
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return inspect.unwrap(obj) if callable(obj) else obj


_TORCH_NAMESPACES = {"torch._C._nn": "torch.nn.functional", "torch._C._special": "torch.special"}


def _torch_name(fn: Any, name: str) -> str:
    """How a reader would write a PyTorch built-in: Tensor.softmax, torch.nn.functional.unfold, ..."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, torch.Tensor):
        return f"Tensor.{name}"
    module = getattr(fn, "__module__", None) or getattr(owner, "__name__", None) or "torch"
    if module in _TORCH_NAMESPACES:
        module = _TORCH_NAMESPACES[module]
        name = name.removeprefix("special_")
    elif module.startswith("torch._C"):
        module = "torch"
    return f"{module}.{name}"


def _is_torch_builtin(fn: Any) -> bool:
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, torch.Tensor):
        return True
    module = getattr(fn, "__module__", None) or getattr(owner, "__name__", None) or ""
    return isinstance(module, str) and module.startswith("torch")


class _PairwiseProbe(TorchFunctionMode):
    """Records the first tensor a PyTorch call inside it returns whose shape holds both ``n`` and ``m``.

    A function mode (not a dispatch mode, whose first use imports torch._dynamo: seconds):
    it sees every call the reader's code makes to PyTorch (operators, methods, einsum).
    """

    def __init__(self, n: int, m: int):
        super().__init__()
        self.n, self.m, self.found = n, m, None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.found is None:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and self._pairwise(tuple(t.shape)):
                    self.found = tuple(t.shape)
                    break
        return out

    def _pairwise(self, shape: tuple[int, ...]) -> bool:
        i = [a for a, s in enumerate(shape) if s == self.n]
        j = [b for b, s in enumerate(shape) if s == self.m]
        return any(a != b for a in i for b in j)


def _dtype_of(x: Any):
    """The dtype of a tensor or array as a NumPy dtype (None for anything else)."""
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bfloat16:
            return np.dtype("float16")
        try:
            return np.dtype(str(x.dtype).removeprefix("torch."))
        except TypeError:  # a dtype NumPy does not know (float8, ...)
            return None
    if isinstance(x, np.ndarray):
        return x.dtype
    return None


def _dtype_problem(got: Any, expected: Any, case: Case) -> str | None:
    """A sentence when ``got`` has a dtype that loses information, else None."""
    g, e = _dtype_of(got), _dtype_of(expected)
    if g is None or e is None:
        return None
    inputs = [a for a in (*case.args, *case.kwargs.values()) if isinstance(a, (torch.Tensor, np.ndarray))]
    float64_in = any(_dtype_of(a) == np.float64 for a in inputs)
    if e == np.float64 and float64_in and g.kind == "f" and g.itemsize < 8:
        name = str(got.dtype).removeprefix("torch.")
        return (
            f"your output is {name} while the inputs are float64: somewhere a "
            f"tensor was created or cast in {name} (torch.zeros, torch.ones, torch.tensor and .float() give "
            "float32 unless told otherwise), which throws away half the digits."
        )
    if e.kind in "iu" and np.ndim(expected) >= 1 and g.kind not in "iu":
        return (
            f"your output has dtype {str(getattr(got, 'dtype', g))}: these are "
            "token ids / indices, which must stay integers (int64) to index a table such as nn.Embedding."
        )
    return None


_DTYPE_HINT = (
    "create new tensors in the input's dtype (dtype=x.dtype, torch.zeros_like, x.new_zeros) and do not "
    "call .float(); keep integer ids as integers."
)

_MUTATION_HINT = (
    "work on new tensors: write x = x - m (a new tensor) rather than x -= m, x[...] = ..., or a method "
    "ending in an underscore (masked_fill_, mul_, ...); the caller still needs its inputs unchanged."
)


def _snapshot(case: Case) -> list[tuple[int | str, torch.Tensor]]:
    """Copies of the case's tensor arguments, to detect in-place changes."""
    items = [*enumerate(case.args), *case.kwargs.items()]
    return [(key, a.detach().clone()) for key, a in items if isinstance(a, torch.Tensor)]


def _changed(before: torch.Tensor, after: torch.Tensor) -> bool:
    if before.shape != after.shape or before.dtype != after.dtype:
        return True
    same = before == after
    if before.is_floating_point():
        same = same | (before.isnan() & after.isnan())
    return not bool(same.all())


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
        forbidden: library calls that would do the exercise for the reader (see :class:`Forbidden`).
        pairwise: a complexity probe (see :class:`Pairwise`).
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
        forbidden: list[Forbidden] | tuple = (),
        pairwise: Pairwise | None = None,
    ):
        self.key, self.title, self.solution, self.cases = key, title, solution, cases
        self.hint, self.mistakes, self.rtol, self.atol = hint, list(mistakes), rtol, atol
        self.reference = reference
        self.forbidden, self.pairwise = list(forbidden), pairwise

    def _arg_name(self, key: int | str) -> str:
        if isinstance(key, str):
            return key
        names = list(inspect.signature(self.solution).parameters)
        return names[key] if key < len(names) else f"argument {key + 1}"

    def _run(self, fn: Callable, case: Case) -> tuple[Any, str | None]:
        """Call ``fn`` on ``case`` under the probes; returns its output and a sentence + hint on misuse."""
        before = _snapshot(case)
        probe = _PairwiseProbe(*self.pairwise.sizes(*case.args, **case.kwargs)) if self.pairwise else None
        with _CallWatch(self.forbidden, fn) as watch:
            if probe is None:
                got = fn(*case.args, **case.kwargs)
            else:
                with probe:
                    got = fn(*case.args, **case.kwargs)
        misuse = None
        if watch.found is not None:
            name, rule = watch.found
            misuse = f"your function calls {name}, which does the exercise for you.\nHint: {rule.hint}"
        elif probe is not None and probe.found is not None:
            n, m = probe.n, probe.m
            misuse = (
                f"the values are right, but your function builds a tensor of shape {probe.found}: one entry per "
                f"(query, key) pair ({n} queries x {m} keys), the n x m matrix this exercise exists to avoid.\n"
                f"Hint: {self.pairwise.hint}"
            )
        for key, old in before:
            new = (case.args[key] if isinstance(key, int) else case.kwargs[key]).detach()
            if _changed(old, new):
                if misuse is None:
                    misuse = (
                        f"the output is right, but your function changed its input `{self._arg_name(key)}` in place."
                        f"\nHint: {_MUTATION_HINT}"
                    )
                if new.shape == old.shape and new.dtype == old.dtype:
                    with torch.no_grad():
                        new.copy_(old)  # restore it, so the known mistakes are tried on the true inputs
        return got, misuse

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
            diff = np.abs(g - e)
            worst = float(np.nanmax(diff)) if not np.all(np.isnan(diff)) else float("nan")
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
                got, misuse = self._run(fn, case)
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
            dtype_problem = _dtype_problem(got, expected, case)
            if problem is not None:
                hint = (
                    self.hint if dtype_problem is None else f"{dtype_problem} {_DTYPE_HINT[0].upper()}{_DTYPE_HINT[1:]}"
                )
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
            if misuse is None and dtype_problem is not None:
                misuse = f"the values are right, but {dtype_problem}\nHint: {_DTYPE_HINT}"
            if misuse is not None:
                return CheckResult(
                    self.key, True, False, f"{head}\n✗ case {n}/{len(cases)} ({case.description}): {misuse}"
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
