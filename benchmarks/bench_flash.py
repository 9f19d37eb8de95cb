"""Benchmark flash attention: the package's kernels against PyTorch's SDPA backends.

FLOPs follow the FlashAttention papers: a forward pass is ``4 * B * H * N^2 * d``
(two matmuls of ``2 * N^2 * d`` per head), halved when causal; a backward pass
is 2.5 times the forward. The grid keeps ``B * N = 16k`` tokens and
``H * d = 2048``, fp16, N = 512 ... 16k, d in {64, 128}, causal and not.

Compared in one run (same inputs, CUDA-event timing, medians, warm-up past
compilation):

* ``fast``           -- ``flash_attention(backend="cupy", kernel="fast")``
* ``sdpa-flash``, ``sdpa-efficient``, ``sdpa-cudnn``, ``sdpa-math`` -- SDPA with
  the backend pinned by ``torch.nn.attention.sdpa_kernel``
* ``sdpa-default``   -- SDPA choosing for itself

and, in fp32, the teaching kernel against naive attention (``softmax(Q K^T) V``
materialized) at N >= 2048, plus the teaching kernel alone at N = 65,536
where the naive score matrix does not fit.

    python benchmarks/bench_flash.py --out results.json     # on a GPU
    python benchmarks/bench_flash.py --dry-run              # on a CPU: plan + a tiny timed run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.flash.api import flash_attention  # noqa: E402

TOKENS = 16 * 1024  # B * N
WIDTH = 2048  # H * d
SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


def attention_flops(B: int, H: int, N: int, d: int, causal: bool, backward: bool = False) -> float:
    """FlashAttention convention: forward 4 B H N^2 d (halved if causal), backward 2.5x."""
    f = 4.0 * B * H * N * N * d / (2 if causal else 1)
    return 2.5 * f if backward else f


def grid(ns: list[int], ds: list[int]) -> list[dict]:
    """The (B, H, N, d, causal) configurations: B * N = 16k tokens, H * d = 2048."""
    return [
        dict(B=max(1, TOKENS // n), H=WIDTH // d, N=n, d=d, causal=c) for d in ds for n in ns for c in (False, True)
    ]


def time_cuda(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median milliseconds of ``fn`` by CUDA events (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_cpu(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median milliseconds by wall clock (the dry run on a CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def methods(causal: bool, on_gpu: bool) -> dict[str, Callable]:
    """name -> attention(q, k, v): the contenders for the fp16 grid."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def pinned(backend: str) -> Callable:
        def run(q, k, v):
            with sdpa_kernel(getattr(SDPBackend, backend)):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        return run

    out: dict[str, Callable] = {}
    if on_gpu:
        out["fast"] = lambda q, k, v: flash_attention(q, k, v, is_causal=causal, backend="cupy", kernel="fast")
        for b in SDPA_BACKENDS:
            out["sdpa-" + b.split("_")[0].lower()] = pinned(b)
    else:
        out["torch-twin"] = lambda q, k, v: flash_attention(q, k, v, is_causal=causal, backend="torch")
        out["sdpa-math"] = pinned("MATH")
    out["sdpa-default"] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return out


def measure(fn: Callable, q, k, v, timer, repeats: int, warmup: int) -> tuple[float, float]:
    """(forward ms, backward ms); backward = time(forward + backward) - time(forward)."""
    with torch.no_grad():
        t_f = timer(lambda: fn(q, k, v), repeats, warmup)
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    dO = torch.randn_like(q)

    def fwd_bwd():
        torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), dO)

    t_fb = timer(fwd_bwd, repeats, warmup)
    return t_f, max(t_fb - t_f, 0.0)


