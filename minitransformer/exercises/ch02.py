"""Chapter 2 exercises: Bahdanau's additive scores, Luong's general score, the context vectors."""

from __future__ import annotations

import torch

from .core import Case, Exercise, Forbidden, Mistake, register


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- 1. Bahdanau's additive scores, for every decoder step at once ------------------------


def additive_scores_solution(
    s: torch.Tensor, h: torch.Tensor, W_a: torch.Tensor, U_a: torch.Tensor, v_a: torch.Tensor
) -> torch.Tensor:
    """e_tj = v_a^T tanh(W_a s_{t-1} + U_a h_j) for t = 1..T.
    s (B, T + 1, dq): decoder states s_0 .. s_T;  h (B, S, dk): encoder states;
    W_a (d_a, dq), U_a (d_a, dk), v_a (d_a,).  Returns e (B, T, S)."""
    s_prev = s[:, :-1]  # (B, T, dq): s_0 .. s_{T-1}, the PREVIOUS states
    ws = (s_prev @ W_a.T).unsqueeze(2)  # (B, T, 1, d_a)
    uh = (h @ U_a.T).unsqueeze(1)  # (B, 1, S, d_a)
    return torch.tanh(ws + uh) @ v_a  # (B, T, S)


def _additive(s_states, h, W_a, U_a, v_a, tanh=True):
    pre = (s_states @ W_a.T).unsqueeze(2) + (h @ U_a.T).unsqueeze(1)
    return (torch.tanh(pre) if tanh else pre) @ v_a


def _additive_cases() -> list[Case]:
    g = _gen(20)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731

    def case(desc, B, T, S, dq, dk, da):
        return Case(desc, (r(B, T + 1, dq), r(B, S, dk), r(da, dq), r(da, dk), r(da)))

    return [
        case("B = 1, T = 2 target steps, S = 3 source words, dq = dk = d_a = 4", 1, 2, 3, 4, 4, 4),
        case("B = 2, T = 4, S = 5, dq = 6, dk = 8, d_a = 3 (all sizes different)", 2, 4, 5, 6, 8, 3),
        case("B = 3, T = 1, S = 7, dq = 2, dk = 4, d_a = 5", 3, 1, 7, 2, 4, 5),
    ]


register(
    Exercise(
        "ch02.additive_scores",
        "Bahdanau's additive scores with the PREVIOUS decoder state",
        additive_scores_solution,
        _additive_cases,
        hint="take the previous states s[:, :-1] (s_0 .. s_{T-1}), project them with W_a and the encoder states "
        "with U_a, add with broadcasting to (B, T, S, d_a), apply tanh, then multiply by v_a.",
        mistakes=[
            Mistake(
                lambda s, h, W, U, v: _additive(s[:, 1:], h, W, U, v),
                "you used the CURRENT state s_t (s[:, 1:]); Bahdanau scores with the previous state "
                "s_{t-1} (s[:, :-1]), computed before the decoder's GRU runs at step t.",
            ),
            Mistake(
                lambda s, h, W, U, v: _additive(s[:, :-1], h, W, U, v, tanh=False),
                "the tanh is missing: without it v_a^T (W_a s + U_a h_j) splits into a part that does not "
                "depend on j, and the ranking of the source words no longer depends on the decoder state.",
            ),
            Mistake(
                lambda s, h, W, U, v: (torch.tanh((s[:, :-1] @ W.T).unsqueeze(2) + (h @ U.T).unsqueeze(1))).sum(-1),
                "you summed the tanh layer's features instead of weighting them with v_a.",
            ),
        ],
    )
)


# -- 2. Luong's general score ----------------------------------------------------------------


def general_scores_solution(s: torch.Tensor, h: torch.Tensor, W_a: torch.Tensor) -> torch.Tensor:
    """e_j = s^T W_a h_j.  s (B, dq): current decoder state;  h (B, S, dk);  W_a (dq, dk).
    Returns e (B, S)."""
    Wh = h @ W_a.T  # (B, S, dq): W_a h_j for every j
    return (Wh @ s.unsqueeze(-1)).squeeze(-1)  # (B, S): s . (W_a h_j)


def _general_cases() -> list[Case]:
    g = _gen(21)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return [
        Case("B = 1, S = 4, dq = dk = 3 (square, non-symmetric W_a)", (r(1, 3), r(1, 4, 3), r(3, 3))),
        Case("B = 2, S = 5, dq = dk = 6", (r(2, 6), r(2, 5, 6), r(6, 6))),
        Case("B = 3, S = 2, dq = 4, dk = 7 (different sizes: what 'general' is for)", (r(3, 4), r(3, 2, 7), r(4, 7))),
    ]


register(
    Exercise(
        "ch02.general_scores",
        "Luong's general score s^T W_a h_j",
        general_scores_solution,
        _general_cases,
        hint="W_a maps a key (size dk) to query size dq: compute h @ W_a.T, shape (B, S, dq), then the dot "
        "product of every row with s.",
        mistakes=[
            Mistake(
                lambda s, h, W: ((h @ W) @ s.unsqueeze(-1)).squeeze(-1),
                "you used W_a transposed (h @ W_a computes W_a^T h_j): the score is s^T W_a h_j, so project "
                "the keys with h @ W_a.T (or the query with s @ W_a).",
            ),
            Mistake(
                lambda s, h, W: (h @ s.unsqueeze(-1)).squeeze(-1),
                "you computed the DOT score s^T h_j and left out W_a.",
            ),
        ],
    )
)


