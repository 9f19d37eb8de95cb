"""Argument checks shared by the core library: one wording for one mistake.

Every public function checks its arguments before doing any work and raises
``ValueError`` or ``TypeError`` with a message that names the argument and
shows the offending value or shape. The checks that recur across modules live
here, so that the same mistake reads the same everywhere:

* :func:`describe` -- a tensor's shape (or a value's type) for a message;
* :func:`check_positive_int` -- sizes, counts, tile sizes (``bool`` is never an int);
* :func:`check_probability` -- dropout probabilities, in ``[0, 1)``;
* :func:`check_qkv` / :func:`check_qkv_shapes` -- queries, keys and values of
  every attention in the package: scaled dot-product (``(..., L, d)``, leading
  dims broadcast), flash attention and decoding (``(B, H, N, d)`` with grouped
  key heads), linear and local attention, and the kernels' CPU runners (which
  check NumPy shapes).

This module imports only torch and NumPy; every other module may import it.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["describe", "check_positive_int", "check_probability", "check_qkv", "check_qkv_shapes", "FLOAT_DTYPES"]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


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


# -- queries, keys and values ----------------------------------------------------------------------


def _check_ranks(shapes: Sequence[tuple[int, ...]], names: Sequence[str], grouped: bool) -> None:
    """Exactly 4 dims ``(B, H, N, d)`` in the grouped layout, at least 2 ``(..., L, d)`` otherwise."""
    for name, shape in zip(names, shapes):
        if grouped and len(shape) != 4:
            raise ValueError(f"{name} must have shape (B, H, N, d); got {shape}")
        if not grouped and len(shape) < 2:
            raise ValueError(f"{name} must have at least 2 dims (..., L, d), got shape {shape}")


def _check_broadcast_batch(q_shape: tuple[int, ...], k_shape: tuple[int, ...], names: Sequence[str]) -> None:
    """``k``'s leading dims must broadcast against ``q``'s without enlarging them."""
    nq, nk = names[0], names[1]
    if k_shape[:-2] == q_shape[:-2]:  # equal leading dims (the usual case) need no broadcasting check
        return
    try:
        batch = torch.broadcast_shapes(q_shape[:-2], k_shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading dims of {nq} {q_shape} and {nk} {k_shape} do not broadcast") from None
    if tuple(batch) != q_shape[:-2]:
        raise ValueError(f"{nk}'s leading dims {k_shape[:-2]} would enlarge {nq}'s {q_shape[:-2]}")


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
        names: how the three arguments are called in messages.

    Raises:
        ValueError: naming the argument and the shapes, e.g.
            ``q has head dim 64 but k has 32``.
    """
    q_shape, k_shape, v_shape = (tuple(int(n) for n in s) for s in (q_shape, k_shape, v_shape))
    nq, nk, nv = names
    _check_ranks((q_shape, k_shape, v_shape), names, grouped)
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
        _check_broadcast_batch(q_shape, k_shape, names)
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
    names: Sequence[str] = ("q", "k", "v"),
) -> None:
    """Check query, key and value tensors for attention, before any work.

    Checks that all three are torch tensors, their shapes (see
    :func:`check_qkv_shapes`, whose arguments this takes), then that they are
    floating point (float16, bfloat16, float32 or float64) of one dtype on one
    device.

    Raises:
        TypeError: not a tensor, not floating point, or mixed dtypes.
        ValueError: bad shapes, or tensors on different devices.
    """
    for name, t in zip(names, (q, k, v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check_qkv_shapes(
        q.shape, k.shape, v.shape, grouped=grouped, square=square, same_head_dim=same_head_dim, names=names
    )
    for name, t in zip(names, (q, k, v)):
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{', '.join(names)} must have one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{', '.join(names)} must be on one device; got {q.device}, {k.device}, {v.device}")
