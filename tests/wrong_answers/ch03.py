"""Plausible wrong answers to chapter 3's exercises (each must fail its checker)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import minitransformer
from minitransformer import causal_mask, scaled_dot_product_attention
from minitransformer.reference import softmax_ref


def _sdpa(q, k, v, axis=-1, scale=True):
    s = q @ k.transpose(-2, -1)
    if scale:
        s = s / math.sqrt(q.shape[-1])
    return torch.softmax(s, axis) @ v


def _exp_normalise(s, dim=-1):
    e = torch.exp(s)  # no max subtracted: exp(1000) = inf
    return e / e.sum(dim, keepdim=True)


def softmax_in_place(x):
    x -= x.max(-1, keepdim=True).values  # in-place: changes the caller's scores
    return _exp_normalise(x)


def softmax_float32(x):
    x = x.float()  # silently casts
    return _exp_normalise(x - x.max(-1, keepdim=True).values)


def attention_unstable(q, k, v):
    return _exp_normalise(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])) @ v


def attention_mha(q, k, v):
    d = q.shape[-1]  # nn.MultiheadAttention with identity projections (q, k, v of the same width)
    if v.shape[-1] != d:
        return F.scaled_dot_product_attention(q, k, v)
    mha = nn.MultiheadAttention(d, 1, bias=False, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([torch.eye(d)] * 3))
        mha.out_proj.weight.copy_(torch.eye(d))
    lead = q.dim() == 2
    q, k, v = (t.unsqueeze(0) if lead else t for t in (q, k, v))
    out = mha(q, k, v, need_weights=False)[0].detach()
    return out[0] if lead else out


def masked_unstable(q, k, v, m):
    s = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~m, float("-inf"))
    return _exp_normalise(s).nan_to_num(0.0) @ v


def masked_float32(q, k, v, m):
    s = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~m, float("-inf"))
    return (torch.softmax(s, -1).nan_to_num(0.0) @ v).float()


WRONG = {
    "ch03.softmax": [
        lambda x: torch.exp(x) / torch.exp(x).sum(-1, keepdim=True),  # overflows at 1000
        lambda x: torch.softmax(x, dim=0),  # wrong axis
        lambda x: torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(),  # normalised over everything
        lambda x: x / x.sum(-1, keepdim=True),  # no exponential
        lambda x: _exp_normalise(x - x.max()),  # numerically unstable: the GLOBAL max, rows underflow to 0 / 0
        lambda x: torch.softmax(x, -1),  # library call
        lambda x: x.softmax(-1),  # library call (tensor method)
        lambda x: F.softmax(x, dim=-1),  # library call (imported by name)
        lambda x: nn.Softmax(dim=-1)(x),  # library call (module)
        lambda x: torch.log_softmax(x, -1).exp(),  # library call (log-softmax)
        lambda x: torch.from_numpy(softmax_ref(x.numpy())),  # the package's own reference
        softmax_in_place,  # in-place mutation of x
        softmax_float32,  # wrong dtype (float32)
    ],
    "ch03.attention": [
        lambda q, k, v: _sdpa(q, k, v, scale=False),  # forgot the scale
        lambda q, k, v: _sdpa(q, k, v, axis=-2),  # softmax over queries
        lambda q, k, v: (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])) @ v,  # raw scores as weights
        lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], -1) @ v,  # divided by d_k
        attention_unstable,  # numerically unstable softmax: scores near 1000 overflow
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v),  # library call
        lambda q, k, v: scaled_dot_product_attention(q, k, v),  # the package's own function
        lambda q, k, v: minitransformer.scaled_dot_product_attention(q, k, v),  # ... through the module
        attention_mha,  # nn.MultiheadAttention
        lambda q, k, v: _sdpa(q.float(), k.float(), v.float()),  # wrong dtype (float32)
    ],
    "ch03.causal_mask": [
        lambda Lq, Lk: torch.triu(torch.ones(Lq, Lk, dtype=torch.bool)),  # inverted (future instead of past)
        lambda Lq, Lk: torch.tril(torch.ones(Lq, Lk, dtype=torch.bool), -1 + Lk - Lq),  # diagonal dropped
        lambda Lq, Lk: torch.tril(torch.ones(Lq, Lk, dtype=torch.bool)),  # not shifted when Lk > Lq
        lambda Lq, Lk: torch.tril(torch.ones(Lq, Lk)).float(),  # float, not bool
        lambda Lq, Lk: torch.ones(Lq, Lk, dtype=torch.bool).tril(Lk - Lq + 1),  # off by one: sees the next key
        lambda Lq, Lk: causal_mask(Lq, Lk),  # the package's own function
    ],
    "ch03.masked_attention": [
        lambda q, k, v, m: (torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) * m) @ v,
        lambda q, k, v, m: torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~m, 0), -1) @ v,
        lambda q, k, v, m: (
            torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~m, float("-inf")), -1) @ v
        ),  # NaN row
        masked_unstable,  # numerically unstable softmax: scores near 1000 overflow
        lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m).nan_to_num(0.0),  # library call
        lambda q, k, v, m: scaled_dot_product_attention(q, k, v, m),  # the package's own function
        masked_float32,  # wrong dtype (float32)
    ],
}


def _saturation_scaled(d_k, n_keys):
    from minitransformer.book.diagnostics import softmax_saturation

    return softmax_saturation(d_k, n_keys=n_keys)["max_weight"]  # forgot to switch the scale off


def _saturation_by_hand_one_trial(d_k, n_keys):
    g = torch.Generator().manual_seed(0)
    q, k = (
        torch.randn(d_k, generator=g, dtype=torch.float64),
        torch.randn(n_keys, d_k, generator=g, dtype=torch.float64),
    )
    return torch.softmax(k @ q, -1).max().item()  # one trial, not the mean over the experiment's 200


def _saturation_default_keys(d_k, n_keys):
    from minitransformer.book.diagnostics import softmax_saturation

    return softmax_saturation(d_k, scaled=False)["max_weight"]  # n_keys ignored (always 16)


WRONG["ch03.unscaled_saturation"] = [_saturation_scaled, _saturation_by_hand_one_trial, _saturation_default_keys]
