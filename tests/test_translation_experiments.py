"""Chapters 2 and 7's translation experiments: the helpers, the stored checkpoints and the stored
results (minitransformer/book/results/translation.json), checked against each other where cheap."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minitransformer.book import translation_results as tr
from minitransformer.book.translation_experiments import (
    MODEL_KINDS,
    TranslationSetup,
    checkpoint_path,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_length_buckets():
    assert [tr.length_bucket(w) for w in (1, 10, 11, 25, 26, 40)] == [
        "1-10",
        "1-10",
        "11-15",
        "21-25",
        "26-30",
        "31-40",
    ]
    with pytest.raises(ValueError, match="outside the buckets"):
        tr.length_bucket(41)


def test_error_profile_counts():
    refs = ["Et Paul dit à Pierre: Va.", "le roi de Juda."]
    hyps = ["Et Paul dit : va va va va va .", ""]
    e = tr.error_profile(hyps, refs)
    assert e["repeats"] == 50.0  # "va va va" twice in the first output
    assert e["empty"] == 50.0
    # Paul kept; Pierre and Va (capitalised after the first word) not
    assert e["names"] == pytest.approx(100 / 3, abs=0.01)
    assert 0 < e["length_ratio"] < 2 and e["p4"] < e["p1"]


def test_setup_recipes_and_learning_rates():
    gru, tf = TranslationSetup.recipe("gru"), TranslationSetup.recipe("transformer")
    assert gru.label_smoothing == 0 and tf.label_smoothing == 0.1 and gru.cpu_budget == tf.cpu_budget
    # warmup, then 1/sqrt decay: the peak is at the last warmup step for both schedules
    for s in (gru, tf):
        lrs = [s.lr_at(i) for i in range(2 * s.warmup)]
        assert int(np.argmax(lrs)) == s.warmup - 1
        assert s.lr_at(4 * s.warmup - 1) == pytest.approx(lrs[s.warmup - 1] / 2)
    with pytest.raises(ValueError, match="kind=.* is not one of"):
        TranslationSetup(kind="lstm")


# ------------------------------------------------------------------ stored files
@pytest.fixture(scope="module")
def results():
    return tr.read_translation_results()


def test_results_are_consistent(results):
    assert set(results["models"]) == set(MODEL_KINDS)
    n = results["data"]["pairs"]["test"]
    assert sum(results["data"]["test_by_bucket"].values()) == n
    assert "tok:13a" in results["bleu_signature"]
    budgets = set()
    for m in results["models"].values():
        g = m["greedy"]
        assert g["n"] == n and g["low"] <= g["bleu"] <= g["high"]
        assert sum(b["n"] for b in m["buckets"].values()) == n
        assert all(b["low"] <= b["bleu"] <= b["high"] for b in m["buckets"].values())
        t = m["training"]
        budgets.add(t["cpu_budget"])
        assert t["cpu_budget"] <= t["cpu_seconds"] < t["cpu_budget"] + 60  # stopped within a chunk of the budget
        assert 0 < t["best_step"] <= t["steps"] and t["train_flops"] > 0
        if "beam" in m:
            assert m["beam_vs_greedy"]["delta"] == pytest.approx(m["beam"]["bleu"] - g["bleu"], abs=0.02)
    assert len(budgets) == 1  # matched compute


def test_checkpoints_are_small_fp16_and_match_their_record(results):
    total = 0
    for kind in MODEL_KINDS:
        path = checkpoint_path(kind)
        total += path.stat().st_size
        blob = torch.load(path, map_location="cpu", weights_only=True)
        assert all(v.dtype == torch.float16 for v in blob["state_dict"].values() if v.is_floating_point())
        info = {k: v for k, v in blob["info"].items() if k != "history"}
        assert info == results["models"][kind]["training"]
    assert total < 10 * 2**20


def test_what_chapters_2_and_7_say_about_the_stored_results(results):
    """The sentences of chapters 2 and 7 that are not numbers, checked against the stored results."""
    m = results["models"]
    greedy = {k: m[k]["greedy"]["bleu"] for k in MODEL_KINDS}
    # the expected order, each step outside the paired bootstrap's noise
    assert greedy["transformer"] > greedy["luong-general"] > greedy["bahdanau"] > greedy["gru"]
    for pair in ("transformer vs luong-general", "bahdanau vs gru", "luong-general vs bahdanau"):
        assert results["paired"][pair]["low"] > 0, pair
    # "the intervals are far apart" (chapter 2)
    assert m["bahdanau"]["greedy"]["low"] > m["gru"]["greedy"]["high"]
    # chapter 2: the attention models lead in every length bucket; the GRU without attention's
    # short and long buckets overlap (no clear Figure-2 fall)
    for b in results["data"]["test_by_bucket"]:
        assert (
            min(m["bahdanau"]["buckets"][b]["bleu"], m["luong-general"]["buckets"][b]["bleu"])
            > m["gru"]["buckets"][b]["bleu"]
        )
    short, long = m["gru"]["buckets"]["11-15"], m["gru"]["buckets"]["31-40"]
    assert long["bleu"] < short["bleu"] and long["high"] > short["low"]
    # chapter 2: names kept and 1-gram precision rise with attention; brevity plays little part
    for k in ("bahdanau", "luong-general"):
        assert m[k]["errors"]["names"] > m["gru"]["errors"]["names"]
        assert m[k]["errors"]["p1"] > m["gru"]["errors"]["p1"]
    assert all(0.8 <= m[k]["errors"]["length_ratio"] <= 1.05 for k in MODEL_KINDS)
    # chapter 7: the transformer ahead at every length, its lead smallest on the longest verses,
    # where it falls more than any GRU (from its best bucket)
    buckets = list(results["data"]["test_by_bucket"])
    lead = {
        b: m["transformer"]["buckets"][b]["bleu"] - max(m[k]["buckets"][b]["bleu"] for k in MODEL_KINDS[:3])
        for b in buckets
    }
    assert min(lead.values()) > 0 and min(lead, key=lead.get) == "31-40"
    fall = {k: max(v["bleu"] for v in m[k]["buckets"].values()) - m[k]["buckets"]["31-40"]["bleu"] for k in MODEL_KINDS}
    assert max(fall, key=fall.get) == "transformer"
    # chapter 7: arithmetic within a factor of two, the GRU without attention did the most
    flops = {k: m[k]["training"]["train_flops"] for k in MODEL_KINDS}
    assert max(flops.values()) / min(flops.values()) < 2 and max(flops, key=flops.get) == "gru"


def test_results_md_holds_the_stored_tables(results):
    """benchmarks/RESULTS.md shows the tables that `evaluate_translation.py --markdown` prints."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("evaluate_translation", root / "scripts/evaluate_translation.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    tables = script.markdown_tables(results)
    assert tables.count("\n| transformer |") == 3  # one row per table
    assert tables in (root / "benchmarks/RESULTS.md").read_text()


