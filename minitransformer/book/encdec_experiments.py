"""Chapter 7's Lab 1: an encoder-decoder transformer on the digit-reversal task of chapters 1-2.

The data are exactly those of chapters 1-2 (:func:`~minitransformer.book.seq2seq_experiments.reversal_data`
with :data:`~minitransformer.book.seq2seq_experiments.REVERSAL`: 20,000 strings of 5-30
digits, a held-out set balanced over 5-35 digits), and accuracy is measured the
same way (:func:`~minitransformer.train.accuracy_by_length`, greedy decoding,
exact match per length), so the curves can be drawn on one chart.

* :class:`ReversalTransformerSetup` — the model size and training recipe.
* :func:`run_transformer_reversal` — train a :class:`~minitransformer.Transformer`
  with teacher forcing and measure it per length.
* :func:`stored_rnn_curves` — the RNN models' curves of chapters 1-2, read from
  ``minitransformer/book/results/reversal_rnn.json``, which ``scripts/reversal_rnn_curves.py``
  writes by calling :func:`~minitransformer.book.seq2seq_experiments.run_reversal` (the
  RNN runs take minutes of CPU; the book reads their stored results).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import Example, Seq2SeqBatch, Tokenizer, batch_iterator, task_tokenizer
from ..train import History, accuracy_by_length, fit, warmup_cosine_scheduler
from ..transformer import Transformer
from .seq2seq_experiments import REVERSAL, ReversalSetup, reversal_data, summary_row
from .stored import RESULTS_DIR, read_results

__all__ = [
    "ReversalTransformerSetup",
    "TransformerReversalRun",
    "transformer_seq2seq_loss",
    "run_transformer_reversal",
    "transformer_decode",
    "stored_rnn_curves",
    "RNN_CURVES_PATH",
    "CHECKPOINT_PATH",
    "LoadedReversalTransformer",
    "save_reversal_transformer",
    "load_reversal_transformer",
    "reversal_accuracy",
]

#: Where ``scripts/reversal_rnn_curves.py`` stores the RNN models' accuracy curves.
RNN_CURVES_PATH = RESULTS_DIR / "reversal_rnn.json"
#: Where ``scripts/train_reversal_transformer.py`` stores the trained Lab 1 transformer.
CHECKPOINT_PATH = Path(__file__).resolve().parent / "checkpoints" / "reversal_transformer.pt"
_FORMAT = "minitransformer.reversal_transformer/1"


@dataclass(frozen=True)
class ReversalTransformerSetup:
    """A small encoder-decoder transformer and how it is trained on reversal.

    Pre-LN layers (stable without a long warmup), sinusoidal positions, shared
    source/target embeddings (one digit vocabulary), no dropout. AdamW (betas
    0.9/0.98, weight decay 0.01) with 200 warmup steps and cosine decay to a tenth,
    gradient clipping at 1, batches of 128 bucketed by length. 6000 steps (about 9
    CPU minutes on one thread): every held-out string of the trained lengths 5-30 is
    then reversed correctly (trial runs at lr 3e-3 reversed about 70% of them after
    1000 steps and 88% after 2000, failing mostly on the longest). ``src_eos`` appends an end token to each source
    (as translation models do; it did not help here); off by default, so the inputs
    are exactly those of chapters 1-2. ``label_smoothing`` is passed to the loss.
    """

    d_model: int = 64
    num_heads: int = 4
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.0
    norm_first: bool = True
    steps: int = 6000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 200
    seed: int = 0
    src_eos: bool = False
    weight_decay: float = 0.01
    label_smoothing: float = 0.0

    def build(self, vocab_size: int, pad_id: int, max_len: int = 64) -> Transformer:
        """The model, initialised from ``torch.manual_seed(self.seed)``."""
        torch.manual_seed(self.seed)
        return Transformer(
            vocab_size,
            vocab_size,
            self.d_model,
            self.num_heads,
            self.num_encoder_layers,
            self.num_decoder_layers,
            self.d_ff,
            self.dropout,
            self.norm_first,
            "relu",
            max_len=max_len,
            share_embeddings=True,
            tie_output=True,
            pad_id=pad_id,
        )


def with_source_eos(src: Tensor, src_lengths: Tensor, eos_id: int, pad_id: int) -> Tensor:
    """``src (B, S)`` with an end token written after each source's last real token: ``(B, S + 1)``."""
    out = torch.cat([src, torch.full_like(src[:, :1], pad_id)], dim=1)  # (B, S + 1)
    out[torch.arange(src.shape[0]), src_lengths] = eos_id
    return out


