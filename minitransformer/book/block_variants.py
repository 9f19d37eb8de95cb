"""Chapter 6's controlled experiment: RMSNorm against LayerNorm, SwiGLU against the GELU FFN.

The model is chapter 7's character GPT (:attr:`GPTConfig.CHAR_CPU <minitransformer.GPTConfig>`:
4 Pre-LN blocks, 4 heads, ``d_model`` 128, context 64) on the Shakespeare corpus
(:func:`~minitransformer.book.char_lm.shakespeare_data`), trained by chapter 7's trainer
(:class:`~minitransformer.book.char_lm.CharLMTrainer`, itself a call to
:func:`~minitransformer.train.fit`). Four variants change one thing at a time
(:data:`VARIANTS`):

==================== ========= ==========================================
variant              norm      feed-forward network
==================== ========= ==========================================
LayerNorm + GELU     LayerNorm GELU, ``d_ff = 4 d`` (the baseline)
RMSNorm + GELU       RMSNorm   GELU, ``d_ff = 4 d``
LayerNorm + SwiGLU   LayerNorm SwiGLU, ``d_ff = glu_d_ff(d, 4 d)``
RMSNorm + SwiGLU     RMSNorm   SwiGLU, ``d_ff = glu_d_ff(d, 4 d)``
==================== ========= ==========================================

The SwiGLU hidden width is two thirds of the GELU one (:func:`~minitransformer.layers.glu_d_ff`,
rounded down, ``multiple_of=1``), so the FFNs have the same number of parameters up to that
rounding (:func:`ffn_parameter_counts`).

What is held equal: for a given seed every variant starts from ``torch.manual_seed(seed)``,
draws the SAME training batches (the trainer's batch generator is seeded by the seed, not by
the variant), and uses the same optimizer (AdamW), learning-rate schedule (warmup + cosine),
iterations and gradient clipping. Losses are measured by
:func:`~minitransformer.book.char_lm.estimate_loss` on the same fixed batches (generator seed
:data:`EVAL_SEED`) for every variant and seed. The four trainers of a seed advance in turns,
``eval_every`` iterations each, so load from other processes on a shared machine hits them
alike; the time per step excludes the evaluations.

* :func:`run_block_variants` runs it and returns a tidy frame (one row per variant, seed and
  evaluation step);
* :func:`summarize` gives mean and standard deviation of the final validation loss per
  variant and the difference to the baseline in units of the seed spread;
* :func:`stored_block_variants` reads what ``scripts/block_variants.py`` stored in
  ``minitransformer/book/results/block_variants.json`` (the chapter loads that file; the
  full run takes minutes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch

from ..configs import GPTConfig
from ..data import CharLMData
from ..gpt import GPT
from ..layers import glu_d_ff
from ..validation import check_positive_int
from .char_lm import CharLMRecipe, CharLMTrainer, shakespeare_data
from .stored import RESULTS_DIR, read_results

__all__ = [
    "VARIANTS",
    "BASELINE",
    "EVAL_SEED",
    "RESULTS_PATH",
    "variant_config",
    "variant_recipe",
    "ffn_parameter_counts",
    "parameter_table",
    "run_block_variants",
    "summarize",
    "StoredBlockVariants",
    "stored_block_variants",
    "results_blob",
]

#: The four variants: ``name -> (norm, activation)``; the first is the baseline.
VARIANTS: dict[str, tuple[str, str]] = {
    "LayerNorm + GELU": ("layer", "gelu"),
    "RMSNorm + GELU": ("rms", "gelu"),
    "LayerNorm + SwiGLU": ("layer", "swiglu"),
    "RMSNorm + SwiGLU": ("rms", "swiglu"),
}
BASELINE = "LayerNorm + GELU"
#: Seed of the generator that draws the fixed evaluation batches (the same for every run).
EVAL_SEED = 0
#: Where ``scripts/block_variants.py`` stores the experiment.
RESULTS_PATH = RESULTS_DIR / "block_variants.json"
_FORMAT = "minitransformer.block_variants/1"


def _check_variant(variant: str) -> tuple[str, str]:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not one of {tuple(VARIANTS)}")
    return VARIANTS[variant]


def variant_config(variant: str, base: GPTConfig = GPTConfig.CHAR_CPU) -> GPTConfig:
    """``base`` with the variant's norm and FFN (SwiGLU: ``d_ff = glu_d_ff(d, d_ff)``).

    ``d_ff`` of the GELU FFN is ``base.d_ff`` (``4 * d_model`` when ``None``); the gated
    FFN's hidden width is two thirds of it, so both FFNs have (almost) the same
    parameters.
    """
    norm, activation = _check_variant(variant)
    d_ff = 4 * base.d_model if base.d_ff is None else base.d_ff
    if activation == "swiglu":
        d_ff = glu_d_ff(base.d_model, d_ff)
    return dataclasses.replace(base, norm=norm, activation=activation, d_ff=d_ff)


def variant_recipe(variant: str, recipe: CharLMRecipe, seed: int) -> CharLMRecipe:
    """The training recipe of one run: ``recipe`` with the variant's model and ``seed``."""
    return dataclasses.replace(recipe, model=variant_config(variant, recipe.model), seed=seed)