# -- 3. the context vectors --------------------------------------------------------------------


def contexts_solution(scores: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """c_t = sum_j alpha_tj h_j with alpha_t = softmax over the SOURCE positions j.
    scores (B, T, S), h (B, S, d), mask bool (B, S) (True = real source word).
    Returns contexts (B, T, d)."""
    scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))  # padding gets no weight
    alpha = torch.softmax(scores, dim=-1)  # (B, T, S): each row sums to 1
    return alpha @ h  # (B, T, d)


def _contexts_cases() -> list[Case]:
    g = _gen(22)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    full = lambda B, S: torch.ones(B, S, dtype=torch.bool)  # noqa: E731
    return [
        Case("B = 1, T = 3 target steps, S = 4 source words, no padding", (r(1, 3, 4), r(1, 4, 2), full(1, 4))),
        Case(
            "B = 2, T = 2, S = 5, d = 3, no padding, scores around 800 (the overflow test)",
            (r(2, 2, 5) * 2 + 800.0, r(2, 5, 3), full(2, 5)),
        ),
        Case(
            "B = 2, T = 4, S = 3, the first source padded after 2 words",
            (r(2, 4, 3), r(2, 3, 3), torch.tensor([[True, True, False], [True, True, True]])),
        ),
    ]


register(
    Exercise(
        "ch02.contexts",
        "context vectors: softmax over the source words, then a weighted sum",
        contexts_solution,
        _contexts_cases,
        hint="mask padded source positions with -inf, softmax over the LAST axis (the source words j), then alpha @ h.",
        mistakes=[
            Mistake(
                lambda e, h, m: torch.softmax(e.masked_fill(~m.unsqueeze(1), float("-inf")), dim=1) @ h,
                "you normalised over the TARGET steps (dim=1): each target step t needs weights over the "
                "SOURCE words that sum to 1, so use dim=-1.",
            ),
            Mistake(
                lambda e, h, m: e.masked_fill(~m.unsqueeze(1), 0.0) @ h,
                "you used the raw scores as weights: turn them into a distribution with a softmax first.",
            ),
            Mistake(
                lambda e, h, m: torch.softmax(e, dim=-1) @ h,
                "padded source positions received weight: set their scores to -inf before the softmax.",
            ),
            Mistake(
                lambda e, h, m: (
                    (x := torch.exp(e.masked_fill(~m.unsqueeze(1), float("-inf")))) / x.sum(-1, keepdim=True) @ h
                ),
                "exp(800) overflows to inf and inf / inf = NaN: subtract each row's maximum score before exp "
                "(or call torch.softmax, which does).",
            ),
        ],
        forbidden=[
            Forbidden(
                "mask the scores yourself (masked_fill with -inf), then torch.softmax over the source axis; the "
                "package's masked_softmax is what it is checked against.",
                functions=("minitransformer.attention:masked_softmax",),
            )
        ],
    )
)


# -- 4. change the experiment: replace the learned weights by a uniform average ------------


def uniform_context_solution(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The context a decoder step gets if every REAL source position has the same weight 1/S_b.
    h (B, S, d): encoder states;  mask bool (B, S) (True = real source position).
    Returns c (B, d): the mean of each row's real states."""
    weights = mask.to(h.dtype)  # (B, S): 1 on real positions, 0 on padding
    weights = weights / weights.sum(dim=-1, keepdim=True)  # (B, S): each row sums to 1
    return (weights.unsqueeze(-1) * h).sum(dim=1)  # (B, d)


def _uniform_cases() -> list[Case]:
    g = _gen(24)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return [
        Case("B = 1, S = 4 source positions, d = 3, no padding", (r(1, 4, 3), torch.ones(1, 4, dtype=torch.bool))),
        Case(
            "B = 2, S = 5, d = 2, the first row padded after 2 positions",
            (r(2, 5, 2), torch.tensor([[True, True, False, False, False], [True] * 5])),
        ),
        Case(
            "B = 3, S = 3, d = 4, padded states set to 100 (they must not count)",
            (
                torch.where(
                    torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)[..., None],
                    r(3, 3, 4),
                    torch.full((3, 3, 4), 100.0, dtype=torch.float64),
                ),
                torch.tensor([[True, True, False], [True, False, False], [True, True, True]]),
            ),
        ),
    ]


register(
    Exercise(
        "ch02.uniform_context",
        "change the experiment: attention replaced by a uniform average over the real source positions",
        uniform_context_solution,
        _uniform_cases,
        hint="turn the mask into weights 1 (real) and 0 (padding), divide each row by its number of real "
        "positions, and sum the weighted states over the source axis: (B, S, d) -> (B, d).",
        mistakes=[
            Mistake(
                lambda h, m: h.mean(dim=1),
                "you averaged over every position, padding included: a padded row must average only its "
                "real positions (use the mask).",
            ),
            Mistake(
                lambda h, m: (m.to(h.dtype).unsqueeze(-1) * h).sum(dim=1),
                "you summed the real states without dividing by their number: the weights must sum to 1, "
                "as attention weights do.",
            ),
        ],
    )
)