def run_grid(configs: list[dict], device: str, dtype, repeats: int, warmup: int) -> list[dict]:
    timer = time_cuda if device == "cuda" else time_cpu
    rows = []
    for c in configs:
        g = torch.Generator(device=device).manual_seed(0)
        q, k, v = (
            torch.randn(c["B"], c["H"], c["N"], c["d"], device=device, generator=g, dtype=dtype) for _ in range(3)
        )
        for name, fn in methods(c["causal"], device == "cuda").items():
            row = dict(c, method=name)
            try:
                t_f, t_b = measure(fn, q, k, v, timer, repeats, warmup)
                row.update(
                    fwd_ms=t_f,
                    bwd_ms=t_b,
                    fwd_tflops=attention_flops(c["B"], c["H"], c["N"], c["d"], c["causal"]) / t_f / 1e9,
                    bwd_tflops=(attention_flops(c["B"], c["H"], c["N"], c["d"], c["causal"], True) / t_b / 1e9)
                    if t_b > 0
                    else None,
                )
            except (RuntimeError, torch.cuda.OutOfMemoryError) as err:  # unsupported backend, OOM
                row.update(error=str(err).splitlines()[0][:160])
                if device == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            print(_row_text(row), flush=True)
    return rows


def _row_text(r: dict) -> str:
    head = f"d={r['d']:4d} N={r['N']:6d} causal={int(r['causal'])} {r['method']:15s}"
    if "error" in r:
        return f"{head} n/a ({r['error']})"
    bwd = f"{r['bwd_tflops']:7.2f}" if r.get("bwd_tflops") else "    n/a"
    return f"{head} fwd {r['fwd_ms']:9.3f} ms {r['fwd_tflops']:7.2f} TFLOP/s | bwd {bwd} TFLOP/s"


def naive_attention(q, k, v):
    """Materialize the N x N scores: what flash attention avoids."""
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(s, dim=-1) @ v


