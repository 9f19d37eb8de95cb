"""Chapters 2 and 7: the translation models measured on the test books, and the charts.

``scripts/evaluate_translation.py`` decodes the test books with the four stored models
(:func:`evaluate_translation`) and writes :data:`RESULTS_PATH`; the chapters read it
(:func:`read_translation_results`) and draw:

* :func:`bleu_table` -- BLEU with its 95% bootstrap interval, parameters, steps, CPU
  seconds and training FLOPs per model;
* :func:`bleu_length_chart` -- BLEU against source length (the shape of Bahdanau et al.'s
  Figure 2);
* :func:`alignment_frame` / :func:`alignment_picker` -- attention weights of real test
  sentences as heatmaps (their Figure 3), with drop-down menus that work in the static book.

Nothing of the corpus is stored: only scores and counts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd
import torch
from torch import nn

from ..bleu import bleu_signature, bootstrap_bleu, corpus_bleu, grouped_bleu, paired_bootstrap, sentence_stats
from ..parallel import TEST_BOOKS, VALID_BOOKS, SubwordTokenizer, VersePair, encode_pairs, pair_batches
from ..transformer import Transformer
from .stored import RESULTS_DIR, read_results
from .translation_experiments import (
    MAX_WORDS,
    TEST_MAX_WORDS,
    TranslationData,
    decode_batch,
    load_translation_model,
    translate,
)

__all__ = [
    "RESULTS_PATH",
    "BUCKETS",
    "LABELS",
    "length_bucket",
    "error_profile",
    "evaluate_model",
    "combine_results",
    "evaluate_translation",
    "read_translation_results",
    "bleu_table",
    "bleu_length_chart",
    "example_pairs",
    "alignment_frame",
    "alignment_picker",
]

RESULTS_PATH = RESULTS_DIR / "translation.json"
_FORMAT = "minitransformer.translation_results/1"
#: Source-length buckets (words) of the BLEU-against-length chart; 26-40 is longer than any training verse.
BUCKETS = ((1, 10), (11, 15), (16, 20), (21, 25), (26, 30), (31, 40))
#: How the chapters name the models.
LABELS = {
    "gru": "GRU, no attention",
    "bahdanau": "GRU + Bahdanau attention",
    "luong-general": "GRU + Luong (general) attention",
    "transformer": "transformer",
}


def length_bucket(words: int) -> str:
    """The :data:`BUCKETS` label (``"11-15"``) of a source of ``words`` words."""
    for lo, hi in BUCKETS:
        if lo <= words <= hi:
            return f"{lo}-{hi}"
    raise ValueError(f"a source of {words} words is outside the buckets {BUCKETS}")


_CAPITAL = re.compile(r"\b[A-ZÀ-Ý][\w'-]+")


def error_profile(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """What goes wrong, in numbers (on ``13a`` tokens, as BLEU sees them).

    Returns:
        ``length_ratio`` (output tokens / reference tokens), ``p1`` and ``p4`` (the unigram and
        4-gram precisions, %), ``repeats`` (% of outputs with a 3-gram occurring twice: a
        decoder looping), ``names`` (% of the reference's capitalised words after its first
        word -- mostly names -- that the output contains), ``empty`` (% of empty outputs).
    """
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokenize = Tokenizer13a()
    stats = sentence_stats(hyps, refs).sum(0)
    repeats = names_hit = names_all = 0
    for h, r in zip(hyps, refs):
        toks = tokenize(h).split()
        grams = [tuple(toks[i : i + 3]) for i in range(len(toks) - 2)]
        repeats += len(grams) != len(set(grams))
        wanted = _CAPITAL.findall(r)[1:]
        names_all += len(wanted)
        names_hit += sum(w in h for w in wanted)
    n = len(hyps)
    return {
        "length_ratio": round(float(stats[0] / stats[1]), 4),
        "p1": round(float(100 * stats[2] / max(stats[6], 1)), 2),
        "p4": round(float(100 * stats[5] / max(stats[9], 1)), 2),
        "repeats": round(100 * repeats / n, 2),
        "names": round(100 * names_hit / max(names_all, 1), 2),
        "empty": round(100 * sum(not h.strip() for h in hyps) / n, 2),
    }


def _interval(i) -> dict:
    return {"bleu": round(i.bleu, 2), "low": round(i.low, 2), "high": round(i.high, 2), "n": i.n}


def evaluate_model(
    data: TranslationData, kind: str, *, beam: bool = False, beam_size: int = 4, n_resamples: int = 1000
) -> tuple[dict, list[str]]:
    """Decode the test books with the stored ``kind`` model and score it.

    Returns:
        ``(entry, hyps)``: the model's entry of the results file (its training record from the
        checkpoint, greedy -- and with ``beam`` also beam-search -- BLEU with 95% intervals, BLEU per
        source-length bucket, the :func:`error_profile`, the BLEU of the first 50 test verses as a
        cheap check of the stored weights) and its greedy translations.
    """
    tok, test = data.tokenizer, data.pairs["test"]
    refs = [p.fr for p in test]
    groups = [length_bucket(len(p.en.split())) for p in test]
    loaded = load_translation_model(kind, tok)
    t0 = time.process_time()
    hyps = translate(loaded.model, data.encoded["test"], tok)
    seconds = time.process_time() - t0
    entry = {
        "training": {k: v for k, v in loaded.info.items() if k != "history"},
        "history": loaded.info.get("history", []),
        "greedy": _interval(bootstrap_bleu(hyps, refs, n_resamples=n_resamples)),
        "greedy_cpu_seconds": round(seconds, 1),
        "buckets": {g: _interval(i) for g, i in grouped_bleu(hyps, refs, groups, n_resamples=n_resamples).items()},
        "errors": error_profile(hyps, refs),
        "first50_bleu": round(corpus_bleu(hyps[:50], refs[:50]), 4),
    }
    if beam:
        t0 = time.process_time()
        out = translate(loaded.model, data.encoded["test"], tok, beam_size=beam_size)
        entry["beam"] = {**_interval(bootstrap_bleu(out, refs, n_resamples=n_resamples)), "beam_size": beam_size}
        entry["beam_cpu_seconds"] = round(time.process_time() - t0, 1)
        entry["beam_vs_greedy"] = {
            k: round(v, 4) for k, v in paired_bootstrap(out, hyps, refs, n_resamples=n_resamples).items()
        }
    return entry, hyps


def combine_results(
    data: TranslationData, entries: dict[str, dict], outputs: dict[str, list[str]], *, n_resamples: int = 1000
) -> dict:
    """The results file: the data description, sacrebleu's signature, the models' entries (in the
    order given) and paired-bootstrap comparisons of consecutive models."""
    tok, test = data.tokenizer, data.pairs["test"]
    refs = [p.fr for p in test]
    groups = [length_bucket(len(p.en.split())) for p in test]
    kinds = list(entries)
    blob = {
        "format": _FORMAT,
        "bleu_signature": bleu_signature(),
        "data": {
            "pairs": {k: len(v) for k, v in data.pairs.items()},
            "test_words": sum(len(p.en.split()) for p in test),
            "max_words": MAX_WORDS,
            "test_max_words": TEST_MAX_WORDS,
            "vocab_size": len(tok),
            "valid_books": list(VALID_BOOKS),
            "test_books": list(TEST_BOOKS),
            "test_by_bucket": {g: groups.count(g) for g in sorted(set(groups), key=lambda g: int(g.split("-")[0]))},
        },
        "models": entries,
        "paired": {},
    }
    for a, b in zip(kinds[1:], kinds[:-1]):
        d = paired_bootstrap(outputs[a], outputs[b], refs, n_resamples=n_resamples)
        blob["paired"][f"{a} vs {b}"] = {k: round(v, 4) for k, v in d.items()}
    return blob


def evaluate_translation(
    data: TranslationData,
    kinds: Sequence[str],
    *,
    beam_kinds: Sequence[str] = (),
    beam_size: int = 4,
    n_resamples: int = 1000,
    log=print,
) -> dict:
    """:func:`evaluate_model` for each of ``kinds`` (beam search too for ``beam_kinds``), then
    :func:`combine_results`: what ``scripts/evaluate_translation.py`` stores."""
    entries, outputs = {}, {}
    for kind in kinds:
        entries[kind], outputs[kind] = evaluate_model(
            data, kind, beam=kind in beam_kinds, beam_size=beam_size, n_resamples=n_resamples
        )
        if log is not None:
            log(
                f"{kind}: greedy BLEU {entries[kind]['greedy']}"
                + (f", beam {entries[kind]['beam']}" if kind in beam_kinds else "")
            )
    return combine_results(data, entries, outputs, n_resamples=n_resamples)


def read_translation_results(path=None) -> dict:
    """The file ``scripts/evaluate_translation.py`` wrote."""
    return read_results(RESULTS_PATH if path is None else path, "scripts/evaluate_translation.py", _FORMAT)


def bleu_table(blob: dict, kinds: Sequence[str] | None = None, beam: bool = True) -> pd.DataFrame:
    """One row per model: BLEU (greedy) with its 95% interval, beam-search BLEU (with ``beam``; "—" where
    not measured), parameters, steps, CPU seconds and training TFLOP."""
    rows = []
    kinds = list(kinds or blob["models"])
    beam = beam and any("beam" in blob["models"][k] for k in kinds)
    for kind in kinds:
        m = blob["models"][kind]
        t = m["training"]
        row = {
            "model": LABELS[kind],
            "BLEU": m["greedy"]["bleu"],
            "95% interval": f"{m['greedy']['low']:.2f}-{m['greedy']['high']:.2f}",
        }
        if beam:
            row["BLEU, beam"] = f"{m['beam']['bleu']:.2f}" if "beam" in m else "—"
        row.update(
            {
                "parameters": f"{t['params']:,}",
                "steps": t["steps"],
                "CPU s": round(t["cpu_seconds"]),
                "training TFLOP": round(t["train_flops"] / 1e12, 2),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def bleu_length_chart(blob: dict, kinds: Sequence[str], width: int = 520, height: int = 260) -> alt.Layer:
    """BLEU against source length (words), a line per model with 95% bootstrap intervals as bands."""
    rows = []
    for kind in kinds:
        for g, i in blob["models"][kind]["buckets"].items():
            lo, hi = (int(x) for x in g.split("-"))
            rows.append(
                {
                    "model": LABELS[kind],
                    "source words": (lo + hi) / 2,
                    "bucket": g,
                    "BLEU": round(i["bleu"], 2),
                    "low": round(i["low"], 2),
                    "high": round(i["high"], 2),
                    "sentences": i["n"],
                }
            )
    df = pd.DataFrame(rows)
    x = alt.X("source words:Q", title="source length (words, bucket middle)", scale=alt.Scale(domain=[0, 40]))
    color = alt.Color("model:N", sort=[LABELS[k] for k in kinds], legend=alt.Legend(orient="bottom", columns=2))
    base = alt.Chart(df).encode(x=x, color=color)
    band = base.mark_area(opacity=0.15).encode(y="low:Q", y2="high:Q")
    lines = base.mark_line(point=True).encode(
        y=alt.Y("BLEU:Q", title="BLEU (test books)"),
        tooltip=["model", "bucket", "BLEU", "low", "high", "sentences"],
    )
    rule = alt.Chart(pd.DataFrame({"x": [MAX_WORDS + 0.5]})).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
    return (band + lines + rule).properties(
        width=width, height=height, title="BLEU against source length (dashed: longest training verse)"
    )


def example_pairs(pairs: Sequence[VersePair], per_book: int = 2, words: tuple[int, int] = (8, 14)) -> list[VersePair]:
    """A few test verses for the heatmaps: from each book in order, ``per_book`` verses whose source has
    ``words[0]..words[1]`` words, spread over the book (every fifth candidate from the tenth on)."""
    out = []
    for book in dict.fromkeys(p.book for p in pairs):
        fit = [p for p in pairs if p.book == book and words[0] <= len(p.en.split()) <= words[1]]
        out += fit[10::5][:per_book]
    return out


@torch.no_grad()
def alignment_frame(
    models: dict[str, nn.Module], pairs: Sequence[VersePair], tokenizer: SubwordTokenizer, layer: int = -1
) -> pd.DataFrame:
    """Attention weights of each model's own (greedy) translation of each pair.

    For a GRU model, the weights its decoder used at every output step; for a transformer, the
    cross-attention of decoder layer ``layer`` averaged over its heads, on a teacher-forced pass
    over its own output.

    Returns:
        one row per (model, sentence): ``model, sentence, src`` (source pieces), ``tgt`` (output
        pieces, eos included), ``w`` (weights as nested lists ``[tgt][src]``, 2 decimals).
    """
    rows = []
    enc = encode_pairs(pairs, tokenizer)
    for name, model in models.items():
        model.eval()
        for i, (batch, pair) in enumerate(zip(pair_batches(enc, tokenizer, 1, seed=None), pairs)):
            max_len = 2 * batch.src.shape[1] + 10
            if isinstance(model, Transformer):
                max_len = min(max_len, model.max_len - 1)  # room for bos in the teacher-forced pass
                (ids,) = decode_batch(model, batch, tokenizer, max_len)
                tgt_in = torch.tensor([[tokenizer.bos_id, *ids]])  # (1, T)
                cross = model.attention_maps(batch.src, tgt_in)["cross"][layer]  # (1, H, T, S)
                w = cross[0].mean(0)  # (T, S): step t's weights while predicting token t (eos last)
                out = [*ids, tokenizer.eos_id]
            else:
                tokens, weights = model.greedy_decode(batch.src, max_len, batch.src_lengths)  # (1, T), (1, T, S)
                out = tokens[0].tolist()
                out = out[: out.index(tokenizer.eos_id) + 1] if tokenizer.eos_id in out else out
                w = weights[0, : len(out)]  # (T, S)
            src = [tokenizer.tokenizer.id_to_token(t) for t in batch.src[0].tolist()]
            tgt = [tokenizer.tokenizer.id_to_token(t) for t in out]
            rows.append(
                {
                    "model": name,
                    "sentence": i,
                    "ref": f"{pair.book} {pair.chapter}:{pair.verse}",
                    "src": src,
                    "tgt": tgt,
                    "w": np.round(w.double().numpy(), 2).tolist(),
                }
            )
    return pd.DataFrame(rows)


def alignment_picker(frame: pd.DataFrame, title: str, size: int = 330) -> alt.Chart:
    """Heatmaps of :func:`alignment_frame` with drop-down menus for the sentence (and the model,
    when there are several). The menus are Vega-Lite parameters, so they work in the static book:
    every map is in the chart's data and the menus filter it."""
    data = []
    for r in frame.itertuples(index=False):
        q, k, w = [], [], []
        for t, row in enumerate(r.w):
            for s, v in enumerate(row):
                if v > 0:
                    q.append(t)
                    k.append(s)
                    w.append(round(v, 2))
        data.append({"m": r.model, "s": r.sentence, "q": q, "k": k, "w": w, "src": r.src, "tgt": r.tgt})
    sentences = sorted(frame.sentence.unique().tolist())
    labels = [f"{i}: {frame[frame.sentence == i].ref.iloc[0]}" for i in sentences]
    pick_s = alt.param(
        name="sentence", value=sentences[0], bind=alt.binding_select(options=sentences, labels=labels, name="sentence ")
    )
    params, keep = [pick_s], alt.datum.s == pick_s
    models = list(dict.fromkeys(frame.model))
    if len(models) > 1:
        pick_m = alt.param(name="model", value=models[0], bind=alt.binding_select(options=models, name="model "))
        params.append(pick_m)
        keep = keep & (alt.datum.m == pick_m)
    label = lambda pos, toks: f"(datum.{pos} < 10 ? '0' : '') + datum.{pos} + ' ' + datum.{toks}[datum.{pos}]"  # noqa: E731
    return (
        alt.Chart(alt.Data(values=data), title=title)
        .mark_rect()
        .encode(
            x=alt.X(
                "source:N", sort="ascending", axis=alt.Axis(title="English source (subword pieces)", labelAngle=-60)
            ),
            y=alt.Y("output:N", sort="ascending", axis=alt.Axis(title="French output")),
            color=alt.Color("weight:Q", scale=alt.Scale(scheme="greys", domain=[0, 1]), title="weight"),
            tooltip=["output:N", "source:N", alt.Tooltip("weight:Q", format=".2f")],
        )
        .add_params(*params)
        .transform_filter(keep)
        .transform_flatten(["q", "k", "w"])
        .transform_calculate(source=label("k", "src"), output=label("q", "tgt"), weight=alt.datum.w)
        .properties(width=size, height=size)
    )
