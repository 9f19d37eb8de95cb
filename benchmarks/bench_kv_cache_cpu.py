"""KV-cache generation against recomputation, on the CPU (issue 3's benchmark).

A 4-layer character GPT (d_model 128, 4 heads, 65-character vocabulary,
context 512) generates up to 384 tokens greedily from a one-token prompt,
once with ``use_cache=True`` and once with ``use_cache=False``. The two are
timed side by side: repeats alternate between the two paths, so load from
anything else on the machine hits both alike, and the ratio (recompute ÷
cached) is what is reported, with the median of the repeats. Identical tokens
are asserted for every length.

What the timings depend on is printed and recorded beside them: torch's thread
count, the threads of the cached one-token steps (``GPT.generate`` runs a tiny
model's steps on one thread unless ``--decode-threads`` says otherwise),
``OMP_WAIT_POLICY`` and ``MKL_CBWR``, and the machine's load average
(``/proc/loadavg``) before and after each length.

    python benchmarks/bench_kv_cache_cpu.py                       # the full curve (about a minute)
    python benchmarks/bench_kv_cache_cpu.py --lengths 8 16 --repeats 1   # a quick check
    python benchmarks/bench_kv_cache_cpu.py --threads 1 --out kv_cpu1.json
    python benchmarks/bench_kv_cache_cpu.py --decode-threads 0    # steps on all threads (before 2026-12-04)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.gpt import GPT, torch_threads  # noqa: E402


def build_model(block_size: int = 512, seed: int = 0) -> GPT:
    """The character GPT of the benchmark (random weights: timing does not depend on them)."""
    torch.manual_seed(seed)
    return GPT(vocab_size=65, block_size=block_size, n_layer=4, n_head=4, d_model=128).eval()


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages (``/proc/loadavg``), or ``"n/a"`` where there is none."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(model: GPT, new_tokens: int, repeats: int, prompt_len: int = 1, decode_threads: int | None = None) -> dict:
    """Median seconds of cached and recomputed generation of ``new_tokens``, alternating runs.

    ``decode_threads`` is passed to ``GPT.generate`` (None: its own choice).
    """
    prompt = torch.zeros(1, prompt_len, dtype=torch.long)  # (1, T0)
    times: dict[bool, list[float]] = {True: [], False: []}
    tokens: dict[bool, torch.Tensor] = {}
    load_before = load_average()
    with torch.no_grad():
        model.generate(prompt, 4, temperature=0.0, use_cache=True, decode_threads=decode_threads)  # warm-up
        model.generate(prompt, 4, temperature=0.0, use_cache=False)
        for _ in range(repeats):
            for use_cache in (True, False):
                t0 = time.perf_counter()
                tokens[use_cache] = model.generate(
                    prompt, new_tokens, temperature=0.0, use_cache=use_cache, decode_threads=decode_threads
                )
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
        recompute_tokens_per_s=new_tokens / recompute,
        same_tokens=same,
        load_before=load_before,
        load_after=load_average(),
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
    p.add_argument(
        "--decode-threads",
        type=int,
        default=None,
        help="threads of the cached one-token steps (default: GPT.generate's choice; 0: the same as --threads)",
    )
    p.add_argument("--out", type=Path, help="write the measurements as JSON here")
    return p.parse_args(argv)


def environment(decode_threads: int | None) -> dict:
    """What the timings depend on: threads, OpenMP/MKL settings, the machine and its load."""
    return dict(
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__,
        machine=platform.machine(),
        cpu=cpu_name(),
        cpus=os.cpu_count(),
        threads=torch.get_num_threads(),
        decode_threads="auto (GPT.generate)" if decode_threads is None else decode_threads,
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "unset"),
        mkl_cbwr=os.environ.get("MKL_CBWR", "unset"),
        load_average=load_average(),
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    with torch_threads(args.threads or None):  # the caller's count comes back afterwards
        decode_threads = torch.get_num_threads() if args.decode_threads == 0 else args.decode_threads
        env = environment(decode_threads)
        print(
            f"threads {env['threads']}, decode threads {env['decode_threads']}, "
            f"OMP_WAIT_POLICY={env['omp_wait_policy']}, MKL_CBWR={env['mkl_cbwr']}, "
            f"load average {env['load_average']}, {env['cpu']} ({env['cpus']} CPUs), torch {env['torch']}",
            flush=True,
        )
        model = build_model(block_size=max(512, max(args.lengths) + 1))
        rows = []
        for n in args.lengths:
            row = measure(model, n, args.repeats, decode_threads=decode_threads)
            rows.append(row)
            print(
                f"{n:4d} new tokens: cached {row['cached_s']:.3f} s ({row['cached_tokens_per_s']:.0f} tok/s), "
                f"recompute {row['recompute_s']:.3f} s ({row['recompute_tokens_per_s']:.0f} tok/s), "
                f"speed-up x{row['speedup']:.2f}, same tokens, load {row['load_before']} -> {row['load_after']}",
                flush=True,
            )
    table = [
        "| new tokens | cached s | cached tok/s | recompute s | recompute tok/s | speed-up | load before -> after |",
        "|---|---|---|---|---|---|---|",
    ]
    table += [
        f"| {r['new_tokens']} | {r['cached_s']:.3f} | {r['cached_tokens_per_s']:.0f} | {r['recompute_s']:.3f} "
        f"| {r['recompute_tokens_per_s']:.0f} | {r['speedup']:.2f} | {r['load_before']} -> {r['load_after']} |"
        for r in rows
    ]
    print("\n" + "\n".join(table))
    if args.out:
        args.out.write_text(json.dumps(dict(environment=env, rows=rows, table="\n".join(table)), indent=1))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
