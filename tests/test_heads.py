"""The head-specialisation toolkit of chapter 4: task, model, ablation, head scores."""

from __future__ import annotations

import pytest
import torch

from minitransformer import GPT, MultiHeadAttention
from minitransformer.book.heads import (
    BOS,
    AttentionOnlyTransformer,
    ablate_heads,
    ablation_table,
    attention_layers,
    decode,
    encode,
    head_grid_chart,
    head_scores,
    repeated_sequences,
    text_attention_map,
    train_induction_model,
)


def test_repeated_sequences_repeat_their_period_and_mask_the_first():
    g = torch.Generator().manual_seed(0)
    idx, targets = repeated_sequences(64, seq_len=30, vocab_size=20, min_period=3, max_period=9, generator=g)
    assert idx.shape == targets.shape == (64, 30) and idx.dtype == torch.long
    assert (idx[:, 0] == BOS).all() and (idx[:, 1:] > 0).all() and (idx < 20).all()
    for row, tgt in zip(idx, targets):
        body = row[1:]
        period = int((body[1:] == body[0]).nonzero()[0]) + 1  # first recurrence of the first token
        assert 3 <= period <= 9
        assert len(set(body[:period].tolist())) == period  # distinct within a period
        assert torch.equal(body[period:], body[:-period])  # periodic
        assert (tgt[:period] == -1).all() and tgt[-1] == -1
        assert torch.equal(tgt[period:-1], row[period + 1 :])  # the next token
    with pytest.raises(ValueError, match="max_period"):
        repeated_sequences(2, vocab_size=8, max_period=8)


def test_encode_decode_round_trip():
    assert decode(encode("^MULTIHEAD")[0]) == "^MULTIHEAD"
    with pytest.raises(ValueError, match="not in SYMBOLS"):
        encode("a b")


def test_attention_only_model_shapes_and_maps():
    torch.manual_seed(0)
    m = AttentionOnlyTransformer(12, 10, n_layer=2, n_head=2, d_model=16)
    idx, targets = repeated_sequences(3, seq_len=10, vocab_size=12, max_period=5)
    logits, loss = m(idx, targets)
    assert logits.shape == (3, 10, 12) and loss.dim() == 0
    maps = m.attention_maps(idx)
    assert maps.shape == (2, 3, 2, 10, 10)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 3, 2, 10))
    assert (maps.triu(1) == 0).all()  # causal
    with pytest.raises(ValueError, match="block_size"):
        m(torch.zeros(1, 11, dtype=torch.long))


def test_ablating_a_head_equals_zeroing_its_columns_of_w_o():
    torch.manual_seed(0)
    m = AttentionOnlyTransformer(12, 10, n_layer=2, n_head=4, d_model=16).double()
    idx, _ = repeated_sequences(2, seq_len=10, vocab_size=12, max_period=5)
    intact = m(idx)[0]
    with ablate_heads(m, [(1, 2), (0, 0)]):
        ablated = m(idx)[0]
    assert torch.equal(m(idx)[0], intact)  # hooks removed
    with torch.no_grad():  # the same by editing W_O: head h reads columns h*hd .. (h+1)*hd
        m.attns[1].out.weight[:, 8:12] = 0
        m.attns[0].out.weight[:, 0:4] = 0
    assert torch.allclose(ablated, m(idx)[0], atol=1e-12)
    with pytest.raises(ValueError, match="no head"):
        with ablate_heads(m, [(2, 0)]):
            pass


def test_ablation_table_and_gpt_layers():
    torch.manual_seed(0)
    gpt = GPT(12, 10, n_layer=3, n_head=2, d_model=16)
    layers = attention_layers(gpt)
    assert len(layers) == 3 and all(isinstance(a, MultiHeadAttention) for a in layers)
    idx, targets = repeated_sequences(4, seq_len=10, vocab_size=12, max_period=5)
    table = ablation_table(gpt, idx, targets)
    assert list(table.columns) == ["layer", "head", "loss", "increase", "accuracy"] and len(table) == 6
    assert table.attrs["base_loss"] == pytest.approx(gpt(idx, targets)[1].item())
    assert (table["loss"] - table["increase"] - table.attrs["base_loss"]).abs().max() < 1e-9


def _one_hot_maps(idx, pick):
    """(1, B, 1, T, T) weights putting all of query t's weight on key pick(b, t)."""
    B, T = idx.shape
    w = torch.zeros(1, B, 1, T, T)
    for b in range(B):
        for t in range(T):
            w[0, b, 0, t, pick(b, t)] = 1.0
    return w


def test_head_scores_recognise_ideal_heads():
    idx, _ = repeated_sequences(
        8, seq_len=20, vocab_size=16, min_period=4, max_period=6, generator=torch.Generator().manual_seed(1)
    )
    prev = head_scores(_one_hot_maps(idx, lambda b, t: max(t - 1, 0)), idx).iloc[0]
    assert prev["previous"] == pytest.approx(1.0) and prev["role"] == "previous-token"
    assert prev["content"] == pytest.approx(0.0)  # the same pattern for every input: positional
    first = head_scores(_one_hot_maps(idx, lambda b, t: 0), idx).iloc[0]
    assert first["first"] == pytest.approx(1.0) and first["role"] == "first-token"

    def induction(b, t):  # the successor of the latest earlier occurrence of idx[b, t], else BOS
        earlier = [j for j in range(1, t) if idx[b, j] == idx[b, t]]
        return earlier[-1] + 1 if earlier else 0

    ind = head_scores(_one_hot_maps(idx, induction), idx).iloc[0]
    assert ind["induction"] == pytest.approx(1.0) and ind["role"] == "induction" and ind["content"] > 0.3
    T = idx.shape[1]
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    flat = head_scores(uniform.expand(1, idx.shape[0], 1, T, T), idx).iloc[0]
    assert flat["role"] == "diffuse" and flat["content"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="weights must be"):
        head_scores(torch.zeros(1, 2, 1, 5, 5), idx)


def test_displays():
    w = torch.tril(torch.ones(4, 4)) / torch.arange(1, 5)[:, None]
    text = text_attention_map(w, "^ABA")
    assert text.count("\n") == 4 and "->  0 ^ 1.00" in text
    chart = head_grid_chart(w.expand(2, 3, 4, 4), "^ABA")
    assert chart.to_dict()["spec"]["mark"]["type"] == "rect"


def test_a_short_training_run_lowers_the_loss():
    torch.manual_seed(0)
    m = AttentionOnlyTransformer(12, 16, n_layer=2, n_head=2, d_model=32)
    curve = train_induction_model(
        m, steps=60, batch_size=16, lr=3e-3, log_every=20, seq_len=16, vocab_size=12, max_period=5
    )
    assert list(curve["step"]) == [20, 40, 60] and curve.attrs["seconds"] > 0
    assert curve["loss"].iloc[-1] < curve["loss"].iloc[0]
    assert not m.training
