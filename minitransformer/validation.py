"""Argument checks shared by the core library: one wording for one mistake.

Every public function checks its arguments before doing any work and raises
``ValueError`` or ``TypeError`` with a message that names the argument and
shows the offending value or shape. The checks that recur across modules live
here, so that the same mistake reads the same everywhere:

* :func:`describe` -- a tensor's shape (or a value's type) for a message;
* :func:`check_positive_int` -- sizes, counts, tile sizes (``bool`` is never an int);
* :func:`check_probability` -- dropout probabilities, in ``[0, 1)``;
* :func:`check_real` -- a finite real number in a range (smoothing, eps, bases, fractions);
* :func:`check_scale` -- the score scale of every attention: None or a finite number > 0;
* :func:`check_bool` -- flags (``is_causal``, ...): ``True``/``False`` only;
* :func:`check_finite` / :func:`check_finite_tensors` -- floating tensors without NaN or inf;
* :func:`check_int_tensor` -- integer ids and class targets (dtype, and optionally range);
* :func:`check_qkv` / :func:`check_qkv_shapes` -- queries, keys and values of
  every attention in the package: scaled dot-product (``(..., L, d)``, leading
  dims broadcast), flash attention and decoding (``(B, H, N, d)`` with grouped
  key heads), linear and local attention, and the kernels' CPU runners (which
  check NumPy shapes).

This module imports only torch and NumPy; every other module may import it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "describe",
    "check_positive_int",
    "check_probability",
    "check_real",
    "check_scale",
    "check_bool",
    "check_choice",
    "check_finite",
    "check_finite_tensors",
    "check_int_tensor",
    "check_qkv",
    "check_qkv_shapes",
    "FLOAT_DTYPES",
    "MAX_TABLE_ENTRIES",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: The largest table (entries) a position function builds: 2**28 float64 numbers are 2 GiB.
#: Larger requests are a typo (``num_positions=10**9``) rather than a plan, and are refused up front.
MAX_TABLE_ENTRIES = 1 << 28


def describe(x: Any) -> str:
    """A short description of ``x`` for an error message.

    Args:
        x: anything.

    Returns:
        the shape of a tensor or array, e.g. ``"(2, 3, 4)"``; otherwise the
        type's name, e.g. ``"list"``.
    """
    if isinstance(x, (Tensor, np.ndarray)):
        return str(tuple(x.shape))
    return type(x).__name__


def _where(where: str | None) -> str:
    return f"{where}: " if where else ""


def check_choice(name: str, value: Any, choices: tuple[str, ...], *, where: str | None = None) -> str:
    """Return ``value`` if it is one of the strings ``choices``.

    Raises:
        TypeError: ``value`` is not a string (``activation must be a string, one of (...), got NoneType``).
        ValueError: a string that is not a choice (``norm='batch' is not one of ('layer', 'rms')``).
    """
    if not isinstance(value, str):
        raise TypeError(f"{_where(where)}{name} must be a string, one of {choices}, got {describe(value)}")
    if value not in choices:
        raise ValueError(f"{_where(where)}{name}={value!r} is not one of {choices}")
    return value


def _is_int(value: Any) -> bool:
    """True for Python and NumPy integers; False for ``bool`` (``True`` is not a size)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _int_kind(minimum: int, multiple_of: int) -> str:
    """``"a positive int"``, ``"a non-negative int"``, ``"a positive even int"``, ``"an int >= 3"``, ..."""
    sign = {1: "positive", 0: "non-negative"}.get(minimum)
    noun = {1: "int", 2: "even int"}.get(multiple_of, f"multiple of {multiple_of}")
    if sign is None:
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun} >= {minimum}"
    return f"a {sign} {noun}"


