"""Chapter 4's "What real heads do": the heads of a pretrained BERT (all-MiniLM-L6-v2), measured.

The model is loaded into the package's own :class:`~minitransformer.transformer.Encoder` by
:func:`~minitransformer.pretrained.load_bert`. The data were written for the book and ship with
it (``minitransformer/book/data/real_heads.json``, :func:`book_data`):

* 24 sentences, lower case, words and punctuation separated by spaces, hand-annotated with two
  dependency relations (``det``: a determiner and its noun; ``obj``: a direct object and its verb);
* 40 sentence pairs with a hand-assigned similarity from 0 to 5 (STS style).

What is measured:

* :func:`head_type_scores`: per head, the mean attention mass (over the real query tokens of
  all sentences) on the previous and the next token, on ``[CLS]``, on ``[SEP]``, on punctuation,
  on the token itself and on the same word (another of its pieces, or another occurrence of
  it, as the second "the" of a sentence); :func:`head_types` names each head
  by its largest share.
* :func:`relation_accuracy`: per head, how often the word a dependent attends to most is its
  annotated head word (word-level attention as in Clark et al., 2019: the weights to a word's
  pieces summed, the weights from its pieces averaged), against the best fixed-offset baseline.
* :func:`similarity_spearman` and :func:`head_ablation`: the Spearman correlation between the
  model's cosine similarities and the hand scores, intact and with each head removed
  (:func:`~minitransformer.book.heads.ablate_heads`); :func:`pruning_curve` removes heads in
  order of their single-head cost.
* :func:`attention_picker_chart`: every head's map on one sentence, with a layer and a head
  picker that works in the static book (Vega-Lite parameters, no Python kernel).
"""

from __future__ import annotations

import functools
import json
import string
from pathlib import Path

import altair as alt
import pandas as pd
import torch
from torch import Tensor

from ..pretrained import BertInputs, sentence_embeddings, tokenize
from ..transformer import Encoder
from .heads import ablate_heads

__all__ = [
    "DATA_PATH",
    "HEAD_TYPES",
    "book_data",
    "resolve_pair",
    "attention",
    "head_type_scores",
    "head_types",
    "word_attention",
    "relation_accuracy",
    "offset_baseline",
    "spearman",
    "similarity_spearman",
    "head_ablation",
    "pruning_curve",
    "attention_picker_chart",
]

DATA_PATH = Path(__file__).resolve().parent / "data" / "real_heads.json"
HEAD_TYPES = ("previous", "next", "self", "same word", "[CLS]", "[SEP]", "punctuation")
_PUNCTUATION = set(string.punctuation)


@functools.cache
def book_data() -> dict:
    """The chapter's sentences and similarity pairs (see the module docstring)."""
    return json.loads(DATA_PATH.read_text())


def resolve_pair(text: str, pair: str) -> tuple[int, int]:
    """``"the#2>boy"`` -> word indices ``(dependent, head)`` in ``text.split()``; ``#k`` is the k-th occurrence."""

    def index(word: str) -> int:
        word, _, k = word.partition("#")
        hits = [i for i, w in enumerate(words) if w == word]
        k = int(k or 1)
        if len(hits) < k:
            raise ValueError(f"{text!r} has no occurrence {k} of {word!r}")
        return hits[k - 1]

    words = text.split()
    dependent, _, head = pair.partition(">")
    return index(dependent), index(head)


@torch.no_grad()
def attention(encoder: Encoder, batch: BertInputs) -> Tensor:
    """All attention weights, ``(L, B, H, S, S)``."""
    _, weights = encoder.hidden_states(batch.ids, batch.mask, token_types=batch.token_types)
    return torch.stack(weights)  # (L, B, H, S, S)


