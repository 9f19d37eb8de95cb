"""Plausible wrong answers to chapter 7's exercises (each must fail its checker)."""

from __future__ import annotations

import math

import torch

from minitransformer.book.char_lm import ngram_loss
from minitransformer.book.explanation import null_space_projection
from minitransformer.gpt import sampling_probs


def _cross(x, m, wq, wk, wv, mask=None, *, scale=True, causal=False, use_mask=True, axis=-1, kv_from_x=False):
    src = x if kv_from_x else m
    s = (x @ wq) @ (src @ wk).transpose(-2, -1)
    if scale:
        s = s / math.sqrt(wq.shape[1])
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2], s.shape[-1], dtype=torch.bool).tril(), float("-inf"))
    if use_mask and mask is not None and not kv_from_x:
        s = s.masked_fill(~mask[:, None, :], float("-inf"))
    return torch.softmax(s, axis) @ (src @ wv)


def _exp_normalise(z, dim):
    return torch.exp(z) / torch.exp(z).sum(dim, keepdim=True)  # no max subtracted


def _probs(
    logits, temperature, top_k, *, multiply=False, renormalise=True, keep_extra=0, softmax=torch.softmax, dtype=None
):
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(dtype or logits.dtype)
    t = max(temperature, 1e-9)
    z = logits * t if multiply else logits / t
    if top_k is not None and top_k + keep_extra < z.shape[-1]:
        kth = torch.topk(z, top_k + keep_extra, -1).values[:, -1:]
        if renormalise:
            z = z.masked_fill(z < kth, float("-inf"))
        else:
            return torch.softmax(z, -1).masked_fill(z < kth, 0.0)
    return softmax(z, -1)


def _probs_in_place(logits, temperature, top_k):
    if temperature > 0:
        logits /= temperature  # in-place: changes the caller's logits
        return _probs(logits, 1.0, top_k)
    return _probs(logits, temperature, top_k)


def _null(V, r, *, ones=True, values=True, complement=True):
    rows = ([V.T] if values else []) + ([torch.ones(1, V.shape[0], dtype=V.dtype)] if ones else [])
    A = torch.cat(rows)
    part = A.T @ torch.linalg.pinv(A @ A.T) @ (A @ r)
    return r - part if complement else part


WRONG = {
    "ch07.cross_attention": [
        lambda x, m, wq, wk, wv, mask=None: _cross(x, m, wq, wk, wv, mask, kv_from_x=True),  # self-attention
        lambda x, m, wq, wk, wv, mask=None: _cross(x, m, wq, wk, wv, mask, scale=False),  # no 1/sqrt(d_k)
        lambda x, m, wq, wk, wv, mask=None: _cross(x, m, wq, wk, wv, mask, causal=True),  # causal cross-attn
        lambda x, m, wq, wk, wv, mask=None: _cross(x, m, wq, wk, wv, mask, use_mask=False),  # padding not masked
        lambda x, m, wq, wk, wv, mask=None: _cross(x, m, wq, wk, wv, mask, axis=-2),  # softmax over targets
        lambda x, m, wq, wk, wv, mask=None: (
            torch.softmax((m @ wq) @ (x @ wk).transpose(-2, -1) / math.sqrt(wq.shape[1]), -1) @ (x @ wv)
        ),  # roles swapped
        lambda x, m, wq, wk, wv, mask=None: (
            _exp_normalise(
                ((x @ wq) @ (m @ wk).transpose(-2, -1) / math.sqrt(wq.shape[1])).masked_fill(
                    torch.zeros(1, dtype=torch.bool) if mask is None else ~mask[:, None, :], float("-inf")
                ),
                -1,
            )
            @ (m @ wv)
        ),  # numerically unstable softmax: large scores overflow
        lambda x, m, wq, wk, wv, mask=None: _cross(x, m, wq, wk, wv, mask).float(),  # wrong dtype (float32)
    ],
    "ch07.sampling_probs": [
        lambda l, t, k: _probs(l, t, k, multiply=True),  # temperature multiplies
        lambda l, t, k: _probs(l, t, k, renormalise=False),  # top-k zeroed after softmax, not renormalised
        lambda l, t, k: _probs(l, t, None),  # top-k ignored
        lambda l, t, k: _probs(l, t, k, keep_extra=1),  # off by one in k
        lambda l, t, k: torch.softmax(l, -1) if t == 0 else _probs(l, t, k),  # temperature 0 treated as 1
        lambda l, t, k: _probs(l, t, k, softmax=_exp_normalise),  # numerically unstable: logits near 1000
        lambda l, t, k: _probs(l, t, k, dtype=torch.float32),  # wrong dtype: float32 one-hot at temperature 0
        _probs_in_place,  # in-place mutation of the logits
        lambda l, t, k: sampling_probs(l, t, k),  # the package's own function, wrapped
    ],
    "ch07.null_space_projection": [
        lambda V, r: _null(V, r, ones=False),  # forgot sum(u) = 0
        lambda V, r: _null(V, r, values=False),  # forgot V^T u = 0
        lambda V, r: _null(V, r, complement=False),  # projected onto the row space
        lambda V, r: r - V @ torch.linalg.lstsq(V, r[:, None]).solution[:, 0],  # least squares: V-column space only
        lambda V, r: _null(V.float(), r.float()),  # wrong dtype (float32)
        lambda V, r: null_space_projection(V, r),  # the package's own function, wrapped
    ],
}


