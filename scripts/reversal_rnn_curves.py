"""Store the RNN models' accuracy-versus-length curves of chapters 1-2 for chapter 7.

    python scripts/reversal_rnn_curves.py        # -> minitransformer/book/results/reversal_rnn.json

Chapter 7 draws the encoder-decoder transformer's curve next to the GRU
models' of chapters 1-2. Re-training those takes minutes of CPU, so this
script runs :func:`minitransformer.book.seq2seq_experiments.run_reversal` (the
chapters' own function and setup, :data:`REVERSAL`) once and stores the
per-length accuracies, the CPU seconds of each training and the setup; the
chapter reads them with :func:`minitransformer.book.encdec_experiments.stored_rnn_curves`.
Rerun it whenever chapters 1-2's setup changes (a test compares the stored
setup with :data:`REVERSAL`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# The same arithmetic as the chapters' notebooks (see minitransformer.book.notebook.setup):
# MKL's strict reproducible mode, set before the first matrix product.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minitransformer.book.encdec_experiments import RNN_CURVES_PATH, reversal_setup_dict  # noqa: E402
from minitransformer.book.seq2seq_experiments import REVERSAL, model_label, reversal_data, run_reversal  # noqa: E402
from minitransformer.book.stored import run_info, write_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        default="none,bahdanau",
        help="comma-separated attention kinds ('none' = no attention); default none,bahdanau",
    )
    p.add_argument("--out", default=str(RNN_CURVES_PATH))
    args = p.parse_args(argv)
    kinds = [None if k.strip() == "none" else k.strip() for k in args.models.split(",")]
    data = reversal_data(REVERSAL)
    rows, seconds = [], {}
    for kind in kinds:
        run = run_reversal(kind, REVERSAL, data=data)
        acc = run.accuracy.copy()
        acc["exact_match"] = acc.exact_match.round(4)
        acc["char_accuracy"] = acc.char_accuracy.round(4)
        rows += acc.to_dict(orient="records")
        seconds[model_label(kind)] = round(run.cpu_seconds, 1)
        print(
            f"{model_label(kind)}: {run.cpu_seconds:.0f} CPU s; exact match on trained lengths "
            f"{run.summary()['exact_match_trained']:.3f}",
            flush=True,
        )
    blob = {
        "setup": reversal_setup_dict(REVERSAL),
        "cpu_seconds": seconds,
        **run_info("scripts/reversal_rnn_curves.py", argv),
        "accuracy": rows,
    }
    out = write_results(args.out, blob)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
