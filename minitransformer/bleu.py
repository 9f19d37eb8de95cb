"""Corpus BLEU with ``sacrebleu`` and bootstrap confidence intervals.

BLEU (Papineni et al., 2002) compares a system's sentences with one reference each by
their matching n-grams (n = 1..4), pooled over the whole corpus: the geometric mean of the
four n-gram precisions times a brevity penalty ``exp(1 - ref_len / sys_len)`` when the
output is shorter than the references. It is computed on DETOKENISED text (what a reader
sees), tokenised by ``sacrebleu``'s default ``13a`` tokenizer (the one of the WMT
evaluations' ``mteval-v13a`` script: punctuation split off, case kept), with its default
``exp`` smoothing; :func:`bleu_signature` is sacrebleu's description of that setting.

Because a corpus score is not an average of sentence scores, its uncertainty comes from the
bootstrap (Koehn, 2004): resample the test sentences with replacement, recompute the
corpus score from the pooled n-gram counts, and read the interval off the percentiles.
:func:`paired_bootstrap` resamples two systems on the same sentences to compare them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .validation import check_positive_int, check_real, describe

__all__ = [
    "bleu_signature",
    "BleuInterval",
    "corpus_bleu",
    "sentence_stats",
    "bleu_from_stats",
    "bootstrap_bleu",
    "paired_bootstrap",
    "grouped_bleu",
]

SACREBLEU_INSTALL = 'pip install "sacrebleu==2.6.0"'
MAX_ORDER = 4


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError as err:
        raise ModuleNotFoundError(f"BLEU needs sacrebleu, which is not installed: run  {SACREBLEU_INSTALL}") from err
    return sacrebleu


def bleu_signature() -> str:
    """sacrebleu's signature of the BLEU computed here, e.g.
    ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``."""
    metric = _sacrebleu().BLEU()
    metric.corpus_score(["a"], [["a"]])  # the signature is known after a first evaluation
    return str(metric.get_signature())


def _check(hyps: Sequence[str], refs: Sequence[str], where: str) -> None:
    for name, seq in (("hyps", hyps), ("refs", refs)):
        if isinstance(seq, str) or not isinstance(seq, Sequence) or not all(isinstance(s, str) for s in seq):
            raise TypeError(f"{where}: {name} must be a list of strings (detokenised sentences), got {describe(seq)}")
    if len(hyps) != len(refs) or not hyps:
        raise ValueError(
            f"{where}: need as many hypotheses as references (at least one), got {len(hyps)} and {len(refs)}"
        )


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """sacrebleu's corpus BLEU (0-100) of detokenised ``hyps`` against one reference each."""
    _check(hyps, refs, "corpus_bleu")
    return float(_sacrebleu().corpus_bleu(list(hyps), [list(refs)]).score)


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def sentence_stats(hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """BLEU's sufficient statistics per sentence, with the ``13a`` tokenizer.

    Returns:
        ``(N, 2 + 2 * 4)`` int64: ``sys_len, ref_len``, matched n-grams for n = 1..4
        (clipped by the reference's counts), then the hypothesis's n-gram totals.
    """
    _check(hyps, refs, "sentence_stats")
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokenize = Tokenizer13a()
    rows = []
    for h, r in zip(hyps, refs):
        ht, rt = tokenize(h.strip()).split(), tokenize(r.strip()).split()
        matched, totals = [], []
        for n in range(1, MAX_ORDER + 1):
            hc, rc = _ngrams(ht, n), _ngrams(rt, n)
            matched.append(sum(min(c, rc[g]) for g, c in hc.items()))
            totals.append(max(len(ht) - n + 1, 0))
        rows.append([len(ht), len(rt), *matched, *totals])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2 + 2 * MAX_ORDER)


