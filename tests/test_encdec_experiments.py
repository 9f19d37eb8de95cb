"""Chapter 7's Lab 1 (encoder-decoder transformer on reversal, tiny settings) and the null-space construction."""

from __future__ import annotations

import pytest
import torch

from minitransformer import Transformer
from minitransformer.book.encdec_experiments import (
    CHECKPOINT_PATH,
    RNN_CURVES_PATH,
    ReversalTransformerSetup,
    load_reversal_transformer,
    reversal_accuracy,
    reversal_setup_dict,
    run_transformer_reversal,
    save_reversal_transformer,
    stored_rnn_curves,
    with_source_eos,
)
from minitransformer.book.explanation import (
    constraint_matrix,
    gpt_head_values,
    move_weight_off,
    null_space_basis,
    null_space_projection,
    same_output_weights,
)
from minitransformer.book.seq2seq_experiments import REVERSAL, ReversalSetup, reversal_data
from minitransformer.data import collate

TINY_DATA = ReversalSetup(
    train_lengths=(2, 5), test_lengths=(2, 7), n_train=300, n_test_per_length=4, preset="tiny", steps=6, batch_size=32
)
TINY = ReversalTransformerSetup(
    d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=32, steps=8, batch_size=32
)


@pytest.mark.parametrize("src_eos", [False, True])
def test_run_is_deterministic_and_reports_per_length(src_eos):
    setup = ReversalTransformerSetup(**{**TINY.__dict__, "src_eos": src_eos})
    a = run_transformer_reversal(setup, TINY_DATA, progress=False)
    b = run_transformer_reversal(setup, TINY_DATA, progress=False)
    assert a.accuracy.equals(b.accuracy)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    acc = a.accuracy
    assert list(acc.length) == list(range(2, 8)) and (acc.n == 4).all()
    assert list(acc.trained_length) == [True] * 4 + [False] * 2
    row = a.summary()
    assert row["model"] == "transformer" and {"exact_match_trained", "exact_match_longer", "exact_match_at_7"} <= set(
        row
    )


@pytest.mark.slow
def test_reversal_is_learned_on_short_strings():
    # two layers each: one encoder layer cannot find where the string ends (length 3 then fails)
    setup = ReversalTransformerSetup(
        d_model=32,
        num_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        d_ff=64,
        steps=300,
        batch_size=64,
        lr=3e-3,
        warmup=30,
    )
    data = ReversalSetup(train_lengths=(3, 5), test_lengths=(3, 5), n_train=1500, n_test_per_length=20)
    run = run_transformer_reversal(setup, data, progress=False)
    assert run.accuracy.exact_match.mean() > 0.8, run.accuracy


