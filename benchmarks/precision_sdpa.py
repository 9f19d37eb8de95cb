"""Half-precision error of our ``scaled_dot_product_attention`` next to PyTorch's own.

For each dtype (float16, bfloat16) and each scale (the default ``1/sqrt(d)``
and a sharp one), the same random inputs, rounded to the half dtype, go
through :func:`minitransformer.scaled_dot_product_attention` and
``torch.nn.functional.scaled_dot_product_attention``; both outputs are compared
with the float64 attention of those very (rounded) inputs, so the error is the
computation's own, not the rounding of the inputs. The table gives the largest
absolute error of each and the ratio ours / torch's (below 1: ours is closer).

    python benchmarks/precision_sdpa.py
    python benchmarks/precision_sdpa.py --shape 1 8 512 128 --scales default 5 10 --out precision.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer import scaled_dot_product_attention  # noqa: E402

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--shape", type=int, nargs=4, default=[2, 4, 256, 64], metavar=("B", "H", "L", "D"), help="(default 2 4 256 64)"
    )
    p.add_argument(
        "--scales",
        nargs="+",
        default=["default", "5"],
        help="'default' (1/sqrt(d)) and/or numbers (default: default 5)",
    )
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES), help="(default: both)")
    p.add_argument("--causal", action="store_true", help="causal attention")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs (default 0)")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    return p.parse_args(argv)


def measure(
    shape: tuple[int, int, int, int], dtype: torch.dtype, scale: float | None, *, causal: bool = False, seed: int = 0
) -> dict:
    """Largest absolute error of ours and of torch's attention against float64, on one input.

    Args:
        shape: ``(B, H, L, D)`` of ``q``, ``k`` and ``v``.
        dtype: float16 or bfloat16.
        scale: the score scale (None: ``1/sqrt(D)``).
        causal: causal attention.
        seed: seed of the inputs.

    Returns:
        ``{"dtype", "scale", "ours", "torch", "ratio"}`` (``ratio`` = ours / torch).
    """
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))  # (B, H, L, D)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=causal, scale=scale)
    ours = scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)  # (B, H, L, D)
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)  # (B, H, L, D)
    err_ours = (ours.double() - ref).abs().max().item()
    err_torch = (theirs.double() - ref).abs().max().item()
    ratio = err_ours / err_torch if err_torch > 0 else (math.inf if err_ours > 0 else 1.0)
    label = "default" if scale is None else scale
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "scale": label,
        "ours": err_ours,
        "torch": err_torch,
        "ratio": ratio,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scales = [None if s == "default" else float(s) for s in args.scales]
    B, H, L, D = args.shape
    print(
        f"shape (B, H, L, D) = {tuple(args.shape)}, causal={args.causal}, seed={args.seed}, torch {torch.__version__}"
    )
    print("max |out - float64 reference|")
    print(f"{'dtype':<10} {'scale':>10} {'ours':>10} {'torch':>10} {'ours/torch':>11}")
    rows = []
    for name in args.dtypes:
        for scale in scales:
            row = measure((B, H, L, D), DTYPES[name], scale, causal=args.causal, seed=args.seed)
            rows.append(row)
            label = f"{row['scale']}" if scale is None else f"{scale:g}"
            print(f"{row['dtype']:<10} {label:>10} {row['ours']:>10.2e} {row['torch']:>10.2e} {row['ratio']:>11.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"shape": args.shape, "causal": args.causal, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
