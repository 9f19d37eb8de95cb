"""Score the stored English->French models on the TEST books and store the results for chapters 2 and 7.

    python scripts/evaluate_translation.py            # all four models; beam search for the transformer and Bahdanau
    python scripts/evaluate_translation.py --no-beam  # greedy only
    # the same in parallel: one process per model, then the merge (the partial files hold the
    # models' translations of the test books: keep them out of the repository)
    python scripts/evaluate_translation.py --kind gru --partial /tmp/tr   # ... one per model
    python scripts/evaluate_translation.py --merge /tmp/tr

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
    RESULTS_PATH,
    combine_results,
    evaluate_model,
    evaluate_translation,
)

BEAM_KINDS = ("bahdanau", "transformer")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-beam", action="store_true", help="greedy decoding only")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS_PATH))
    p.add_argument("--kind", choices=MODEL_KINDS, help="evaluate only this model into --partial")
    p.add_argument("--partial", help="folder for one model's entry and translations (with --kind)")
    p.add_argument("--merge", help="combine the partial files of every model in this folder into --out")
    args = p.parse_args(argv)
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
