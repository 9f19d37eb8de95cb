"""Benchmark decoding with a KV cache.

1. Split-KV (flash-decoding) against one block per (sequence, kv head):
   ``flash_decode(num_splits=None)`` vs ``flash_decode(num_splits=1)``, one
   new token against 16k-32k cached keys, fp16, MHA and GQA.
2. Cached generation against recomputation: ``GPT.generate(use_cache=True)``
   vs ``use_cache=False`` at batch 64 (tokens per second).

CUDA-event timing, medians, warm-up past compilation.

    python benchmarks/bench_decode.py --out decode.json     # on a GPU
    python benchmarks/bench_decode.py --dry-run             # on a CPU: tiny sizes, same code
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.flash.api import flash_decode  # noqa: E402


def timed(fn: Callable[[], object], repeats: int, warmup: int, cuda: bool) -> float:
    """Median milliseconds (CUDA events on a GPU, wall clock on a CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def bench_splits(configs: list[dict], device: str, dtype, repeats: int, warmup: int) -> list[dict]:
    """Split-KV vs one block per head; ``configs``: dicts of B, H, H_kv, S, d."""
    rows = []
    for c in configs:
        g = torch.Generator(device=device).manual_seed(0)
        q = torch.randn(c["B"], c["H"], 1, c["d"], device=device, generator=g, dtype=dtype)
        k = torch.randn(c["B"], c["H_kv"], c["S"], c["d"], device=device, generator=g, dtype=dtype)
        v = torch.randn_like(k)
        cuda = device == "cuda"
        t_split = timed(lambda: flash_decode(q, k, v), repeats, warmup, cuda)
        t_one = timed(lambda: flash_decode(q, k, v, num_splits=1), repeats, warmup, cuda)
        gbytes = 2 * k.numel() * k.element_size() / 1e9  # K and V read once
        row = dict(
            c, split_ms=t_split, one_block_ms=t_one, speedup=t_one / t_split, split_gb_per_s=gbytes / (t_split / 1e3)
        )
        rows.append(row)
        print(
            f"B={c['B']:3d} H={c['H']:3d} H_kv={c['H_kv']:3d} S={c['S']:6d} d={c['d']}: split-KV "
            f"{t_split:8.3f} ms ({row['split_gb_per_s']:7.1f} GB/s), one block/head {t_one:8.3f} ms, "
            f"x{row['speedup']:.2f}",
            flush=True,
        )
    return rows


def bench_generate(cfg: dict, device: str, dtype, repeats: int) -> dict:
    """Tokens/s of GPT.generate with and without the KV cache (greedy, same tokens)."""
    from minitransformer.gpt import GPT

    torch.manual_seed(0)
    model = (
        GPT(
            cfg["vocab"],
            cfg["block_size"],
            cfg["n_layer"],
            cfg["n_head"],
            cfg["d_model"],
            num_kv_heads=cfg.get("n_kv_head"),
        )
        .to(device=device, dtype=dtype)
        .eval()
    )
    prompt = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["prompt"]), device=device)
    cuda = device == "cuda"
    out = {}
    tokens = {}
    for use_cache in (True, False):

        def run():
            with torch.no_grad():
                tokens[use_cache] = model.generate(prompt, cfg["new_tokens"], temperature=0.0, use_cache=use_cache)

        ms = timed(run, repeats, 1, cuda)
        out["cached_ms" if use_cache else "recompute_ms"] = ms
    out["same_tokens"] = bool(torch.equal(tokens[True], tokens[False]))
    out["tokens_per_s_cached"] = cfg["batch"] * cfg["new_tokens"] / (out["cached_ms"] / 1e3)
    out["speedup"] = out["recompute_ms"] / out["cached_ms"]
    print(
        f"generate batch={cfg['batch']} new={cfg['new_tokens']}: cached {out['cached_ms']:.1f} ms, "
        f"recompute {out['recompute_ms']:.1f} ms, x{out['speedup']:.2f}, same tokens: {out['same_tokens']}",
        flush=True,
    )
    return dict(cfg, **out)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, help="write the measurements as JSON here")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script end to end")
    p.add_argument("--lengths", type=int, nargs="+", default=[16384, 32768])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        device, dtype, repeats, warmup = "cpu", torch.float32, 2, 1
        split_cfgs = [dict(B=2, H=4, H_kv=2, S=256, d=32)]
        gen_cfg = dict(
            vocab=64, block_size=64, n_layer=2, n_head=4, n_kv_head=2, d_model=32, batch=4, prompt=8, new_tokens=8
        )
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU: use --dry-run on a CPU", file=sys.stderr)
            return 2
        device, dtype, repeats, warmup = "cuda", torch.float16, args.repeats, args.warmup
        split_cfgs = [dict(B=B, H=32, H_kv=h_kv, S=S, d=128) for S in args.lengths for B in (1, 4) for h_kv in (32, 8)]
        gen_cfg = dict(
            vocab=256,
            block_size=1024,
            n_layer=6,
            n_head=16,
            n_kv_head=4,
            d_model=1024,
            batch=64,
            prompt=128,
            new_tokens=512,
        )
    splits = bench_splits(split_cfgs, device, dtype, repeats, warmup)
    gen = bench_generate(gen_cfg, device, dtype, max(1, repeats // 10))
    table = ["| B | H | H_kv | S | split-KV ms | one block/head ms | speed-up |", "|---|---|---|---|---|---|---|"]
    table += [
        f"| {r['B']} | {r['H']} | {r['H_kv']} | {r['S']} | {r['split_ms']:.3f} | {r['one_block_ms']:.3f} | "
        f"{r['speedup']:.2f} |"
        for r in splits
    ]
    table += [
        "",
        f"cached generation at batch {gen['batch']}: x{gen['speedup']:.2f} vs recompute "
        f"(same tokens: {gen['same_tokens']})",
    ]
    print("\n" + "\n".join(table))
    if args.out:
        env = dict(
            date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            torch=torch.__version__,
            device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
        )
        args.out.write_text(
            json.dumps(
                dict(environment=env, dry_run=args.dry_run, splits=splits, generate=gen, table="\n".join(table)),
                indent=1,
            )
        )
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