def check_positive_int(
    name: str, value: Any, *, minimum: int = 1, multiple_of: int = 1, where: str | None = None
) -> int:
    """Check that ``value`` is an int ``>= minimum`` (``bool`` is rejected).

    Args:
        name: the argument's name, used in the message.
        value: the value to check.
        minimum: the smallest allowed value (1: positive, 0: non-negative).
        multiple_of: ``value`` must also be a multiple of this (2: even).
        where: optional prefix naming the function or class, e.g. ``"RelativePositionBias"``.

    Returns:
        ``value`` as a Python int.

    Raises:
        ValueError: e.g. ``num_heads must be a positive int, got 0`` or
            ``head_dim must be a positive even int, got 7``.
    """
    if not _is_int(value) or value < minimum or value % multiple_of:
        raise ValueError(f"{_where(where)}{name} must be {_int_kind(minimum, multiple_of)}, got {value!r}")
    return int(value)


def check_probability(name: str, p: Any, *, where: str | None = None) -> float:
    """Check that ``p`` is a number in ``[0, 1)`` (a dropout probability).

    Args:
        name: the argument's name, used in the message.
        p: the value to check.
        where: optional prefix naming the function or class.

    Returns:
        ``p`` as a float.

    Raises:
        TypeError: ``p`` is not a real number (or is a ``bool``).
        ValueError: ``p`` is outside ``[0, 1)``, e.g. ``dropout_p must be in [0, 1), got 1.0``.
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{_where(where)}{name} must be a number in [0, 1), got {describe(p)}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{_where(where)}{name} must be in [0, 1), got {p}")
    return float(p)


def _is_real(value: Any) -> bool:
    """True for Python/NumPy real numbers; False for ``bool`` and tensors."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    where: str | None = None,
) -> float:
    """Check that ``value`` is a finite real number in a range.

    Args:
        name: the argument's name, used in the message.
        value: the value to check.
        low, high: the bounds (None: unbounded on that side).
        low_open, high_open: exclude the bound itself (``(0, 1)`` rather than ``[0, 1]``).
        where: optional prefix naming the function or class.

    Returns:
        ``value`` as a float.

    Raises:
        TypeError: not a real number (``bool`` and tensors included), e.g.
            ``smoothing must be a real number, got str``.
        ValueError: NaN, infinite, or out of range, e.g. ``smoothing must be in [0, 1], got 1.5``.
    """
    lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
    if not _is_real(value):
        raise TypeError(f"{_where(where)}{name} must be a real number in {lo}, {hi}, got {describe(value)}")
    x = float(value)
    bad = not math.isfinite(x)
    bad = bad or (low is not None and (x < low or (low_open and x == low)))
    bad = bad or (high is not None and (x > high or (high_open and x == high)))
    if bad:
        raise ValueError(
            f"{_where(where)}{name} must be {'finite and ' if not math.isfinite(x) else ''}in {lo}, {hi}, got {value!r}"
        )
    return x


def check_scale(scale: Any, *, name: str = "scale", where: str | None = None) -> float | None:
    """The score scale of an attention: None (the default ``1 / sqrt(d)``) or a finite number > 0.

    Every attention of the package (scaled dot-product, sparse, linear, FAVOR+,
    flash) takes its ``scale`` through this one check, so ``scale=0``,
    ``scale=-1`` or ``scale=float("nan")`` reads the same everywhere. A
    non-positive scale turns attention upside down (or flat) and NaN or inf
    scores give NaN weights: none of them is a setting anyone means.

    Args:
        scale: the value to check.
        name: the argument's name, used in the message.
        where: optional prefix naming the function.

    Returns:
        None, or ``scale`` unchanged (so that a Python float stays the very same number).

    Raises:
        TypeError: not a real number, e.g. ``scale must be a finite number > 0 or None, got str``.
        ValueError: ``scale must be a finite number > 0 or None, got nan``.
    """
    if scale is None:
        return None
    if not _is_real(scale):
        raise TypeError(f"{_where(where)}{name} must be a finite number > 0 or None, got {describe(scale)}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{_where(where)}{name} must be a finite number > 0 or None, got {scale!r}")
    return scale


