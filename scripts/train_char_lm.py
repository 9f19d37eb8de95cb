"""Train the book's character-level GPT and save it as package data.

    python scripts/train_char_lm.py                    # the CPU recipe (2000 iterations)
                                                       #   -> minitransformer/book/checkpoints/char_lm.pt
    python scripts/train_char_lm.py --preset gpu       # the GPU recipe (6 x 384, context 256, 5000 iterations)
    python scripts/train_char_lm.py --iters 5 --eval-batches 2 --out /tmp/x.pt   # a smoke test

Chapter 7 loads the result with ``minitransformer.load_char_lm()``. The
training function is :func:`minitransformer.book.char_lm.train_char_lm`, the one
the notebook and ``benchmarks/bench_char_lm.py`` use. The weights are stored
in float16 (half the file); the validation loss recorded in the checkpoint is
measured on the stored weights after loading them back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.book.char_lm import (  # noqa: E402
    CHECKPOINT_PATH,
    CharLMRecipe,
    save_trained_char_lm,
    shakespeare_data,
    train_char_lm,
)

PRESETS = {"cpu": CharLMRecipe.CPU, "gpu": CharLMRecipe.GPU}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu",
        help="; ".join(f"{name}: {recipe.describe()}" for name, recipe in PRESETS.items()),
    )
    p.add_argument("--iters", type=int, default=None, help="override the preset's iterations (the schedule follows)")
    p.add_argument("--eval-batches", type=int, default=200, help="batches per evaluation (default 200)")
    p.add_argument("--eval-every", type=int, default=500, help="evaluate every this many iterations (default 500)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--out", default=str(CHECKPOINT_PATH), help=f"where to save (default {CHECKPOINT_PATH})")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    recipe = PRESETS[args.preset]
    if args.iters is not None:
        recipe = recipe.replace(max_iters=args.iters, warmup_iters=min(recipe.warmup_iters, args.iters))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = shakespeare_data(recipe.train_frac)
    run = train_char_lm(
        recipe,
        data=data,
        device=device,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        progress=not args.no_progress,
    )
    for r in run.history:
        if "val_loss" in r:
            print(f"iter {r['step']:>5}: train loss {r['train_loss']:.4f}  val loss {r['val_loss']:.4f}")
    command = "python scripts/train_char_lm.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = save_trained_char_lm(
        run.model, data, recipe, run.history, run.seconds, args.out, args.eval_batches, command=command
    )
    size = Path(args.out).stat().st_size / 2**20
    print(
        f"saved {args.out} ({size:.2f} MiB) after {recipe.max_iters} iterations in {run.seconds:.0f} s; "
        f"stored weights: val loss {info['val_loss']:.4f}, train loss {info['train_loss']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