def test_checkpoint_round_trip_keeps_the_recipe_and_measures_the_stored_weights(tmp_path):
    setup = ReversalTransformerSetup(**{**TINY.__dict__, "src_eos": True, "lr": 1e-2})
    data = reversal_data(TINY_DATA)
    run = run_transformer_reversal(setup, TINY_DATA, data=data, progress=False)
    acc = save_reversal_transformer(run, tmp_path / "r.pt", data=data, command="test")
    blob = torch.load(tmp_path / "r.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in blob["state_dict"].values() if v.is_floating_point())
    loaded = load_reversal_transformer(tmp_path / "r.pt")
    assert loaded.setup == setup and loaded.data_setup == TINY_DATA and loaded.info["command"] == "test"
    assert loaded.info["steps"] == setup.steps and not loaded.model.training
    assert loaded.accuracy.equals(acc) and list(acc.length) == list(range(2, 8))
    # the stored table is the float16 weights' accuracy: re-measuring the loaded model gives it again
    assert reversal_accuracy(loaded.model, data[1], loaded.tokenizer, setup, TINY_DATA).equals(acc)
    for (name, p), q in zip(run.model.named_parameters(), loaded.model.parameters()):
        torch.testing.assert_close(q, p.half().float(), rtol=0, atol=0, msg=name)
    with pytest.raises(FileNotFoundError, match="train_reversal_transformer"):
        load_reversal_transformer(tmp_path / "missing.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a minitransformer reversal"):
        load_reversal_transformer(tmp_path / "other.pt")


@pytest.mark.skipif(not CHECKPOINT_PATH.exists(), reason="checkpoint not built")
def test_shipped_checkpoint_loads_and_its_accuracy_is_reproduced():
    model, tok, setup, data_setup, acc, info = load_reversal_transformer()
    assert data_setup == REVERSAL and model.num_parameters() == info["params"]
    assert CHECKPOINT_PATH.stat().st_size < 1_000_000
    lo, hi = REVERSAL.test_lengths
    assert list(acc.length) == list(range(lo, hi + 1)) and (acc.n == REVERSAL.n_test_per_length).all()
    assert acc[acc.trained_length].exact_match.mean() >= 0.99, acc
    test = reversal_data(REVERSAL)[1]
    subset = [e for e in test if e.length in (5, 19, 30, 33)]  # every held-out string of 4 lengths
    b = collate(subset[:3], tok)
    with torch.no_grad():
        assert model(b.src, b.tgt_in).shape == (3, b.tgt_in.shape[1], len(tok))
    again = reversal_accuracy(model, subset, tok, setup, data_setup)
    stored = acc[acc.length.isin([5, 19, 30, 33])].reset_index(drop=True)
    # exact match is reproduced exactly; characters of the WRONG outputs beyond the trained lengths can move a
    # little, because the stored table decoded 500 mixed-length strings per batch (other padding, other rounding)
    assert list(again.exact_match) == list(stored.exact_match), (again, stored)
    assert (again.char_accuracy - stored.char_accuracy).abs().max() < 0.01, (again, stored)


def test_source_eos_is_written_after_the_last_real_token():
    src = torch.tensor([[5, 6, 7], [8, 0, 0]])
    out = with_source_eos(src, torch.tensor([3, 1]), eos_id=2, pad_id=0)
    assert out.tolist() == [[5, 6, 7, 2], [8, 2, 0, 0]]


@pytest.mark.skipif(not RNN_CURVES_PATH.exists(), reason="RNN curves not stored")
def test_stored_rnn_curves_match_the_current_setup():
    acc, meta = stored_rnn_curves()
    assert meta["setup"] == reversal_setup_dict(REVERSAL), (
        "chapters 1-2's REVERSAL changed: rerun python scripts/reversal_rnn_curves.py"
    )
    lo, hi = REVERSAL.test_lengths
    for _, group in acc.groupby("model"):
        assert list(group.length) == list(range(lo, hi + 1))
    assert set(meta["cpu_seconds"]) == set(acc.model)


def test_decoder_layers_all_read_the_final_encoder_output():
    torch.manual_seed(0)
    model = Transformer(9, 9, 16, 2, 2, 3, 32, dropout=0.0, pad_id=0).eval()
    src, tgt = torch.tensor([[3, 4, 5, 0]]), torch.tensor([[1, 6, 7]])
    calls = []
    hooks = [l.cross_attn.register_forward_pre_hook(lambda m, a: calls.append(a)) for l in model.decoder.layers]
    with torch.no_grad():
        memory = model.encode(src)
        model(src, tgt)
    for h in hooks:
        h.remove()
    assert len(calls) == 3 and all(torch.equal(c[1], memory) and torch.equal(c[2], memory) for c in calls)


# -- attention is not explanation ---------------------------------------------------------------


def _case(n=12, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(n, d, generator=g, dtype=torch.float64)
    alpha = torch.softmax(torch.randn(n, generator=g, dtype=torch.float64), 0)
    return alpha, V, torch.randn(n, generator=g, dtype=torch.float64)


def test_null_space_projection_keeps_output_and_sum():
    alpha, V, r = _case()
    u = null_space_projection(V, r)
    A = constraint_matrix(V)
    torch.testing.assert_close(A @ u, torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(null_space_projection(V, u), u)  # a projection: idempotent
    basis = null_space_basis(V)
    assert basis.shape == (12, 12 - 4)
    torch.testing.assert_close(basis @ (basis.T @ r), u)  # the same subspace


def test_alternative_weights_are_distributions_with_the_same_output():
    alpha, V, r = _case(seed=1)
    for new in (same_output_weights(alpha, V, r), move_weight_off(alpha, V, int(alpha.argmax()))):
        assert (new >= 0).all() and abs(new.sum().item() - 1) < 1e-12
        torch.testing.assert_close(new @ V, alpha @ V, atol=1e-12, rtol=0)
        assert (new - alpha).abs().sum() > 0.1
    key = int(alpha.argmax())
    assert move_weight_off(alpha, V, key)[key] < 0.5 * alpha[key]
    with pytest.raises(ValueError, match="alpha must have shape"):
        same_output_weights(alpha[:-1], V, r)


def test_gpt_head_values_reproduce_the_head_output():
    from minitransformer import GPT

    torch.manual_seed(0)
    model = GPT(20, 16, 2, 2, 16).eval()
    idx = torch.randint(20, (1, 10))
    w, v = gpt_head_values(model, idx, layer=1, head=1)
    assert w.shape == (10, 10) and v.shape == (10, 8)
    torch.testing.assert_close(w.sum(-1), torch.ones(10))
    attn = model.blocks[1].self_attn
    captured = {}
    hook = attn.register_forward_hook(lambda m, a, out: captured.setdefault("out", out))
    with torch.no_grad():
        model(idx)
    hook.remove()
    # the head's contribution: columns 8..15 of W_O applied to w @ v, plus nothing else from this head
    heads_out = torch.zeros(10, 16)
    for h in range(2):
        wh, vh = gpt_head_values(model, idx, 1, h)
        heads_out[:, 8 * h : 8 * (h + 1)] = wh @ vh
    torch.testing.assert_close(attn.out(heads_out)[None], captured["out"], atol=1e-5, rtol=1e-5)
