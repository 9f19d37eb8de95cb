"""Plausible wrong answers to chapter 6's exercises (each must fail its checker)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _ln(x, g, b, eps, dim=-1, unbiased=False, eps_inside=True):
    mu = x.mean(dim, keepdim=True)
    var = x.var(dim, unbiased=unbiased, keepdim=True)
    denom = torch.sqrt(var + eps) if eps_inside else torch.sqrt(var) + eps
    return g * (x - mu) / denom + b


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
    ],
    "ch06.pre_ln_block": [
        lambda x, a, f, n1, n2: n2((h := n1(x + a(x))) + f(h)),  # Post-LN order
        lambda x, a, f, n1, n2: x + f(n2(x + a(n1(x)))),  # inner residual not carried
        lambda x, a, f, n1, n2: n1(x + a(x)) + f(n2(n1(x + a(x)))),  # norm applied after the residual
        lambda x, a, f, n1, n2: f(n2(x + a(n1(x)))),  # FFN without its residual
        lambda x, a, f, n1, n2: (h := x + a(n1(x))) + f(n1(h)),  # one norm used twice
    ],
    "ch06.noam_lr": [
        lambda s, d, w: _noam(s, d, w, warm_exp=-0.5),  # warmup exponent -0.5
        lambda s, d, w: _noam(s, d, w, d_exp=0.0),  # no d_model ** -0.5
        lambda s, d, w: d**-0.5 * min(s**-0.5, s / w),  # ramp step / warmup
        lambda s, d, w: d**-0.5 * min((s + 1) ** -0.5, (s + 1) * w**-1.5),  # off by one step
    ],
    "ch06.smoothed_targets": [
        lambda t, C, e: (1 - e) * F.one_hot(t, C).float() + (e / (C - 1)) * (1 - F.one_hot(t, C).float()),
        lambda t, C, e: (1 - e) * F.one_hot(t, C).float() + (e / C) * (1 - F.one_hot(t, C).float()),
        lambda t, C, e: F.one_hot(t, C).float(),  # no smoothing at all
        lambda t, C, e: torch.softmax(F.one_hot(t, C).float() / max(e, 1e-3), -1),  # a softened softmax
    ],
}