def _masks(batch: BertInputs, b: int) -> dict[str, Tensor]:
    """Key masks ``(S, S)`` (query row, key column) of every head type for sentence ``b``."""
    tokens, words = batch.tokens[b], batch.word_ids[b]
    n, S = len(tokens), batch.ids.shape[1]
    eye = torch.eye(S, dtype=torch.bool)
    keys = lambda cond: torch.tensor([cond(j) for j in range(S)])[None, :].expand(S, S)  # noqa: E731
    # another piece of the same word, or another occurrence of the same word ("the ... the")
    text = [
        None if w is None else "".join(t.removeprefix("##") for t, v in zip(tokens, words) if v == w) for w in words
    ]
    same_word = torch.zeros(S, S, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            same_word[i, j] = i != j and text[i] is not None and text[i] not in _PUNCTUATION and text[i] == text[j]
    return {
        "previous": torch.diag(torch.ones(S - 1, dtype=torch.bool), -1),
        "next": torch.diag(torch.ones(S - 1, dtype=torch.bool), 1),
        "self": eye,
        "same word": same_word,
        "[CLS]": keys(lambda j: j == 0),
        "[SEP]": keys(lambda j: j == n - 1),
        "punctuation": keys(lambda j: j < n and tokens[j] in _PUNCTUATION),
    }


def head_type_scores(encoder: Encoder, tokenizer, sentences: list[str]) -> pd.DataFrame:
    """Mean attention mass of every head on each kind of key (:data:`HEAD_TYPES`).

    Averaged over the real query tokens of all ``sentences`` (``[CLS]`` and ``[SEP]`` as
    queries included, padding excluded).

    Returns:
        one row per (layer, head), a column per head type.
    """
    batch = tokenize(tokenizer, sentences)
    w = attention(encoder, batch)  # (L, B, H, S, S)
    L, B, H = w.shape[:3]
    totals = {t: torch.zeros(L, H, dtype=torch.float64) for t in HEAD_TYPES}
    queries = 0
    for b in range(B):
        n = len(batch.tokens[b])
        for t, m in _masks(batch, b).items():
            totals[t] += (w[:, b, :, :n, :] * m[:n]).sum((-1, -2)).double()  # (L, H)
        queries += n
    rows = [
        {"layer": layer, "head": head, **{t: (totals[t][layer, head] / queries).item() for t in HEAD_TYPES}}
        for layer in range(L)
        for head in range(H)
    ]
    return pd.DataFrame(rows)


def head_types(scores: pd.DataFrame, threshold: float = 0.4) -> pd.Series:
    """The head type with the largest mass, or ``"mixed"`` when no type reaches ``threshold``."""
    values = scores[list(HEAD_TYPES)]
    best = values.idxmax(axis=1)
    return best.where(values.max(axis=1) >= threshold, "mixed")


def word_attention(w: Tensor, word_ids: list[int | None]) -> Tensor:
    """Token-level weights ``(..., S, S)`` -> word-level ``(..., W, W)`` (``[CLS]``, ``[SEP]`` dropped):
    attention TO a word is summed over its pieces, attention FROM a word averaged over its pieces."""
    n_words = max(i for i in word_ids if i is not None) + 1
    S = w.shape[-1]
    ids = torch.tensor([-1 if i is None else i for i in word_ids] + [-1] * (S - len(word_ids)))  # (S,)
    onehot = (ids[:, None] == torch.arange(n_words)[None, :]).to(w.dtype)  # (S, W)
    to_words = w @ onehot  # (..., S, W): summed over the key pieces
    return (onehot.T @ to_words) / onehot.sum(0)[:, None]  # (..., W, W): averaged over the query pieces


def _relation_pairs(relation: str) -> list[tuple[int, int, int]]:
    pairs = []
    for s, item in enumerate(book_data()["sentences"]):
        pairs += [(s, *resolve_pair(item["text"], p)) for p in item[relation]]
    return pairs


def relation_accuracy(encoder: Encoder, tokenizer, relation: str) -> pd.DataFrame:
    """For each head, the share of annotated ``(dependent, head)`` word pairs of ``relation``
    (``"det"`` or ``"obj"``) in which the dependent's most-attended word is its head word.

    Returns:
        one row per (layer, head): ``accuracy``; ``attrs["pairs"]`` is the number of pairs.
    """
    texts = [item["text"] for item in book_data()["sentences"]]
    batch = tokenize(tokenizer, texts)
    w = attention(encoder, batch)  # (L, B, H, S, S)
    pairs = _relation_pairs(relation)
    hits = torch.zeros(w.shape[0], w.shape[2])  # (L, H)
    for s, dep, head in pairs:
        words = word_attention(w[:, s], batch.word_ids[s])  # (L, H, W, W)
        hits += (words[..., dep, :].argmax(-1) == head).float()  # (L, H)
    frame = pd.DataFrame(
        [
            {"layer": layer, "head": h, "accuracy": (hits[layer, h] / len(pairs)).item()}
            for layer in range(w.shape[0])
            for h in range(w.shape[2])
        ]
    )
    frame.attrs["pairs"] = len(pairs)
    return frame


def offset_baseline(relation: str) -> tuple[int, float]:
    """The best "always attend ``k`` words away" rule for ``relation``: ``(k, its accuracy)``."""
    offsets = pd.Series([head - dep for _, dep, head in _relation_pairs(relation)])
    k = int(offsets.mode().iloc[0])
    return k, float((offsets == k).mean())


def spearman(x, y) -> float:
    """Spearman's rank correlation (Pearson's correlation of the ranks, ties averaged)."""
    x, y = pd.Series(list(x), dtype=float), pd.Series(list(y), dtype=float)
    return float(x.rank().corr(y.rank()))


def similarity_spearman(encoder: Encoder, tokenizer, pairs: list[dict] | None = None) -> float:
    """Spearman correlation between the cosine similarities of the pairs' sentence embeddings
    and their hand scores (the book's 40 pairs by default)."""
    pairs = book_data()["similarity"] if pairs is None else pairs
    a = sentence_embeddings(encoder, tokenizer, [p["a"] for p in pairs])  # (P, d), unit length
    b = sentence_embeddings(encoder, tokenizer, [p["b"] for p in pairs])  # (P, d)
    return spearman((a * b).sum(-1).tolist(), [p["score"] for p in pairs])


def head_ablation(encoder: Encoder, tokenizer, pairs: list[dict] | None = None) -> pd.DataFrame:
    """The similarity Spearman with each head removed alone.

    Returns:
        one row per (layer, head): ``spearman`` and ``drop`` (intact minus ablated; positive =
        the head helped); ``attrs["intact"]`` is the intact model's Spearman.
    """
    base = similarity_spearman(encoder, tokenizer, pairs)
    rows = []
    for layer, attn in enumerate(encoder.layers):
        for h in range(attn.self_attn.num_heads):
            with ablate_heads(encoder, [(layer, h)]):
                rho = similarity_spearman(encoder, tokenizer, pairs)
            rows.append({"layer": layer, "head": h, "spearman": rho, "drop": base - rho})
    frame = pd.DataFrame(rows)
    frame.attrs["intact"] = base
    return frame


def pruning_curve(
    encoder: Encoder, tokenizer, ablation: pd.DataFrame, pairs: list[dict] | None = None, step: int = 6
) -> pd.DataFrame:
    """Remove heads cumulatively, least useful first (smallest single-head ``drop``), and measure
    the similarity Spearman after every ``step`` heads.

    Returns:
        rows ``removed`` (0, step, 2 step, ..., all) and ``spearman``.
    """
    order = ablation.sort_values("drop", kind="stable")[["layer", "head"]].itertuples(index=False)
    order = [tuple(map(int, lh)) for lh in order]
    rows = []
    for k in list(range(0, len(order), step)) + [len(order)]:
        with ablate_heads(encoder, order[:k]):
            rows.append({"removed": k, "spearman": similarity_spearman(encoder, tokenizer, pairs)})
    return pd.DataFrame(rows)


def attention_picker_chart(
    weights: Tensor, tokens: list[str], size: int = 260, digits: int = 2, layer: int = 0, head: int = 0
) -> alt.Chart:
    """Every head's attention map on one sentence, with a layer and a head picker.

    The pickers are Vega-Lite parameters bound to drop-down menus, so they work in the static
    HTML book as well as in Jupyter: all ``L x H`` maps are in the chart's data, one row per head
    holding its non-zero cells as lists (weights rounded to ``digits`` decimals; smaller cells are
    left out, i.e. drawn blank).

    Args:
        weights: ``(L, H, S, S)`` for one sentence without padding.
        tokens: its ``S`` word pieces.
        size: the map's width and height in pixels.
        digits: decimals kept.
        layer, head: the map shown first.
    """
    L, H, S, _ = weights.shape
    if len(tokens) != S:
        raise ValueError(f"{len(tokens)} tokens for weights of {S} positions")
    scale = 10**digits
    w = (weights.double() * scale).round().long()  # (L, H, S, S) in units of 10**-digits
    data = []  # one row per head, the non-zero cells as three parallel lists (compact in the stored notebook)
    for layer_, head_ in ((a, b) for a in range(L) for b in range(H)):
        q, k = torch.nonzero(w[layer_, head_], as_tuple=True)
        cells = {"q": q.tolist(), "k": k.tolist(), "w": w[layer_, head_, q, k].tolist()}
        data.append({"l": layer_, "h": head_, **cells})
    names = "[" + ",".join(json.dumps(f"{i} {t}") for i, t in enumerate(tokens)) + "]"
    pick_layer = alt.param(name="layer", value=layer, bind=alt.binding_select(options=list(range(L)), name="layer "))
    pick_head = alt.param(name="head", value=head, bind=alt.binding_select(options=list(range(H)), name="head "))
    axis = lambda title, angle: alt.Axis(title=title, labelExpr=f"{names}[datum.value]", labelAngle=angle)  # noqa: E731
    return (
        alt.Chart(alt.Data(values=data), title="Attention of one head (pick the layer and head below)")
        .mark_rect()
        .encode(
            x=alt.X("k:O", scale=alt.Scale(domain=list(range(S))), axis=axis("key", -60)),
            y=alt.Y("q:O", scale=alt.Scale(domain=list(range(S))), axis=axis("query", 0)),
            color=alt.Color("weight:Q", scale=alt.Scale(scheme="purples", domain=[0, 1]), title="weight"),
            tooltip=[alt.Tooltip("q:O", title="query"), alt.Tooltip("k:O", title="key"), alt.Tooltip("weight:Q")],
        )
        .add_params(pick_layer, pick_head)
        .transform_filter((alt.datum.l == pick_layer) & (alt.datum.h == pick_head))
        .transform_flatten(["q", "k", "w"])
        .transform_calculate(weight=alt.datum.w / scale)
        .properties(width=size, height=size)
    )