def bleu_from_stats(stats: np.ndarray) -> np.ndarray | float:
    """Corpus BLEU (0-100) from pooled statistics, with sacrebleu's ``exp`` smoothing.

    Args:
        stats: ``(..., 10)`` summed :func:`sentence_stats` (a row per resample, or one row).

    Returns:
        BLEU of each row: ``(...)`` (a float for one row).
    """
    stats = np.asarray(stats, dtype=np.float64)
    sys_len, ref_len = stats[..., 0], stats[..., 1]
    matched, totals = stats[..., 2 : 2 + MAX_ORDER], stats[..., 2 + MAX_ORDER :]
    log_p = np.zeros(stats.shape[:-1])
    smooth = np.ones(stats.shape[:-1])  # sacrebleu's "exp": the k-th zero count gets 1 / 2^k
    for n in range(MAX_ORDER):
        zero = matched[..., n] == 0
        smooth = np.where(zero, smooth * 2, smooth)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(zero, 1.0 / (smooth * totals[..., n]), matched[..., n] / totals[..., n])
            log_p += np.where(totals[..., n] > 0, np.log(p), -np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(sys_len < ref_len, np.exp(1 - ref_len / np.maximum(sys_len, 1e-300)), 1.0)
    score = 100 * bp * np.exp(log_p / MAX_ORDER)
    score = np.where((sys_len > 0) & np.isfinite(score), score, 0.0)
    return float(score) if score.ndim == 0 else score


class BleuInterval(NamedTuple):
    """A corpus BLEU and its percentile bootstrap interval."""

    bleu: float
    low: float
    high: float
    n: int  # sentences


def _resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n)``: how often each sentence is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n), dtype=np.int64)
    np.add.at(counts, (np.arange(n_resamples)[:, None], idx), 1)
    return counts


def _check_boot(n_resamples: int, confidence: float, where: str) -> None:
    check_positive_int("n_resamples", n_resamples, where=where)
    check_real("confidence", confidence, low=0.0, high=1.0, low_open=True, high_open=True, where=where)


def bootstrap_bleu(
    hyps: Sequence[str], refs: Sequence[str], *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> BleuInterval:
    """Corpus BLEU with a percentile bootstrap interval.

    Args:
        hyps, refs: detokenised sentences, one reference per hypothesis.
        n_resamples: bootstrap resamples of the sentences (with replacement).
        confidence: the interval's coverage (0.95: the 2.5th and 97.5th percentiles).
        seed: the resampling seed.

    Returns:
        :class:`BleuInterval` ``(bleu, low, high, n)``; ``bleu`` is :func:`corpus_bleu`.
    """
    _check_boot(n_resamples, confidence, "bootstrap_bleu")
    stats = sentence_stats(hyps, refs)  # (N, 10)
    scores = bleu_from_stats(_resample_counts(len(stats), n_resamples, seed) @ stats)  # (R,)
    a = (1 - confidence) / 2
    low, high = np.quantile(scores, [a, 1 - a])
    return BleuInterval(corpus_bleu(hyps, refs), float(low), float(high), len(stats))


def paired_bootstrap(
    hyps_a: Sequence[str],
    hyps_b: Sequence[str],
    refs: Sequence[str],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Compare two systems on the same sentences: each resample draws the same sentences for both.

    Returns:
        ``{"delta": BLEU(a) - BLEU(b), "low", "high"`` (the percentile interval of the
        difference), ``"a_better"`` (the share of resamples where a scores higher)``}``.
    """
    _check_boot(n_resamples, confidence, "paired_bootstrap")
    if len(hyps_a) != len(hyps_b):
        raise ValueError(f"paired_bootstrap: hyps_a has {len(hyps_a)} sentences, hyps_b {len(hyps_b)}")
    sa, sb = sentence_stats(hyps_a, refs), sentence_stats(hyps_b, refs)  # (N, 10) each
    counts = _resample_counts(len(sa), n_resamples, seed)  # (R, N)
    diff = bleu_from_stats(counts @ sa) - bleu_from_stats(counts @ sb)  # (R,)
    a = (1 - confidence) / 2
    low, high = np.quantile(diff, [a, 1 - a])
    return {
        "delta": corpus_bleu(hyps_a, refs) - corpus_bleu(hyps_b, refs),
        "low": float(low),
        "high": float(high),
        "a_better": float(np.mean(diff > 0)),
    }


def grouped_bleu(hyps: Sequence[str], refs: Sequence[str], groups: Sequence, **bootstrap) -> dict[object, BleuInterval]:
    """:func:`bootstrap_bleu` within each group (e.g. a source-length bucket), in sorted group order."""
    if len(groups) != len(hyps):
        raise ValueError(f"grouped_bleu: {len(groups)} groups for {len(hyps)} sentences")
    out = {}
    for g in sorted(set(groups)):
        idx = [i for i, x in enumerate(groups) if x == g]
        out[g] = bootstrap_bleu([hyps[i] for i in idx], [refs[i] for i in idx], **bootstrap)
    return out