def ffn_parameter_counts(base: GPTConfig = GPTConfig.CHAR_CPU) -> dict[str, int]:
    """Parameters of ONE block's FFN per variant (counted on the modules, on the meta device)."""
    counts = {}
    for variant in VARIANTS:
        with torch.device("meta"):
            model = GPT.from_config(variant_config(variant, base))
        counts[variant] = sum(p.numel() for p in model.blocks[0].ffn.parameters())
    return counts


def parameter_table(base: GPTConfig = GPTConfig.CHAR_CPU) -> pd.DataFrame:
    """Per variant: FFN hidden width, FFN parameters per block, all norm parameters, total parameters."""
    rows = []
    for variant in VARIANTS:
        config = variant_config(variant, base)
        with torch.device("meta"):
            model = GPT.from_config(config)
        norms = [m for name, m in model.named_modules() if name.endswith(("norm1", "norm2")) or name == "ln_f"]
        rows.append(
            {
                "variant": variant,
                "d_ff": config.d_ff,
                "ffn params / block": sum(p.numel() for p in model.blocks[0].ffn.parameters()),
                "norm params": sum(p.numel() for m in norms for p in m.parameters()),
                "total params": model.num_parameters(),
            }
        )
    return pd.DataFrame(rows).set_index("variant")


def run_block_variants(
    iters: int = 500,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    variants: Sequence[str] = tuple(VARIANTS),
    recipe: CharLMRecipe | None = None,
    data: CharLMData | None = None,
    eval_every: int = 100,
    eval_batches: int = 50,
    progress: bool = False,
) -> pd.DataFrame:
    """Train every variant with every seed; one row per variant, seed and evaluation.

    Args:
        iters: training iterations of every run (the cosine schedule decays over them).
        seeds: seeds of the initial weights and of the training batches.
        variants: names from :data:`VARIANTS`.
        recipe: the training recipe (default :attr:`CharLMRecipe.CPU` with ``max_iters=iters``
            and ``warmup_iters=min(100, iters // 5)``); its ``model`` is the base config (use
            ``recipe.replace(d_model=32, n_layer=1, ...)`` for a tiny run); its ``seed`` is
            replaced by each of ``seeds``.
        data: the corpus (default :func:`~minitransformer.book.char_lm.shakespeare_data`).
        eval_every: evaluate every this many iterations (and at the end).
        eval_batches: fixed batches (generator seed :data:`EVAL_SEED`) per evaluation and split.
        progress: print a line per evaluation.

    Returns:
        a DataFrame with columns ``variant, seed, step, train_loss, val_loss, ms_per_step``:
        the losses (nats per character) on the fixed batches of each split at ``step``, and
        the mean wall time per training iteration since the previous evaluation.
    """
    check_positive_int("iters", iters, where="run_block_variants")
    check_positive_int("eval_every", eval_every, where="run_block_variants")
    check_positive_int("eval_batches", eval_batches, where="run_block_variants")
    for variant in variants:
        _check_variant(variant)
    if recipe is None:
        recipe = CharLMRecipe.CPU
    recipe = recipe.replace(max_iters=iters, warmup_iters=min(recipe.warmup_iters, iters // 5))
    data = shakespeare_data(recipe.train_frac) if data is None else data
    rows = []
    for seed in seeds:
        check_positive_int("seed", seed, minimum=0, where="run_block_variants")
        trainers = {v: CharLMTrainer(variant_recipe(v, recipe, seed), data, log_every=eval_every) for v in variants}
        for trainer in trainers.values():
            trainer.warm_up(1)  # first-call overheads, outside the timing; the trainer is untouched
        while not all(t.done for t in trainers.values()):
            for variant, trainer in trainers.items():  # in turns, so machine load hits all alike
                seconds = trainer.step(eval_every)
                n = (trainer.iteration - 1) % eval_every + 1  # iterations of this chunk
                row = trainer.evaluate(eval_batches, seed=EVAL_SEED)
                rows.append(
                    {
                        "variant": variant,
                        "seed": seed,
                        "step": trainer.iteration,
                        "train_loss": row["train_loss"],
                        "val_loss": row["val_loss"],
                        "ms_per_step": 1000 * seconds / n,
                    }
                )
                if progress:
                    print(
                        f"seed {seed} {variant:<20} step {trainer.iteration:>5}: train {row['train_loss']:.4f} "
                        f"val {row['val_loss']:.4f}  {1000 * seconds / n:.0f} ms/step",
                        flush=True,
                    )
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Final validation loss per variant across seeds, and the difference to ``baseline``.

    Columns: ``seeds``, ``mean``, ``std`` (over seeds, ``ddof=1``), ``min``, ``max``;
    ``delta`` (mean minus the baseline's mean; negative = lower loss than the baseline),
    ``delta_in_sd`` (``delta`` divided by the pooled seed standard deviation of the variant
    and the baseline), ``paired_delta_sd`` (standard deviation over seeds of the per-seed
    difference to the baseline, which shares each seed's batches), ``lower_in`` (in how many
    seeds the variant's loss is below the baseline's) and ``ms_per_step`` (median over runs
    of the mean time per iteration).
    """
    last = frame[frame.step == frame.groupby(["variant", "seed"]).step.transform("max")]
    final = last.pivot(index="seed", columns="variant", values="val_loss")  # (seeds, variants)
    order = [v for v in VARIANTS if v in final.columns] + [v for v in final.columns if v not in VARIANTS]
    if baseline not in final.columns:
        raise ValueError(f"baseline {baseline!r} is not among the variants {order}")
    speed = frame.groupby(["variant", "seed"]).ms_per_step.mean().groupby("variant").median()
    rows = []
    for variant in order:
        v, b = final[variant], final[baseline]
        sd, sd_b = v.std(ddof=1), b.std(ddof=1)
        pooled = math.sqrt((sd**2 + sd_b**2) / 2) if len(v) > 1 else float("nan")
        delta = v.mean() - b.mean()
        rows.append(
            {
                "variant": variant,
                "seeds": len(v),
                "mean": v.mean(),
                "std": sd,
                "min": v.min(),
                "max": v.max(),
                "delta": delta,
                "delta_in_sd": delta / pooled if pooled > 0 else float("nan"),
                "paired_delta_sd": (v - b).std(ddof=1),
                "lower_in": int((v < b).sum()),
                "ms_per_step": speed[variant],
            }
        )
    return pd.DataFrame(rows).set_index("variant")


class StoredBlockVariants(NamedTuple):
    """What :func:`stored_block_variants` returns."""

    frame: pd.DataFrame  # variant, seed, step, train_loss, val_loss, ms_per_step
    summary: pd.DataFrame  # summarize(frame)
    settings: dict  # iterations, seeds, recipe, model, torch, threads, date, ...


def stored_block_variants(path: str | Path | None = None) -> StoredBlockVariants:
    """Read the experiment that ``scripts/block_variants.py`` stored (default :data:`RESULTS_PATH`)."""
    blob = read_results(RESULTS_PATH if path is None else path, "scripts/block_variants.py", _FORMAT)
    frame = pd.DataFrame(blob["rows"])
    return StoredBlockVariants(frame, summarize(frame), blob["settings"])


def results_blob(frame: pd.DataFrame, settings: dict) -> dict:
    """The JSON document ``scripts/block_variants.py`` writes (rounded losses and timings)."""
    rows = frame.round({"train_loss": 5, "val_loss": 5, "ms_per_step": 2}).to_dict(orient="records")
    return {"format": _FORMAT, "settings": settings, "rows": rows}
