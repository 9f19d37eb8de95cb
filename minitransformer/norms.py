"""Normalisation layers: RMSNorm, and the choice between it and LayerNorm in a block.

LayerNorm (Ba et al. 2016) centres each vector and scales it to unit variance,
then applies a gain and a bias::

    LN(x) = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta

RMSNorm (Zhang & Sennrich 2019; T5, Llama, Qwen, OLMo) drops the centring and
the bias and divides by the root mean square alone::

    RMSNorm(x) = x / sqrt(mean(x^2) + eps) * gamma

It is cheaper (one reduction instead of two) and works as well in practice.
Both act on the last dimension only, so they treat every position (and, for
the QK-norm of :class:`~minitransformer.MultiHeadAttention`, every head) alone.

:func:`make_norm` builds either kind from its name (``"layer"`` or ``"rms"``),
which is how the layers' ``norm=`` option is implemented.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn as nn
from torch import Tensor

from .validation import check_choice, check_positive_int, describe

__all__ = ["RMSNorm", "rms_norm", "make_norm", "check_norm", "NORMS"]

NORMS = ("layer", "rms")


def _check_eps(eps: float, where: str) -> float:
    """``eps`` as a float; ``TypeError``/``ValueError`` unless it is a real number ``> 0``."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{where}: eps must be a positive number, got {describe(eps)}")
    if not eps > 0:
        raise ValueError(f"{where}: eps must be a positive number, got {eps}")
    return float(eps)


def rms_norm(x: Tensor, weight: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last dimension.

    Half-precision inputs are normalised (and scaled by the gain) in float32,
    as Llama does, and the result is cast back to ``x``'s dtype.

    Args:
        x: ``(..., d)`` floating point.
        weight: optional gain ``(d,)``; ``None`` means no gain (all ones).
        eps: added to the mean square, ``> 0``.

    Returns:
        ``(..., d)`` in ``x``'s dtype.
    """
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    xc = x.to(compute)  # (..., d)
    inv_rms = torch.rsqrt(xc.pow(2).mean(dim=-1, keepdim=True) + eps)  # (..., 1)
    out = xc * inv_rms  # (..., d)
    if weight is not None:
        out = out * weight.to(compute)  # (..., d)
    return out.to(x.dtype)


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension: ``x / rms(x) * weight``.

    Args:
        d: size of the normalised (last) dimension.
        eps: added to the mean square before the square root (default ``1e-6``;
            Llama uses ``1e-5``, Qwen ``1e-6``).
        weight: learn a per-feature gain (initialised to ones); ``False`` gives a
            parameter-free normalisation.

    Same result as ``torch.nn.RMSNorm(d, eps=eps, elementwise_affine=weight)``
    (its state dict too: one tensor named ``weight``). Parameters: ``d`` (or 0).
    """

    def __init__(self, d: int, eps: float = 1e-6, weight: bool = True):
        super().__init__()
        self.d = check_positive_int("d", d, where="RMSNorm")
        self.eps = _check_eps(eps, "RMSNorm")
        self.weight = nn.Parameter(torch.ones(d)) if weight else None

    def forward(self, x: Tensor) -> Tensor:
        """Args: x ``(..., d)``. Returns: ``(..., d)``, each row with root mean square ~1 (before the gain)."""
        if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[-1] != self.d:
            raise ValueError(f"RMSNorm: x must be (..., d={self.d}), got shape {describe(x)}")
        if not x.is_floating_point():
            raise TypeError(f"RMSNorm: x must be floating point, got {x.dtype}")
        return rms_norm(x, self.weight, self.eps)  # (..., d)

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps:g}, weight={self.weight is not None}"


def make_norm(kind: str, d: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    """The normalisation layer named ``kind``: ``"layer"`` or ``"rms"``.

    Args:
        kind: ``"layer"`` (``nn.LayerNorm``, gain and optional bias) or ``"rms"``
            (:class:`RMSNorm`, gain only).
        d: the normalised width.
        eps: the epsilon.
        bias: the LayerNorm's bias (RMSNorm has none whatever this says).

    Returns:
        the module, mapping ``(..., d) -> (..., d)``.
    """
    check_norm(kind)
    if kind == "layer":
        return nn.LayerNorm(d, eps=eps, bias=bias)
    return RMSNorm(d, eps=eps)


def check_norm(kind: str) -> str:
    """Return ``kind`` if it names one of :data:`NORMS`, else raise ``TypeError``/``ValueError``."""
    return check_choice("norm", kind, NORMS)
