"""Chapter 3 exercises: softmax, scaled dot-product attention, the causal mask, padding, and the
saturation experiment changed (no 1/sqrt(d_k) scale)."""

from __future__ import annotations

import math

import torch

from ..book.diagnostics import softmax_saturation
from ..reference import attention_ref, causal_mask_ref, softmax_ref
from .core import Case, Exercise, Forbidden, Mistake, register


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- 1. a numerically stable softmax ------------------------------------------------


def softmax_solution(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis, stable for large inputs."""
    shifted = x - x.max(dim=-1, keepdim=True).values  # the largest entry becomes 0
    e = torch.exp(shifted)  # no overflow: every entry is <= 1
    return e / e.sum(dim=-1, keepdim=True)  # each row sums to 1


def _softmax_cases() -> list[Case]:
    g = _gen(0)
    return [
        Case("one row [1, 2, 3]", (torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),)),
        Case("a (3, 5) matrix, softmax of each row", (torch.randn(3, 5, generator=g, dtype=torch.float64),)),
        Case(
            "two rows: large scores [1000, 1001, 1002] and small [-5, 0, 5] (overflow test; each row has its own max)",
            (torch.tensor([[1000.0, 1001.0, 1002.0], [-5.0, 0.0, 5.0]], dtype=torch.float64),),
        ),
        Case("a (2, 3, 4) batch", (torch.randn(2, 3, 4, generator=g, dtype=torch.float64) * 10,)),
    ]


register(
    Exercise(
        "ch03.softmax",
        "a numerically stable softmax over the last axis",
        softmax_solution,
        _softmax_cases,
        hint="subtract each row's maximum before exp (softmax(x) = softmax(x - c)), then divide by the row sum.",
        mistakes=[
            Mistake(
                lambda x: torch.exp(x) / torch.exp(x).sum(dim=-1, keepdim=True),
                "exp(1000) overflows to inf and inf / inf = NaN: subtract each row's maximum first "
                "(x - x.max(dim=-1, keepdim=True).values); the softmax does not change.",
            ),
            Mistake(
                lambda x: (
                    torch.exp(x - x.max(0, keepdim=True).values) / torch.exp(x - x.max(0, keepdim=True).values).sum(0)
                ),
                "you normalised over the first axis; each ROW (last axis) must sum to 1: use dim=-1.",
            ),
            Mistake(
                lambda x: torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(dim=-1, keepdim=True),
                "you subtracted the maximum of the WHOLE tensor: a row far below it underflows to exp(-1000) = 0 "
                "and 0 / 0 = NaN. Subtract each row's own maximum: x.max(dim=-1, keepdim=True).values.",
            ),
            Mistake(
                lambda x: torch.exp(x) / torch.exp(x).sum(),
                "you divided by the sum over ALL entries; divide by each row's own sum (keepdim=True).",
            ),
        ],
        reference=softmax_ref,
        forbidden=[
            Forbidden(
                "the exercise is to write softmax yourself from exp, max and sum: torch.softmax, F.softmax, "
                "x.softmax, nn.Softmax and log_softmax are what you are re-creating.",
                torch_names=("softmax", "log_softmax", "_softmax", "special_softmax", "special_log_softmax"),
                functions=(
                    "minitransformer.reference:softmax_ref",
                    "minitransformer.attention:masked_softmax",
                    "scipy.special._logsumexp:softmax",
                ),
            )
        ],
    )
)


# -- 2. scaled dot-product attention -------------------------------------------------


def attention_solution(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_k)) v for q (..., n, d_k), k (..., m, d_k), v (..., m, d_v)."""
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., n, m)
    weights = torch.softmax(scores, dim=-1)  # each query's weights sum to 1
    return weights @ v  # (..., n, d_v)


_NO_LIBRARY_ATTENTION = Forbidden(
    "the exercise is to write attention yourself: scores = q k^T / sqrt(d_k), a softmax over the keys, "
    "then weights @ v. F.scaled_dot_product_attention, nn.MultiheadAttention and the package's "
    "scaled_dot_product_attention are what it is checked against.",
    torch_names=("scaled_dot_product_attention", "_scaled_dot_product_attention_math"),
    functions=(
        "torch.nn.functional:multi_head_attention_forward",
        "minitransformer.attention:scaled_dot_product_attention",
        "minitransformer.attention:attend",
        "minitransformer.attention:softmax_attention",
        "minitransformer.attention:masked_softmax",
        "minitransformer.reference:attention_ref",
        "minitransformer.multihead:MultiHeadAttention.forward",
    ),
)