@pytest.mark.bible
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_stored_weights_reproduce_the_stored_bleu(results, kind):
    from minitransformer.bleu import corpus_bleu
    from minitransformer.book.translation_experiments import load_translation_model, translate, translation_data

    data = translation_data()
    model = load_translation_model(kind, data.tokenizer).model
    hyps = translate(model, data.encoded["test"][:50], data.tokenizer)
    refs = [p.fr for p in data.pairs["test"][:50]]
    assert corpus_bleu(hyps, refs) == pytest.approx(results["models"][kind]["first50_bleu"], abs=1e-3)


@pytest.mark.bible
@pytest.mark.slow
def test_short_training_run_saves_and_loads(tmp_path):
    from minitransformer.book.translation_experiments import (
        load_translation_model,
        save_translation_model,
        train_translation,
        translate,
        translation_data,
    )

    data = translation_data()
    setup = TranslationSetup.recipe("luong-general", max_steps=25, valid_size=8, emb_dim=16, hidden=32)
    run = train_translation(setup, data, progress=False, log=None)
    assert run.steps == 25 and run.best_step == 25 and run.flops > 0
    assert [r for r in run.history if "valid_bleu" in r][0]["step"] == 25
    path = save_translation_model(run, tmp_path / "m.pt", steps=run.steps)
    loaded = load_translation_model("luong-general", data.tokenizer, path)
    assert loaded.setup == setup and loaded.info == {"steps": 25}
    src = data.encoded["valid"][:4]
    assert translate(loaded.model, src, data.tokenizer) == translate(run.model.half().float(), src, data.tokenizer)


@pytest.mark.bible
@pytest.mark.slow
def test_alignment_heatmaps(tmp_path):
    from minitransformer.book.translation_experiments import build_model, translation_data

    data = translation_data()
    shown = tr.example_pairs(data.pairs["test"], per_book=1)
    assert len(shown) == 3 and len({p.book for p in shown}) == 3
    models = {
        "gru": build_model(TranslationSetup("bahdanau", emb_dim=8, hidden=16), data.tokenizer),
        "tf": build_model(TranslationSetup("transformer", d_model=16, d_ff=32), data.tokenizer),
    }
    frame = tr.alignment_frame(models, shown[:2], data.tokenizer)
    assert len(frame) == 4
    for row in frame.itertuples():
        w = np.array(row.w)
        assert w.shape == (len(row.tgt), len(row.src))
        np.testing.assert_allclose(w.sum(1), 1, atol=0.02 * len(row.src))  # each output step: a distribution
    spec = json.loads(tr.alignment_picker(frame, "t").to_json())
    assert [p["name"] for p in spec["params"]] == ["sentence", "model"]


@pytest.mark.bible
@pytest.mark.slow
def test_the_alignments_chapter_2_describes():
    """Chapter 2's sentences about its heatmaps: the source piece each named output piece looks at most."""
    from minitransformer.book.translation_experiments import load_translation_model, translation_data

    data = translation_data()
    models = {k: load_translation_model(k, data.tokenizer).model for k in ("bahdanau", "luong-general")}
    frame = tr.alignment_frame(
        {tr.LABELS[k]: m for k, m in models.items()}, tr.example_pairs(data.pairs["test"]), data.tokenizer
    )

    def looks(kind, ref, piece, nth=0):
        row = frame[(frame.model == tr.LABELS[kind]) & (frame.ref == ref)].iloc[0]
        t = [i for i, p in enumerate(row.tgt) if p == piece][nth]
        return row.src[int(np.argmax(row.w[t]))]

    for kind in ("bahdanau", "luong-general"):
        assert looks(kind, "Judges 8:13", "▁fils") == "▁son" and looks(kind, "Judges 8:13", "▁de") == "▁of"
        assert looks(kind, "Romans 4:8", "▁Seigneur") == "▁Lord"
    assert looks("luong-general", "Romans 4:8", "▁ne") == "▁not"
    assert (
        looks("luong-general", "Acts 5:7", "▁son") == "▁his" and looks("luong-general", "Acts 5:7", "▁femme") == "▁wife"
    )
    assert looks("luong-general", "Acts 5:7", "▁ne") == "▁not" and looks("luong-general", "Acts 5:7", "▁pas") == "▁not"
    assert (
        looks("luong-general", "Acts 5:7", "▁ne", 1) == "▁not"
        and looks("luong-general", "Acts 5:7", "▁sa", 1) == "▁know"
    )
    assert all(looks("luong-general", "Romans 4:8", "homme", i) == "▁man" for i in range(3))
