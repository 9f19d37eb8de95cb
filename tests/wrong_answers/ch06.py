"""Plausible wrong answers to chapter 6's exercises (each must fail its checker)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from minitransformer.book.block_experiments import layer_norm
from minitransformer.train import noam_lr, smoothed_targets


def _ln(x, g, b, eps, dim=-1, unbiased=False, eps_inside=True):
    mu = x.mean(dim, keepdim=True)
    var = x.var(dim, unbiased=unbiased, keepdim=True)
    denom = torch.sqrt(var + eps) if eps_inside else torch.sqrt(var) + eps
    return g * (x - mu) / denom + b


def _ln_module(x, g, b, eps):
    norm = nn.LayerNorm(x.shape[-1], eps=eps).double()  # nn.LayerNorm loaded with gamma and beta
    with torch.no_grad():
        norm.weight.copy_(g)
        norm.bias.copy_(b)
    return norm(x).detach()


def _ln_in_place(x, g, b, eps):
    x -= x.mean(-1, keepdim=True)  # in-place: changes the caller's x
    return g * x / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps) + b


def _block_in_place(x, a, f, n1, n2):
    x += a(n1(x))  # in-place: changes the caller's residual stream
    x += f(n2(x))
    return x


def _noam(s, d, w, warm_exp=-1.5, d_exp=-0.5):
    return d**d_exp * min(s**-0.5, s * w**warm_exp)


WRONG = {
    "ch06.layer_norm": [
        lambda x, g, b, eps: _ln(x, g, b, eps, dim=0),  # over the batch axis
        lambda x, g, b, eps: _ln(x, g, b, eps, unbiased=True),  # unbiased variance
        lambda x, g, b, eps: _ln(x, g, b, eps, eps_inside=False),  # eps outside the sqrt
        lambda x, g, b, eps: _ln(x, g, b, eps, dim=-2),  # over the sequence axis
        lambda x, g, b, eps: (
            (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
        ),  # no gamma/beta
        lambda x, g, b, eps: (
            g
            * (x - x.mean(-1, keepdim=True))
            / torch.sqrt((x * x).mean(-1, keepdim=True) - x.mean(-1, keepdim=True) ** 2 + eps)
            + b
        ),  # numerically unstable: E[x^2] - E[x]^2 cancels for a mean of 1e5
        lambda x, g, b, eps: F.layer_norm(x, x.shape[-1:], g, b, eps),  # library call
        _ln_module,  # nn.LayerNorm
        lambda x, g, b, eps: layer_norm(x, g, b, eps),  # the package's own function, wrapped
        _ln_in_place,  # in-place mutation of x
        lambda x, g, b, eps: _ln(x.float(), g.float(), b.float(), eps),  # wrong dtype (float32)
    ],
    "ch06.pre_ln_block": [
        lambda x, a, f, n1, n2: n2((h := n1(x + a(x))) + f(h)),  # Post-LN order
        lambda x, a, f, n1, n2: x + f(n2(x + a(n1(x)))),  # inner residual not carried
        lambda x, a, f, n1, n2: n1(x + a(x)) + f(n2(n1(x + a(x)))),  # norm applied after the residual
        lambda x, a, f, n1, n2: f(n2(x + a(n1(x)))),  # FFN without its residual
        lambda x, a, f, n1, n2: (h := x + a(n1(x))) + f(n1(h)),  # one norm used twice
        _block_in_place,  # in-place: x += ... changes the caller's tensor
        lambda x, a, f, n1, n2: ((h := x + a(n1(x))) + f(n2(h))).float(),  # wrong dtype (float32)
    ],
    "ch06.noam_lr": [
        lambda s, d, w: _noam(s, d, w, warm_exp=-0.5),  # warmup exponent -0.5
        lambda s, d, w: _noam(s, d, w, d_exp=0.0),  # no d_model ** -0.5
        lambda s, d, w: d**-0.5 * min(s**-0.5, s / w),  # ramp step / warmup
        lambda s, d, w: d**-0.5 * min((s + 1) ** -0.5, (s + 1) * w**-1.5),  # off by one step
        lambda s, d, w: noam_lr(s, d, w),  # the package's own function, wrapped
    ],
    "ch06.smoothed_targets": [
        lambda t, C, e: (1 - e) * F.one_hot(t, C).float() + (e / (C - 1)) * (1 - F.one_hot(t, C).float()),
        lambda t, C, e: (1 - e) * F.one_hot(t, C).float() + (e / C) * (1 - F.one_hot(t, C).float()),
        lambda t, C, e: F.one_hot(t, C).float(),  # no smoothing at all
        lambda t, C, e: torch.softmax(F.one_hot(t, C).float() / max(e, 1e-3), -1),  # a softened softmax
        lambda t, C, e: smoothed_targets(t, C, e),  # the package's own function, wrapped
    ],
}


def _post_ln(num_layers, warmup, *, norm_first=False, steps=100, reduce=lambda s: s.iloc[-1]):
    from minitransformer.book.block_experiments import PreviousTokenTask, train_block_stack

    task = PreviousTokenTask(vocab_size=16, length=10)
    _, h = train_block_stack(norm_first, num_layers=num_layers, task=task, steps=steps, warmup=warmup, seed=0)
    return float(reduce(h["loss"]))


WRONG["ch06.post_ln_loss"] = [
    lambda n, w: _post_ln(n, w, norm_first=True),  # Pre-LN instead of Post-LN
    lambda n, w: _post_ln(n, w, reduce=lambda s: s.mean()),  # the mean loss over the run, not the last
    lambda n, w: _post_ln(n, w, steps=150),  # the chapter's 150 steps, not 100
]
