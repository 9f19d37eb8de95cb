"""Rotary position embeddings (RoPE, Su et al. 2021).

Split a query or key vector of size ``d`` into ``d/2`` pairs and rotate pair
``j`` of the vector at position ``m`` by the angle ``m * theta_j`` with
``theta_j = base^(-2j/d)``. A rotation by ``m`` followed by the transpose of a
rotation by ``n`` is a rotation by ``n - m``, so

    ``<R_m q, R_n k> = q^T R_m^T R_n k = q^T R_{n-m} k``

depends on the positions only through the offset ``n - m``; rotations also
preserve norms. Only queries and keys are rotated, never values.

Two layouts pair the features differently:

* ``"interleaved"`` (the RoFormer paper, GPT-J): pairs ``(x0, x1), (x2, x3), ...``;
  read pair ``j`` as the complex number ``x_{2j} + i x_{2j+1}``, RoPE multiplies
  it by ``e^{i m theta_j}``.
* ``"half"`` (rotate-half, GPT-NeoX, Llama): pairs ``(x_j, x_{j + d/2})``.

They are the same rotation up to a fixed permutation of the features
(:func:`interleaved_to_half`, :func:`half_to_interleaved`). A model trained with
one layout works with the other if the rows of ``W_Q`` and ``W_K`` are permuted.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .validation import check_positive_int, describe

__all__ = ["RotaryEmbedding", "interleaved_to_half", "half_to_interleaved", "ROTARY_LAYOUTS"]

ROTARY_LAYOUTS = ("interleaved", "half")


def _check_even_last_dim(name: str, x: Tensor) -> int:
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[-1] % 2:
        raise ValueError(f"{name}: x must have an even last dimension (feature pairs), got shape {describe(x)}")
    return x.shape[-1]


def interleaved_to_half(x: Tensor) -> Tensor:
    """Reorder features from the interleaved layout to the rotate-half layout.

    Features ``[x0, x1, x2, x3, ..., x_{d-2}, x_{d-1}]`` become
    ``[x0, x2, ..., x_{d-2}, x1, x3, ..., x_{d-1}]``: pair ``(x_{2j}, x_{2j+1})``
    moves to positions ``(j, j + d/2)``. Then, for any positions,
    ``rope_half(interleaved_to_half(x)) == interleaved_to_half(rope_interleaved(x))``.

    Args:
        x: ``(..., d)`` with ``d`` even.

    Returns:
        ``(..., d)``.
    """
    d = _check_even_last_dim("interleaved_to_half", x)
    perm = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)]).to(x.device)  # (d,)
    return x[..., perm]  # (..., d)


def half_to_interleaved(x: Tensor) -> Tensor:
    """Inverse of :func:`interleaved_to_half`: ``[x_0..x_{d/2-1}, y_0..y_{d/2-1}] -> [x0, y0, x1, y1, ...]``.

    Args:
        x: ``(..., d)`` with ``d`` even.

    Returns:
        ``(..., d)``.
    """
    d = _check_even_last_dim("half_to_interleaved", x)
    first = torch.arange(d // 2)  # (d/2,)
    perm = torch.stack([first, first + d // 2], dim=-1).reshape(d).to(x.device)  # (d/2, 2) -> (d,)
    return x[..., perm]  # (..., d)


class RotaryEmbedding(nn.Module):
    """Rotate the last dimension of queries or keys by position-dependent angles.

    Args:
        head_dim: size ``d`` of each head's vectors; must be even.
        base: wavelength base; pair ``j`` turns by ``theta_j = base^(-2j/d)`` per position.
        layout: ``"interleaved"`` (pairs ``(x_{2j}, x_{2j+1})``, the default, as in
            the paper) or ``"half"`` (pairs ``(x_j, x_{j+d/2})``, GPT-NeoX/Llama).

    ``cos``/``sin`` tables are built lazily for positions ``0 .. n-1`` (``n`` grows
    with the largest position seen), per device and compute dtype. Angles are
    computed in float64; the rotation runs in float32 (float64 for float64
    inputs) and the result has ``x``'s dtype. The module has no parameters.
    """

    def __init__(self, head_dim: int, base: float = 10000.0, layout: str = "interleaved"):
        super().__init__()
        check_positive_int("head_dim", head_dim, multiple_of=2, where="RotaryEmbedding")
        if base <= 0:
            raise ValueError(f"RotaryEmbedding: base must be positive, got {base}")
        if layout not in ROTARY_LAYOUTS:
            raise ValueError(f"RotaryEmbedding: unknown layout {layout!r}; expected one of {ROTARY_LAYOUTS}")
        self.head_dim, self.base, self.layout = head_dim, float(base), layout
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def theta(self) -> Tensor:
        """Per-pair frequencies ``theta_j = base^(-2j/d)``, ``(head_dim/2,)`` float64."""
        two_j = torch.arange(0, self.head_dim, 2, dtype=torch.float64)  # (d/2,)
        return self.base ** (-two_j / self.head_dim)  # (d/2,)

    def cos_sin(self, length: int, device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Tables ``cos(m * theta_j)`` and ``sin(m * theta_j)``, each ``(n, d/2)`` with ``n >= length``."""
        key = (torch.device(device), dtype)
        cached = self._cache.get(key)
        if cached is None or cached[0].shape[0] < length:
            n = max(length, 2 * cached[0].shape[0] if cached is not None else 0)
            m = torch.arange(n, dtype=torch.float64)  # (n,)
            angles = m[:, None] * self.theta()[None, :]  # (n, 1) * (1, d/2) -> (n, d/2)
            cached = (angles.cos().to(device=device, dtype=dtype), angles.sin().to(device=device, dtype=dtype))
            self._cache[key] = cached
        return cached

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Rotate ``x`` according to its positions.

        Args:
            x: ``(..., T, head_dim)``, e.g. ``(B, H, T, head_dim)``.
            positions: integer tensor (non-negative), the position of each row: ``(T,)``
                shared by everything in ``x``, or ``(B, T)`` one row per sequence for
                ``x`` of shape ``(B, ..., T, head_dim)`` (packed or padded batches);
                default ``arange(T)``. A KV-cache step passes ``arange(past, past + T)``.

        Returns:
            ``(..., T, head_dim)`` in ``x``'s dtype.
        """
        T = self._check(x, positions)
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        if positions is None:
            positions = torch.arange(T, device=x.device)  # (T,)
        n = int(positions.max()) + 1 if positions.numel() > 0 else 0
        cos, sin = self.cos_sin(n, x.device, compute)  # (n, d/2) each
        positions = positions.to(x.device)
        cos, sin = cos[positions], sin[positions]  # (T, d/2) or (B, T, d/2) each
        # one row of positions per sequence: broadcast over the dims between B and T
        if positions.dim() == 2:
            shape = (positions.shape[0],) + (1,) * (x.dim() - 3) + (T, self.head_dim // 2)
            cos, sin = cos.view(shape), sin.view(shape)  # (B, 1, ..., 1, T, d/2) each
        xc = x.to(compute)  # (..., T, d)
        if self.layout == "interleaved":
            # (..., T, d/2) each: pair j = (x_{2j}, x_{2j+1})
            x1, x2 = xc[..., 0::2], xc[..., 1::2]
        else:
            # (..., T, d/2) each: pair j = (x_j, x_{j+d/2})
            x1, x2 = xc.chunk(2, dim=-1)
        r1 = x1 * cos - x2 * sin  # (..., T, d/2)
        r2 = x1 * sin + x2 * cos  # (..., T, d/2)
        if self.layout == "interleaved":
            # (..., T, d/2, 2) -> (..., T, d)
            out = torch.stack([r1, r2], dim=-1).flatten(-2)
        else:
            out = torch.cat([r1, r2], dim=-1)  # (..., T, d)
        return out.to(x.dtype)

    def _check(self, x: Tensor, positions: Tensor | None) -> int:
        if not isinstance(x, Tensor):
            raise TypeError(f"RotaryEmbedding: x must be a tensor, got {describe(x)}")
        if x.dim() < 2:
            raise ValueError(
                f"RotaryEmbedding: x must be (..., T, head_dim={self.head_dim}), got shape {tuple(x.shape)}"
            )
        if x.shape[-1] != self.head_dim:
            raise ValueError(
                f"RotaryEmbedding: x has last dim {x.shape[-1]} but head_dim={self.head_dim} (shape {tuple(x.shape)})"
            )
        if not x.is_floating_point():
            raise TypeError(f"RotaryEmbedding: x must be floating point, got {x.dtype}")
        T = x.shape[-2]
        if positions is None:
            return T
        if not isinstance(positions, Tensor):
            raise TypeError(f"RotaryEmbedding: positions must be a tensor, got {describe(positions)}")
        if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
            raise TypeError(f"RotaryEmbedding: positions must be an integer tensor, got {positions.dtype}")
        per_sequence = positions.dim() == 2 and x.dim() >= 3 and tuple(positions.shape) == (x.shape[0], T)
        if not per_sequence and (positions.dim() != 1 or positions.shape[0] != T):
            raise ValueError(
                f"RotaryEmbedding: positions must be 1-D of length T={T} or (B, T) = ({x.shape[0]}, {T}) "
                f"(x shape {tuple(x.shape)}), got shape {tuple(positions.shape)}"
            )
        if positions.numel() > 0 and int(positions.min()) < 0:
            raise ValueError(f"RotaryEmbedding: positions must be >= 0, got min {int(positions.min())}")
        return T

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base:g}, layout={self.layout!r}"
