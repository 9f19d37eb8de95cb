"""A small training toolkit: seeding, learning-rate schedules, label
smoothing, a training loop with a progress bar, and evaluation helpers.

* :func:`noam_lr` is the schedule of "Attention Is All You Need" (2017):
  ``lr = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)``, rising linearly
  for ``warmup`` steps to its peak ``(d_model * warmup)^-0.5``, then decaying
  as ``1/sqrt(step)``.
* :func:`smoothed_targets` / :func:`label_smoothing_loss`: with smoothing
  ``eps`` over ``C`` classes the target puts ``1 - eps + eps/C`` on the true
  class and ``eps/C`` on every other one -- exactly the definition of
  ``F.cross_entropy(..., label_smoothing=eps)``.
* :func:`fit` runs any loss function for a number of steps with gradient
  clipping, an optional scheduler or per-step learning-rate function, a tqdm
  bar (or none), and records a :class:`History` (list of dicts with the loss,
  learning rate and optionally the gradient norm; ``.to_frame()`` gives a
  DataFrame). The book's training functions are all calls to it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data import Example, Seq2SeqBatch, Tokenizer, batch_iterator, collate
from .validation import check_bool, check_int_tensor, check_positive_int, check_real, describe

__all__ = [
    "set_seed",
    "noam_lr",
    "NoamSchedule",
    "noam_scheduler",
    "warmup_cosine_lr",
    "warmup_cosine_scheduler",
    "smoothed_targets",
    "label_smoothing_loss",
    "History",
    "global_grad_norm",
    "fit",
    "seq2seq_loss",
    "train_seq2seq",
    "accuracy_by_length",
]


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every GPU).

    Args:
        seed: a non-negative int below ``2**32`` (NumPy's limit).
    """
    check_positive_int("seed", seed, minimum=0, where="set_seed")
    if seed >= 2**32:
        raise ValueError(f"set_seed: seed must be < 2**32 (NumPy's limit), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- schedules
def _check_ints(where: str, **values) -> None:
    """``TypeError`` unless every value is an int (``bool`` is not); the ranges are the caller's to check."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{where}: {name} must be an int, got {describe(value)} {value!r}")


def noam_lr(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """``factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)``.

    Steps count from 1; ``step = 0`` is treated as step 1 (the formula is
    infinite there). The peak, at ``step == warmup``, is
    ``factor * d_model^-0.5 * warmup^-0.5``.
    """
    _check_ints("noam_lr", d_model=d_model, warmup=warmup, step=step)
    if d_model < 1 or warmup < 1:
        raise ValueError(
            "d_model and warmup must be >= 1, "
            f"got d_model={d_model}, warmup={warmup}"
        )  # fmt: skip
    check_positive_int("step", step, minimum=0, where="noam_lr")
    check_real("factor", factor, low=0.0, low_open=True, where="noam_lr")
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


class NoamSchedule:
    """``noam_lr`` as a callable ``step -> lr`` for ``LambdaLR`` (set the
    optimizer's base lr to 1.0). ``LambdaLR`` counts from 0, so the i-th
    optimizer step (0-based) uses ``noam_lr(i + 1)``."""

    def __init__(self, d_model: int, warmup: int, factor: float = 1.0):
        noam_lr(1, d_model, warmup, factor)  # validates
        self.d_model, self.warmup, self.factor = d_model, warmup, factor

    def __call__(self, step: int) -> float:
        return noam_lr(step + 1, self.d_model, self.warmup, self.factor)


def noam_scheduler(
    optimizer: torch.optim.Optimizer, d_model: int, warmup: int, factor: float = 1.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`noam_lr` (multiplies the base lr:
    create the optimizer with ``lr=1.0``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, NoamSchedule(d_model, warmup, factor))


def warmup_cosine_lr(step: int, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Multiplier of the base lr: linear warmup from 0 over ``warmup`` steps,
    then cosine decay to ``min_ratio`` at ``total`` (and flat after).

    Args:
        step: the 0-based step, ``>= 0``.
        warmup: warmup steps, ``0 <= warmup <= total``.
        total: total steps, ``>= 1``.
        min_ratio: the final multiplier, in ``[0, 1]``.

    Returns:
        the multiplier of the base learning rate.
    """
    _check_ints("warmup_cosine_lr", step=step, warmup=warmup, total=total)
    if warmup < 0 or total < 1 or warmup > total:
        raise ValueError(f"need 0 <= warmup <= total and total >= 1, got warmup={warmup}, total={total}")
    check_positive_int("step", step, minimum=0, where="warmup_cosine_lr")
    check_real("min_ratio", min_ratio, low=0.0, high=1.0, where="warmup_cosine_lr")
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`warmup_cosine_lr`."""
    warmup_cosine_lr(0, warmup, total, min_ratio)  # validates
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine_lr(step, warmup, total, min_ratio))


# ---------------------------------------------------------------- label smoothing
def smoothed_targets(targets: Tensor, num_classes: int, smoothing: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """The target distribution of label smoothing.

    Args:
        targets: ``(N,)`` class ids.
        num_classes: ``C``.
        smoothing: ``eps`` in [0, 1].
        dtype: the floating dtype of the result (that of the logits it is compared with).

    Returns:
        ``(N, C)``: ``1 - eps + eps/C`` at the true class, ``eps/C`` elsewhere
        (each row sums to 1).

    Raises:
        TypeError: ``targets`` not an integer tensor; ``smoothing`` not a number.
        ValueError: ``targets`` not 1-D or outside ``[0, num_classes)``; ``num_classes < 1``;
            ``smoothing`` outside ``[0, 1]`` (NaN included).
    """
    check_real("smoothing", smoothing, low=0.0, high=1.0)
    check_positive_int("num_classes", num_classes, where="smoothed_targets")
    check_int_tensor("targets", targets, low=0, high=num_classes, where="smoothed_targets")
    if targets.dim() != 1:
        raise ValueError(f"targets must be a (N,) tensor of class ids, got {targets.dtype} {tuple(targets.shape)}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"smoothed_targets: dtype must be a floating torch dtype, got {dtype!r}")
    one_hot = F.one_hot(targets, num_classes).to(dtype)  # (N, C)
    return (1.0 - smoothing) * one_hot + smoothing / num_classes  # (N, C)


def label_smoothing_loss(logits: Tensor, targets: Tensor, smoothing: float, ignore_index: int = -100) -> Tensor:
    """Cross-entropy against :func:`smoothed_targets`, averaged over the
    non-ignored targets; equals ``F.cross_entropy(logits, targets,
    ignore_index=..., label_smoothing=smoothing)``.

    Args:
        logits: ``(N, C)`` floating point.
        targets: ``(N,)`` integer class ids in ``[0, C)``; ``ignore_index`` entries are skipped.
        smoothing: ``eps`` in [0, 1].
        ignore_index: the target value to skip (``-100``, as ``F.cross_entropy``).

    Returns:
        the scalar loss (NaN when every target is ignored, as ``F.cross_entropy``).

    Raises:
        TypeError: ``logits`` not a floating tensor, ``targets`` not an integer tensor.
        ValueError: shapes that do not fit, targets outside ``[0, C)`` (other than
            ``ignore_index``), ``smoothing`` outside ``[0, 1]``; all before any work.
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"label_smoothing_loss: logits must be a floating tensor (N, C), got {_dtype_or_type(logits)}")
    check_int_tensor("targets", targets, where="label_smoothing_loss")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"label_smoothing_loss: ignore_index must be an int, got {describe(ignore_index)}")
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"logits must be (N, C) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    check_real("smoothing", smoothing, low=0.0, high=1.0)
    check_int_tensor(
        "targets", targets, low=0, high=logits.shape[1], allow=int(ignore_index), where="label_smoothing_loss"
    )
    keep = targets != ignore_index  # (N,)
    q = smoothed_targets(targets[keep], logits.shape[1], smoothing, dtype=logits.dtype)  # (N_kept, C)
    log_p = torch.log_softmax(logits[keep], dim=-1)  # (N_kept, C)
    return -(q * log_p).sum(dim=-1).mean()


