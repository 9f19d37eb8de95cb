"""Train chapter 7's Lab 1 encoder-decoder transformer on digit reversal and save it as package data.

    # the recipe (6000 steps, ~9 CPU min) -> minitransformer/book/checkpoints/reversal_transformer.pt
    python scripts/train_reversal_transformer.py --threads 1
    # a variant (--set FIELD=VALUE, repeatable)
    python scripts/train_reversal_transformer.py --set lr=0.003 --steps 2000
    # a smoke test
    python scripts/train_reversal_transformer.py --steps 20 --out /tmp/x.pt

The training function is :func:`minitransformer.book.encdec_experiments.run_transformer_reversal`
with the default :class:`~minitransformer.book.encdec_experiments.ReversalTransformerSetup`,
on chapters 1-2's data (``REVERSAL``) — the function and data the notebook's short run
uses. The weights are stored in float16; the per-length accuracy kept in the file is
measured on the stored weights after loading them back (whole held-out set).
Chapter 7 loads the result with ``load_reversal_transformer()``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.book.encdec_experiments import (  # noqa: E402
    CHECKPOINT_PATH,
    ReversalTransformerSetup,
    run_transformer_reversal,
    save_reversal_transformer,
)
from minitransformer.book.seq2seq_experiments import REVERSAL, reversal_data  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="override the recipe's steps (the schedule follows)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a ReversalTransformerSetup field, e.g. --set lr=0.001 (repeatable)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", default=str(CHECKPOINT_PATH), help=f"where to save (default {CHECKPOINT_PATH})")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    setup = ReversalTransformerSetup()
    fields = {f.name: f.type for f in dataclasses.fields(setup)}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in fields:
            p.error(f"--set: unknown field {name!r}; fields: {', '.join(fields)}")
        kind = type(getattr(setup, name))
        setup = dataclasses.replace(setup, **{name: value.lower() in ("1", "true") if kind is bool else kind(value)})
    if args.steps is not None:
        setup = dataclasses.replace(setup, steps=args.steps, warmup=min(setup.warmup, args.steps))
    data = reversal_data(REVERSAL)
    run = run_transformer_reversal(setup, REVERSAL, data=data, progress=not args.no_progress)
    command = "python scripts/train_reversal_transformer.py " + " ".join(sys.argv[1:] if argv is None else argv)
    acc = save_reversal_transformer(run, args.out, data=data, command=command.strip())
    seen, longer = acc[acc.trained_length], acc[~acc.trained_length]
    size = Path(args.out).stat().st_size / 1024
    print(
        f"{setup}\n{run.model.num_parameters():,} parameters, {setup.steps} steps in {run.cpu_seconds:.0f} CPU s "
        f"({run.wall_seconds:.0f} s wall, {torch.get_num_threads()} threads)"
    )
    print(
        f"saved {args.out} ({size:.0f} KiB); stored weights: exact match {seen.exact_match.mean():.3f} on the "
        f"trained lengths (lowest {seen.exact_match.min():.2f}), {longer.exact_match.mean():.3f} on longer strings"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
