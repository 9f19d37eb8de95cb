"""Run chapter 6's RMSNorm / SwiGLU experiment and store its results for the chapter.

    python scripts/block_variants.py                # -> minitransformer/book/results/block_variants.json
    python scripts/block_variants.py --iters 20 --seeds 0 --eval-every 10 --out /tmp/bv.json   # a smoke test
    python scripts/block_variants.py --dry-run      # print the settings and parameter counts, train nothing

Four variants of chapter 7's character GPT (LayerNorm or RMSNorm, GELU or SwiGLU
with the same FFN parameter count), each trained with every seed on the same
batches with the same recipe: :func:`minitransformer.book.block_variants.run_block_variants`.
The chapter reads the file with :func:`~minitransformer.book.block_variants.stored_block_variants`;
a test checks that it holds every variant and seed and the settings. The full run
(400 iterations x 3 seeds x 4 variants) takes about 8-10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

# the chapters' arithmetic (see minitransformer.book.notebook.setup), and OpenMP threads that
# sleep rather than spin on a shared machine; both before torch is imported
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.book.block_variants import (  # noqa: E402
    BASELINE,
    EVAL_SEED,
    RESULTS_PATH,
    VARIANTS,
    parameter_table,
    results_blob,
    run_block_variants,
    summarize,
    variant_config,
)
from minitransformer.book.char_lm import CharLMRecipe, shakespeare_data  # noqa: E402
from minitransformer.book.stored import run_info, write_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=400, help="training iterations per run (default 400)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--eval-every", type=int, default=100, help="evaluate every this many iterations (default 100)")
    p.add_argument("--eval-batches", type=int, default=50, help="fixed batches per evaluation and split (default 50)")
    p.add_argument("--out", default=str(RESULTS_PATH), help=f"where to write (default {RESULTS_PATH})")
    p.add_argument("--dry-run", action="store_true", help="print the settings and parameter counts only")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    base = CharLMRecipe.CPU
    recipe = base.replace(max_iters=args.iters, warmup_iters=min(base.warmup_iters, args.iters // 5))
    params = parameter_table(recipe.model)
    print(f"recipe: {recipe.describe()}, warmup {recipe.warmup_iters}, lr {recipe.lr} -> {recipe.min_lr}")
    print(f"seeds {seeds}; threads {torch.get_num_threads()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(params.to_string())
    if args.dry_run:
        return 0

    data = shakespeare_data(recipe.train_frac)
    start = time.perf_counter()
    frame = run_block_variants(
        args.iters,
        seeds,
        recipe=recipe,
        data=data,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        progress=True,
    )
    seconds = time.perf_counter() - start
    settings = {
        "iterations": args.iters,
        "seeds": seeds,
        "variants": {name: {"norm": n, "activation": a} for name, (n, a) in VARIANTS.items()},
        "baseline": BASELINE,
        "eval_every": args.eval_every,
        "eval_batches": args.eval_batches,
        "eval_seed": EVAL_SEED,
        "recipe": {k: v for k, v in dataclasses.asdict(recipe).items() if k not in ("model", "seed")},
        "models": {name: dataclasses.asdict(variant_config(name, recipe.model)) for name in VARIANTS},
        "parameters": params.reset_index().to_dict(orient="records"),
        "corpus": {"train_chars": len(data.train), "val_chars": len(data.val), "vocab": len(data.tokenizer)},
        "wall_seconds": round(seconds, 1),
        **run_info("scripts/block_variants.py", argv),
    }
    out = write_results(args.out, results_blob(frame, settings))
    print(summarize(frame).round(4).to_string())
    print(f"wrote {out} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