def transformer_seq2seq_loss(
    model: Transformer, batch: Seq2SeqBatch, pad_id: int, label_smoothing: float = 0.0
) -> Tensor:
    """Teacher forcing: feed ``tgt_in`` (BOS + target, i.e. the target shifted right)
    and score every position's prediction of ``tgt_out`` (target + EOS) in ONE parallel
    pass."""
    logits = model(batch.src, batch.tgt_in)  # (B, T, V)
    return F.cross_entropy(
        logits.flatten(0, 1),
        batch.tgt_out.flatten(),
        ignore_index=pad_id,  # (B*T, V), (B*T,)
        label_smoothing=label_smoothing,
    )


def transformer_decode(model: Transformer, tokenizer: Tokenizer, src_eos: bool = False):
    """A ``decode_fn`` for :func:`~minitransformer.train.accuracy_by_length`: greedy, with KV caches."""

    def decode(batch: Seq2SeqBatch, max_len: int) -> Tensor:
        src = (
            with_source_eos(batch.src, batch.src_lengths, tokenizer.eos_id, tokenizer.pad_id) if src_eos else batch.src
        )
        return model.greedy_decode(src, max_len, tokenizer.bos_id, tokenizer.eos_id)  # (B, n)

    return decode


@dataclass
class TransformerReversalRun:
    """The result of :func:`run_transformer_reversal`."""

    model: Transformer
    history: History
    accuracy: pd.DataFrame  # length, n, exact_match, char_accuracy, model, trained_length
    cpu_seconds: float  # process CPU time of the training (all threads)
    wall_seconds: float
    setup: ReversalTransformerSetup
    data_setup: ReversalSetup

    def summary(self) -> dict:
        """One row for a results table, with the same columns as ``ReversalRun.summary``."""
        return summary_row("transformer", self.model.num_parameters(), self.accuracy)


def run_transformer_reversal(
    setup: ReversalTransformerSetup = ReversalTransformerSetup(),
    data_setup: ReversalSetup = REVERSAL,
    *,
    data=None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> TransformerReversalRun:
    """Train the encoder-decoder transformer on chapters 1-2's reversal data; accuracy per length.

    Args:
        setup: model and recipe.
        data_setup: the data (default :data:`REVERSAL`, the chapters 1-2 setting).
        data: ``reversal_data(data_setup)``, if already made.
        device: where to train (evaluation runs on the CPU).
        progress: show a progress bar.

    Returns:
        a :class:`TransformerReversalRun`. Same arguments -> same model on the CPU.
    """
    train, test, tok = data if data is not None else reversal_data(data_setup)
    model = setup.build(len(tok), tok.pad_id).to(device)
    batches = batch_iterator(train, tok, setup.batch_size, seed=setup.seed, forever=True)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=setup.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=setup.weight_decay
    )
    scheduler = warmup_cosine_scheduler(optimizer, min(setup.warmup, setup.steps), setup.steps)
    cpu, wall = time.process_time(), time.perf_counter()

    def prepare(batch: Seq2SeqBatch) -> Seq2SeqBatch:
        if setup.src_eos:
            batch = dataclasses.replace(
                batch, src=with_source_eos(batch.src, batch.src_lengths, tok.eos_id, tok.pad_id)
            )
        return batch.to(device)

    history = fit(
        model,
        lambda step: transformer_seq2seq_loss(model, prepare(next(batches)), tok.pad_id, setup.label_smoothing),
        optimizer,
        setup.steps,
        scheduler=scheduler,
        clip_norm=1.0,
        progress=progress,
        desc="transformer",
    )
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    model.cpu().eval()
    acc = reversal_accuracy(model, test, tok, setup, data_setup)
    return TransformerReversalRun(model, history, acc, cpu, wall, setup, data_setup)


def reversal_accuracy(
    model: Transformer,
    examples: list[Example],
    tokenizer: Tokenizer,
    setup: ReversalTransformerSetup,
    data_setup: ReversalSetup = REVERSAL,
    label: str = "transformer",
) -> pd.DataFrame:
    """Exact match and character accuracy per length (greedy decoding), with the columns of
    ``ReversalRun.accuracy``: ``length, n, exact_match, char_accuracy, model, trained_length``."""
    acc = accuracy_by_length(model, examples, tokenizer, decode_fn=transformer_decode(model, tokenizer, setup.src_eos))
    acc["model"] = label
    lo, hi = data_setup.train_lengths
    acc["trained_length"] = acc.length.between(lo, hi)
    return acc


