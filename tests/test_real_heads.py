"""Chapter 4's real-model section: the shipped data, the measurements, the head picker."""

from __future__ import annotations

import pytest
import torch

from minitransformer.book.real_heads import (
    HEAD_TYPES,
    attention_picker_chart,
    book_data,
    head_types,
    offset_baseline,
    resolve_pair,
    spearman,
    word_attention,
)

DETERMINERS = {"the", "a", "an", "every", "this", "some"}


def test_shipped_sentences_are_annotated_consistently():
    data = book_data()
    assert len(data["sentences"]) >= 20 and len(data["similarity"]) >= 30
    for item in data["sentences"]:
        words = item["text"].split()
        assert item["text"] == item["text"].lower()
        for pair in item["det"]:
            dep, head = resolve_pair(item["text"], pair)
            assert words[dep] in DETERMINERS and head > dep, (item["text"], pair)
        for pair in item["obj"]:
            dep, head = resolve_pair(item["text"], pair)
            assert head < dep, (item["text"], pair)  # English objects follow their verbs
    scores = [p["score"] for p in data["similarity"]]
    assert min(scores) == 0 and max(scores) <= 5 and len(set(scores)) > 5


def test_resolve_pair_counts_occurrences():
    text = "the cat saw the dog"
    assert resolve_pair(text, "the#2>dog") == (3, 4)
    assert resolve_pair(text, "dog>saw") == (4, 2)
    with pytest.raises(ValueError, match="no occurrence 3"):
        resolve_pair(text, "the#3>dog")


def test_word_attention_sums_to_words_and_averages_from_words():
    # [CLS] un ##like ##ly cat [SEP]: word 0 has three pieces
    word_ids = [None, 0, 0, 0, 1, None]
    w = torch.softmax(torch.randn(2, 6, 6, generator=torch.Generator().manual_seed(0)), -1)  # (H, S, S)
    words = word_attention(w, word_ids)  # (H, 2, 2)
    assert words.shape == (2, 2, 2)
    expected_00 = w[:, 1:4, 1:4].sum(-1).mean(-1)  # from the pieces of word 0 (mean) to them (sum)
    torch.testing.assert_close(words[:, 0, 0], expected_00)
    torch.testing.assert_close(words[:, 1, 0], w[:, 4, 1:4].sum(-1))


def test_offset_baseline_and_spearman():
    k, acc = offset_baseline("det")
    assert k == 1 and 0.5 < acc < 1  # most determiners precede their noun directly, not all
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_head_types_picks_the_largest_share_above_a_threshold():
    import pandas as pd

    rows = [dict.fromkeys(HEAD_TYPES, 0.05) | {"previous": 0.9}, dict.fromkeys(HEAD_TYPES, 0.1)]
    assert head_types(pd.DataFrame(rows), threshold=0.4).tolist() == ["previous", "mixed"]


def test_picker_chart_binds_layer_and_head_menus():
    w = torch.softmax(torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)), -1)
    spec = attention_picker_chart(w, ["[CLS]", "a", "b", "[SEP]"], layer=1, head=2).to_dict()
    params = {p["name"]: p for p in spec["params"]}
    assert params["layer"]["value"] == 1 and params["layer"]["bind"]["options"] == [0, 1]
    assert params["head"]["value"] == 2 and params["head"]["bind"]["input"] == "select"
    rows = spec["data"]["values"]
    assert len(rows) == 6 and sum(len(r["w"]) for r in rows) == int((w * 100).round().gt(0).sum())
    assert {"flatten": ["q", "k", "w"]} in [{k: v for k, v in t.items() if k == "flatten"} for t in spec["transform"]]
    with pytest.raises(ValueError, match="3 tokens"):
        attention_picker_chart(w, ["a", "b", "c"])


@pytest.mark.bert
@pytest.mark.slow
def test_the_chapters_claims_about_minilm_heads():
    """Chapter 4 says: a previous-token head, most heads parked on [CLS], one head per relation
    beating the offset baseline, no single head critical for similarity. Rerun the chapter if
    this changes."""
    from minitransformer.book.real_heads import head_type_scores, relation_accuracy, similarity_spearman
    from minitransformer.pretrained import load_bert, load_tokenizer

    bert, tok = load_bert(), load_tokenizer()
    texts = [s["text"] for s in book_data()["sentences"]]
    types = head_type_scores(bert, tok, texts)
    assert types["previous"].max() > 0.8
    assert (head_types(types) == "[CLS]").sum() > 36
    for relation in ("det", "obj"):
        assert relation_accuracy(bert, tok, relation)["accuracy"].max() > offset_baseline(relation)[1]
    assert similarity_spearman(bert, tok) > 0.8
    from minitransformer.book.real_heads import head_ablation

    ablation = head_ablation(bert, tok)
    assert ablation["drop"].max() < 0.05 and (ablation["drop"].abs() < 0.01).sum() > 36