def _attention_exp_softmax(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    e = torch.exp(s)  # no max subtracted: overflows for large scores
    return (e / e.sum(-1, keepdim=True)).nan_to_num(0.0) @ v


def _attention_cases() -> list[Case]:
    g = _gen(1)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    k_big, q_big = r(6, 4), r(1, 4)
    k_big[:, 0], q_big[0, 0] = 1.0, 2000.0  # every score is 1000 + a small part: exp(score) overflows
    return [
        Case("q (1, 4), k (6, 4), v (6, 4): one query, every score near 1000 (overflow test)", (q_big, k_big, r(6, 4))),
        Case("q (3, 8), k (5, 8), v (5, 2): d_v != d_k, n != m", (r(3, 8), r(5, 8), r(5, 2))),
        Case("batched q (2, 3, 16), k (2, 7, 16), v (2, 7, 5)", (r(2, 3, 16) * 3, r(2, 7, 16), r(2, 7, 5))),
    ]


register(
    Exercise(
        "ch03.attention",
        "scaled dot-product attention",
        attention_solution,
        _attention_cases,
        hint="scores = q @ k.transpose(-2, -1) / sqrt(d_k); softmax over the KEYS (last axis); then weights @ v.",
        mistakes=[
            Mistake(
                lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1), -1) @ v,
                "your output is attention WITHOUT the 1/sqrt(d_k) scale: divide the scores by sqrt(q.shape[-1]).",
            ),
            Mistake(
                lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -2) @ v,
                "you took the softmax over the QUERIES (axis -2): each query's weights over the keys "
                "must sum to 1, so use dim=-1.",
            ),
            Mistake(
                lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], -1) @ v,
                "you divided by d_k instead of sqrt(d_k).",
            ),
            Mistake(
                _attention_exp_softmax,
                "your softmax overflows: the scores here are near 1000, exp(1000) = inf and inf / inf = NaN. "
                "Subtract each row's maximum score before exp (your stable softmax from the exercise above).",
            ),
        ],
        reference=attention_ref,
        forbidden=[_NO_LIBRARY_ATTENTION],
    )
)


# -- 3. the causal (look-ahead) mask ----------------------------------------------------


def causal_mask_solution(Lq: int, Lk: int) -> torch.Tensor:
    """Bool (Lq, Lk), True = may attend; the Lq queries are the LAST Lq of Lk positions."""
    i = torch.arange(Lq).unsqueeze(1)  # (Lq, 1): query index
    j = torch.arange(Lk).unsqueeze(0)  # (1, Lk): key index
    return j <= i + (Lk - Lq)  # query i sits at position i + (Lk - Lq)


def _mask_cases() -> list[Case]:
    return [
        Case("Lq = Lk = 4", (4, 4)),
        Case("Lq = Lk = 1", (1, 1)),
        Case("Lq = 2 new queries against Lk = 5 keys (a KV cache)", (2, 5)),
        Case("Lq = 1 query against Lk = 6 keys", (1, 6)),
    ]


register(
    Exercise(
        "ch03.causal_mask",
        "the causal mask (True = may attend)",
        causal_mask_solution,
        _mask_cases,
        hint="query i may see key j when j <= i + (Lk - Lq): a lower triangle, diagonal included, "
        "shifted right when there are more keys than queries.",
        mistakes=[
            Mistake(
                lambda Lq, Lk: ~causal_mask_solution(Lq, Lk),
                "your mask is inverted: True must mean 'may attend' (the past and the present).",
            ),
            Mistake(
                lambda Lq, Lk: torch.tril(torch.ones(Lq, Lk, dtype=torch.bool), diagonal=Lk - Lq - 1),
                "you left out the diagonal: a token may attend to itself.",
            ),
            Mistake(
                lambda Lq, Lk: torch.tril(torch.ones(Lq, Lk, dtype=torch.bool)),
                "with Lk > Lq the queries are the LAST Lq positions: shift the triangle by Lk - Lq.",
            ),
        ],
        reference=causal_mask_ref,
        forbidden=[
            Forbidden(
                "the exercise is to build the mask yourself (torch.arange and a comparison, or torch.tril); "
                "the package's causal_mask is what it is checked against.",
                functions=(
                    "minitransformer.attention:causal_mask",
                    "minitransformer.attention:causal_bias",
                    "minitransformer.reference:causal_mask_ref",
                ),
            )
        ],
    )
)


# -- 4. masked attention with padding ------------------------------------------------------


