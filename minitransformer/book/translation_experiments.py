"""Chapters 2 and 7: English -> French translation of Bible verses with GRUs and a transformer.

The data are :mod:`minitransformer.parallel`'s verse pairs: training and validation pairs
have at most :data:`MAX_WORDS` words on each side; the test books are kept up to
:data:`TEST_MAX_WORDS` words, so that BLEU can be drawn against source lengths longer than
any training sentence (the shape of Bahdanau et al.'s Figure 2). One subword vocabulary
(:data:`VOCAB_SIZE` pieces) is learnt from the training books only.

* :class:`TranslationSetup` -- a model (``"gru"``, ``"bahdanau"``, ``"luong-general"``,
  ``"transformer"``) and its recipe; every model trains for the SAME budget of CPU seconds
  on one thread (matched compute), with validation BLEU choosing the checkpoint.
* :func:`train_translation` -- that training loop (:func:`~minitransformer.train.fit`
  in chunks); :func:`save_translation_model` / :func:`load_translation_model` -- fp16
  checkpoints in the package data.
* :func:`translate` -- greedy (or beam) decoding to detokenised French.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bleu import corpus_bleu
from ..data import Seq2SeqBatch
from ..decoding import beam_search
from ..parallel import (
    SubwordTokenizer,
    VersePair,
    encode_pairs,
    load_bible_pairs,
    pair_batches,
    split_by_book,
    train_subword_tokenizer,
)
from ..rnn import Seq2Seq, Seq2SeqConfig
from ..train import History, fit, noam_lr
from ..transformer import Transformer
from ..validation import check_choice

__all__ = [
    "MAX_WORDS",
    "TEST_MAX_WORDS",
    "VOCAB_SIZE",
    "MODEL_KINDS",
    "CHECKPOINT_DIR",
    "TranslationData",
    "translation_data",
    "TranslationSetup",
    "build_model",
    "translation_loss",
    "translate",
    "train_translation",
    "TranslationRun",
    "save_translation_model",
    "load_translation_model",
    "checkpoint_path",
]

MAX_WORDS = 25  # training and validation pairs: at most this many words on each side
TEST_MAX_WORDS = 40  # test pairs: up to this many (longer than any training pair)
VOCAB_SIZE = 2000  # one subword vocabulary for English and French
MODEL_KINDS = ("gru", "bahdanau", "luong-general", "transformer")
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
TOKENIZER_PATH = CHECKPOINT_DIR / "bible_bpe.json"
_FORMAT = "minitransformer.translation/1"


class TranslationData(NamedTuple):
    """The split (pairs), the tokenizer and the encoded pairs of each split."""

    pairs: dict[str, list[VersePair]]  # train, valid (<= MAX_WORDS), test (<= TEST_MAX_WORDS)
    tokenizer: SubwordTokenizer
    encoded: dict[str, list[tuple[list[int], list[int], int]]]


@functools.lru_cache(maxsize=2)
def translation_data(tokenizer_path: str | None = str(TOKENIZER_PATH)) -> TranslationData:
    """Load, split and encode the corpus (cached).

    Args:
        tokenizer_path: a stored tokenizer (default: the one shipped with the checkpoints); if
            None or missing, one is trained on the training books (a few seconds).
    """
    split = split_by_book(load_bible_pairs(TEST_MAX_WORDS))
    short = lambda ps: [p for p in ps if max(len(p.en.split()), len(p.fr.split())) <= MAX_WORDS]  # noqa: E731
    pairs = {"train": short(split["train"]), "valid": short(split["valid"]), "test": split["test"]}
    if tokenizer_path is not None and Path(tokenizer_path).is_file():
        tok = SubwordTokenizer.load(tokenizer_path)
    else:
        tok = train_subword_tokenizer([t for p in pairs["train"] for t in (p.en, p.fr)], VOCAB_SIZE)
    return TranslationData(pairs, tok, {k: encode_pairs(v, tok) for k, v in pairs.items()})


@dataclass(frozen=True)
class TranslationSetup:
    """A model and its recipe.

    GRUs (chapter 2's models, bigger): embeddings ``emb_dim``, hidden ``hidden``, Adam with
    peak learning rate ``lr`` after ``warmup`` steps, then decaying as ``1/sqrt(step)``.
    The transformer: chapter 6's recipe -- Pre-LN, the warmup schedule of "Attention Is All
    You Need" (:func:`~minitransformer.train.noam_lr` with ``factor``), label smoothing 0.1,
    Adam (0.9, 0.98), dropout 0.1; shared source/target embeddings tied to the output.
    Every model stops after ``cpu_budget`` CPU seconds of training (evaluation not counted),
    evaluating greedy BLEU on the validation books every ``eval_every`` steps and keeping
    the best weights. ``max_steps`` also stops it after that many steps (the notebooks' short,
    reproducible runs); ``valid_size`` evaluates on the first ``valid_size`` validation pairs only.
    """

    kind: str = "bahdanau"
    emb_dim: int = 64
    hidden: int = 128
    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.1
    batch_size: int = 64
    lr: float = 2e-3
    factor: float = 0.5
    warmup: int = 300
    label_smoothing: float = 0.0
    cpu_budget: float = 900.0
    eval_every: int = 400
    seed: int = 0
    max_steps: int | None = None
    valid_size: int | None = None

    def __post_init__(self):
        check_choice("kind", self.kind, MODEL_KINDS, where="TranslationSetup")

    @classmethod
    def recipe(cls, kind: str, **overrides) -> TranslationSetup:
        """The published recipe of ``kind`` (what ``scripts/train_translation.py`` runs)."""
        base = dict(kind=kind)
        if kind == "transformer":
            base.update(label_smoothing=0.1)
        return cls(**{**base, **overrides})

    def lr_at(self, step: int) -> float:
        """Learning rate of the 0-based ``step``."""
        if self.kind == "transformer":
            return noam_lr(step + 1, self.d_model, self.warmup, self.factor)
        s = step + 1
        return self.lr * min(s / self.warmup, math.sqrt(self.warmup / s))


def build_model(setup: TranslationSetup, tokenizer: SubwordTokenizer, max_len: int = 160) -> nn.Module:
    """The model of ``setup``, initialised from ``torch.manual_seed(setup.seed)``."""
    torch.manual_seed(setup.seed)
    V = len(tokenizer)
    if setup.kind == "transformer":
        return Transformer(
            V,
            V,
            setup.d_model,
            setup.num_heads,
            setup.num_layers,
            setup.num_layers,
            setup.d_ff,
            setup.dropout,
            norm_first=True,
            max_len=max_len,
            share_embeddings=True,
            tie_output=True,
            pad_id=tokenizer.pad_id,
        )
    attention = None if setup.kind == "gru" else setup.kind
    config = Seq2SeqConfig(
        V,
        emb_dim=setup.emb_dim,
        hidden_size=setup.hidden,
        attention=attention,
        pad_id=tokenizer.pad_id,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
    )
    return Seq2Seq(config)


def translation_loss(model: nn.Module, batch: Seq2SeqBatch, pad_id: int, label_smoothing: float = 0.0) -> Tensor:
    """Teacher-forced cross-entropy over the real target tokens (GRU or transformer)."""
    if isinstance(model, Transformer):
        logits = model(batch.src, batch.tgt_in)  # (B, T, V)
    else:
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
    return F.cross_entropy(
        logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=pad_id, label_smoothing=label_smoothing
    )


@torch.no_grad()
def decode_batch(
    model: nn.Module, batch: Seq2SeqBatch, tokenizer: SubwordTokenizer, max_len: int, beam_size: int = 1
) -> list[list[int]]:
    """Token ids (eos excluded) for every source of ``batch``: greedy, or beam search when
    ``beam_size > 1`` (:mod:`minitransformer.decoding`)."""
    if beam_size > 1:  # GNMT's length penalty 0.6, the library's default
        return beam_search(
            model,
            batch.src,
            batch.src_lengths,
            beam_size=beam_size,
            max_len=max_len,
            bos_id=tokenizer.bos_id,
            eos_id=tokenizer.eos_id,
        )
    if isinstance(model, Transformer):
        tokens = model.greedy_decode(batch.src, max_len, tokenizer.bos_id, tokenizer.eos_id)  # (B, n)
    else:
        tokens, _ = model.greedy_decode(batch.src, max_len, batch.src_lengths)  # (B, n)
    out = []
    for row in tokens.tolist():
        out.append(row[: row.index(tokenizer.eos_id)] if tokenizer.eos_id in row else row)
    return out


@torch.no_grad()
def translate(
    model: nn.Module,
    encoded: list[tuple[list[int], list[int], int]],
    tokenizer: SubwordTokenizer,
    *,
    batch_size: int = 100,
    beam_size: int = 1,
) -> list[str]:
    """Detokenised translations of encoded pairs (their sources), in order.

    The output may be at most ``2 * source tokens + 10`` tokens long (and no longer than a
    transformer's position table).
    """
    was_training = model.training
    model.eval()
    out = []
    for batch in pair_batches(encoded, tokenizer, batch_size, seed=None):
        max_len = 2 * batch.src.shape[1] + 10
        if isinstance(model, Transformer):
            max_len = min(max_len, model.max_len)  # the position table's length
        out += [tokenizer.decode(ids) for ids in decode_batch(model, batch, tokenizer, max_len, beam_size)]
    model.train(was_training)
    return out


@dataclass
class TranslationRun:
    """What :func:`train_translation` returns."""

    model: nn.Module  # the best weights (by validation BLEU), eval mode
    setup: TranslationSetup
    history: History  # training losses and validation evaluations
    cpu_seconds: float  # training CPU time (evaluations excluded)
    wall_seconds: float
    steps: int
    best_step: int
    valid_bleu: float
    flops: float  # estimated training FLOPs (forward + backward)


def _train_flops_per_step(model: nn.Module, batches, setup: TranslationSetup, pad_id: int, n: int = 8) -> float:
    """Mean FLOPs of one training step's forward and backward, counted by torch's
    ``FlopCounterMode`` on ``n`` training batches."""
    from torch.utils.flop_counter import FlopCounterMode

    total = 0
    for _ in range(n):
        batch = next(batches)
        with FlopCounterMode(display=False) as counter:
            translation_loss(model, batch, pad_id, setup.label_smoothing).backward()
        total += counter.get_total_flops()
    model.zero_grad(set_to_none=True)
    return total / n


def train_translation(
    setup: TranslationSetup,
    data: TranslationData | None = None,
    *,
    progress: bool = True,
    log=print,
    budget_fn=None,
    chunk: int = 25,
) -> TranslationRun:
    """Train one model of ``setup`` until its CPU budget is spent; keep the best validation BLEU.

    Training runs in chunks of ``chunk`` steps (:func:`~minitransformer.train.fit`); after each
    the CPU time is checked, so every model stops within one chunk of the same budget. Greedy
    BLEU on the validation books is measured every ``setup.eval_every`` steps and at the end.

    Args:
        setup: the model and recipe.
        data: :func:`translation_data`, if already loaded.
        progress: tqdm bars per chunk.
        log: where to print a line per evaluation (None: quiet).
        budget_fn: ``() -> CPU seconds`` read after every chunk instead of ``setup.cpu_budget``
            (the script lowers the budget of runs in progress this way; None: the setup's).
        chunk: steps between two looks at the clock.

    Returns:
        a :class:`TranslationRun`. The step count depends on the machine's speed (the budget is
        CPU time), so it is recorded; given the steps, the run is reproducible.
    """
    data = translation_data() if data is None else data
    tok = data.tokenizer
    model = build_model(setup, tok)
    batches = pair_batches(data.encoded["train"], tok, setup.batch_size, seed=setup.seed, forever=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=setup.lr, betas=(0.9, 0.98), eps=1e-9)
    history, step, cpu, wall0 = History(), 0, 0.0, time.perf_counter()
    best = (-1.0, 0, None)
    valid = data.encoded["valid"][: setup.valid_size]
    valid_refs = [p.fr for p in data.pairs["valid"][: setup.valid_size]]
    budget = (lambda: setup.cpu_budget) if budget_fn is None else budget_fn
    while True:
        t0 = time.process_time()
        part = fit(
            model,
            lambda s: translation_loss(model, next(batches), tok.pad_id, setup.label_smoothing),
            optimizer,
            chunk,
            lr_fn=setup.lr_at,
            clip_norm=1.0,
            log_every=chunk,
            start_step=step,
            progress=progress,
            desc=setup.kind,
        )
        cpu += time.process_time() - t0
        step += chunk
        history += part
        done = cpu >= budget() or (setup.max_steps is not None and step >= setup.max_steps)
        if step % setup.eval_every and not done:
            continue
        bleu = corpus_bleu(translate(model, valid, tok), valid_refs)
        history.append({"step": step, "valid_bleu": bleu, "cpu_seconds": cpu})
        if log is not None:
            log(f"{setup.kind}: step {step}, {cpu:.0f} CPU s, loss {part[-1]['loss']:.3f}, valid BLEU {bleu:.2f}")
        if bleu > best[0]:
            best = (bleu, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if done:
            break
    flops_per_step = _train_flops_per_step(model, batches, setup, tok.pad_id)
    model.load_state_dict(best[2])
    model.eval()
    return TranslationRun(
        model, setup, history, cpu, time.perf_counter() - wall0, step, best[1], best[0], flops_per_step * step
    )


# ------------------------------------------------------------------ checkpoints
def checkpoint_path(kind: str) -> Path:
    """Where the trained ``kind`` model is stored (package data)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}")
    return CHECKPOINT_DIR / f"translation_{kind.replace('-', '_')}.pt"


def save_translation_model(run: TranslationRun, path: str | Path | None = None, **info) -> Path:
    """Save the run's weights in float16 with its setup and ``info`` (JSON-able)."""
    path = checkpoint_path(run.setup.kind) if path is None else Path(path)
    state = {k: (v.half() if v.is_floating_point() else v).clone() for k, v in run.model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": _FORMAT, "setup": asdict(run.setup), "state_dict": state, "info": info}, path)
    return path


class LoadedTranslationModel(NamedTuple):
    """What :func:`load_translation_model` returns."""

    model: nn.Module  # float32, eval mode
    setup: TranslationSetup
    info: dict


def load_translation_model(
    kind: str, tokenizer: SubwordTokenizer, path: str | Path | None = None
) -> LoadedTranslationModel:
    """Load the model ``scripts/train_translation.py --kind KIND`` stored.

    Args:
        kind: one of :data:`MODEL_KINDS`.
        tokenizer: the tokenizer it was trained with (``translation_data().tokenizer``).
        path: another checkpoint file.
    """
    path = checkpoint_path(kind) if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; make it with:  python scripts/train_translation.py {kind}")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a minitransformer translation checkpoint")
    setup = TranslationSetup(**blob["setup"])
    model = build_model(setup, tokenizer)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    return LoadedTranslationModel(model.eval(), setup, blob["info"])


def setup_dict(setup: TranslationSetup) -> dict:
    """The setup as a plain dict (for the results file)."""
    return dataclasses.asdict(setup)
