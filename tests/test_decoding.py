"""Greedy and beam search (minitransformer.decoding) on small seeded models of both kinds: against the
models' own greedy_decode, an exhaustive search, teacher-forced re-scoring, and batch independence."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from minitransformer import decoding
from minitransformer.book.encdec_experiments import CHECKPOINT_PATH, load_reversal_transformer, with_source_eos
from minitransformer.data import collate, reversal_example
from minitransformer.decoding import beam_search, greedy_search, length_penalty_factor
from minitransformer.rnn import Seq2Seq, Seq2SeqConfig
from minitransformer.transformer import Transformer

PAD, BOS, EOS = 0, 1, 2
KINDS = [None, "bahdanau", "luong-dot", "luong-general", "luong-concat", "transformer", "transformer-pre-ln"]
# EOS logit offsets under which greedy search on batch(B=12, seed=1) both finishes and reaches max_len=10
EOS_BIAS = {None: 0.5, "bahdanau": 0.5, "transformer": 3.0, "transformer-pre-ln": 2.5} | dict.fromkeys(KINDS[2:5], 0.65)


def make_model(kind, V=9, seed=0, sharpen=3.0, eos_bias=None):
    """A seeded random model; ``sharpen`` scales the output layer so that its distributions are peaked
    (as a trained model's are), ``eos_bias`` is added to the EOS logit (default ``EOS_BIAS[kind]``)."""
    eos_bias = EOS_BIAS[kind] if eos_bias is None else eos_bias
    torch.manual_seed(seed)
    if kind is not None and kind.startswith("transformer"):
        model = Transformer(
            V, V, 16, 2, 2, 2, 32, dropout=0.1, norm_first=kind.endswith("pre-ln"), pad_id=PAD, max_len=24
        )
        out = model.generator
    else:
        model = Seq2Seq(Seq2SeqConfig(V, emb_dim=8, hidden_size=16, attention=kind, pad_id=PAD, bos_id=BOS, eos_id=EOS))
        out = model.out
    with torch.no_grad():
        out.weight.mul_(sharpen)
        out.bias[EOS] += eos_bias
    return model.double()


def ids(model):
    return {} if isinstance(model, Seq2Seq) else {"bos_id": BOS, "eos_id": EOS}


def batch(B=5, S=6, V=9, seed=0):
    """Sources of different lengths (the longest S), padded at the end, and their lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    lengths[0] = S
    src = torch.randint(3, V, (B, S), generator=g)
    src[torch.arange(S) >= lengths[:, None]] = PAD
    return src, lengths


def rescore(model, src, tokens, finished):
    """log P(tokens [+ EOS] | src) by one teacher-forced pass (src: one unpadded sentence (1, S))."""
    tgt = torch.tensor([tokens + ([EOS] if finished else [])])  # (1, T)
    tgt_in = torch.cat([torch.tensor([[BOS]]), tgt[:, :-1]], dim=1)  # (1, T)
    model.eval()
    with torch.no_grad():
        if isinstance(model, Seq2Seq):
            logits = model(src, None, tgt_in)  # (1, T, V)
        else:  # no target padding mask: a generated token may be the pad id
            logits = model(src, tgt_in, tgt_mask=torch.ones(1, 1, 1, tgt.shape[1], dtype=torch.bool))
    return float(logits.log_softmax(-1).gather(2, tgt[:, :, None]).sum())


def reference_greedy(model, src, lengths, max_len):
    """The models' own greedy_decode, cut at EOS."""
    if isinstance(model, Seq2Seq):
        out, _ = model.greedy_decode(src, max_len, lengths)
    else:
        mask = (torch.arange(src.shape[1]) < lengths[:, None])[:, None, None, :]  # (B, 1, 1, S)
        out = model.greedy_decode(src, max_len, BOS, EOS, src_mask=mask)
    return cut_at_eos(out, EOS)


def cut_at_eos(out, eos_id):
    """The rows of a greedy_decode output ``(B, n)`` as lists, cut before their first EOS."""
    return [r[: r.index(eos_id)] if eos_id in r else r for r in out.tolist()]


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_search_and_beam_of_one_equal_the_models_greedy_decode(kind):
    model = make_model(kind)
    src, lengths = batch(B=12, seed=1)
    want = reference_greedy(model, src, lengths, 10)
    assert any(len(w) < 10 for w in want) and any(len(w) == 10 for w in want)  # some finish, some are cut
    greedy = greedy_search(model, src, lengths, max_len=10, return_scores=True, **ids(model))
    beam = beam_search(
        model, src, lengths, beam_size=1, length_penalty=0.0, max_len=10, return_scores=True, **ids(model)
    )
    assert greedy.tokens == want
    assert beam.tokens == want
    torch.testing.assert_close(beam.log_probs, greedy.log_probs)
    assert torch.equal(greedy.finished, torch.tensor([len(w) < 10 for w in want]))
    assert torch.equal(beam.finished, greedy.finished)
    if not isinstance(model, Seq2Seq):
        assert model.training  # eval mode only while decoding


@pytest.mark.parametrize("kind", KINDS)
def test_returned_log_probs_equal_teacher_forced_rescoring(kind):
    src, lengths = batch(B=6, seed=2)
    seen = set()
    for eos_bias in (EOS_BIAS[kind], -2.0):  # short outputs, and long ones (beams reordered at every step)
        model = make_model(kind, eos_bias=eos_bias)
        for alpha in (0.0, 1.0):
            kw = dict(beam_size=3, length_penalty=alpha, max_len=9, return_scores=True, **ids(model))
            out = beam_search(model, src, lengths, **kw)
            for b, seq in enumerate(out.tokens):
                assert EOS not in seq
                want = rescore(model, src[b : b + 1, : lengths[b]], seq, bool(out.finished[b]))
                assert out.log_probs[b].item() == pytest.approx(want, abs=1e-9)
                n = len(seq) + int(out.finished[b])
                assert out.scores[b].item() == pytest.approx(want / length_penalty_factor(n, alpha), abs=1e-9)
                seen.add(len(seq))
        greedy = greedy_search(model, src, lengths, max_len=9, return_scores=True, **ids(model))
        for b, seq in enumerate(greedy.tokens):
            want = rescore(model, src[b : b + 1, : lengths[b]], seq, bool(greedy.finished[b]))
            assert greedy.log_probs[b].item() == pytest.approx(want, abs=1e-9)
    assert max(seen) >= 6


@pytest.mark.parametrize("kind", KINDS)
def test_one_sentence_alone_equals_the_same_sentence_in_a_padded_batch(kind):
    model = make_model(kind)
    src, lengths = batch(B=6, seed=3)
    assert len(set(lengths.tolist())) > 2
    together = beam_search(model, src, lengths, beam_size=3, max_len=9, return_scores=True, **ids(model))
    for b in range(len(src)):
        alone = beam_search(
            model, src[b : b + 1, : lengths[b]], beam_size=3, max_len=9, return_scores=True, **ids(model)
        )
        assert alone.tokens == together.tokens[b : b + 1]
        torch.testing.assert_close(alone.log_probs, together.log_probs[b : b + 1])


@pytest.mark.parametrize("kind", ["bahdanau", "luong-general", "transformer"])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_wide_beam_finds_the_best_output_of_an_exhaustive_search(kind, alpha):
    V, max_len = 5, 4  # tokens 0, 1, 3, 4 and EOS = 2: 1 + 4 + 16 + 64 finished outputs
    model = make_model(kind, V=V, sharpen=1.5, seed=4)
    src, lengths = batch(B=3, S=4, V=V, seed=4)
    others = [t for t in range(V) if t != EOS]
    # a beam wider than every step's candidates: every EOS extension ranks in the first K
    out = beam_search(
        model,
        src,
        lengths,
        beam_size=V**max_len,
        length_penalty=alpha,
        max_len=max_len,
        return_scores=True,
        **ids(model),
    )
    for b in range(len(src)):
        one = src[b : b + 1, : lengths[b]]
        best = max(
            (rescore(model, one, list(seq), True) / length_penalty_factor(n + 1, alpha), list(seq))
            for n in range(max_len)
            for seq in itertools.product(others, repeat=n)
        )
        assert out.finished[b]
        assert out.tokens[b] == best[1]
        assert out.scores[b].item() == pytest.approx(best[0], abs=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_beam_log_prob_is_at_least_greedys_on_these_models(kind):
    """Not a theorem (a beam can drop the greedy path), but what beam search is for: checked on
    seeded models, the search's log-probability (alpha = 0) is never below greedy's, and above it often."""
    model = make_model(kind)
    src, lengths = batch(B=12, seed=1)
    greedy = greedy_search(model, src, lengths, max_len=10, return_scores=True, **ids(model))
    beam = beam_search(
        model, src, lengths, beam_size=4, length_penalty=0.0, max_len=10, return_scores=True, **ids(model)
    )
    finished_greedy = greedy.finished
    # compare outputs of the same kind: a finished beam output against a finished greedy one
    assert bool((beam.finished >= finished_greedy).all())
    same = beam.finished == finished_greedy
    assert bool((beam.log_probs[same] >= greedy.log_probs[same] - 1e-12).all())
    assert bool((beam.log_probs > greedy.log_probs + 1e-6).any())


@pytest.mark.parametrize("kind", ["luong-dot", "transformer"])
def test_finished_and_unfinished_hypotheses(kind):
    src, lengths = batch(B=4, seed=6)
    # EOS forced at the first step: every output is empty and finished, log P = log p(EOS | BOS)
    model = make_model(kind, eos_bias=50.0)
    out = beam_search(model, src, lengths, beam_size=3, max_len=7, return_scores=True, **ids(model))
    assert out.tokens == [[]] * 4 and bool(out.finished.all())
    assert out.log_probs.abs().max() < 1e-6
    # EOS never possible: the best max_len-token beam, unfinished
    model = make_model(kind, eos_bias=float("-inf"))
    out = beam_search(model, src, lengths, beam_size=3, max_len=7, return_scores=True, **ids(model))
    assert not bool(out.finished.any()) and all(len(t) == 7 for t in out.tokens)
    assert greedy_search(model, src, lengths, max_len=7, **ids(model)) == reference_greedy(model, src, lengths, 7)
    # EOS likely: outputs of different lengths, every one finished before max_len, no EOS inside
    model = make_model(kind, eos_bias=2.0)
    out = beam_search(
        model, src, lengths, beam_size=3, length_penalty=1.0, max_len=12, return_scores=True, **ids(model)
    )
    assert bool(out.finished.all()) and all(EOS not in t and len(t) < 12 for t in out.tokens)


@pytest.mark.parametrize("kind", ["bahdanau", "transformer"])
def test_stopping_early_changes_nothing(kind, monkeypatch):
    """A sentence's search stops when its best finished score cannot be beaten: the outputs equal
    those of a search that runs every sentence to max_len, in fewer decoder steps."""
    model = make_model(kind, eos_bias=EOS_BIAS[kind] + 0.5)
    out_layer = model.out if isinstance(model, Seq2Seq) else model.generator
    steps = []
    out_layer.register_forward_hook(lambda *_: steps.append(1))
    src, lengths = batch(B=6, seed=7)
    for alpha in (0.0, 0.6, 2.0):
        steps.clear()
        kw = dict(beam_size=3, length_penalty=alpha, max_len=12, return_scores=True, **ids(model))
        early = beam_search(model, src, lengths, **kw)
        early_steps = len(steps)
        with monkeypatch.context() as m:
            m.setattr(decoding, "_cannot_be_beaten", lambda best, *_: torch.zeros_like(best, dtype=torch.bool))
            steps.clear()
            full = beam_search(model, src, lengths, **kw)
            assert len(steps) == 12
        assert early.tokens == full.tokens
        torch.testing.assert_close(early.scores, full.scores)
        if alpha == 0.0:  # log P of a live beam only falls: the search stops soon after all have an EOS
            assert early_steps < 12


def test_length_penalty_factor_is_gnmts():
    assert length_penalty_factor(1, 0.6) == 1.0
    assert length_penalty_factor(7, 1.0) == pytest.approx(2.0)
    assert length_penalty_factor(13, 0.5) == pytest.approx(3**0.5)
    assert length_penalty_factor(20, 0.0) == 1.0


def test_argument_errors_are_clear():
    rnn, tr = make_model(None), make_model("transformer")
    src, lengths = batch()
    with pytest.raises(TypeError, match="Seq2Seq or Transformer"):
        beam_search(torch.nn.Linear(2, 2), src)
    with pytest.raises(ValueError, match="beam_size must be a positive int, got 0"):
        beam_search(rnn, src, beam_size=0)
    with pytest.raises(ValueError, match=r"length_penalty must be in \[0, inf\), got -0.5"):
        beam_search(rnn, src, length_penalty=-0.5)
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        greedy_search(rnn, src, max_len=0)
    with pytest.raises(ValueError, match="no BOS/EOS ids of its own; pass bos_id"):
        beam_search(tr, src)
    with pytest.raises(ValueError, match="max_len=30 exceeds the Transformer's max_len=24"):
        greedy_search(tr, src, max_len=30, bos_id=BOS, eos_id=EOS)
    with pytest.raises(ValueError, match="eos_id=9 is outside the target vocabulary of 9"):
        beam_search(rnn, src, eos_id=9)
    with pytest.raises(TypeError, match="src must hold integer ids"):
        greedy_search(rnn, src.double())
    with pytest.raises(ValueError, match=r"src must be in \[0, 9\); found 11 .. 16"):
        greedy_search(tr, src + 8, bos_id=BOS, eos_id=EOS)
    with pytest.raises(ValueError, match="src must have 2 dims"):
        greedy_search(rnn, src[0])
    with pytest.raises(ValueError, match="src_lengths must be"):
        beam_search(tr, src, torch.tensor([7] * len(src)), bos_id=BOS, eos_id=EOS)
    with pytest.raises(TypeError, match="return_scores must be"):
        beam_search(rnn, src, return_scores=1)


def test_on_the_trained_reversal_transformer():
    """Chapter 7's trained model (shipped checkpoint): greedy and beam search both reverse held-in strings,
    and the beam's output is at least as likely as greedy's."""
    if not CHECKPOINT_PATH.exists():
        pytest.skip("checkpoint not built")
    model, tok, setup, *_ = load_reversal_transformer()
    rng = random.Random(0)
    examples = [reversal_example(rng, n) for n in (5, 9, 14, 22, 30)]
    b = collate(examples, tok)
    src = with_source_eos(b.src, b.src_lengths, tok.eos_id, tok.pad_id) if setup.src_eos else b.src
    kw = dict(max_len=32, bos_id=tok.bos_id, eos_id=tok.eos_id, return_scores=True)
    greedy = greedy_search(model, src, **kw)
    beam = beam_search(model, src, beam_size=4, **kw)
    want = [tok.encode(e.tgt) for e in examples]
    assert greedy.tokens == want and beam.tokens == want
    assert bool(beam.finished.all()) and bool((beam.log_probs >= greedy.log_probs - 1e-5).all())
    assert greedy.tokens == cut_at_eos(model.greedy_decode(src, 32, tok.bos_id, tok.eos_id), tok.eos_id)
