"""GRU seq2seq models with and without attention, and the Jacobian helper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minitransformer.data import collate, make_pairs, task_tokenizer, train_test_pairs
from minitransformer.rnn import ATTENTION_KINDS, Seq2Seq, Seq2SeqConfig, hidden_jacobian_norms
from minitransformer.train import accuracy_by_length, set_seed, train_seq2seq

TOK = task_tokenizer("reverse")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def _model(attention, seed=0, **kw):
    torch.manual_seed(seed)
    return Seq2Seq(Seq2SeqConfig(len(TOK), emb_dim=8, hidden_size=16, attention=attention, **kw))


def _batch(n=4, seed=0):
    return collate(make_pairs("reverse", n, range(2, 9), seed=seed), TOK)


@pytest.mark.parametrize("attention", ATTENTION_KINDS)
def test_shapes_and_greedy_decode(attention):
    model, b = _model(attention).eval(), _batch()
    logits, weights = model(b.src, b.src_lengths, b.tgt_in, return_weights=True)
    B, S, T = b.src.shape[0], b.src.shape[1], b.tgt_in.shape[1]
    assert logits.shape == (B, T, len(TOK))
    tokens, w = model.greedy_decode(b.src, 7, b.src_lengths)
    assert tokens.shape[0] == B and tokens.shape[1] <= 7 and tokens.dtype == torch.long
    if attention is None:
        assert weights is None and w is None
    else:
        assert weights.shape == (B, T, S) and w.shape == (B, tokens.shape[1], S)
        torch.testing.assert_close(weights.sum(-1), torch.ones(B, T))
        real = torch.arange(S)[None, :] < b.src_lengths[:, None]  # (B, S)
        assert (weights.masked_select(~real[:, None, :].expand_as(weights)) == 0).all()
    # lengths, a bool mask and None (pad-derived) are the same thing
    mask = b.src != TOK.pad_id
    torch.testing.assert_close(model(b.src, mask, b.tgt_in), logits)
    torch.testing.assert_close(model(b.src, None, b.tgt_in), logits)


@pytest.mark.parametrize("attention", ATTENTION_KINDS)
def test_step_t_does_not_see_later_targets(attention):
    model, b = _model(attention).eval(), _batch()
    logits = model(b.src, b.src_lengths, b.tgt_in)
    changed = b.tgt_in.clone()
    t = 3
    changed[:, t + 1 :] = torch.randint(3, len(TOK), changed[:, t + 1 :].shape)
    logits2 = model(b.src, b.src_lengths, changed)
    torch.testing.assert_close(logits2[:, : t + 1], logits[:, : t + 1])
    assert not torch.allclose(logits2[:, t + 1 :], logits[:, t + 1 :])


@pytest.mark.parametrize("attention", ATTENTION_KINDS)
def test_padding_does_not_change_outputs(attention):
    model = _model(attention).eval()
    b = _batch(n=1)
    padded = torch.cat([b.src, torch.full((1, 5), TOK.pad_id)], dim=1)
    torch.testing.assert_close(model(padded, b.src_lengths, b.tgt_in), model(b.src, b.src_lengths, b.tgt_in))


def test_greedy_decode_matches_teacher_forcing_on_its_own_output():
    model, b = _model("bahdanau").eval(), _batch()
    tokens, w = model.greedy_decode(b.src, 6, b.src_lengths)
    tgt_in = torch.cat([torch.full((4, 1), TOK.bos_id), tokens[:, :-1]], dim=1)
    logits, weights = model(b.src, b.src_lengths, tgt_in, return_weights=True)
    first = tokens[:, 0]
    assert torch.equal(logits[:, 0].argmax(-1), first)
    torch.testing.assert_close(weights[:, 0], w[:, 0])


def test_bahdanau_learns_short_reversal():
    set_seed(0)
    train, test = train_test_pairs("reverse", 3000, 60, range(3, 6), seed=0)
    model = Seq2Seq(Seq2SeqConfig(len(TOK), emb_dim=16, hidden_size=48, attention="bahdanau"))
    train_seq2seq(model, train, TOK, 150, batch_size=32, lr=1e-2, warmup=20, progress=False)
    acc = accuracy_by_length(model, test, TOK)
    assert acc.exact_match.mean() > 0.9, acc


def test_config_and_input_errors():
    with pytest.raises(ValueError, match=r"attention must be one of .*'luong'"):
        Seq2SeqConfig(10, attention="luong")
    with pytest.raises(ValueError, match=r"even hidden_size, got 15"):
        Seq2SeqConfig(10, hidden_size=15)
    with pytest.raises(ValueError, match=r"unknown preset 'huge'"):
        Seq2SeqConfig.preset("huge", 10)
    with pytest.raises(TypeError, match=r"config must be a Seq2SeqConfig, got int"):
        Seq2Seq(13)
    model, b = _model("luong-dot"), _batch()
    with pytest.raises(ValueError, match=r"src_lengths must be \(B,\) = \(4,\) with values in \[1, \d+\]"):
        model(b.src, b.src_lengths + 20, b.tgt_in)
    with pytest.raises(ValueError, match=r"a mask for src must be \(B, S\)"):
        model(b.src, torch.ones(4, 2, dtype=torch.bool), b.tgt_in)
    holes = b.src != TOK.pad_id
    holes[:, 0] = False
    with pytest.raises(ValueError, match=r"True on a prefix"):
        model(b.src, holes, b.tgt_in)
    with pytest.raises(TypeError, match=r"src_lengths must be a \(B,\) tensor.*got list"):
        model(b.src, [3, 3, 3, 3], b.tgt_in)
    with pytest.raises(ValueError, match=r"tgt_in must be \(B, T\) with B = 4"):
        model(b.src, b.src_lengths, b.tgt_in[:2])
    with pytest.raises(ValueError, match=r"max_len must be a positive int, got 0"):
        model.greedy_decode(b.src, 0)


def test_unidirectional_encoder():
    model, b = _model(None, bidirectional=False), _batch()
    assert model(b.src, b.src_lengths, b.tgt_in).shape[:2] == b.tgt_in.shape


@pytest.mark.parametrize("cell_type", [nn.GRUCell, nn.RNNCell])
def test_jacobian_norms_equal_autograd(cell_type):
    torch.manual_seed(0)
    cell = cell_type(3, 5).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    norms = hidden_jacobian_norms(cell, x)
    assert norms.shape == (7,) and norms[0] == 1.0

    def unroll(h0, steps):
        h = h0
        for t in range(steps):
            h = cell(x[t : t + 1], h[None]).squeeze(0)
        return h

    h0 = torch.zeros(5, dtype=torch.float64)
    for t in (1, 4, 6):
        J = torch.autograd.functional.jacobian(lambda h: unroll(h, t), h0)
        torch.testing.assert_close(norms[t], torch.linalg.matrix_norm(J, ord=2))
    with pytest.raises(TypeError, match=r"nn.GRUCell or nn.RNNCell, got LSTMCell"):
        hidden_jacobian_norms(nn.LSTMCell(3, 5), x)
    with pytest.raises(ValueError, match=r"inputs must be \(T, 3\), got \(6, 4\)"):
        hidden_jacobian_norms(cell, torch.randn(6, 4, dtype=torch.float64))
