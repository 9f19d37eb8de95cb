"""Store chapters 1-2's controlled digit-reversal experiments, three seeds each.

    python scripts/reversal_sweeps.py capacity    # -> minitransformer/book/results/reversal_capacity.json
    python scripts/reversal_sweeps.py attention   # -> minitransformer/book/results/reversal_attention_seeds.json

``capacity`` (chapter 1): the GRU encoder-decoder without attention with hidden sizes
32, 64 and 128 crossed with 300, 600 and 1200 training steps, seeds 0, 1, 2 (27 runs).
``attention`` (chapter 2): no attention, Bahdanau, Luong dot, general and concat, each
600 steps of 128 strings (REVERSAL's budget), seeds 0, 1, 2 (15 runs). The recipe is
chapters 1-2's (:data:`minitransformer.book.seq2seq_experiments.REVERSAL`: the same data for
every run, Adam at peak 1e-2, warm-up and cosine decay over the run's steps, clipping at 1);
a seed sets the initial weights and the batch order. See
:mod:`minitransformer.book.reversal_sweeps`.

The results are written after every run; ``--resume`` skips the runs a file already
holds, and ``--hidden`` / ``--models`` pick a part, so the work can be split between two
processes and joined with ``--merge A.json B.json``. The stored files were made that way on
a 2-core machine shared with other jobs, one thread per process (``torch.set_num_threads(1)``),
``OMP_WAIT_POLICY=PASSIVE MKL_CBWR=AUTO,STRICT``: capacity about 12 CPU minutes, attention
about 8 (each run's CPU seconds are stored with it). The capacity runs with H = 64 and 600
steps are the same call as the attention part's "no attention" runs (``sweep_run(None, 64, 600,
seed, data)``), so they were copied from its file into the ``--resume`` files instead of being
trained twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.book.reversal_sweeps import (  # noqa: E402
    ATTENTION_SEEDS_PATH,
    CAPACITY_HIDDEN,
    CAPACITY_PATH,
    CAPACITY_STEPS,
    SEED_MODELS,
    SEEDS,
    sweep_run,
)
from minitransformer.book.seq2seq_experiments import REVERSAL, model_label, reversal_data  # noqa: E402
from minitransformer.book.stored import run_info, write_results  # noqa: E402

FORMATS = {"capacity": "reversal-capacity", "attention": "reversal-attention-seeds"}
PATHS = {"capacity": CAPACITY_PATH, "attention": ATTENTION_SEEDS_PATH}


def _key(r: dict) -> tuple:
    return (r["model"], r["hidden"], r["steps"], r["seed"])


def plan(part: str, hidden: list[int], models: list[str | None], seeds: list[int]) -> list[tuple]:
    """The runs of ``part`` as (attention, hidden, steps, seed), cheapest budgets first."""
    if part == "capacity":
        return [(None, h, s, seed) for seed in seeds for s in CAPACITY_STEPS for h in hidden]
    return [(kind, REVERSAL_HIDDEN, REVERSAL.steps, seed) for seed in seeds for kind in models]


REVERSAL_HIDDEN = 64  # the "small" preset's hidden size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=sorted(FORMATS))
    p.add_argument("--out", default=None, help="output JSON (default: the chapter's results file)")
    p.add_argument("--hidden", default=",".join(map(str, CAPACITY_HIDDEN)), help="capacity: hidden sizes")
    p.add_argument(
        "--models",
        default=",".join("none" if k is None else k for k in SEED_MODELS),
        help="attention: comma-separated kinds ('none' = no attention)",
    )
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--resume", action="store_true", help="keep the runs already in --out and skip them")
    p.add_argument("--merge", nargs="+", default=None, help="join these files' runs into --out and stop")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out) if args.out else PATHS[args.part]
    blob = {"format": FORMATS[args.part], "setup": dataclass_dict(), **run_info("scripts/reversal_sweeps.py", argv)}
    if args.merge:
        runs = {}
        for f in args.merge:
            for r in json.loads(Path(f).read_text())["runs"]:
                runs[_key(r)] = r
        blob["runs"] = sorted(runs.values(), key=_key)
        write_results(out, blob)
        print(f"merged {len(runs)} runs into {out}")
        return 0
    runs = {}
    if args.resume and out.is_file():
        runs = {_key(r): r for r in json.loads(out.read_text())["runs"]}
    hidden = [int(h) for h in args.hidden.split(",")]
    models = [None if k.strip() == "none" else k.strip() for k in args.models.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    data = reversal_data(REVERSAL)
    for kind, h, steps, seed in plan(args.part, hidden, models, seeds):
        if (model_label(kind), h, steps, seed) in runs:
            continue  # --resume: stored already
        r = sweep_run(kind, h, steps, seed, data)
        runs[_key(r)] = r
        blob["runs"] = sorted(runs.values(), key=_key)
        write_results(out, blob)
        em = r["exact_match"]
        print(
            f"{r['model']:<20} H={h:<4} steps={steps:<5} seed={seed}: {r['cpu_seconds']:6.1f} CPU s, "
            f"loss {r['final_loss']:.3f}, exact match at 10/20/30: {em[5]:.2f} {em[15]:.2f} {em[25]:.2f}",
            flush=True,
        )
    print(f"wrote {out}")
    return 0


def dataclass_dict() -> dict:
    """REVERSAL's data setup as JSON types (steps and seed vary per run)."""
    from minitransformer.book.encdec_experiments import reversal_setup_dict

    return reversal_setup_dict(REVERSAL)


if __name__ == "__main__":
    sys.exit(main())
