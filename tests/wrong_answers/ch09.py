"""Plausible wrong answers to chapter 9's exercises (each must fail its checker)."""

from __future__ import annotations

import torch


def _patchify_plain_reshape(images, p):
    B, C, H, W = images.shape
    return images.reshape(B, (H // p) * (W // p), C * p * p)  # not square patches


def _patchify_channels_last(images, p):
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # (p, p, C) order
    return x.reshape(B, (H // p) * (W // p), C * p * p)


def _patchify_transposed_grid(images, p):
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5)  # column-major grid
    return x.reshape(B, (H // p) * (W // p), C * p * p)


def _patchify_unfold_untransposed(images, p):
    return torch.nn.functional.unfold(images, p, stride=p)  # (B, C*p*p, N): forgot the transpose


def _adj(edges, n, loops=True, both=True):
    m = torch.eye(n, dtype=torch.bool) if loops else torch.zeros(n, n, dtype=torch.bool)
    m[edges[:, 0], edges[:, 1]] = True
    if both:
        m[edges[:, 1], edges[:, 0]] = True
    return m


def _field(mask, L, identity=True):
    a = (mask | torch.eye(mask.shape[0], dtype=torch.bool)).float() if identity else mask.float()
    r = torch.eye(mask.shape[0])
    for _ in range(L):
        r = ((a @ r) > 0).float()
    return r.bool()


WRONG = {
    "ch09.patchify": [
        _patchify_plain_reshape,
        _patchify_channels_last,
        _patchify_transposed_grid,
        _patchify_unfold_untransposed,
    ],
    "ch09.adjacency_mask": [
        lambda e, n: _adj(e, n, loops=False),  # no self-loops
        lambda e, n: _adj(e, n, both=False),  # one direction only
        lambda e, n: ~_adj(e, n),  # inverted
        lambda e, n: _adj(e, n).float(),  # float, not bool
    ],
    "ch09.receptive_field": [
        lambda m, L: _field(m, L, identity=False),  # A^L: exactly L steps
        lambda m, L: _field(m, L + 1),  # off by one
        lambda m, L: (
            (m | torch.eye(m.shape[0], dtype=torch.bool)) if L > 0 else torch.eye(m.shape[0], dtype=torch.bool)
        ),  # always 1 hop
    ],
    "ch09.entropy": [
        lambda w: -(w * w.log()).sum(-1),  # NaN at exact zeros
        lambda w: -(w * torch.log2(w.clamp_min(1e-30))).sum(-1),  # bits instead of nats
        lambda w: -(w * w.clamp_min(1e-30).log()).sum(0),  # summed over the wrong axis
        lambda w: -(w * w.clamp_min(1e-30).log()).mean(-1),  # mean instead of sum
    ],
}
