"""Plausible wrong answers to chapter 8's exercises (each must fail its checker)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minitransformer.efficient import sliding_window_mask
from minitransformer.linear_attention import linear_attention


def _mnew(m, s):
    return torch.maximum(m, s.max(-1).values)


def _window(n, w, causal, strict=False):
    d = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # i - j
    near = d.abs() < w if strict else d.abs() <= w
    return near & (d >= 0) if causal else near


def _phi(x):
    return F.elu(x) + 1


def _online_in_place(m, o, s, v):
    m_new = _mnew(m, s)
    o *= torch.exp(m - m_new)[:, None]  # in-place: rescales the caller's accumulator
    o += torch.exp(s - m_new[:, None]) @ v
    return o


def _linear_quadratic(q, k, v):
    A = _phi(q) @ _phi(k).transpose(-2, -1)  # (n, m): the matrix linear attention exists to avoid
    return (A @ v) / A.sum(-1, keepdim=True)


def _linear_quadratic_einsum(q, k, v):
    A = torch.einsum("...nr,...mr->...nm", _phi(q), _phi(k))  # (n, m) again, written as an einsum
    return torch.einsum("...nm,...md->...nd", A, v) / A.sum(-1, keepdim=True)


def _linear_elu_in_place(q, k, v):
    phi_q = F.elu(q, inplace=True).add_(1)  # in-place: overwrites the caller's queries
    phi_k = _phi(k)
    return (phi_q @ (phi_k.transpose(-2, -1) @ v)) / (phi_q @ phi_k.sum(-2).unsqueeze(-1))


WRONG = {
    "ch08.online_step": [
        lambda m, o, s, v: o + torch.exp(s - _mnew(m, s)[:, None]) @ v,  # no rescaling
        lambda m, o, s, v: (
            torch.exp(_mnew(m, s) - m)[:, None] * o + torch.exp(s - _mnew(m, s)[:, None]) @ v
        ),  # factor inverted
        lambda m, o, s, v: o + torch.exp(s - m[:, None]) @ v,  # old max for new tile
        lambda m, o, s, v: torch.exp(m - _mnew(m, s))[:, None] * o + torch.exp(s) @ v,  # new tile not shifted
        lambda m, o, s, v: (
            torch.exp(m - s.max(-1).values)[:, None] * o + torch.exp(s - s.max(-1).values[:, None]) @ v
        ),  # max of the tile only
        lambda m, o, s, v: (
            (torch.exp(m) / torch.exp(_mnew(m, s)))[:, None] * o + torch.exp(s - _mnew(m, s)[:, None]) @ v
        ),  # numerically unstable: exp(m) / exp(m_new) is inf / inf near 1000
        _online_in_place,  # in-place mutation of o
        lambda m, o, s, v: (torch.exp(m - _mnew(m, s))[:, None] * o + torch.exp(s - _mnew(m, s)[:, None]) @ v).float(),
    ],
    "ch08.sliding_window_mask": [
        lambda n, w, c: _window(n, w, c, strict=True),  # < instead of <=
        lambda n, w, c: _window(n, w, c).T,  # causal towards the future
        lambda n, w, c: _window(n, w, False),  # causal ignored
        lambda n, w, c: _window(n, w, c).int(),  # not a bool mask
        lambda n, w, c: sliding_window_mask(n, w, causal=c),  # the package's own function
    ],
    "ch08.linear_attention": [
        lambda q, k, v: _phi(q) @ (_phi(k).transpose(-2, -1) @ v),  # no normaliser
        lambda q, k, v: (
            (_phi(q) @ (_phi(k).transpose(-2, -1) @ v)) / _phi(q).sum(-1, keepdim=True)
        ),  # normalised by the query's features only
        lambda q, k, v: (
            (F.elu(q) @ (F.elu(k).transpose(-2, -1) @ v)) / (F.elu(q) @ F.elu(k).sum(-2).unsqueeze(-1))
        ),  # elu without +1
        lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, -1) @ v,  # softmax
        _linear_quadratic,  # wrong complexity: builds the (n, m) matrix (issue 14's example)
        _linear_quadratic_einsum,  # wrong complexity, as an einsum
        lambda q, k, v: linear_attention(q, k, v),  # the package's own function
        lambda q, k, v: (
            (_phi(q).float() @ (_phi(k).float().transpose(-2, -1) @ v.float()))
            / (_phi(q).float() @ _phi(k).float().sum(-2).unsqueeze(-1))
        ),  # wrong dtype (float32)
        _linear_elu_in_place,  # in-place mutation of q
    ],
}


def _causal_tiles(N, Br, Bc, *, causal=True, fraction="computed"):
    from minitransformer.flash.tiled_numpy import flash_forward_steps

    q = torch.randn(N, 4, dtype=torch.float64).numpy()
    steps = list(flash_forward_steps(q, q, q, Br=Br, Bc=Bc, is_causal=causal))
    if fraction == "needed":  # the unmasked entries: what causal attention needs, not what the tiles compute
        return len(steps), sum(int((s.S > -math.inf).sum()) for s in steps) / (N * N)
    if fraction == "full":  # every tile counted as Br x Bc
        return len(steps), len(steps) * Br * Bc / (N * N)
    return len(steps), sum(s.S.size for s in steps) / (N * N)


WRONG["ch08.causal_tiles"] = [
    lambda N, Br, Bc: _causal_tiles(N, Br, Bc, causal=False),  # no causal tile skipping
    lambda N, Br, Bc: _causal_tiles(N, Br, Bc, fraction="needed"),  # the masked entries left out
    lambda N, Br, Bc: _causal_tiles(N, Br, Bc, fraction="full"),  # short last tiles counted as full
    lambda N, Br, Bc: (math.ceil(N / Br) * math.ceil(N / Bc), 0.5),  # guessed: all tiles, half the scores
]