# ------------------------------------------------------------------ the checkpoint
class LoadedReversalTransformer(NamedTuple):
    """What :func:`load_reversal_transformer` returns."""

    model: Transformer  # float32, eval mode
    tokenizer: Tokenizer
    setup: ReversalTransformerSetup
    data_setup: ReversalSetup
    accuracy: pd.DataFrame  # per length, measured on the STORED weights when the file was written
    info: dict  # steps, training time, threads, date, command, final losses


def _setup_from_dict(cls, d: dict):
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _write(path: Path, model: Transformer, setup, data_setup, accuracy: list, info: dict, half: bool) -> None:
    state = {
        k: (v.half() if half and v.is_floating_point() else v).cpu().clone() for k, v in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": _FORMAT,
            "setup": asdict(setup),
            "data_setup": json.loads(json.dumps(asdict(data_setup))),
            "state_dict": state,
            "accuracy": accuracy,
            "info": json.loads(json.dumps(info, default=str)),
        },
        path,
    )


def save_reversal_transformer(
    run: TransformerReversalRun, path: str | Path = CHECKPOINT_PATH, *, data=None, half: bool = True, **extra
) -> pd.DataFrame:
    """Save a trained :class:`TransformerReversalRun` (weights in float16 when ``half``), then load the
    file back and measure the STORED weights on the whole held-out set; that table is what the file keeps.

    Args:
        run: the result of :func:`run_transformer_reversal`.
        path: default :data:`CHECKPOINT_PATH` (package data).
        data: ``reversal_data(run.data_setup)``, if already made.
        extra: more (JSON-able) entries for ``info``, e.g. the command line.

    Returns:
        the per-length accuracy of the stored model.
    """
    path = Path(path)
    _, test, tok = data if data is not None else reversal_data(run.data_setup)
    losses = [row["loss"] for row in run.history if "loss" in row]
    info = {
        "steps": run.setup.steps,
        "params": run.model.num_parameters(),
        "cpu_seconds": round(run.cpu_seconds, 1),
        "wall_seconds": round(run.wall_seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "date": dt.date.today().isoformat(),
        "float16": half,
        "final_loss": round(losses[-1], 4) if losses else None,
        "float32_exact_match_trained": round(float(run.accuracy[run.accuracy.trained_length].exact_match.mean()), 4),
        **extra,
    }
    _write(path, run.model, run.setup, run.data_setup, [], info, half)
    stored = load_reversal_transformer(path)
    acc = reversal_accuracy(stored.model, test, tok, run.setup, run.data_setup)
    _write(path, run.model, run.setup, run.data_setup, acc.to_dict("records"), info, half)
    return acc


def load_reversal_transformer(path: str | Path | None = None) -> LoadedReversalTransformer:
    """Load the Lab 1 transformer that ``scripts/train_reversal_transformer.py`` trained.

    Args:
        path: default :data:`CHECKPOINT_PATH` (shipped with the package).

    Returns:
        :class:`LoadedReversalTransformer` ``(model, tokenizer, setup, data_setup, accuracy, info)``;
        the model is float32, on the CPU, in eval mode.
    """
    path = CHECKPOINT_PATH if path is None else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; make it with:  python scripts/train_reversal_transformer.py")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a minitransformer reversal-transformer checkpoint")
    setup = _setup_from_dict(ReversalTransformerSetup, blob["setup"])
    data_setup = _setup_from_dict(ReversalSetup, blob["data_setup"])
    tok = task_tokenizer("reverse")
    model = setup.build(len(tok), tok.pad_id)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    accuracy = pd.DataFrame(
        blob["accuracy"], columns=["length", "n", "exact_match", "char_accuracy", "model", "trained_length"]
    )
    return LoadedReversalTransformer(model.eval(), tok, setup, data_setup, accuracy, blob["info"])


def stored_rnn_curves(path: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The RNN models' accuracy-versus-length curves stored by ``scripts/reversal_rnn_curves.py``.

    Returns:
        ``(accuracy, meta)``: a DataFrame like ``ReversalRun.accuracy`` (columns
        ``length, n, exact_match, char_accuracy, model, trained_length``) for every
        stored model, and ``meta`` with the setup, CPU seconds per model, date and command.
    """
    blob = read_results(RNN_CURVES_PATH if path is None else path, "scripts/reversal_rnn_curves.py")
    acc = pd.DataFrame(blob["accuracy"])
    return acc, {k: v for k, v in blob.items() if k != "accuracy"}


def reversal_setup_dict(setup: ReversalSetup = REVERSAL) -> dict:
    """The data setup as plain JSON types (to store with the curves and compare later)."""
    return json.loads(json.dumps(asdict(setup)))