def _dtype_or_type(x) -> str:
    """``"torch.int64"`` for a tensor, the type's name otherwise (for messages)."""
    return str(x.dtype) if isinstance(x, Tensor) else type(x).__name__


# ---------------------------------------------------------------- the loop
class History(list):
    """The records of a training run: a list of dicts such as
    ``{"step": 10, "loss": 2.3, "lr": 1e-3, "time": 0.5}`` (``"grad_norm"`` too
    when :func:`fit` tracks it, and ``{"step": 100, "val_loss": ...}`` from
    evaluation). ``step`` counts optimizer steps from 1."""

    def to_frame(self):
        """The records as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(list(self))


def global_grad_norm(model: nn.Module) -> float:
    """The norm of all gradients together (after ``backward``), what ``clip_grad_norm_``
    measures and clips: the L2 norm of the per-parameter gradient norms."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"global_grad_norm: model must be a torch.nn.Module, got {describe(model)}")
    norms = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
    return torch.stack(norms).norm().item() if norms else 0.0


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of ``optimizer`` the learning rate ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def _evaluate(model: nn.Module, eval_fn: Callable[[], dict]) -> dict:
    """``eval_fn()`` in eval mode and without gradients; the model goes back to train mode."""
    model.eval()
    with torch.no_grad():
        metrics = eval_fn()
    model.train()
    return metrics


