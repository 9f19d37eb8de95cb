"""Chapter 7 exercises: cross-attention, the sampling distribution, a null-space direction, a trigram baseline.

Two reference solutions are the package's own functions (``sampling_probs``
from gpt.py, ``null_space_projection`` from explanation.py), so what a reader
reveals is the code the chapter runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..book.explanation import null_space_projection
from ..gpt import sampling_probs
from .core import Case, Exercise, Forbidden, Mistake, register


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- 1. cross-attention -------------------------------------------------------------------


def cross_attention_solution(
    x: torch.Tensor,
    memory: torch.Tensor,
    W_q: torch.Tensor,
    W_k: torch.Tensor,
    W_v: torch.Tensor,
    memory_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One head of cross-attention: queries from the decoder, keys and values from the encoder.

    x (B, T, d) decoder states; memory (B, S, d) the final encoder output;
    W_q, W_k (d, d_k), W_v (d, d_v); memory_mask bool (B, S), True = real source token.
    Returns (B, T, d_v).
    """
    q = x @ W_q  # (B, T, d_k): what each target position asks
    k, v = memory @ W_k, memory @ W_v  # (B, S, d_k), (B, S, d_v): the source answers
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, T, S)
    if memory_mask is not None:  # hide source padding; no causal mask here
        scores = scores.masked_fill(~memory_mask[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, T, d_v)


def _cross_cases() -> list[Case]:
    g = _gen(7)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    return [
        Case(
            "x (1, 3, 4), memory (1, 5, 4), d_k = d_v = 4, no mask", (r(1, 3, 4), r(1, 5, 4), r(4, 4), r(4, 4), r(4, 4))
        ),
        Case(
            "x (2, 4, 6), memory (2, 6, 6), d_k = 3, d_v = 5, source padding in row 1",
            (r(2, 4, 6), r(2, 6, 6), r(6, 3), r(6, 3), r(6, 5), mask),
        ),
        Case(
            "x (1, 5, 4) x 300, memory (1, 5, 4) (equal lengths), d_k = 2, d_v = 3: large scores (overflow test)",
            (r(1, 5, 4) * 300.0, r(1, 5, 4), r(4, 2), r(4, 2), r(4, 3)),
        ),
    ]


def _masked(scores, memory_mask):
    return scores if memory_mask is None else scores.masked_fill(~memory_mask[:, None, :], float("-inf"))


register(
    Exercise(
        "ch07.cross_attention",
        "one head of cross-attention (queries from the decoder, keys/values from the encoder)",
        cross_attention_solution,
        _cross_cases,
        hint="q = x @ W_q from the DECODER; k = memory @ W_k and v = memory @ W_v from the ENCODER output; "
        "scores (B, T, S) scaled by 1/sqrt(d_k), source padding set to -inf, softmax over the source axis (-1).",
        mistakes=[
            Mistake(
                lambda x, m, wq, wk, wv, mask=None: (
                    torch.softmax(_masked((x @ wq) @ (x @ wk).transpose(-2, -1) / math.sqrt(wq.shape[1]), None), -1)
                    @ (x @ wv)
                ),
                "that is SELF-attention: the keys and values must come from the encoder output `memory`, not from x.",
            ),
            Mistake(
                lambda x, m, wq, wk, wv, mask=None: (
                    torch.softmax(_masked((x @ wq) @ (m @ wk).transpose(-2, -1), mask), -1) @ (m @ wv)
                ),
                "the scores are not scaled: divide q k^T by sqrt(d_k).",
            ),
            Mistake(
                lambda x, m, wq, wk, wv, mask=None: (
                    torch.softmax(
                        ((x @ wq) @ (m @ wk).transpose(-2, -1) / math.sqrt(wq.shape[1])).masked_fill(
                            ~torch.ones(x.shape[1], m.shape[1], dtype=torch.bool).tril(), float("-inf")
                        ),
                        -1,
                    )
                    @ (m @ wv)
                ),
                "you applied a causal mask to cross-attention: target position t may read the WHOLE source "
                "(the source exists in full); only the decoder's self-attention is causal.",
            ),
            Mistake(
                lambda x, m, wq, wk, wv, mask=None: (
                    torch.softmax((x @ wq) @ (m @ wk).transpose(-2, -1) / math.sqrt(wq.shape[1]), -1) @ (m @ wv)
                ),
                "the source padding was not masked: set the scores of padded source positions to -inf.",
            ),
            Mistake(
                lambda x, m, wq, wk, wv, mask=None: (
                    torch.softmax(_masked((x @ wq) @ (m @ wk).transpose(-2, -1) / math.sqrt(wq.shape[1]), mask), -2)
                    @ (m @ wv)
                ),
                "softmax over the wrong axis: each TARGET position's weights over the source must sum to 1 (dim=-1).",
            ),
            Mistake(
                lambda x, m, wq, wk, wv, mask=None: (
                    (e := torch.exp(_masked((x @ wq) @ (m @ wk).transpose(-2, -1) / math.sqrt(wq.shape[1]), mask)))
                    / e.sum(-1, keepdim=True)
                    @ (m @ wv)
                ),
                "your softmax overflows for large scores (exp(800) = inf, inf / inf = NaN): subtract each row's "
                "maximum before exp, or use torch.softmax.",
            ),
        ],
    )
)


# -- 2. the sampling distribution --------------------------------------------------------------


def _sampling_cases() -> list[Case]:
    g = _gen(3)
    logits = torch.randn(3, 10, generator=g, dtype=torch.float64) * 2
    return [
        Case("logits (3, 10), temperature 1, top_k None", (logits, 1.0, None)),
        Case("logits (3, 10), temperature 0.5 (sharper), top_k None", (logits, 0.5, None)),
        Case("logits (3, 10), temperature 2 (flatter), top_k 3", (logits, 2.0, 3)),
        Case("logits (3, 10), temperature 1, top_k 1", (logits, 1.0, 1)),
        Case("logits (3, 10), temperature 0 (greedy: one-hot on the argmax), top_k None", (logits, 0.0, None)),
        Case(
            "logits (2, 5) near 1000 (overflow test), temperature 0.7, top_k 10 (more than the vocabulary: keep all)",
            (torch.randn(2, 5, generator=g, dtype=torch.float64) + 1000.0, 0.7, 10),
        ),
    ]


def _exp_normalise(z, dim):
    e = torch.exp(z)  # no max subtracted: overflows for large logits
    return e / e.sum(dim, keepdim=True)


def _probs(logits, temperature, top_k, softmax=torch.softmax):
    """The sampling distribution written out (the mistakes below vary it; the package's own is the solution)."""
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        logits = logits.masked_fill(logits < torch.topk(logits, top_k, dim=-1).values[:, -1:], float("-inf"))
    return softmax(logits, dim=-1)


def _topk_after_softmax(logits, temperature, top_k):
    p = torch.softmax(logits / max(temperature, 1e-9), -1)
    if top_k is not None and top_k < p.shape[-1]:
        kth = torch.topk(p, top_k, -1).values[:, -1:]
        p = p.masked_fill(p < kth, 0.0)  # zeroed, NOT renormalised
    return p


register(
    Exercise(
        "ch07.sampling_probs",
        "the distribution of the next token: temperature, then top-k, then softmax",
        sampling_probs,
        _sampling_cases,
        hint="divide the logits by the temperature; keep the top_k largest (set the rest to -inf); softmax over "
        "the vocabulary (dim=-1). Temperature 0 means greedy: a one-hot on the argmax.",
        mistakes=[
            Mistake(
                lambda l, t, k: _probs(l * t, 1.0, k) if t > 0 else _probs(l, 0.0, k),
                "you MULTIPLIED by the temperature: divide, so that a low temperature sharpens the distribution.",
            ),
            Mistake(
                _topk_after_softmax,
                "after removing the tokens outside the top k the probabilities no longer sum to 1: set their LOGITS "
                "to -inf before the softmax (or renormalise).",
            ),
            Mistake(
                lambda l, t, k: _probs(l, t, None),
                "top_k was ignored: only the k most likely tokens may be drawn.",
            ),
            Mistake(
                lambda l, t, k: _probs(l, t, k + 1 if k is not None else None),
                "you kept k + 1 tokens: exactly the k largest logits survive.",
            ),
            Mistake(
                lambda l, t, k: torch.softmax(l, -1) if t == 0 else _probs(l, t, k),
                "temperature 0 is greedy decoding: all the probability on the argmax (a one-hot row).",
            ),
            Mistake(
                lambda l, t, k: _probs(l, t, k, softmax=_exp_normalise),
                "your softmax overflows for large logits (exp(1000) = inf, inf / inf = NaN): subtract each row's "
                "maximum before exp, or use torch.softmax.",
            ),
        ],
        forbidden=[
            Forbidden(
                "write the three steps yourself (divide, keep the top k, softmax); the package's sampling_probs "
                "is what it is checked against.",
                functions=(
                    "minitransformer.gpt:sampling_probs",
                    "minitransformer.gpt:sample_next_token",
                    "minitransformer.gpt:GPT.generate",
                ),
            )
        ],
    )
)


# -- 3. a direction that changes attention but not the output -------------------------------------


def _null_cases() -> list[Case]:
    g = _gen(11)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    V_dep = r(8, 2)
    V_dep = torch.cat([V_dep, V_dep[:, :1] + V_dep[:, 1:]], dim=1)  # third column = sum of the first two
    return [
        Case("V (6, 2), random r", (r(6, 2), r(6))),
        Case("V (10, 4), random r", (r(10, 4), r(10))),
        Case("V (8, 3) whose third column is the sum of the first two", (V_dep, r(8))),
        Case("V (5, 1), r = one-hot on key 0", (r(5, 1), torch.eye(5, dtype=torch.float64)[0])),
    ]


def _only_v(V, r):
    return r - V @ torch.linalg.pinv(V.T @ V) @ (V.T @ r)


register(
    Exercise(
        "ch07.null_space_projection",
        "project r onto {u : V^T u = 0, sum(u) = 0} (moves the weights, not the output)",
        null_space_projection,
        _null_cases,
        hint="stack the constraints into A = [V^T; 1^T] (shape (d_v + 1, n)) and remove r's component in A's row "
        "space: u = r - A^T (A A^T)^+ (A r). Use torch.linalg.pinv for the (pseudo-)inverse.",
        mistakes=[
            Mistake(
                _only_v,
                "u satisfies V^T u = 0 but not sum(u) = 0: alpha + t u would no longer sum to 1. "
                "Add the row of ones to the constraints.",
            ),
            Mistake(
                lambda V, r: r - r.mean(),
                "u sums to 0 but V^T u is not 0: the output would move. Add V^T to the constraints.",
            ),
            Mistake(
                lambda V, r: (
                    (A := torch.cat([V.T, torch.ones(1, V.shape[0], dtype=V.dtype)])).T
                    @ torch.linalg.pinv(A @ A.T)
                    @ (A @ r)
                ),
                "that is the projection onto the ROW space of A (the part that changes the output); "
                "subtract it from r instead.",
            ),
        ],
        forbidden=[
            Forbidden(
                "build the constraint matrix and the projection yourself; the package's null_space_projection "
                "is what it is checked against.",
                functions=(
                    "minitransformer.book.explanation:null_space_projection",
                    "minitransformer.book.explanation:null_space_basis",
                ),
            )
        ],
    )
)


# -- 4. change the baseline experiment: a trigram model ---------------------------------------


def trigram_loss_solution(train: torch.Tensor, val: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Cross-entropy (nats per character) of an add-one trigram model counted on ``train``, on ``val``.

    train (N,), val (M,) long character ids below vocab_size. Returns a float64 scalar: the mean
    of -log p(val[t] | val[t-2], val[t-1]) over t = 2..M-1.

    What it shows on the corpus: the trigram model (about 2.2 nats) beats the bigram (2.48) but
    not the notebook's 300-iteration GPT, and the 2000-iteration checkpoint (1.90) is far below
    it. Conditioning on more characters helps, but counting stops paying off quickly: with 64
    characters there are 262,144 triples for about a million training characters, most seen
    rarely or never, and add-one smoothing gives the unseen ones much of the probability. The
    GPT shares what it learns between similar contexts instead of counting each one.
    """
    V = vocab_size
    counts = torch.ones(V, V, V, dtype=torch.float64)  # (V, V, V): add-one counts [a, b, next]
    counts.index_put_(
        (train[:-2], train[1:-1], train[2:]),
        torch.ones(len(train) - 2, dtype=torch.float64),
        accumulate=True,
    )
    logp = (counts / counts.sum(-1, keepdim=True)).log()  # (V, V, V): log p(next | a, b)
    return -logp[val[:-2], val[1:-1], val[2:]].mean()


def _trigram_cases() -> list[Case]:
    g = _gen(5)
    ids = lambda n, V: torch.randint(0, V, (n,), generator=g)  # noqa: E731
    periodic = torch.tensor([0, 1, 2] * 20)  # a pattern the trigram model learns exactly
    return [
        Case("V = 3, train of 40, val of 12 random characters", (ids(40, 3), ids(12, 3), 3)),
        Case(
            "V = 5, train of 200, val of 30; val holds triples never seen in train (add-one must handle them)",
            (ids(200, 5), ids(30, 5), 5),
        ),
        Case(
            "V = 4, a periodic train 0 1 2 0 1 2 ..., val = 0 1 2 0 1 2 (character 3 never occurs)",
            (periodic, periodic[:6].clone(), 4),
        ),
        Case("V = 6, train of 500, val of 100", (ids(500, 6), ids(100, 6), 6)),
    ]


def _trigram(train, val, V, *, add=1.0, axis=-1, log=torch.log, on=None, bigram=False):
    counts = torch.full((V, V, V), add, dtype=torch.float64)
    counts.index_put_(
        (train[:-2], train[1:-1], train[2:]), torch.ones(len(train) - 2, dtype=torch.float64), accumulate=True
    )
    if bigram:
        counts = counts.sum(0, keepdim=True).expand(V, V, V)  # forgets the older character
    logp = log(counts / counts.sum(axis, keepdim=True))
    x = val if on is None else on
    return -logp[x[:-2], x[1:-1], x[2:]].mean()


register(
    Exercise(
        "ch07.trigram_loss",
        "an add-one trigram baseline: the bigram experiment with two characters of context",
        trigram_loss_solution,
        _trigram_cases,
        hint="count every triple (train[t-2], train[t-1], train[t]) into a (V, V, V) float64 tensor that "
        "starts at ones (add-one smoothing; index_put_ with accumulate=True counts repeated triples), "
        "normalise over the LAST axis to get p(next | two previous), take the log, and average "
        "-log p over the triples of val (natural log: nats).",
        mistakes=[
            Mistake(
                lambda tr, va, V: _trigram(tr, va, V, add=0.0),
                "no smoothing: a triple of val never seen in train gets probability 0 and the loss is infinite "
                "(or NaN). Start every count at 1.",
            ),
            Mistake(
                lambda tr, va, V: _trigram(tr, va, V, axis=0),
                "you normalised over the wrong axis: p(next | a, b) must sum to 1 over the NEXT character "
                "(the last axis of counts[a, b, next]).",
            ),
            Mistake(
                lambda tr, va, V: _trigram(tr, va, V, log=torch.log2),
                "that is in bits (log2); the chapter's losses are in nats: use the natural log.",
            ),
            Mistake(
                lambda tr, va, V: _trigram(tr, va, V, on=tr),
                "you measured the loss on the training characters: evaluate on val.",
            ),
            Mistake(
                lambda tr, va, V: _trigram(tr, va, V, bigram=True),
                "that is a bigram model (the next character given only the one before): condition on the "
                "previous TWO characters.",
            ),
        ],
        forbidden=[
            Forbidden(
                "count the triples yourself; the package's ngram_loss is what the book measures the other orders with.",
                functions=("minitransformer.book.char_lm:ngram_loss",),
            )
        ],
    )
)
