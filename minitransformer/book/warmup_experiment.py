"""Chapter 9's warmup-and-clipping experiment: one change at a time, several seeds.

A 2-layer GPT learns to copy (8 random tokens, then the same 8 again) at a deliberately
high peak learning rate. Four arms differ in exactly one factor from their neighbours:

* ``warmup`` (0 or ``warmup`` steps of linear warmup) and
* ``clip`` (no clipping, or clipping the global gradient norm to ``clip``),

crossed 2 x 2. Everything else is shared by every arm: the model, the optimiser (Adam), the
peak rate, the number of steps, the cosine decay after the warmup (:func:`warmup_cosine_scheduler`
with ``warmup=0`` is the same cosine from the first step), and, for a given seed, the initial
weights and the batches. Each arm is trained with every seed, so the spread between seeds
can be shown next to the difference between arms.

At this learning rate training is chaotic: a difference in the last bit of a sum grows into a
different final loss, so the same seed gives different runs when a matrix product is split
over a different number of threads. The runs therefore use one thread (and the previous
setting is restored afterwards), which makes the stored outputs reproducible on any machine
that runs the chapter; the spread over seeds is the honest measure of how much a single run
says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch
from torch import Tensor

from ..gpt import GPT
from ..train import set_seed, warmup_cosine_scheduler
from .diagnostics import loss_spikes, tracked_training

__all__ = ["copy_batch", "copy_task_optimum", "warmup_clipping_runs", "summarize_warmup_runs"]


def copy_batch(g: torch.Generator, batch_size: int = 32, vocab_size: int = 16, half: int = 8) -> tuple[Tensor, Tensor]:
    """A batch of the copy task: ``half`` random tokens (from 1 .. vocab_size - 1), then the same again.

    Args:
        g: the generator the tokens are drawn from.
        batch_size, vocab_size, half: ``B``, ``V`` and the length of each half.

    Returns:
        inputs and targets, both ``(B, 2 * half - 1)`` int64 (targets shifted by one).
    """
    x = torch.randint(1, vocab_size, (batch_size, half), generator=g)  # (B, half)
    seq = torch.cat([x, x], 1)  # (B, 2 * half): x then x again
    return seq[:, :-1], seq[:, 1:]


def copy_task_optimum(vocab_size: int = 16, half: int = 8) -> float:
    """The lowest expected loss on the copy task: the ``half - 1`` predictions inside the first
    half are guesses among ``vocab_size - 1`` tokens, the ``half`` in the second are determined."""
    predictions = 2 * half - 1
    return (half - 1) / predictions * math.log(vocab_size - 1)


def warmup_clipping_runs(
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    *,
    steps: int = 200,
    lr: float = 5e-2,
    warmup: int = 30,
    clip: float = 1.0,
    batch_size: int = 32,
    vocab_size: int = 16,
) -> pd.DataFrame:
    """Train the copy-task GPT in the four arms (warmup 0 or ``warmup``) x (no clipping or ``clip``).

    Args:
        seeds: one run per arm and seed; the seed fixes the initial weights and the batches,
            the same in every arm.
        steps: optimizer steps of every run (equal budgets).
        lr: the peak learning rate of Adam.
        warmup: the warmup length of the arms with warmup.
        clip: the clipping threshold of the arms with clipping.
        batch_size, vocab_size: of :func:`copy_batch`.

    Returns:
        one row per (arm, seed, step) with columns ``arm, warmup, clip, seed, step, loss,
        grad_norm, lr`` (``grad_norm`` before clipping, ``step`` from 0; ``clip`` is 0.0 for no
        clipping).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # chaotic runs: one thread, so that every machine gets the same numbers
    try:
        frames = _train_arms(seeds, steps, lr, warmup, clip, batch_size, vocab_size)
    finally:
        torch.set_num_threads(threads)
    columns = ["arm", "warmup", "clip", "seed", "step", "loss", "grad_norm", "lr"]
    return pd.concat(frames, ignore_index=True)[columns]


def _train_arms(seeds, steps, lr, warmup, clip, batch_size, vocab_size) -> list[pd.DataFrame]:
    frames = []
    for use_warmup in (False, True):
        for use_clip in (False, True):
            arm = f"{'warmup' if use_warmup else 'no warmup'}, {'clipping' if use_clip else 'no clipping'}"
            for seed in seeds:
                set_seed(seed)
                model = GPT(vocab_size, 32, n_layer=2, n_head=2, d_model=32)
                g = torch.Generator().manual_seed(seed)
                opt = torch.optim.Adam(model.parameters(), lr=lr)
                sched = warmup_cosine_scheduler(opt, warmup=warmup if use_warmup else 0, total=steps)
                frame = tracked_training(
                    model,
                    lambda step, model=model, g=g: model(*copy_batch(g, batch_size, vocab_size))[1],
                    opt,
                    steps,
                    sched,
                    clip if use_clip else None,
                )
                frames.append(
                    frame.assign(arm=arm, warmup=warmup if use_warmup else 0, clip=clip if use_clip else 0.0, seed=seed)
                )
    return frames


def summarize_warmup_runs(
    runs: pd.DataFrame, optimum: float, *, last: int = 20, tolerance: float = 0.1
) -> pd.DataFrame:
    """One row per run of :func:`warmup_clipping_runs`: what the chapter reads from each.

    Args:
        runs: the frame of :func:`warmup_clipping_runs`.
        optimum: the best possible loss (:func:`copy_task_optimum`).
        last: the final loss is the mean over the last ``last`` steps.
        tolerance: a run "solves" the task when its final loss is within this of ``optimum``.

    Returns:
        columns ``arm, warmup, clip, seed, final_loss, solved, max_grad_norm, final_grad_norm,
        spikes`` (``spikes``: the number of steps :func:`loss_spikes` flags with a window of 10 and
        a factor of 1.2; ``final_grad_norm``: the mean over the last ``last`` steps).
    """
    rows = []
    for (arm, seed), run in runs.groupby(["arm", "seed"], sort=False):
        tail = run.tail(last)
        final = float(tail["loss"].mean())
        rows.append(
            {
                "arm": arm,
                "warmup": int(run["warmup"].iloc[0]),
                "clip": float(run["clip"].iloc[0]),
                "seed": int(seed),
                "final_loss": final,
                "solved": final - optimum < tolerance,
                "max_grad_norm": float(run["grad_norm"].max()),
                "final_grad_norm": float(tail["grad_norm"].mean()),
                "spikes": len(loss_spikes(run["loss"].tolist(), window=10, factor=1.2)),
            }
        )
    return pd.DataFrame(rows)
