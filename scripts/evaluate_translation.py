"""Score the stored English->French models on the TEST books and store the results for chapters 2 and 7.

    python scripts/evaluate_translation.py            # all four models; beam search for the transformer and Bahdanau
    python scripts/evaluate_translation.py --no-beam  # greedy only
    # the same in parallel: one process per model, then the merge (the partial files hold the
    # models' translations of the test books: keep them out of the repository)
    python scripts/evaluate_translation.py --kind gru --partial /tmp/tr   # ... one per model
    python scripts/evaluate_translation.py --merge /tmp/tr
    # the tables of benchmarks/RESULTS.md, from the stored results
    python scripts/evaluate_translation.py --markdown

Run after ``scripts/train_translation.py`` (one call per model). Decodes every test verse
(Judges, Acts and Romans, sources of up to 40 words) greedily with each model (and with beam
search of width 4 for the transformer and the Bahdanau GRU), and writes
``minitransformer/book/results/translation.json``: corpus BLEU (sacrebleu, 13a tokenisation of
the detokenised output) with 95% percentile-bootstrap intervals (1000 resamples), BLEU per
source-length bucket, an error profile, paired-bootstrap comparisons, and each model's training
record (steps, CPU seconds, FLOPs) copied from its checkpoint. No text of the corpus is stored.
Takes a few CPU minutes on one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.book.stored import run_info, write_results  # noqa: E402
from minitransformer.book.translation_experiments import MODEL_KINDS, translation_data  # noqa: E402
from minitransformer.book.translation_results import (  # noqa: E402
    LABELS,
    RESULTS_PATH,
    combine_results,
    evaluate_model,
    evaluate_translation,
    read_translation_results,
)

BEAM_KINDS = ("bahdanau", "transformer")


def _ci(r: dict) -> str:
    return f"{r['bleu']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"


def markdown_tables(res: dict) -> str:
    """The tables of ``benchmarks/RESULTS.md`` from stored results (no number typed by hand).

    Args:
        res: the blob of :func:`read_translation_results`.

    Returns:
        Markdown: training and BLEU per model, BLEU per source-length bucket, the error
        profile, and the paired comparisons.
    """
    models = res["models"]
    lines = [
        "| model | parameters | steps (best) | CPU s | wall s | training FLOPs | valid BLEU "
        "| test BLEU, greedy [95% CI] | test BLEU, beam 4 [95% CI] |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, m in models.items():
        t = m["training"]
        beam = _ci(m["beam"]) if "beam" in m else "—"
        lines.append(
            f"| {LABELS[kind]} | {t['params']:,} | {t['steps']:,} ({t['best_step']:,}) | {t['cpu_seconds']:.0f} "
            f"| {t['wall_seconds']:.0f} | {t['train_flops']:.3g} | {t['valid_bleu']:.2f} "
            f"| {_ci(m['greedy'])} | {beam} |"
        )
    buckets = res["data"]["test_by_bucket"]
    lines += [
        "",
        "| model | " + " | ".join(f"{b} words (n={n})" for b, n in buckets.items()) + " |",
        "|---|" + "---:|" * len(buckets),
    ]
    for kind, m in models.items():
        lines.append(f"| {LABELS[kind]} | " + " | ".join(f"{m['buckets'][b]['bleu']:.2f}" for b in buckets) + " |")
    lines += [
        "",
        "| model | length ratio | 1-gram prec. % | 4-gram prec. % | repeats a 3-gram % | names kept % "
        "| greedy decode CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, m in models.items():
        e = m["errors"]
        lines.append(
            f"| {LABELS[kind]} | {e['length_ratio']:.2f} | {e['p1']:.1f} | {e['p4']:.1f} | {e['repeats']:.1f} "
            f"| {e['names']:.1f} | {m['greedy_cpu_seconds']:.0f} |"
        )
    lines.append("")
    for name, d in res["paired"].items():
        lines.append(
            f"- {name}: {d['delta']:+.2f} BLEU [{d['low']:+.2f}, {d['high']:+.2f}], "
            f"first better in {d['a_better']:.0%} of resamples"
        )
    for kind, m in models.items():
        if "beam_vs_greedy" in m:
            d = m["beam_vs_greedy"]
            lines.append(
                f"- {kind} beam vs greedy: {d['delta']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}], "
                f"beam better in {d['a_better']:.0%}; beam decode {m['beam_cpu_seconds']:.0f} CPU s"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-beam", action="store_true", help="greedy decoding only")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS_PATH))
    p.add_argument("--kind", choices=MODEL_KINDS, help="evaluate only this model into --partial")
    p.add_argument("--partial", help="folder for one model's entry and translations (with --kind)")
    p.add_argument("--merge", help="combine the partial files of every model in this folder into --out")
    p.add_argument("--markdown", action="store_true", help="print the tables of benchmarks/RESULTS.md from --out")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown_tables(read_translation_results(args.out)))
        return 0
    torch.set_num_threads(args.threads)
    beam = () if args.no_beam else BEAM_KINDS
    data = translation_data()
    if args.kind:
        if not args.partial:
            p.error("--kind needs --partial")
        entry, hyps = evaluate_model(data, args.kind, beam=args.kind in beam, beam_size=args.beam_size)
        path = Path(args.partial) / f"{args.kind}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"entry": entry, "hyps": hyps}))
        print(f"{args.kind}: greedy {entry['greedy']}" + (f", beam {entry['beam']}" if "beam" in entry else ""))
        return 0
    if args.merge:
        parts = {k: json.loads((Path(args.merge) / f"{k}.json").read_text()) for k in MODEL_KINDS}
        blob = combine_results(
            data, {k: v["entry"] for k, v in parts.items()}, {k: v["hyps"] for k, v in parts.items()}
        )
    else:
        blob = evaluate_translation(data, MODEL_KINDS, beam_kinds=beam, beam_size=args.beam_size)
    blob["run"] = run_info("scripts/evaluate_translation.py", argv)
    print("wrote", write_results(args.out, blob))
    return 0


if __name__ == "__main__":
    sys.exit(main())
