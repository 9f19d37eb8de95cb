"""Absolute positional encodings: the fixed sinusoidal table.

``PE[p, 2i] = sin(p / 10000^(2i/d))`` and ``PE[p, 2i+1] = cos(p / 10000^(2i/d))``
(sine and cosine interleaved, as in "Attention Is All You Need").
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["sinusoidal_encoding"]


def sinusoidal_encoding(num_positions: int, d_model: int, base: float = 10000.0,
                        device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The sinusoidal position table.

    Args:
        num_positions: how many positions (rows), any number.
        d_model: encoding size; must be even.
        base: the wavelength base (10000 in the paper).

    Returns:
        ``(num_positions, d_model)`` with sines in even columns, cosines in odd ones.
    """
    if d_model <= 0 or d_model % 2:
        raise ValueError(f"sinusoidal_encoding: d_model must be a positive even number, got {d_model}")
    if num_positions < 0:
        raise ValueError(f"sinusoidal_encoding: num_positions must be >= 0, got {num_positions}")
    pos = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)  # (P, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d/2,)
    angle = pos / base ** (two_i / d_model)  # (P, d/2)
    pe = torch.empty(num_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe.to(device=device, dtype=dtype)  # (P, d)