def run_teaching(
    ns: list[int], d: int, device: str, repeats: int, warmup: int, B: int | None = None, H: int | None = None
) -> list[dict]:
    """fp32 teaching kernel vs naive attention (time and peak memory); B, H default to the grid's."""
    timer = time_cuda if device == "cuda" else time_cpu
    teaching = (
        (lambda q, k, v: flash_attention(q, k, v, backend="cupy", kernel="teaching"))
        if device == "cuda"
        else (lambda q, k, v: flash_attention(q, k, v, backend="torch"))
    )
    rows = []
    for n in ns:
        B_n, H_n = B or max(1, TOKENS // n), H or WIDTH // d
        g = torch.Generator(device=device).manual_seed(1)
        q, k, v = (torch.randn(B_n, H_n, n, d, device=device, generator=g) for _ in range(3))
        scores_bytes = 4 * B_n * H_n * n * n
        for name, fn in (("teaching", teaching), ("naive", naive_attention)):
            row = dict(B=B_n, H=H_n, N=n, d=d, method=name)
            if name == "naive" and device == "cuda" and scores_bytes > 0.8 * torch.cuda.mem_get_info()[0]:
                row.update(error=f"the score matrix alone needs {scores_bytes / 2**30:.0f} GiB")
            else:
                try:
                    if device == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                        base = torch.cuda.memory_allocated()
                    with torch.no_grad():
                        ms = timer(lambda: fn(q, k, v), repeats, warmup)
                    row.update(fwd_ms=ms, fwd_tflops=attention_flops(B_n, H_n, n, d, False) / ms / 1e9)
                    if device == "cuda":
                        row["peak_extra_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
                except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
                    row.update(error=str(err).splitlines()[0][:160])
            rows.append(row)
            print(
                f"fp32 N={n:6d} d={d} {name:9s} "
                + (f"{row['fwd_ms']:10.3f} ms" if "fwd_ms" in row else f"n/a ({row['error']})"),
                flush=True,
            )
    return rows


def ratios(rows: list[dict], num: str, den: str, key: str) -> dict[tuple, float]:
    """``rows[num][key] / rows[den][key]`` per (d, N, causal)."""
    by = {(r["d"], r["N"], r.get("causal", False), r["method"]): r for r in rows}
    out = {}
    for (d, n, c, m), r in by.items():
        other = by.get((d, n, c, den))
        if m == num and other and r.get(key) and other.get(key):
            out[(d, n, c)] = r[key] / other[key]
    return out


def markdown(rows: list[dict], teach: list[dict], reference: str) -> str:
    """The table of TFLOP/s ratios against ``reference`` (and teaching/naive speed-ups)."""
    lines = [
        f"| d | N | causal | fwd TFLOP/s | fwd / {reference} | bwd TFLOP/s | bwd / {reference} |",
        "|---|---|---|---|---|---|---|",
    ]
    contender = "fast" if any(r["method"] == "fast" for r in rows) else "torch-twin"
    fwd, bwd = ratios(rows, contender, reference, "fwd_tflops"), ratios(rows, contender, reference, "bwd_tflops")
    for r in rows:
        if r["method"] != contender or "error" in r:
            continue
        key = (r["d"], r["N"], r["causal"])
        f = f"{fwd[key]:.2f}" if key in fwd else "n/a"
        b = f"{bwd[key]:.2f}" if key in bwd else "n/a"
        bt = f"{r['bwd_tflops']:.2f}" if r.get("bwd_tflops") else "n/a"
        lines.append(f"| {r['d']} | {r['N']} | {int(r['causal'])} | {r['fwd_tflops']:.2f} | {f} | {bt} | {b} |")
    if teach:
        lines += [
            "",
            "| N | teaching ms | naive ms | teaching speed-up | teaching peak MiB | naive peak MiB |",
            "|---|---|---|---|---|---|",
        ]
        by = {(r["N"], r["method"]): r for r in teach}
        for n in sorted({r["N"] for r in teach}):
            t, nv = by.get((n, "teaching"), {}), by.get((n, "naive"), {})
            t_ms = f"{t['fwd_ms']:.3f}" if "fwd_ms" in t else t.get("error", "n/a")
            n_ms = f"{nv['fwd_ms']:.3f}" if "fwd_ms" in nv else nv.get("error", "n/a")
            sp = f"{nv['fwd_ms'] / t['fwd_ms']:.2f}" if "fwd_ms" in t and "fwd_ms" in nv else "n/a"
            t_mem, n_mem = (f"{r['peak_extra_mib']:.1f}" if "peak_extra_mib" in r else "n/a" for r in (t, nv))
            lines.append(f"| {n} | {t_ms} | {n_ms} | {sp} | {t_mem} | {n_mem} |")
    return "\n".join(lines)


def environment(device: str) -> dict:
    env = dict(
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__,
        device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
    )
    try:
        import cupy

        env["cupy"] = cupy.__version__
    except ImportError:
        env["cupy"] = None
    return env


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, help="write all measurements and ratios as JSON here")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU: print the plan, time a tiny configuration with the CPU methods, write --out",
    )
    p.add_argument("--ns", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--ds", type=int, nargs="+", default=[64, 128])
    p.add_argument("--teaching-ns", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--long-n", type=int, default=65536, help="the teaching kernel alone at this N (0: skip)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reference", default="sdpa-flash", help="the method ratios are taken against")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        plan = grid(args.ns, args.ds)
        print(
            f"plan: {len(plan)} fp16 configurations x {len(SDPA_BACKENDS) + 2} methods; "
            f"teaching vs naive at N={args.teaching_ns} and N={args.long_n}"
        )
        for c in plan:
            print(
                f"  B={c['B']:3d} H={c['H']:3d} N={c['N']:6d} d={c['d']:3d} causal={int(c['causal'])} "
                f"fwd {attention_flops(**c) / 1e12:8.3f} TFLOP"
            )
        rows = run_grid(
            [dict(B=1, H=2, N=64, d=16, causal=c) for c in (False, True)], "cpu", torch.float32, repeats=2, warmup=1
        )
        teach = run_teaching([64], 16, "cpu", repeats=2, warmup=1, B=1, H=2)
        table = markdown(rows, teach, "sdpa-math")
        env = environment("cpu")
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU: use --dry-run on a CPU", file=sys.stderr)
            return 2
        rows = run_grid(grid(args.ns, args.ds), "cuda", torch.float16, args.repeats, args.warmup)
        teach = []
        for d in args.ds:
            teach += run_teaching(args.teaching_ns, d, "cuda", args.repeats, args.warmup)
            if args.long_n:
                teach += run_teaching([args.long_n], d, "cuda", repeats=3, warmup=1)
        table = markdown(rows, teach, args.reference)
        env = environment("cuda")
    print()
    print(table)
    if args.out:
        args.out.write_text(
            json.dumps(
                dict(environment=env, dry_run=args.dry_run, grid=rows, teaching=teach, table=table),
                indent=1,
                default=str,
            )
        )
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
