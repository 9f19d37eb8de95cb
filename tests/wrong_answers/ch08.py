"""Plausible wrong answers to chapter 8's exercises (each must fail its checker)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _mnew(m, s):
    return torch.maximum(m, s.max(-1).values)


def _window(n, w, causal, strict=False):
    d = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # i - j
    near = d.abs() < w if strict else d.abs() <= w
    return near & (d >= 0) if causal else near


def _phi(x):
    return F.elu(x) + 1


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
    ],
    "ch08.sliding_window_mask": [
        lambda n, w, c: _window(n, w, c, strict=True),  # < instead of <=
        lambda n, w, c: _window(n, w, c).T,  # causal towards the future
        lambda n, w, c: _window(n, w, False),  # causal ignored
        lambda n, w, c: _window(n, w, c).int(),  # not a bool mask
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
    ],
}
