"""minitransformer.bleu: sacrebleu's corpus BLEU, our per-sentence statistics (checked against it)
and the bootstrap intervals (checked against resampling done by hand with sacrebleu)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

sacrebleu = pytest.importorskip("sacrebleu", reason='needs sacrebleu: pip install "sacrebleu==2.6.0"')

from minitransformer.bleu import (  # noqa: E402
    bleu_from_stats,
    bleu_signature,
    bootstrap_bleu,
    corpus_bleu,
    grouped_bleu,
    paired_bootstrap,
    sentence_stats,
)

WORDS = "le la les un une chat chien mange dort sur dans maison , . ! Dieu dit".split()


def random_corpus(n: int, seed: int, noise: float = 0.4) -> tuple[list[str], list[str]]:
    """References of random words and hypotheses that copy them with some words changed or dropped."""
    rng = random.Random(seed)
    refs, hyps = [], []
    for _ in range(n):
        ref = [rng.choice(WORDS) for _ in range(rng.randint(1, 12))]
        hyp = [rng.choice(WORDS) if rng.random() < noise else w for w in ref if rng.random() > noise / 3]
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    return hyps, refs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stats_give_sacrebleus_corpus_score(seed):
    hyps, refs = random_corpus(30, seed)
    assert bleu_from_stats(sentence_stats(hyps, refs).sum(0)) == pytest.approx(corpus_bleu(hyps, refs), abs=1e-9)


def test_stats_match_sacrebleus_own_statistics():
    hyps, refs = random_corpus(40, 3)
    theirs = np.asarray(sacrebleu.BLEU()._extract_corpus_statistics(hyps, [refs]))
    np.testing.assert_array_equal(sentence_stats(hyps, refs), theirs)


def test_hand_computed_bleu():
    hyp, ref = "the cat sat on the mat", "the cat is on a mat"  # 6 tokens each
    # matched: 4/6 unigrams (the is clipped to 1), 1/5 bigrams (the cat), 0/4 trigrams, 0/3 4-grams;
    # sacrebleu's exp smoothing: the k-th zero precision becomes 1 / (2^k * total)
    expected = 100 * math.exp((math.log(4 / 6) + math.log(1 / 5) + math.log(1 / (2 * 4)) + math.log(1 / (4 * 3))) / 4)
    assert corpus_bleu([hyp], [ref]) == pytest.approx(expected)
    assert bleu_from_stats(sentence_stats([hyp], [ref])[0]) == pytest.approx(expected)
    # no zero counts: the plain geometric mean (4-gram "the cat sat on" matches)
    plain = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert corpus_bleu([hyp], ["the cat sat on a mat"]) == pytest.approx(plain)


def test_brevity_penalty_and_tokenisation():
    # "la maison." is tokenised by 13a into la / maison / . : 3 of the reference's 5 tokens
    short = corpus_bleu(["la maison ."], ["la maison est grande ."])
    stats = sentence_stats(["la maison."], ["la maison est grande."])[0]
    assert stats[0] == 3 and stats[1] == 5
    assert bleu_from_stats(stats) == pytest.approx(short)
    assert short < 100 * math.exp(1 - 5 / 3) + 1e-9  # the brevity penalty alone caps it


def test_perfect_and_empty_output():
    hyps, refs = random_corpus(20, 4)
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    interval = bootstrap_bleu(refs, refs, n_resamples=50)
    assert interval.low == pytest.approx(100.0) and interval.high == pytest.approx(100.0)
    assert corpus_bleu([""] * len(refs), refs) == 0.0 == bleu_from_stats(sentence_stats([""] * len(refs), refs).sum(0))


def test_bootstrap_matches_resampling_by_hand():
    hyps, refs = random_corpus(25, 5)
    n_resamples, seed = 40, 7
    rng = np.random.default_rng(seed)  # the same draws as bootstrap_bleu's
    idx = rng.integers(0, len(hyps), size=(n_resamples, len(hyps)))
    by_hand = [corpus_bleu([hyps[i] for i in row], [refs[i] for i in row]) for row in idx]
    low, high = np.quantile(by_hand, [0.025, 0.975])
    interval = bootstrap_bleu(hyps, refs, n_resamples=n_resamples, seed=seed)
    assert interval.low == pytest.approx(low, abs=1e-9) and interval.high == pytest.approx(high, abs=1e-9)
    assert interval.bleu == pytest.approx(corpus_bleu(hyps, refs)) and interval.n == 25
    assert interval.low <= interval.bleu <= interval.high


def test_bootstrap_interval_narrows_with_more_sentences():
    small = bootstrap_bleu(*random_corpus(20, 6), n_resamples=300)
    large = bootstrap_bleu(*random_corpus(500, 6), n_resamples=300)
    assert large.high - large.low < small.high - small.low


def test_paired_bootstrap():
    hyps, refs = random_corpus(60, 8, noise=0.6)
    same = paired_bootstrap(hyps, hyps, refs, n_resamples=100)
    assert same["delta"] == 0 and same["low"] == 0 and same["high"] == 0 and same["a_better"] == 0
    better = paired_bootstrap(refs, hyps, refs, n_resamples=100)
    assert better["a_better"] == 1.0 and better["low"] > 0
    assert better["delta"] == pytest.approx(100 - corpus_bleu(hyps, refs))


def test_grouped_bleu():
    hyps, refs = random_corpus(30, 9)
    groups = ["short" if len(r.split()) <= 6 else "long" for r in refs]
    out = grouped_bleu(hyps, refs, groups, n_resamples=20)
    assert list(out) == ["long", "short"]
    for g, interval in out.items():
        idx = [i for i, x in enumerate(groups) if x == g]
        assert interval.bleu == pytest.approx(corpus_bleu([hyps[i] for i in idx], [refs[i] for i in idx]))
        assert interval.n == len(idx)


def test_signature_names_the_tokenizer():
    assert "tok:13a" in bleu_signature() and "smooth:exp" in bleu_signature()


def test_bad_input():
    with pytest.raises(ValueError, match="as many hypotheses as references"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="list of strings"):
        corpus_bleu("a b", "a b")
    with pytest.raises(TypeError, match="list of strings"):
        sentence_stats([["le", "chat"]], ["le chat"])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_bleu(["a"], ["a"], confidence=1.5)
    with pytest.raises(ValueError, match="hyps_a has 1 sentences, hyps_b 2"):
        paired_bootstrap(["a"], ["a", "b"], ["a"])
