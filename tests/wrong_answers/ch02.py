"""Plausible wrong answers to chapter 2's exercises (each must fail its checker)."""

from __future__ import annotations

import torch

from minitransformer.attention import masked_softmax


def _additive(states, h, W_a, U_a, v_a, tanh=True):
    pre = (states @ W_a.T).unsqueeze(2) + (h @ U_a.T).unsqueeze(1)  # (B, T, S, d_a)
    return (torch.tanh(pre) if tanh else pre) @ v_a


def _contexts(e, h, m, softmax=torch.softmax):
    return softmax(e.masked_fill(~m.unsqueeze(1), float("-inf")), -1) @ h


def _exp_normalise(s, dim):
    return torch.exp(s) / torch.exp(s).sum(dim, keepdim=True)  # no max subtracted


def contexts_mask_in_place(e, h, m):
    e.masked_fill_(~m.unsqueeze(1), float("-inf"))  # in-place: overwrites the caller's scores
    return torch.softmax(e, -1) @ h


WRONG = {
    "ch02.additive_scores": [
        lambda s, h, W, U, v: _additive(s[:, 1:], h, W, U, v),  # s_t instead of s_{t-1}
        lambda s, h, W, U, v: _additive(s[:, :-1], h, W, U, v, tanh=False),  # tanh missing
        lambda s, h, W, U, v: torch.tanh((s[:, :-1] @ W.T).unsqueeze(2) + (h @ U.T).unsqueeze(1)).sum(-1),
        lambda s, h, W, U, v: _additive(s, h, W, U, v),  # every state: T + 1 rows
        lambda s, h, W, U, v: _additive(s[:, :-1], h, W, U, v).float(),  # wrong dtype (float32)
    ],
    "ch02.general_scores": [
        lambda s, h, W: ((h @ W) @ s.unsqueeze(-1)).squeeze(-1),  # W_a transposed
        lambda s, h, W: (h @ s.unsqueeze(-1)).squeeze(-1),  # dot score, W_a left out
        lambda s, h, W: torch.softmax(((h @ W.T) @ s.unsqueeze(-1)).squeeze(-1), -1),  # returned weights
        lambda s, h, W: ((h.float() @ W.T.float()) @ s.float().unsqueeze(-1)).squeeze(-1),  # float32
    ],
    "ch02.contexts": [
        lambda e, h, m: torch.softmax(e.masked_fill(~m.unsqueeze(1), float("-inf")), 1) @ h,  # over targets
        lambda e, h, m: e.masked_fill(~m.unsqueeze(1), 0.0) @ h,  # raw scores as weights
        lambda e, h, m: torch.softmax(e, -1) @ h,  # padding not masked
        lambda e, h, m: (torch.softmax(e, -1) * m.unsqueeze(1)) @ h,  # masked after the softmax
        lambda e, h, m: _contexts(e, h, m, softmax=_exp_normalise),  # numerically unstable: exp(800) = inf
        contexts_mask_in_place,  # in-place mutation of the scores
        lambda e, h, m: _contexts(e, h, m).float(),  # wrong dtype (float32)
        lambda e, h, m: masked_softmax(e, m.unsqueeze(1)) @ h,  # the package's own masked softmax
    ],
}


def uniform_with_padding(h, mask):
    return h.mean(dim=1)  # padding counted


def uniform_sum(h, mask):
    return (mask.to(h.dtype).unsqueeze(-1) * h).sum(dim=1)  # weights do not sum to 1


def uniform_divides_by_S(h, mask):
    return (mask.to(h.dtype).unsqueeze(-1) * h).sum(dim=1) / h.shape[1]  # padding counted in the count


def uniform_float32(h, mask):
    w = mask.float() / mask.float().sum(-1, keepdim=True)  # float32 weights
    return (w.unsqueeze(-1) * h.float()).sum(dim=1)


WRONG["ch02.uniform_context"] = [uniform_with_padding, uniform_sum, uniform_divides_by_S, uniform_float32]
