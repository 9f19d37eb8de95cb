"""One tile of the online softmax: the update at the heart of flash attention, written once.

The tiled NumPy forward (:func:`~.tiled_numpy.flash_forward_numpy`), the
tiled PyTorch forward (:func:`~.tiled_torch.flash_forward_torch`) and
chapter 8's step-through (:func:`~.tiled_numpy.flash_forward_steps`) all call
:func:`online_softmax_step`, on NumPy arrays or on torch tensors alike (the
same operations in the same order, so the three give identical numbers).
The CUDA kernels spell out the same five lines (see ``teaching_forward.cu``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["OnlineSoftmaxStep", "online_softmax_step"]


class OnlineSoftmaxStep(NamedTuple):
    """The running statistics after one key tile, and what the tile contributed.

    ``m, l, acc`` are the new running max, running sum and un-normalised output;
    ``P`` the tile's ``exp(S - m)`` and ``alpha = exp(m_old - m)`` the
    rescaling of what had been accumulated before.
    """

    m: Any  # (..., br)
    l: Any  # (..., br)
    acc: Any  # (..., br, d)
    P: Any  # (..., br, bc)
    alpha: Any  # (..., br)


def _ops(S):
    """``(maximum, row_max, exp)`` for NumPy arrays or torch tensors."""
    if isinstance(S, np.ndarray):
        return np.maximum, lambda x: x.max(axis=-1), np.exp
    import torch  # only reached with torch tensors

    return torch.maximum, lambda x: x.amax(dim=-1), torch.exp


def online_softmax_step(m, l, acc, S, V) -> OnlineSoftmaxStep:
    """Fold one tile of scores ``S`` and values ``V`` into the running softmax of each
    row.

    With ``m_new = max(m, rowmax(S))``, ``P = exp(S - m_new)`` and
    ``alpha = exp(m - m_new)``: ``l = alpha * l + rowsum(P)`` and
    ``acc = alpha * acc + P @ V``. Masked scores are ``-inf`` (their ``P`` is 0);
    starting from ``m = -inf, l = 0, acc = 0`` gives ``alpha = 0`` on the first
    tile. After the last tile, ``acc / l`` is the attention output and
    ``m + log(l)`` the log-sum-exp.

    Args:
        m: ``(..., br)`` running max of each row's scores so far.
        l: ``(..., br)`` running sum of ``exp(score - m)``.
        acc: ``(..., br, d)`` un-normalised output rows.
        S: ``(..., br, bc)`` this tile's (scaled, masked) scores.
        V: ``(..., bc, d)`` this tile's values (broadcast against ``S``'s leading dims).

    Returns:
        :class:`OnlineSoftmaxStep` ``(m, l, acc, P, alpha)``; NumPy arrays in, NumPy
        out, torch tensors in, torch out.
    """
    maximum, row_max, exp = _ops(S)
    m_new = maximum(m, row_max(S))  # (..., br)
    P = exp(S - m_new[..., None])  # (..., br, bc)
    alpha = exp(m - m_new)  # rescales what was summed so far
    l = alpha * l + P.sum(-1)  # (..., br)
    acc = alpha[..., None] * acc + P @ V  # (..., br, d)
    return OnlineSoftmaxStep(m_new, l, acc, P, alpha)