def _tri(train, val, V, *, add=1.0, axis=-1, log=torch.log, dtype=torch.float64, order=(0, 1, 2)):
    counts = torch.full((V, V, V), add, dtype=dtype)
    idx = (train[:-2], train[1:-1], train[2:])
    counts.index_put_(tuple(idx[i] for i in order), torch.ones(len(train) - 2, dtype=dtype), accumulate=True)
    logp = log(counts / counts.sum(axis, keepdim=True))
    return -logp[val[:-2], val[1:-1], val[2:]].mean()


def _tri_no_accumulate(train, val, V):
    counts = torch.ones(V, V, V, dtype=torch.float64)
    counts[train[:-2], train[1:-1], train[2:]] += 1  # repeated triples counted once
    logp = (counts / counts.sum(-1, keepdim=True)).log()
    return -logp[val[:-2], val[1:-1], val[2:]].mean()


def _tri_context_from_all_pairs(train, val, V):
    counts = torch.zeros(V, V, V, dtype=torch.float64)
    counts.index_put_((train[:-2], train[1:-1], train[2:]), torch.ones(len(train) - 2, dtype=torch.float64), True)
    pairs = torch.zeros(V, V, dtype=torch.float64)
    pairs.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1, dtype=torch.float64), True)
    logp = ((counts + 1) / (pairs[..., None] + V)).log()
    return -logp[val[:-2], val[1:-1], val[2:]].mean()


WRONG["ch07.trigram_loss"] = [
    lambda tr, va, V: _tri(tr, va, V, add=0.0),  # no smoothing: unseen triples give inf
    lambda tr, va, V: _tri(tr, va, V, axis=0),  # normalised over the oldest character
    lambda tr, va, V: _tri(tr, va, V, log=torch.log2),  # bits, not nats
    lambda tr, va, V: _tri(tr, va, V, order=(1, 0, 2)),  # the two context characters swapped
    lambda tr, va, V: _tri(tr, va, V, add=0.5),  # add-one/2 smoothing
    _tri_no_accumulate,  # fancy-index += counts each repeated triple once
    _tri_context_from_all_pairs,  # context counts include the last pair, which no character follows
    lambda tr, va, V: _tri(tr, tr, V),  # measured on the training characters
    lambda tr, va, V: torch.tensor(ngram_loss(tr, va, V, 3), dtype=torch.float64),  # the package's function
]