def masked_attention_solution(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention where mask (bool, broadcastable to (..., n, m)) is True = may attend.
    A query that may attend to nothing gets a zero output."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., n, m)
    scores = scores.masked_fill(~mask, float("-inf"))  # blocked keys get weight exp(-inf) = 0
    weights = torch.softmax(scores, dim=-1)  # a fully blocked row is NaN here ...
    weights = torch.nan_to_num(weights, nan=0.0)  # ... so give it zero weights
    return weights @ v  # (..., n, d_v)


def _masked_cases() -> list[Case]:
    g = _gen(2)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    pad = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    some_blocked = torch.tensor([[True, False, True, True], [False, False, False, False], [True, True, True, True]])
    q2, k2 = r(3, 6), r(4, 6)
    k2[:, 0], q2[:, 0] = 1.0, 1000.0 * math.sqrt(6)  # every score is 1000 + a small part
    return [
        Case(
            "padding: 2 sequences of 5 keys, the first has 2 pads; mask (2, 1, 5)",
            (r(2, 3, 8), r(2, 5, 8), r(2, 5, 4), pad[:, None, :]),
        ),
        Case(
            "the second query may see NO key (a fully masked row); mask (3, 4); scores near 1000 (overflow test)",
            (q2, k2, r(4, 3), some_blocked),
        ),
    ]


register(
    Exercise(
        "ch03.masked_attention",
        "attention with a boolean mask, fully masked rows giving zeros",
        masked_attention_solution,
        _masked_cases,
        hint="set blocked scores to -inf BEFORE the softmax (masked_fill(~mask, float('-inf'))); "
        "a row with every score -inf becomes NaN: replace those weights by 0.",
        mistakes=[
            Mistake(
                lambda q, k, v, m: (torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) * m) @ v,
                "you zeroed the weights AFTER the softmax, so the remaining weights no longer sum to 1: "
                "mask the scores with -inf before the softmax instead.",
            ),
            Mistake(
                lambda q, k, v, m: (
                    torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~m, 0.0), -1) @ v
                ),
                "you set blocked scores to 0, but exp(0) = 1 still gives them weight: use -inf.",
            ),
            Mistake(
                lambda q, k, v, m: (
                    torch.softmax(
                        (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(m, float("-inf")), -1
                    ).nan_to_num(0.0)
                    @ v
                ),
                "your mask is inverted: True means 'may attend', so fill where ~mask.",
            ),
            Mistake(
                _attention_exp_softmax,
                "your softmax overflows: the scores here are near 1000, exp(1000) = inf and inf / inf = NaN. "
                "Subtract each row's maximum score before exp (or use torch.softmax, which does).",
            ),
        ],
        reference=attention_ref,
        forbidden=[_NO_LIBRARY_ATTENTION],
    )
)


# -- 5. change an experiment: the saturation experiment without the scale ------------------


def unscaled_saturation_solution(d_k: int, n_keys: int) -> float:
    """The saturation experiment of section 4, changed: unscaled scores, any d_k and number of keys.

    Returns the mean largest softmax weight (1 = one-hot) of one random query against
    ``n_keys`` random keys, averaged over the experiment's 200 trials (seed 0).

    Interpretation (the question under the exercise). With 16 keys the unscaled largest weight
    climbs towards 1 as d_k grows, because the scores' standard deviation is sqrt(d_k): the
    softmax turns into an argmax and its Jacobian, the gradient path to the scores, vanishes.
    More keys (256 at d_k = 64) lower the largest weight a little, since more keys compete for
    the top, but it stays far above the uniform 1/256: the cause is the size of the scores,
    not the number of keys. Dividing by sqrt(d_k) fixes the score scale whatever d_k is.
    """
    return softmax_saturation(d_k, n_keys=n_keys, scaled=False)["max_weight"]


def _saturation_cases() -> list[Case]:
    return [
        Case("d_k = 64, 16 keys (the chapter's table, unscaled row)", (64, 16)),
        Case("d_k = 512, 16 keys (a head size the table does not have)", (512, 16)),
        Case("d_k = 64, 256 keys (more keys)", (64, 256)),
        Case("d_k = 2, 8 keys", (2, 8)),
    ]


def _saturation(d_k, n_keys, key="max_weight", scaled=False):
    return softmax_saturation(d_k, n_keys=n_keys, scaled=scaled)[key]


register(
    Exercise(
        "ch03.unscaled_saturation",
        "the saturation experiment without the 1/sqrt(d_k) scale: the mean largest weight",
        unscaled_saturation_solution,
        _saturation_cases,
        hint="run the chapter's experiment with the scale switched off: softmax_saturation(d_k, n_keys=n_keys, "
        "scaled=False) from minitransformer.book.diagnostics, and return its 'max_weight' (a float).",
        mistakes=[
            Mistake(
                lambda d_k, n_keys: _saturation(d_k, n_keys, scaled=True),
                "that is the SCALED experiment (q·k / sqrt(d_k)): the change asked for is scaled=False.",
            ),
            Mistake(
                lambda d_k, n_keys: _saturation(d_k, 16),
                "your number does not depend on n_keys: pass n_keys=n_keys (the default is 16 keys).",
            ),
            Mistake(
                lambda d_k, n_keys: _saturation(d_k, n_keys, key="jacobian_norm"),
                "that is the size of the softmax Jacobian; the question asks for the mean largest weight "
                "('max_weight').",
            ),
            Mistake(
                lambda d_k, n_keys: _saturation(d_k, n_keys, key="entropy"),
                "that is the entropy of the weights; the question asks for the mean largest weight ('max_weight').",
            ),
        ],
        forbidden=[],
    )
)
