"""Plausible wrong answers to chapter 5's exercises (each must fail its checker)."""

from __future__ import annotations

import math

import torch

from minitransformer import RotaryEmbedding, sinusoidal_encoding
from minitransformer.positional import transition_matrix


def _pe(P, d, swap=False, exponent=lambda i, d: 2 * i / d, concat=False, base=10000.0):
    pos = torch.arange(P, dtype=torch.float64)[:, None]
    i = torch.arange(d // 2, dtype=torch.float64)
    angle = pos / base ** exponent(i, d)
    s, c = (torch.cos(angle), torch.sin(angle)) if swap else (torch.sin(angle), torch.cos(angle))
    if concat:
        return torch.cat([s, c], 1)
    pe = torch.zeros(P, d, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = s, c
    return pe


def _pe_column_index(P, d):
    """Every column uses its own index j in the exponent: j/d for sin and cos alike."""
    pos = torch.arange(P, dtype=torch.float64)[:, None]
    j = torch.arange(d, dtype=torch.float64)
    angle = pos / 10000 ** (j / d)
    pe = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, 1::2])
    return pe


def _T(k, d, sign=1.0, exponent=lambda i, d: 2 * i / d, scale=1.0):
    blocks = []
    for i in range(d // 2):
        b = scale * k / 10000 ** exponent(i, d)
        s = sign * math.sin(b)
        blocks.append(torch.tensor([[math.cos(b), s], [-s, math.cos(b)]], dtype=torch.float64))
    return torch.block_diag(*blocks)


def _rope(x, positions, halves=False, sign=1.0, exponent=lambda j, d: 2 * j / d, pairs_from=0):
    d = x.shape[-1]
    j = torch.arange(d // 2, dtype=torch.float64)
    angle = sign * positions.double()[:, None] * 10000.0 ** (-exponent(j, d))[None, :]
    cos, sin = angle.cos(), angle.sin()
    if halves:
        a, b = x[..., : d // 2], x[..., d // 2 :]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)
    xr = torch.roll(x, -pairs_from, -1)  # pairs (x1, x2), (x3, x4), ..., (x_{d-1}, x0): off by one
    a, b = xr[..., 0::2], xr[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
    return torch.roll(out, pairs_from, -1)


def _rel(n, K, sign=1, clip=True, shift=True, upper=None):
    r = sign * (torch.arange(n)[None, :] - torch.arange(n)[:, None])
    if clip:
        r = r.clamp(-K, K if upper is None else upper)
    return r + K if shift else r


def _rope_theta_float32(x, positions):
    d = x.shape[-1]
    theta = 10000.0 ** (-torch.arange(0, d, 2) / d)  # float32: torch.arange(...) / d is float32
    angle = positions[:, None] * theta[None, :]  # float32 angles: off by ~1e-4 at position 123457
    cos, sin = angle.cos(), angle.sin()
    out = torch.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
    out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
    return out


def _rope_in_place(x, positions):
    a, b = x[..., 0::2].clone(), x[..., 1::2].clone()
    angle = positions.double()[:, None] * 10000.0 ** (
        -torch.arange(0, x.shape[-1], 2, dtype=torch.float64) / x.shape[-1]
    )
    x[..., 0::2], x[..., 1::2] = a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()  # in-place
    return x


WRONG = {
    "ch05.sinusoidal": [
        lambda P, d: _pe(P, d, swap=True),  # sin and cos swapped
        lambda P, d: _pe(P, d, exponent=lambda i, d: i / d),  # exponent i/d instead of 2i/d
        lambda P, d: _pe(P, d, exponent=lambda i, d: 2 * (i + 1) / d),  # pair index off by one
        lambda P, d: _pe(P, d, concat=True),  # [sin | cos] instead of interleaved
        _pe_column_index,  # cos uses the odd column's own index
        lambda P, d: sinusoidal_encoding(P, d),  # the package's own function
    ],
    "ch05.transition": [
        lambda k, d: _T(k, d, sign=-1.0),  # transposed: moves back
        lambda k, d: _T(k, d, exponent=lambda i, d: i / d),  # exponent i/d
        lambda k, d: _T(1, d),  # ignores k
        lambda k, d: torch.eye(d, dtype=torch.float64),  # identity
        lambda k, d: transition_matrix(k, d, dtype=torch.float64),  # the package's own function
    ],
    "ch05.rope": [
        lambda x, p: _rope(x, p, halves=True),  # rotate-half pairing
        lambda x, p: _rope(x, p, sign=-1.0),  # rotation direction flipped
        lambda x, p: _rope(x, p, pairs_from=1),  # pairs off by one
        lambda x, p: _rope(x, p, exponent=lambda j, d: j / d),  # theta exponent j/d
        lambda x, p: _rope(x, torch.arange(x.shape[-2])),  # positions ignored
        _rope_theta_float32,  # precision: angles computed in float32
        lambda x, p: _rope(x, p).float(),  # wrong dtype: float32 output
        _rope_in_place,  # in-place mutation of x
        lambda x, p: RotaryEmbedding(x.shape[-1])(x, p),  # the package's own module
    ],
    "ch05.relative_positions": [
        lambda n, K: _rel(n, K, sign=-1),  # i - j
        lambda n, K: _rel(n, K, shift=False),  # not shifted into 0 .. 2K
        lambda n, K: _rel(n, K, clip=False),  # not clipped
        lambda n, K: _rel(n, K, upper=K - 1),  # clipped at K - 1 on one side
        lambda n, K: _rel(n, K).float(),  # wrong dtype: float indices cannot index nn.Embedding
    ],
}


def _alibi_far(H, L, W, slopes=None, normalise_over=None, start=None):
    from minitransformer.relative import alibi_slopes

    s = alibi_slopes(H, torch.float64) if slopes is None else slopes(H)
    scores = -s[:, None] * torch.arange(L, dtype=torch.float64)[None, :]  # (H, L)
    if normalise_over == "window":  # softmax over the window only, then "the rest" is 1 - 1
        w = torch.softmax(scores[:, :W], dim=-1)
        return 1.0 - w.sum(-1)
    w = torch.softmax(scores, dim=-1)
    return w[:, (W if start is None else start) :].sum(-1)


WRONG["ch05.alibi_far_mass"] = [
    lambda H, L, W: _alibi_far(H, L, W, slopes=lambda H: torch.full((H,), 1.0 / H, dtype=torch.float64)),  # 1/H
    lambda H, L, W: torch.full((H,), max(L - W, 0) / L, dtype=torch.float64),  # no bias: uniform weights
    lambda H, L, W: _alibi_far(H, L, W, normalise_over="window"),  # the softmax over the window only
    lambda H, L, W: _alibi_far(H, L, W, start=W + 1),  # off by one at the edge
    lambda H, L, W: _alibi_far(H, L, W, slopes=lambda H: torch.tensor([2.0 ** (-(i + 1)) for i in range(H)]).double()),
]