def fit(
    model: nn.Module,
    loss_fn: Callable[[int], Tensor],
    optimizer: torch.optim.Optimizer,
    num_steps: int,
    *,
    scheduler=None,
    lr_fn: Callable[[int], float] | None = None,
    clip_norm: float | None = 1.0,
    grad_norm: bool = False,
    eval_fn: Callable[[], dict] | None = None,
    eval_every: int = 100,
    log_every: int = 10,
    log_when: Callable[[int], bool] | None = None,
    start_step: int = 0,
    progress: bool = True,
    desc: str = "train",
) -> History:
    """Train for ``num_steps`` optimizer steps.

    Every step, in this order: set the learning rate (``lr_fn``), ``loss = loss_fn(step)``,
    ``zero_grad``, ``backward``, measure the gradient norm (``grad_norm``), clip
    (``clip_norm``), ``optimizer.step()``, ``scheduler.step()``. Nothing here draws
    random numbers, so a seeded ``loss_fn`` makes the run reproducible.

    Args:
        model: put in train mode (and back in eval mode at the end).
        loss_fn: ``step -> scalar loss`` on a fresh batch (the caller owns the data);
            ``step`` is the 0-based step index (counting from ``start_step``).
        optimizer: any torch optimizer.
        num_steps: number of steps.
        scheduler: stepped after every optimizer step, if given.
        lr_fn: ``step -> learning rate``, set on every parameter group before the step
            (0-based ``step``, counting from ``start_step``); not together with ``scheduler``.
        clip_norm: clip the global gradient norm to this (None: no clipping).
        grad_norm: also record ``"grad_norm"``, the global gradient norm BEFORE clipping
            (:func:`global_grad_norm`), at the logged steps.
        eval_fn: ``() -> dict`` of metrics, called every ``eval_every`` steps
            and at the end, in eval mode and without gradients.
        log_every: record the training loss at the 0-based steps that are multiples of
            this, and at the last step.
        log_when: instead of ``log_every``: ``step -> bool`` on the 1-based step number
            (e.g. ``lambda s: s % 10 == 0 or s == 1``).
        start_step: index of the first step, to continue an earlier run in chunks
            (``loss_fn``, ``lr_fn`` and the recorded ``step`` continue from it).
        progress: show a tqdm bar (notebook-aware); False: quiet.
        desc: the bar's label.

    Returns:
        a :class:`History`: ``{"step", "loss", ["grad_norm",] "lr", "time"}`` at the logged
        steps, ``lr`` being the learning rate the step used and ``time`` the seconds since
        the call began; and ``{"step", **eval_fn(), "time"}`` after each evaluation.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fit: model must be a torch.nn.Module, got {describe(model)}")
    for name, fn in (("loss_fn", loss_fn), ("lr_fn", lr_fn), ("eval_fn", eval_fn), ("log_when", log_when)):
        if (fn is not None or name == "loss_fn") and not callable(fn):
            raise TypeError(f"fit: {name} must be callable, got {describe(fn)}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"fit: optimizer must be a torch.optim.Optimizer, got {describe(optimizer)}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise TypeError(f"fit: num_steps must be an int, got {describe(num_steps)} {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if scheduler is not None and lr_fn is not None:
        raise ValueError("fit: give a scheduler or an lr_fn, not both")
    if log_when is None:
        check_positive_int("log_every", log_every, where="fit")
    check_positive_int("eval_every", eval_every, where="fit")
    check_positive_int("start_step", start_step, minimum=0, where="fit")
    if clip_norm is not None:
        check_real("clip_norm", clip_norm, low=0.0, low_open=True, where="fit")
    check_bool("grad_norm", grad_norm, where="fit")
    history, start = History(), time.perf_counter()
    last = start_step + num_steps - 1
    model.train()
    bar = tqdm(range(start_step, last + 1), desc=desc, disable=not progress)
    for step in bar:
        if lr_fn is not None:
            _set_lr(optimizer, lr_fn(step))
        loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        log = log_when(step + 1) if log_when is not None else step % log_every == 0 or step == last
        norm = global_grad_norm(model) if grad_norm and log else None
        if clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if log:
            record = {"step": step + 1, "loss": loss.item()}
            if norm is not None:
                record["grad_norm"] = norm
            record.update(lr=lr, time=time.perf_counter() - start)
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
        if eval_fn is not None and ((step + 1) % eval_every == 0 or step == last):
            history.append({"step": step + 1, **_evaluate(model, eval_fn), "time": time.perf_counter() - start})
    model.eval()
    return history


# ---------------------------------------------------------------- seq2seq helpers
def seq2seq_loss(model: nn.Module, batch: Seq2SeqBatch, label_smoothing: float = 0.0) -> Tensor:
    """Teacher-forced cross-entropy of a :class:`~minitransformer.rnn.Seq2Seq`
    on a batch, ignoring padded target positions.

    Args:
        model: a seq2seq model with a ``config`` holding ``vocab_size`` and ``pad_id``.
        batch: a :class:`~minitransformer.data.Seq2SeqBatch`; ``src (B, S)``, ``tgt_in (B, T)``
            and ``tgt_out (B, T)`` integer ids in ``[0, vocab_size)``.
        label_smoothing: in ``[0, 1]``.

    Returns:
        the scalar mean loss over the non-padded target positions.

    Raises:
        TypeError: a batch that is not a ``Seq2SeqBatch``, ids that are not integers.
        ValueError: ids outside ``[0, vocab_size)``, mismatched shapes, a bad
            ``label_smoothing``; all before the forward pass.
    """
    _check_seq2seq_batch(model, batch)
    check_real("label_smoothing", label_smoothing, low=0.0, high=1.0, where="seq2seq_loss")
    logits = model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
    pad = model.config.pad_id
    return F.cross_entropy(
        logits.flatten(0, 1),
        batch.tgt_out.flatten(),  # (B*T, V), (B*T,)
        ignore_index=pad,
        label_smoothing=label_smoothing,
    )


def _check_seq2seq_batch(model: nn.Module, batch: Seq2SeqBatch) -> None:
    """The ids of ``batch`` are integers in ``[0, model.config.vocab_size)`` with fitting shapes."""
    if not isinstance(batch, Seq2SeqBatch):
        raise TypeError(f"seq2seq_loss: batch must be a Seq2SeqBatch, got {describe(batch)}")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    for name in ("src", "tgt_in", "tgt_out"):
        check_int_tensor(f"batch.{name}", getattr(batch, name), dim=2, low=0, high=vocab, where="seq2seq_loss")
    S = batch.src.shape[1]
    check_int_tensor("batch.src_lengths", batch.src_lengths, dim=1, low=1, high=S + 1, where="seq2seq_loss")
    B = batch.src.shape[0]
    if batch.tgt_in.shape != batch.tgt_out.shape or batch.tgt_in.shape[0] != B or batch.src_lengths.shape[0] != B:
        raise ValueError(
            "seq2seq_loss: batch shapes do not fit: src "
            f"{tuple(batch.src.shape)}, src_lengths {tuple(batch.src_lengths.shape)}, "
            f"tgt_in {tuple(batch.tgt_in.shape)}, tgt_out {tuple(batch.tgt_out.shape)}"
        )


def train_seq2seq(
    model: nn.Module,
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    num_steps: int,
    *,
    batch_size: int = 128,
    lr: float = 1e-2,
    seed: int = 0,
    warmup: int = 100,
    clip_norm: float = 1.0,
    progress: bool = True,
    eval_fn: Callable[[], dict] | None = None,
    eval_every: int = 200,
) -> History:
    """Train a seq2seq model on toy-task examples with Adam, warmup + cosine
    decay and gradient clipping; batches are bucketed by length and drawn
    from ``seed`` (so a run is reproducible given the model's initial weights).

    The defaults are the recipe of chapters 1-2: with ``Seq2SeqConfig.preset
    ("small", ...)`` on digit reversal of lengths 5-30, 600 steps take about
    30 s (no attention) to 50 s (Bahdanau) on a 2-core CPU (measured
    2026-11-30; slower when other processes share the cores).

    Args:
        model: a :class:`~minitransformer.rnn.Seq2Seq`.
        examples: training :class:`Example` s.
        tokenizer: the task's tokenizer.
        num_steps: optimizer steps.
        batch_size, lr, warmup, clip_norm: batch size, peak Adam learning rate,
            warmup steps, gradient-norm clip.
        seed: seed of the batch order.
        progress, eval_fn, eval_every: as in :func:`fit`.

    Returns:
        the :class:`History` of :func:`fit`.
    """
    check_real("lr", lr, low=0.0, low_open=True, where="train_seq2seq")
    check_positive_int("warmup", warmup, minimum=0, where="train_seq2seq")
    check_positive_int("num_steps", num_steps, where="train_seq2seq")
    batches = batch_iterator(examples, tokenizer, batch_size, seed=seed, forever=True)  # checks them
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = warmup_cosine_scheduler(optimizer, min(warmup, num_steps), num_steps)
    desc = f"attention={model.config.attention}" if hasattr(model, "config") else "train"
    return fit(
        model,
        lambda step: seq2seq_loss(model, next(batches)),
        optimizer,
        num_steps,
        scheduler=scheduler,
        clip_norm=clip_norm,
        progress=progress,
        eval_fn=eval_fn,
        eval_every=eval_every,
        desc=desc,
    )


@torch.no_grad()
def accuracy_by_length(
    model: nn.Module,
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    batch_size: int = 500,
    decode_fn: Callable[[Seq2SeqBatch, int], Tensor] | None = None,
):
    """Exact-match and per-character accuracy of greedy decoding, per length.

    Args:
        model: a seq2seq model with ``greedy_decode(src, max_len, src_lengths)``
            (the RNN models), or any model if ``decode_fn`` is given.
        examples: held-out :class:`Example` s; grouped by ``example.length``.
        tokenizer: the task's tokenizer.
        batch_size: examples decoded at once.
        decode_fn: ``(batch, max_len) -> tokens (B, T_out)``, to evaluate other
            models (e.g. a transformer) the same way.

    Returns:
        a DataFrame with columns ``length, n, exact_match, char_accuracy``
        (accuracies in [0, 1]).
    """
    import pandas as pd

    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"accuracy_by_length: tokenizer must be a Tokenizer, got {describe(tokenizer)}")
    check_positive_int("batch_size", batch_size, where="accuracy_by_length")
    if decode_fn is not None and not callable(decode_fn):
        raise TypeError(f"accuracy_by_length: decode_fn must be callable, got {describe(decode_fn)}")
    if decode_fn is None:
        decode_fn = lambda b, n: model.greedy_decode(b.src, n, b.src_lengths)[0]  # noqa: E731
    was_training = model.training
    model.eval()
    stats: dict[int, list[float]] = {}
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        batch = collate(chunk, tokenizer)
        tokens = decode_fn(batch, batch.tgt_out.shape[1] + 1)  # (B, T_out)
        for ex, row in zip(chunk, tokens):
            guess = tokenizer.decode(row)
            chars = sum(a == b for a, b in zip(guess, ex.tgt)) / max(len(ex.tgt), len(guess), 1)
            s = stats.setdefault(ex.length, [0, 0.0, 0.0])
            s[0] += 1
            s[1] += guess == ex.tgt
            s[2] += chars
    model.train(was_training)
    rows = [
        {"length": k, "n": n, "exact_match": em / n, "char_accuracy": ca / n}
        for k, (n, em, ca) in sorted(stats.items())
    ]
    return pd.DataFrame(rows)
