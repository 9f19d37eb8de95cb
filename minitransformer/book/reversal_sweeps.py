"""The controlled digit-reversal experiments of chapters 1 and 2, several seeds each.

Two experiments run once in ``scripts/reversal_sweeps.py`` (minutes of CPU) and are
stored as JSON under ``minitransformer/book/results/``; the chapters load them with
:func:`load_capacity` and :func:`load_attention_seeds`:

* **capacity** (chapter 1): the model without attention, with hidden sizes
  :data:`CAPACITY_HIDDEN` (the size of the context vector ``c``) crossed with training
  budgets :data:`CAPACITY_STEPS`, each for every seed in :data:`SEEDS`. It separates
  "the vector is too small" from "the model is under-trained": if more steps fixed the
  long inputs, the budget would be the limit, not the size.
* **attention** (chapter 2): the five decoders of chapter 2 (:data:`SEED_MODELS`) with the
  same budget, :data:`REVERSAL`'s 600 steps of 128 strings, for every seed in :data:`SEEDS`.

Every run uses the same data, ``reversal_data(REVERSAL)``; a seed changes the model's
initial weights and the order of the batches (``run_reversal`` with ``setup.seed``), so the
spread over seeds is the spread of training itself. Seed 0 with hidden size 64 and 600 steps
is the chapters' own recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pandas as pd

from ..data import Example, Tokenizer
from .seq2seq_experiments import REVERSAL, model_label, run_reversal
from .stored import RESULTS_DIR, read_results

__all__ = [
    "CAPACITY_PATH",
    "ATTENTION_SEEDS_PATH",
    "CAPACITY_HIDDEN",
    "CAPACITY_STEPS",
    "SEEDS",
    "SEED_MODELS",
    "SCRIPT",
    "sweep_run",
    "runs_frame",
    "load_capacity",
    "load_attention_seeds",
    "seed_spread",
    "mean_over_lengths",
    "reach",
    "run_table",
]

SCRIPT = "scripts/reversal_sweeps.py"
CAPACITY_PATH = RESULTS_DIR / "reversal_capacity.json"
ATTENTION_SEEDS_PATH = RESULTS_DIR / "reversal_attention_seeds.json"
#: Hidden sizes H of the capacity sweep (the context vector has H numbers); 64 is the chapters'.
CAPACITY_HIDDEN = (32, 64, 128)
#: Training budgets (optimizer steps of 128 strings) of the capacity sweep; 600 is the chapters'.
CAPACITY_STEPS = (300, 600, 1200)
#: The seeds of both experiments.
SEEDS = (0, 1, 2)
#: The decoders of chapter 2's comparison, all trained for REVERSAL.steps steps.
SEED_MODELS = (None, "bahdanau", "luong-dot", "luong-general", "luong-concat")


def sweep_run(
    attention: str | None,
    hidden_size: int,
    steps: int,
    seed: int,
    data: tuple[list[Example], list[Example], Tokenizer],
) -> dict:
    """Train one model of a sweep and return its stored record.

    Args:
        attention: ``None`` or one of chapter 2's attention kinds.
        hidden_size: ``H``, the decoder state and context size.
        steps: optimizer steps (batches of ``REVERSAL.batch_size``).
        seed: initial weights and batch order (the data stay ``data``).
        data: ``reversal_data(REVERSAL)``.

    Returns:
        a JSON-ready dict: model, hidden, steps, seed, params, cpu_seconds, final_loss
        (the mean of the last ten logged training losses) and per held-out length (in the
        order of ``lengths``) ``exact_match`` and ``char_accuracy``.
    """
    setup = dataclasses.replace(REVERSAL, steps=steps, seed=seed)
    run = run_reversal(attention, setup, data=data, hidden_size=hidden_size)
    losses = run.history.to_frame().dropna(subset=["loss"]).loss
    acc = run.accuracy
    return {
        "model": model_label(attention),
        "hidden": hidden_size,
        "steps": steps,
        "seed": seed,
        "params": sum(p.numel() for p in run.model.parameters()),
        "cpu_seconds": round(run.cpu_seconds, 1),
        "final_loss": round(float(losses.iloc[-10:].mean()), 4),
        "lengths": [int(v) for v in acc.length],
        "exact_match": [round(float(v), 4) for v in acc.exact_match],
        "char_accuracy": [round(float(v), 4) for v in acc.char_accuracy],
    }


def runs_frame(runs: Sequence[dict]) -> pd.DataFrame:
    """Stored run records as one row per run and held-out length.

    Returns:
        columns model, hidden, steps, seed, length, exact_match, char_accuracy,
        trained_length (the length was in REVERSAL's training range).
    """
    rows = []
    for r in runs:
        for length, em, ca in zip(r["lengths"], r["exact_match"], r["char_accuracy"]):
            rows.append(
                {
                    "model": r["model"],
                    "hidden": r["hidden"],
                    "steps": r["steps"],
                    "seed": r["seed"],
                    "length": length,
                    "exact_match": em,
                    "char_accuracy": ca,
                }
            )
    df = pd.DataFrame(rows)
    lo, hi = REVERSAL.train_lengths
    df["trained_length"] = df.length.between(lo, hi)
    return df


def load_capacity(path=CAPACITY_PATH) -> tuple[pd.DataFrame, dict]:
    """Chapter 1's capacity sweep: ``(runs_frame(...), the stored blob)``."""
    blob = read_results(path, SCRIPT, format="reversal-capacity")
    return runs_frame(blob["runs"]), blob


def load_attention_seeds(path=ATTENTION_SEEDS_PATH) -> tuple[pd.DataFrame, dict]:
    """Chapter 2's equal-budget comparison: ``(runs_frame(...), the stored blob)``."""
    blob = read_results(path, SCRIPT, format="reversal-attention-seeds")
    return runs_frame(blob["runs"]), blob


def seed_spread(df: pd.DataFrame, by: Sequence[str], value: str = "exact_match") -> pd.DataFrame:
    """Mean, minimum and maximum of ``value`` over the seeds, per ``by`` group and length.

    Args:
        df: a :func:`runs_frame`.
        by: the columns that name a configuration, e.g. ``["model"]`` or ``["hidden", "steps"]``.
        value: the measure, ``"exact_match"`` or ``"char_accuracy"``.

    Returns:
        columns ``*by``, length, mean, min, max, seeds (how many seeds).
    """
    g = df.groupby([*by, "length"])[value]
    out = g.agg(["mean", "min", "max", "count"]).reset_index().rename(columns={"count": "seeds"})
    for col in ("mean", "min", "max"):
        out[col] = out[col].round(4)
    return out


def mean_over_lengths(df: pd.DataFrame, by: Sequence[str], lengths: tuple[int, int]) -> pd.DataFrame:
    """Each run's mean exact match over the inclusive length range ``lengths``, per ``by`` group.

    Returns:
        one row per ``*by`` and seed, with column ``exact_match`` (the run's mean).
    """
    lo, hi = lengths
    part = df[df.length.between(lo, hi)]
    return part.groupby([*by, "seed"]).exact_match.mean().reset_index()


def reach(lengths: Sequence[int], exact_match: Sequence[float], threshold: float = 0.5) -> int:
    """The longest length ``L`` such that exact match is at least ``threshold`` at every length up to ``L``.

    Args:
        lengths: increasing lengths, the first the shortest held-out one.
        exact_match: the exact match at each length.
        threshold: the share of strings that must come out right.

    Returns:
        ``L``, or ``lengths[0] - 1`` when even the shortest length misses the threshold.
    """
    best = lengths[0] - 1
    for length, em in zip(lengths, exact_match):
        if em < threshold:
            break
        best = length
    return best


def run_table(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """One row per configuration ``by`` and seed: the numbers the chapters quote.

    Args:
        df: a :func:`runs_frame`.
        by: the configuration columns, e.g. ``["hidden", "steps"]`` or ``["model"]``.

    Returns:
        columns ``*by``, seed, ``em_trained`` (mean exact match over the trained lengths),
        ``em_longer`` (over the unseen longer lengths), ``digits_long`` (mean digit accuracy
        over the last ten trained lengths) and ``reach`` (:func:`reach` at 0.5).
    """
    lo, hi = REVERSAL.train_lengths
    rows = []
    for key, run in df.sort_values("length").groupby([*by, "seed"]):
        seen = run[run.trained_length]
        rows.append(
            {
                **dict(zip([*by, "seed"], key)),
                "em_trained": seen.exact_match.mean(),
                "em_longer": run[run.length > hi].exact_match.mean(),
                "digits_long": run[run.length.between(hi - 9, hi)].char_accuracy.mean(),
                "reach": reach(list(run.length), list(run.exact_match)),
            }
        )
    return pd.DataFrame(rows)