def check_bool(name: str, value: Any, *, where: str | None = None) -> bool:
    """Check that a flag is ``True`` or ``False`` (a NumPy bool too; not ``1``, ``"yes"`` or a tensor).

    Raises:
        TypeError: e.g. ``is_causal must be True or False, got int 1``.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{_where(where)}{name} must be True or False, got {describe(value)} {value!r}")
    return bool(value)


def _all_finite(*tensors: Tensor) -> bool:
    """True when no tensor holds NaN or inf; one cheap reduction and one device sync for all of them.

    A sum is NaN or inf whenever an entry is (NaN propagates, inf + -inf is NaN). A sum of
    finite numbers can overflow only when they are huge (float32 entries averaging above
    ~1e30; half precision is summed in float32); then the exact element-wise test decides,
    so the answer is always exact and the common case costs one sum per tensor.
    """
    tensors = tuple(t for t in tensors if t.is_floating_point() and t.numel())
    if not tensors:
        return True
    half = (torch.float16, torch.bfloat16)
    total = sum(t.detach().sum(dtype=torch.float32 if t.dtype in half else None).float() for t in tensors)
    if bool(torch.isfinite(total)):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def check_finite(name: str, t: Tensor, *, where: str | None = None) -> None:
    """Check that a floating tensor holds no NaN or inf (integer tensors always pass).

    The test is one float64 sum over ``t`` (see :func:`_all_finite`); only when it fails are
    the bad entries counted for the message.

    Raises:
        ValueError: e.g. ``q has 2 non-finite values (NaN or inf) of 24 (shape (2, 3, 4))``.
    """
    if not _all_finite(t):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(
            f"{_where(where)}{name} has {bad} non-finite values (NaN or inf) of {t.numel()} (shape {tuple(t.shape)})"
        )


def check_finite_tensors(*named: tuple[str, Tensor], where: str | None = None) -> None:
    """:func:`check_finite` for several tensors with one reduction each and one device sync in all.

    Args:
        named: ``(name, tensor)`` pairs, e.g. ``("q", q), ("k", k), ("v", v)``.
        where: optional prefix naming the function.

    Raises:
        ValueError: naming the first tensor that holds NaN or inf.
    """
    if not _all_finite(*(t for _, t in named)):
        for name, t in named:
            check_finite(name, t, where=where)


def check_int_tensor(
    name: str,
    t: Any,
    *,
    dim: int | None = None,
    low: int | None = None,
    high: int | None = None,
    allow: int | None = None,
    where: str | None = None,
) -> Tensor:
    """Check a tensor of integer ids or class targets: dtype, rank and range.

    Args:
        name: the argument's name, used in the message.
        t: the value to check.
        dim: the number of dims it must have (None: any).
        low, high: the ids must lie in ``[low, high)`` (None: unbounded).
        allow: one value also allowed outside the range (an ``ignore_index``).
        where: optional prefix naming the function.

    Returns:
        ``t``.

    Raises:
        TypeError: not a tensor, or not an integer dtype (floating, bool, complex).
        ValueError: wrong rank, or ids out of range, e.g.
            ``targets must be in [0, 10) (or -100, the ignore_index); found 12``.
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"{_where(where)}{name} must be an integer torch.Tensor, got {describe(t)}")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{_where(where)}{name} must hold integer ids, got dtype {t.dtype}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{_where(where)}{name} must have {dim} dims, got shape {tuple(t.shape)}")
    if t.numel() and (low is not None or high is not None):
        ok = torch.ones_like(t, dtype=torch.bool)
        if low is not None:
            ok &= t >= low
        if high is not None:
            ok &= t < high
        if allow is not None:
            ok |= t == allow
        if not bool(ok.all()):
            bad = t[~ok]
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            extra = f" (or {allow}, the ignore_index)" if allow is not None else ""
            raise ValueError(
                f"{_where(where)}{name} must be in [{lo}, {hi}){extra}; found {int(bad.min())}"
                f"{'' if bad.numel() == 1 else f' .. {int(bad.max())} ({bad.numel()} values)'}"
            )
    return t


# -- queries, keys and values ----------------------------------------------------------------------


