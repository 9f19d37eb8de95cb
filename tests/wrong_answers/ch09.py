"""Plausible wrong answers to chapter 9's exercises (each must fail its checker)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minitransformer.book.diagnostics import attention_entropy
from minitransformer.book.graphs import adjacency_mask, receptive_field
from minitransformer.book.vision import patchify


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


def _patchify_float32(images, p):
    B, C, H, W = images.shape
    x = images.float().reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # silently casts
    return x.reshape(B, (H // p) * (W // p), C * p * p)


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


def _field_in_place(mask, L):
    mask.fill_diagonal_(True)  # in-place: adds self-loops to the caller's mask
    r = torch.eye(mask.shape[0])
    for _ in range(L):
        r = ((mask.float() @ r) > 0).float()
    return r.bool()


def _entropy_in_place(w):
    zero = w == 0
    w[zero] = 1.0  # in-place: 1 log 1 = 0, but the caller's weights are changed
    return -(w * w.log()).masked_fill(zero, 0.0).sum(-1)


WRONG = {
    "ch09.patchify": [
        _patchify_plain_reshape,
        _patchify_channels_last,
        _patchify_transposed_grid,
        _patchify_unfold_untransposed,
        lambda images, p: F.unfold(images, p, stride=p).transpose(1, 2),  # library call (im2col)
        lambda images, p: patchify(images, p),  # the package's own function
        lambda images, p: _patchify_float32(images, p),  # wrong dtype (float32)
    ],
    "ch09.adjacency_mask": [
        lambda e, n: _adj(e, n, loops=False),  # no self-loops
        lambda e, n: _adj(e, n, both=False),  # one direction only
        lambda e, n: ~_adj(e, n),  # inverted
        lambda e, n: _adj(e, n).float(),  # float, not bool
        lambda e, n: adjacency_mask(e, n),  # the package's own function
    ],
    "ch09.receptive_field": [
        lambda m, L: _field(m, L, identity=False),  # A^L: exactly L steps
        lambda m, L: _field(m, L + 1),  # off by one
        lambda m, L: (
            (m | torch.eye(m.shape[0], dtype=torch.bool)) if L > 0 else torch.eye(m.shape[0], dtype=torch.bool)
        ),  # always 1 hop
        lambda m, L: receptive_field(m, L),  # the package's own function
        _field_in_place,  # in-place mutation of the mask
    ],
    "ch09.entropy": [
        lambda w: -(w * w.log()).sum(-1),  # NaN at exact zeros
        lambda w: -(w * torch.log2(w.clamp_min(1e-30))).sum(-1),  # bits instead of nats
        lambda w: -(w * w.clamp_min(1e-30).log()).sum(0),  # summed over the wrong axis
        lambda w: -(w * w.clamp_min(1e-30).log()).mean(-1),  # mean instead of sum
        lambda w: torch.special.entr(w).sum(-1),  # library call
        lambda w: torch.distributions.Categorical(probs=w).entropy(),  # library call
        lambda w: attention_entropy(w),  # the package's own function
        lambda w: -(w.float() * torch.where(w > 0, w.float().log(), 0.0)).sum(-1),  # wrong dtype (float32)
        _entropy_in_place,  # in-place mutation of the weights
    ],
}


def _vit_cost(image_size, patch_size, *, cls=True, per_head=False):
    from minitransformer.book.vision import TinyViT

    model = TinyViT(image_size=image_size, patch_size=patch_size, d_model=32)
    with torch.no_grad():
        _, weights = model(torch.randn(1, 1, image_size, image_size), need_weights=True)
    _, h, t, _ = weights[0].shape
    t = t if cls else t - 1
    return t, (t * t if per_head else h * t * t)


WRONG["ch09.vit_patch_cost"] = [
    lambda S, p: _vit_cost(S, p, cls=False),  # the CLS token left out
    lambda S, p: _vit_cost(S, p, per_head=True),  # one head's matrix, not all heads
    lambda S, p: (S // p + 1, 2 * (S // p + 1) ** 2),  # patches along one side, not (S/p)^2
]
