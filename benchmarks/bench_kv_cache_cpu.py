"""KV-cache generation against recomputation, on the CPU (issue 3's benchmark).

A 4-layer character GPT (d_model 128, 4 heads, 65-character vocabulary,
context 512) generates up to 384 tokens greedily from a one-token prompt,
once with ``use_cache=True`` and once with ``use_cache=False``. The two are
timed side by side: repeats alternate between the two paths, so load from
anything else on the machine hits both alike, and the ratio (recompute ÷
cached) is what is reported, with the median of the repeats. Identical tokens
are asserted for every length.

    python benchmarks/bench_kv_cache_cpu.py                       # the full curve (about a minute)
    python benchmarks/bench_kv_cache_cpu.py --lengths 8 16 --repeats 1   # a quick check
    python benchmarks/bench_kv_cache_cpu.py --out kv_cpu.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.gpt import GPT  # noqa: E402


def build_model(block_size: int = 512, seed: int = 0) -> GPT:
    """The character GPT of the benchmark (random weights: timing does not depend on them)."""
    torch.manual_seed(seed)
    return GPT(vocab_size=65, block_size=block_size, n_layer=4, n_head=4, d_model=128).eval()


def measure(model: GPT, new_tokens: int, repeats: int, prompt_len: int = 1) -> dict:
    """Median seconds of cached and recomputed generation of ``new_tokens``, alternating runs."""
    prompt = torch.zeros(1, prompt_len, dtype=torch.long)  # (1, T0)
    times: dict[bool, list[float]] = {True: [], False: []}
    tokens: dict[bool, torch.Tensor] = {}
    with torch.no_grad():
        model.generate(prompt, 4, temperature=0.0, use_cache=True)  # warm-up
        model.generate(prompt, 4, temperature=0.0, use_cache=False)
        for _ in range(repeats):
            for use_cache in (True, False):
                t0 = time.perf_counter()
                tokens[use_cache] = model.generate(prompt, new_tokens, temperature=0.0, use_cache=use_cache)
                times[use_cache].append(time.perf_counter() - t0)
    same = bool(torch.equal(tokens[True], tokens[False]))
    if not same:
        raise AssertionError(f"cached and uncached generation differ at {new_tokens} new tokens")
    cached, recompute = statistics.median(times[True]), statistics.median(times[False])
    return dict(
        new_tokens=new_tokens,
        cached_s=cached,
        recompute_s=recompute,
        speedup=recompute / cached,
        cached_tokens_per_s=new_tokens / cached,
        same_tokens=same,
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=[32, 64, 128, 256, 384],
        help="numbers of generated tokens (the curve)",
    )
    p.add_argument("--repeats", type=int, default=5, help="alternating repeats per length (median)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--out", type=Path, help="write the measurements as JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(block_size=max(512, max(args.lengths) + 1))
    rows = []
    for n in args.lengths:
        row = measure(model, n, args.repeats)
        rows.append(row)
        print(
            f"{n:4d} new tokens: cached {row['cached_s']:.3f} s ({row['cached_tokens_per_s']:.0f} tok/s), "
            f"recompute {row['recompute_s']:.3f} s, speed-up x{row['speedup']:.2f}, same tokens",
            flush=True,
        )
    table = ["| new tokens | cached s | recompute s | speed-up |", "|---|---|---|---|"]
    table += [
        f"| {r['new_tokens']} | {r['cached_s']:.3f} | {r['recompute_s']:.3f} | {r['speedup']:.2f} |" for r in rows
    ]
    print("\n" + "\n".join(table))
    if args.out:
        env = dict(
            date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            torch=torch.__version__,
            machine=platform.machine(),
            processor=platform.processor(),
            threads=torch.get_num_threads(),
        )
        args.out.write_text(json.dumps(dict(environment=env, rows=rows, table="\n".join(table)), indent=1))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