def _check_ranks(shapes: Sequence[tuple[int, ...]], names: Sequence[str], grouped: bool) -> None:
    """Exactly 4 dims ``(B, H, N, d)`` in the grouped layout, at least 2 ``(..., L, d)`` otherwise."""
    for name, shape in zip(names, shapes):
        if grouped and len(shape) != 4:
            raise ValueError(f"{name} must have shape (B, H, N, d); got {shape}")
        if not grouped and len(shape) < 2:
            raise ValueError(f"{name} must have at least 2 dims (..., L, d), got shape {shape}")


def _check_broadcast_batch(
    q_shape: tuple[int, ...], k_shape: tuple[int, ...], names: Sequence[str], enable_gqa: bool = False
) -> None:
    """``k``'s leading dims must broadcast against ``q``'s without enlarging them.

    With ``enable_gqa`` the head axis (dim -3) is compared on its own: ``q``'s
    ``H`` heads must be a multiple of ``k``'s ``H_kv``; the dims before it broadcast.
    """
    nq, nk = names[0], names[1]
    if enable_gqa:
        for name, shape in ((nq, q_shape), (nk, k_shape)):
            if len(shape) < 3:
                raise ValueError(f"enable_gqa=True needs a head axis: {name} must be (..., H, L, d), got shape {shape}")
        H, H_kv = q_shape[-3], k_shape[-3]
        if H_kv == 0 or H % H_kv:
            raise ValueError(
                f"enable_gqa=True: {nq} has {H} heads, not a multiple of {nk}'s {H_kv} heads (dim -3; "
                f"shapes {q_shape} and {k_shape})"
            )
        q_lead, k_lead = q_shape[:-3], k_shape[:-3]
    else:
        q_lead, k_lead = q_shape[:-2], k_shape[:-2]
    if k_lead == q_lead:  # equal leading dims (the usual case) need no broadcasting check
        return
    try:
        batch = torch.broadcast_shapes(q_lead, k_lead)
    except RuntimeError:
        hint = ""
        if (
            not enable_gqa
            and len(q_shape) >= 3
            and len(k_shape) >= 3
            and k_shape[-3]
            and q_shape[-3] % k_shape[-3] == 0
        ):
            hint = f"; for grouped-query attention ({nk} with fewer heads on dim -3) pass enable_gqa=True"
        raise ValueError(f"the leading dims of {nq} {q_shape} and {nk} {k_shape} do not broadcast{hint}") from None
    if tuple(batch) != q_lead:
        raise ValueError(f"{nk}'s leading dims {k_lead} would enlarge {nq}'s {q_lead}")


def _check_grouped_batch(
    q_shape: tuple[int, ...], k_shape: tuple[int, ...], v_shape: tuple[int, ...], names: Sequence[str]
) -> None:
    """``(B, H, N, d)`` against ``(B, H_kv, N_k, d)``: one batch, ``H % H_kv == 0``, one head dim, no empty axis."""
    nq, nk, nv = names
    B, H, N, d = q_shape
    if k_shape[0] != B:
        raise ValueError(f"{nq} has batch size {B} but {nk} has {k_shape[0]}")
    if k_shape[1] == 0 or H % k_shape[1]:
        raise ValueError(f"{nq} has {H} heads, not a multiple of {nk}'s {k_shape[1]} heads")
    if v_shape[3] != d:
        raise ValueError(
            f"{nv} has head dim {v_shape[3]} but {nq} and {nk} have {d}; the flash kernels need one head dim"
        )
    if min(B, H, N, d, k_shape[2]) == 0:
        raise ValueError(f"empty input: {nq} {q_shape}, {nk} {k_shape}")


