"""Benchmark the character-level GPT on Shakespeare: validation loss and training speed.

Trains the SAME model (same seed, same batches) twice, once with the package's
attention (``attn_backend="minitransformer"``) and once with
``F.scaled_dot_product_attention`` (``attn_backend="torch"``), and reports
each model's validation loss (``--eval-batches`` fixed batches of the held-out
10%), wall time and iterations per second, and the speed ratio.

The timing is interleaved: the two trainers take turns in chunks of
``--chunk`` iterations, in the order A B B A A B ..., so that load from other
processes on a shared machine hits both about equally. The ratio is reported
both as total time over total time and as the median of per-chunk-pair ratios.

    python benchmarks/bench_char_lm.py                        # the CPU recipe, 2000 iterations
    python benchmarks/bench_char_lm.py --preset gpu           # 6 x 384, context 256, 5000 iterations (GPU)
    python benchmarks/bench_char_lm.py --seed 2 --backends torch             # another seed, one model
    python benchmarks/bench_char_lm.py --iters 4 --eval-batches 2 --chunk 2   # a smoke test
    python benchmarks/bench_char_lm.py --dry-run              # the same smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.book.char_lm import (  # noqa: E402
    CharLMRecipe,
    CharLMTrainer,
    sample_text,
    save_trained_char_lm,
    shakespeare_data,
)

PRESETS = {"cpu": CharLMRecipe.CPU, "gpu": CharLMRecipe.GPU}
PUBLISHED = {"cpu": "about 1.88 (nanoGPT README, CPU run)", "gpu": "about 1.47 (nanoGPT README, A100)"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu",
        help="; ".join(f"{name}: {recipe.describe()}" for name, recipe in PRESETS.items()),
    )
    p.add_argument("--iters", type=int, default=None, help="override the preset's iterations (the schedule follows)")
    p.add_argument(
        "--seed", type=int, default=None, help="override the preset's seed (1337): initial weights and batches"
    )
    p.add_argument("--chunk", type=int, default=50, help="iterations per timing chunk (default 50)")
    p.add_argument("--eval-batches", type=int, default=200, help="batches per loss evaluation (default 200)")
    p.add_argument(
        "--backends",
        default="minitransformer,torch",
        help="comma-separated attention backends to train (default: minitransformer,torch)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument(
        "--save-checkpoint",
        default=None,
        metavar="PATH",
        help="also save the first backend's trained model with save_char_lm",
    )
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--dry-run", action="store_true", help="tiny run (4 iterations, 2 eval batches) on the CPU")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recipe = PRESETS[args.preset]
    if args.dry_run:
        args.iters, args.eval_batches, args.chunk, args.device = 4, 2, 2, "cpu"
    if args.iters is not None:
        recipe = recipe.replace(max_iters=args.iters, warmup_iters=min(recipe.warmup_iters, args.iters))
    if args.seed is not None:
        recipe = recipe.replace(seed=args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or args.chunk < 1:
        print("need at least one backend and --chunk >= 1", file=sys.stderr)
        return 2

    data = shakespeare_data(recipe.train_frac)
    trainers = {b: CharLMTrainer(recipe, data, attn_backend=b, device=device, log_every=args.chunk) for b in backends}
    print(f"preset {args.preset}: {dataclasses.asdict(recipe)}")
    print(
        f"corpus {len(data.train) + len(data.val):,} characters, vocabulary {len(data.tokenizer)}, "
        f"train {len(data.train):,} / val {len(data.val):,}; model {trainers[backends[0]].model.num_parameters():,} "
        f"parameters; device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )

    for t in trainers.values():
        t.warm_up()  # first-call overheads, on copies, untimed
    chunks: dict[str, list[float]] = {b: [] for b in backends}
    order = list(backends)
    while not all(t.done for t in trainers.values()):
        for b in order:
            chunks[b].append(trainers[b].step(args.chunk))
        order.reverse()  # A B, B A, A B, ...: drift hits both alike
        done = trainers[backends[0]].iteration
        line = "  ".join(f"{b} {trainers[b].last_loss:.3f} ({chunks[b][-1]:.1f} s)" for b in backends)
        print(f"iter {done:>5}/{recipe.max_iters}: loss {line}", flush=True)

    results = {}
    for b, t in trainers.items():
        final = t.evaluate(args.eval_batches)
        results[b] = {
            "val_loss": final["val_loss"],
            "train_loss": final["train_loss"],
            "wall_s": t.seconds,
            "it_per_s": t.iteration / t.seconds,
            "chunk_s": chunks[b],
            "loss_curve": [r for r in t.history if "loss" in r],
        }
        print(
            f"{b:>16}: val loss {final['val_loss']:.4f}  train loss {final['train_loss']:.4f}  "
            f"{t.seconds:.1f} s  {t.iteration / t.seconds:.2f} it/s",
            flush=True,
        )

    report = {
        "preset": args.preset,
        "recipe": dataclasses.asdict(recipe),
        "eval_batches": args.eval_batches,
        "chunk": args.chunk,
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "published_val_loss": PUBLISHED[args.preset],
        "dry_run": args.dry_run,
        "backends": results,
    }
    if len(backends) >= 2:
        a, b = backends[:2]
        report["time_ratio"] = results[a]["wall_s"] / results[b]["wall_s"]
        report["median_chunk_ratio"] = statistics.median(x / y for x, y in zip(chunks[a], chunks[b]))
        print(
            f"time per iteration, {a} / {b}: {report['time_ratio']:.3f} (total), "
            f"{report['median_chunk_ratio']:.3f} (median over {len(chunks[a])} chunk pairs)"
        )
    first = trainers[backends[0]]
    report["sample"] = sample_text(first.model, data.tokenizer, "\n", 300, temperature=0.8, top_k=None, seed=0)
    print("sample (temperature 0.8):", report["sample"][:300], sep="\n")
    if args.save_checkpoint:
        command = "python benchmarks/bench_char_lm.py " + " ".join(sys.argv[1:] if argv is None else argv)
        info = save_trained_char_lm(
            first.model,
            data,
            recipe,
            first.history,
            first.seconds,
            args.save_checkpoint,
            args.eval_batches,
            command=command,
            attn_backend=backends[0],
        )
        size = Path(args.save_checkpoint).stat().st_size / 2**20
        print(f"saved {args.save_checkpoint} ({size:.2f} MiB); stored weights: val loss {info['val_loss']:.4f}")
        report["checkpoint"] = {"path": args.save_checkpoint, "MiB": round(size, 2), "val_loss": info["val_loss"]}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
