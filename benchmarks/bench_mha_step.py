"""Time training steps of a small character GPT: our attention against ``F.scaled_dot_product_attention``.

The two models are identical (same seed, same weights, same batches) except
for the attention backend of every block: ``"minitransformer"`` (our
:func:`scaled_dot_product_attention`) and ``"torch"``. A step is forward,
backward and an AdamW update. The timing is interleaved: the variants take
turns in chunks of ``--chunk`` steps, in the order A B, B A, A B, ..., so that
load from other processes on a shared machine hits all of them about equally;
the report is the median over rounds of each variant's chunk time divided by
the torch chunk time of the same round, the total-time ratio, and the ratio of
the fastest chunks (the least disturbed by other processes).

``--old PATH`` adds a third variant: the same model whose attention modules run
the ``MultiHeadAttention`` class of another ``multihead.py`` (e.g. the
committed one, ``git show HEAD:minitransformer/multihead.py > /tmp/old_multihead.py``),
to compare a change of the attention code with the code before it.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_mha_step.py --threads 2
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_mha_step.py --threads 2 --old /tmp/old_multihead.py
    python benchmarks/bench_mha_step.py --dry-run         # a smoke test (a few steps)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer import GPT, GPTConfig  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, default=12, help="sequences per step (default 12)")
    p.add_argument("--block", type=int, default=64, help="context length (default 64, GPTConfig.CHAR_CPU)")
    p.add_argument("--chunk", type=int, default=20, help="steps per timing chunk (default 20)")
    p.add_argument("--rounds", type=int, default=12, help="timing rounds, one chunk per variant each (default 12)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument(
        "--old",
        default=None,
        metavar="PATH",
        help="a multihead.py whose MultiHeadAttention is timed as a third variant, 'old'",
    )
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--dry-run", action="store_true", help="2 rounds of 2 steps")
    return p.parse_args(argv)


def load_old_attention(path: str) -> type:
    """The ``MultiHeadAttention`` class of another ``multihead.py``, imported inside the package."""
    spec = importlib.util.spec_from_file_location("minitransformer._bench_old_multihead", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.MultiHeadAttention


class Trainer:
    """One model, its optimizer and a fixed stream of random character batches."""

    def __init__(self, model: GPT, batch: int, block: int, vocab: int, seed: int = 0):
        self.model = model.train()
        self.opt = model.configure_optimizers(lr=1e-3)
        g = torch.Generator().manual_seed(seed)
        data = torch.randint(vocab, (64, batch, block + 1), generator=g)  # 64 batches, reused in turn
        self.batches = [(d[:, :-1].contiguous(), d[:, 1:].contiguous()) for d in data]
        self.i = 0

    def steps(self, n: int) -> float:
        """Run ``n`` training steps; return the seconds they took."""
        t0 = time.perf_counter()
        for _ in range(n):
            x, y = self.batches[self.i % len(self.batches)]
            self.i += 1
            _, loss = self.model(x, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        args.rounds, args.chunk = 2, 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = dataclasses.replace(GPTConfig.CHAR_CPU, block_size=max(args.block, GPTConfig.CHAR_CPU.block_size))
    torch.manual_seed(1337)
    base = GPT.from_config(config)
    models = {}
    for name, backend in (("minitransformer", "minitransformer"), ("torch", "torch")):
        models[name] = copy.deepcopy(base)
        models[name].attn_backend = backend
    if args.old:
        old_cls = load_old_attention(args.old)
        models["old"] = copy.deepcopy(base)
        for block in models["old"].blocks:
            block.self_attn.__class__ = old_cls  # same parameters and attributes, the old forward
    trainers = {name: Trainer(m, args.batch, args.block, config.vocab_size) for name, m in models.items()}
    names = list(trainers)
    print(
        f"GPT {config.n_layer}x{config.n_head}x{config.d_model}, {base.num_parameters():,} parameters; "
        f"batch {args.batch}, block {args.block}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; variants {names}",
        flush=True,
    )

    for t in trainers.values():
        t.steps(3)  # warm-up, untimed
    chunks: dict[str, list[float]] = {n: [] for n in names}
    order = list(names)
    for r in range(args.rounds):
        for n in order:
            chunks[n].append(trainers[n].steps(args.chunk))
        order.reverse()  # A B C, C B A, ...: drift hits every variant alike
        print(
            f"round {r + 1:>3}/{args.rounds}: "
            + "  ".join(f"{n} {1e3 * chunks[n][-1] / args.chunk:.1f} ms/step" for n in names),
            flush=True,
        )

    report = {
        "batch": args.batch,
        "block": args.block,
        "chunk": args.chunk,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "old": args.old,
        "ms_per_step": {n: [1e3 * c / args.chunk for c in chunks[n]] for n in names},
        "ratios": {},
    }
    for n in names:
        if n == "torch":
            continue
        per_round = [a / b for a, b in zip(chunks[n], chunks["torch"])]
        q = statistics.quantiles(per_round, n=4) if len(per_round) >= 2 else [per_round[0]] * 3
        report["ratios"][n] = {
            "median": statistics.median(per_round),
            "q1": q[0],
            "q3": q[2],
            "total": sum(chunks[n]) / sum(chunks["torch"]),
            "fastest": min(chunks[n]) / min(chunks["torch"]),
        }
        print(
            f"{n:>16} / torch: median {report['ratios'][n]['median']:.3f} "
            f"(quartiles {q[0]:.3f}-{q[2]:.3f}), total {report['ratios'][n]['total']:.3f}, "
            f"fastest chunks {report['ratios'][n]['fastest']:.3f}"
        )
    if "old" in names:
        per_round = [a / b for a, b in zip(chunks["minitransformer"], chunks["old"])]
        fastest = min(chunks["minitransformer"]) / min(chunks["old"])
        report["ratios"]["minitransformer/old"] = {"median": statistics.median(per_round), "fastest": fastest}
        print(f"minitransformer / old: median {statistics.median(per_round):.3f}, fastest chunks {fastest:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
