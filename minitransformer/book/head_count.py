"""Chapter 4's controlled experiment: one wide head against several narrow heads.

The chapter's motivation for multi-head attention is that one softmax must split
its weight between everything a query needs, while ``h`` heads of width
``d_model / h`` can each look somewhere else at the same cost. This module tests
that claim on the chapter's induction task (:func:`~minitransformer.book.heads.repeated_sequences`)
with :class:`~minitransformer.book.heads.AttentionOnlyTransformer` models that differ
ONLY in the number of heads per layer: the same ``d_model`` (so exactly the same
number of parameters, ``4 d_model^2 + 4 d_model`` per attention layer whatever ``h``
is), the same training steps, batches, learning rate and seeds.
"""

from __future__ import annotations

import pandas as pd
import torch

from .heads import AttentionOnlyTransformer, evaluate, repeated_sequences, train_induction_model

__all__ = ["head_count_experiment", "head_count_summary"]


def head_count_experiment(
    head_counts=(1, 4, 16),
    seeds=(0, 1, 2),
    steps: int = 400,
    d_model: int = 64,
    n_layer: int = 2,
    batch_size: int = 32,
    lr: float = 3e-3,
    test_size: int = 512,
    test_seed: int = 1234,
    **task,
) -> pd.DataFrame:
    """Train one model per head count and seed; score each on one held-out set.

    The weights come from ``torch.manual_seed(seed)``, the batches from a generator
    seeded with ``seed`` (:func:`~minitransformer.book.heads.train_induction_model`), so
    every head count sees the same batches for a given seed.

    Args:
        head_counts: numbers of heads per layer to compare (each must divide ``d_model``).
        seeds: one training run per seed and head count.
        steps, batch_size, lr: the training run (the same for every model).
        d_model, n_layer: the width and depth (the same for every model).
        test_size, test_seed: the held-out sequences.
        task: keyword arguments of :func:`~minitransformer.book.heads.repeated_sequences`.

    Returns:
        a DataFrame with one row per run: ``heads``, ``head_dim``, ``seed``, ``parameters``,
        ``loss`` and ``accuracy`` on the held-out set, ``final_train_loss`` (the mean of the
        last 25 steps; NaN for a run shorter than that).
    """
    vocab, block = task.get("vocab_size", 24), task.get("seq_len", 32)
    test_idx, test_targets = repeated_sequences(test_size, **task, generator=torch.Generator().manual_seed(test_seed))
    rows = []
    for heads in head_counts:
        if d_model % heads != 0:
            raise ValueError(f"head_count_experiment: d_model={d_model} is not divisible by heads={heads}")
        for seed in seeds:
            torch.manual_seed(seed)
            model = AttentionOnlyTransformer(vocab, block, n_layer=n_layer, n_head=heads, d_model=d_model)
            curve = train_induction_model(model, steps=steps, batch_size=batch_size, lr=lr, seed=seed, **task)
            result = evaluate(model, test_idx, test_targets)
            rows.append(
                {
                    "heads": heads,
                    "head_dim": d_model // heads,
                    "seed": seed,
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "loss": result["loss"],
                    "accuracy": result["accuracy"],
                    "final_train_loss": float(curve["loss"].iloc[-1]) if len(curve) else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def head_count_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per head count: mean, min and max of the held-out accuracy and loss over the seeds.

    Args:
        runs: the table of :func:`head_count_experiment`.

    Returns:
        one row per ``heads`` with ``seeds``, ``accuracy_mean``, ``accuracy_min``,
        ``accuracy_max``, ``loss_mean``, ``loss_min``, ``loss_max``.
    """
    g = runs.groupby("heads")
    out = pd.DataFrame({"seeds": g.size()})
    for col in ("accuracy", "loss"):
        out[f"{col}_mean"] = g[col].mean()
        out[f"{col}_min"] = g[col].min()
        out[f"{col}_max"] = g[col].max()
    return out.reset_index()
