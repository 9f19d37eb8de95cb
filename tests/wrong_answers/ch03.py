"""Plausible wrong answers to chapter 3's exercises (each must fail its checker)."""

from __future__ import annotations

import math

import torch


def _sdpa(q, k, v, axis=-1, scale=True):
    s = q @ k.transpose(-2, -1)
    if scale:
        s = s / math.sqrt(q.shape[-1])
    return torch.softmax(s, axis) @ v


WRONG = {
    "ch03.softmax": [
        lambda x: torch.exp(x) / torch.exp(x).sum(-1, keepdim=True),  # overflows at 1000
        lambda x: torch.softmax(x, dim=0),  # wrong axis
        lambda x: torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(),  # normalised over everything
        lambda x: x / x.sum(-1, keepdim=True),  # no exponential
    ],
    "ch03.attention": [
        lambda q, k, v: _sdpa(q, k, v, scale=False),  # forgot the scale
        lambda q, k, v: _sdpa(q, k, v, axis=-2),  # softmax over queries
        lambda q, k, v: (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])) @ v,  # raw scores as weights
        lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], -1) @ v,  # divided by d_k
    ],
    "ch03.causal_mask": [
        lambda Lq, Lk: torch.triu(torch.ones(Lq, Lk, dtype=torch.bool)),  # inverted (future instead of past)
        lambda Lq, Lk: torch.tril(torch.ones(Lq, Lk, dtype=torch.bool), -1 + Lk - Lq),  # diagonal dropped
        lambda Lq, Lk: torch.tril(torch.ones(Lq, Lk, dtype=torch.bool)),  # not shifted when Lk > Lq
        lambda Lq, Lk: torch.tril(torch.ones(Lq, Lk)).float(),  # float, not bool
    ],
    "ch03.masked_attention": [
        lambda q, k, v, m: (torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) * m) @ v,
        lambda q, k, v, m: torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~m, 0), -1) @ v,
        lambda q, k, v, m: (
            torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~m, float("-inf")), -1) @ v
        ),  # NaN row
    ],
}
