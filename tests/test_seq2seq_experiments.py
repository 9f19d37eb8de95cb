"""The reversal experiment shared by chapters 1 and 2 (tiny settings: seconds)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minitransformer.book.seq2seq_experiments import (
    REVERSAL,
    ReversalSetup,
    decode_examples,
    model_label,
    reversal_data,
    run_reversal,
)
from minitransformer.data import collate
from minitransformer.exercises.ch01 import decoder_inputs_solution, gru_step_solution, jacobian_norms_solution
from minitransformer.exercises.ch02 import additive_scores_solution, contexts_solution, general_scores_solution
from minitransformer.rnn import hidden_jacobian_norms
from minitransformer.rnn_attention import AdditiveAttention, LuongAttention

TINY = ReversalSetup(
    train_lengths=(2, 5), test_lengths=(2, 7), n_train=300, n_test_per_length=4, preset="tiny", steps=6, batch_size=32
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def test_data_is_disjoint_balanced_and_reproducible():
    train, test, tok = reversal_data(TINY)
    assert len(train) == 300 and len(test) == 4 * 6
    assert not {e.src for e in train} & {e.src for e in test}
    assert sorted({e.length for e in test}) == list(range(2, 8))
    assert all(len(e.src) == e.length and e.tgt == e.src[::-1] for e in test)
    again = reversal_data(TINY)
    assert again[0] == train and again[1] == test


@pytest.mark.parametrize("attention", [None, "bahdanau", "luong-dot"])
def test_run_is_deterministic_and_reports_per_length(attention):
    a = run_reversal(attention, TINY)
    b = run_reversal(attention, TINY)
    assert a.accuracy.equals(b.accuracy)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    acc = a.accuracy
    assert list(acc.length) == list(range(2, 8)) and (acc.n == 4).all()
    assert list(acc.trained_length) == [True] * 4 + [False] * 2
    assert set(acc.model) == {model_label(attention, TINY)} == {a.label} and a.cpu_seconds >= 0
    row = a.summary()
    assert {"model", "params", "exact_match_trained", "exact_match_longer", "exact_match_at_7"} <= set(row)


def test_decode_examples_cuts_weights_to_real_lengths():
    run = run_reversal("bahdanau", TINY)
    _, test, tok = reversal_data(TINY)
    outs, weights = decode_examples(run.model, test[:5], tok)
    assert len(outs) == 5 and len(weights) == 5
    for ex, out, w in zip(test, outs, weights):
        assert w.shape == (len(out) + 1, len(ex.src))
        torch.testing.assert_close(w.sum(-1), torch.ones(len(out) + 1))
    outs_none, w_none = decode_examples(run_reversal(None, TINY).model, test[:2], tok)
    assert len(outs_none) == 2 and w_none is None


def test_labels_say_when_the_recipe_differs():
    assert model_label("luong-dot") == "Luong dot" == model_label("luong-dot", REVERSAL)
    assert model_label(None, TINY) == "no attention (6 steps)"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="attention"):
        run_reversal("luong", TINY)
    with pytest.raises(ValueError, match="train_lengths"):
        ReversalSetup(train_lengths=(5, 2))
    assert REVERSAL.train_lengths == (5, 30) and REVERSAL.test_lengths[1] > REVERSAL.train_lengths[1]


# -- the exercises' reference solutions agree with PyTorch and with the package -----------------


def test_gru_step_solution_equals_nn_grucell():
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 5).double()
    x, h = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    ours = gru_step_solution(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    torch.testing.assert_close(ours, cell(x, h))


def test_jacobian_solution_equals_hidden_jacobian_norms():
    torch.manual_seed(0)
    cell = nn.RNNCell(2, 4).double()
    xs = torch.randn(6, 2, dtype=torch.float64)
    h, steps = torch.zeros(4, dtype=torch.float64), []
    for x in xs:
        steps.append(torch.autograd.functional.jacobian(lambda hh: cell(x, hh), h))
        h = cell(x, h).detach()
    torch.testing.assert_close(jacobian_norms_solution(torch.stack(steps)), hidden_jacobian_norms(cell, xs))


def test_decoder_inputs_solution_equals_collate():
    _, test, tok = reversal_data(TINY)
    batch = collate(test[:7], tok)
    torch.testing.assert_close(decoder_inputs_solution(batch.tgt_out, tok.bos_id, tok.pad_id), batch.tgt_in)


def test_attention_solutions_equal_the_package_modules():
    torch.manual_seed(0)
    B, T, S, dq, dk = 2, 3, 5, 4, 6
    s, h = torch.randn(B, T + 1, dq), torch.randn(B, S, dk)
    add = AdditiveAttention(dq, dk, 7)
    scores = additive_scores_solution(s, h, add.W_a.weight, add.U_a.weight, add.v_a.weight[0])
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    ctx = contexts_solution(scores, h, mask)
    for t in range(T):
        c, w = add(s[:, t], h, mask=mask)  # step t + 1 uses s_t = the previous state
        torch.testing.assert_close(ctx[:, t], c)
    gen = LuongAttention(dq, dk, score="general")
    e = general_scores_solution(s[:, 0], h, gen.W_a.weight)
    torch.testing.assert_close(torch.softmax(e, -1), gen(s[:, 0], h)[1])