def check_qkv_shapes(
    q_shape: Sequence[int],
    k_shape: Sequence[int],
    v_shape: Sequence[int],
    *,
    grouped: bool = False,
    square: str | None = None,
    same_head_dim: bool = True,
    enable_gqa: bool = False,
    names: Sequence[str] = ("q", "k", "v"),
) -> None:
    """Check the shapes of queries, keys and values for attention (no tensors needed).

    Two layouts:

    * ``grouped=False`` (scaled dot-product, linear and local attention):
      ``q (..., Lq, d)``, ``k (..., Lk, d)``, ``v (..., Lk, dv)``; ``k`` and
      ``v`` share their leading dims, which broadcast against ``q``'s without
      enlarging them.
    * ``grouped=True`` (flash attention, decoding, the kernels): ``q (B, H, N, d)``,
      ``k, v (B, H_kv, N_k, d)`` with ``H % H_kv == 0`` (grouped-query
      attention) and no empty axis.

    Args:
        q_shape, k_shape, v_shape: the three shapes.
        grouped: the ``(B, H, N, d)`` layout with grouped key heads.
        square: when not None, queries and keys must be the same positions
            (``Lq == Lk``); the string says why, e.g. ``"is_causal=True"``.
        same_head_dim: check that ``q`` and ``k`` have one head dim (False
            where the caller checks its own last axis, e.g. feature maps).
        enable_gqa: (``grouped=False`` only) ``k`` and ``v`` may have fewer
            heads on dim -3 than ``q``, ``H % H_kv == 0``.
        names: how the three arguments are called in messages.

    Raises:
        ValueError: naming the argument and the shapes, e.g.
            ``q has head dim 64 but k has 32``.
    """
    q_shape, k_shape, v_shape = (tuple(int(n) for n in s) for s in (q_shape, k_shape, v_shape))
    nq, nk, nv = names
    _check_ranks((q_shape, k_shape, v_shape), names, grouped)
    if q_shape[-1] == 0:
        raise ValueError(f"{nq} has head dim 0 (shape {q_shape}); attention needs at least one feature")
    if same_head_dim and q_shape[-1] != k_shape[-1]:
        raise ValueError(f"{nq} has head dim {q_shape[-1]} but {nk} has {k_shape[-1]} (shapes {q_shape} and {k_shape})")
    if k_shape[-2] != v_shape[-2]:
        raise ValueError(
            f"{nk} has {k_shape[-2]} keys but {nv} has {v_shape[-2]} values (shapes {k_shape} and {v_shape})"
        )
    if k_shape[:-2] != v_shape[:-2]:
        raise ValueError(f"{nk} and {nv} must share their leading (batch, head) dims, got {k_shape} and {v_shape}")
    if grouped:
        _check_grouped_batch(q_shape, k_shape, v_shape, names)
    else:
        _check_broadcast_batch(q_shape, k_shape, names, enable_gqa)
    if square is not None and k_shape[-2] != q_shape[-2]:
        raise ValueError(
            f"{square} needs as many keys as queries; {nq} has N={q_shape[-2]}, {nk} has N_k={k_shape[-2]}"
        )


def check_qkv(
    q: Any,
    k: Any,
    v: Any,
    *,
    grouped: bool = False,
    square: str | None = None,
    same_head_dim: bool = True,
    enable_gqa: bool = False,
    finite: bool = False,
    names: Sequence[str] = ("q", "k", "v"),
) -> None:
    """Check query, key and value tensors for attention, before any work.

    Checks that all three are torch tensors, that they are floating point
    (float16, bfloat16, float32 or float64: integer or bool inputs are a
    ``TypeError`` naming the argument) of one dtype on one device, their
    shapes (see :func:`check_qkv_shapes`, whose arguments this takes), and
    with ``finite`` that they hold no NaN or inf (:func:`check_finite`).

    Raises:
        TypeError: not a tensor, not floating point, or mixed dtypes.
        ValueError: bad shapes, non-finite values, or tensors on different devices.
    """
    for name, t in zip(names, (q, k, v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    for name, t in zip(names, (q, k, v)):
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got {t.dtype} "
                f"(shape {tuple(t.shape)})"
            )
    check_qkv_shapes(
        q.shape,
        k.shape,
        v.shape,
        grouped=grouped,
        square=square,
        same_head_dim=same_head_dim,
        enable_gqa=enable_gqa,
        names=names,
    )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{', '.join(names)} must have one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{', '.join(names)} must be on one device; got {q.device}, {k.device}, {v.device}")
    if finite:  # last: the only check that reads the data
        check_finite_tensors(*zip(names, (q, k, v)))
