"""Schedules, label smoothing, the training loop and evaluation helpers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minitransformer.data import task_tokenizer, train_test_pairs
from minitransformer.rnn import Seq2Seq, Seq2SeqConfig
from minitransformer.train import (
    History,
    NoamSchedule,
    accuracy_by_length,
    fit,
    global_grad_norm,
    label_smoothing_loss,
    noam_lr,
    noam_scheduler,
    set_seed,
    smoothed_targets,
    train_seq2seq,
    warmup_cosine_lr,
    warmup_cosine_scheduler,
)


@pytest.mark.parametrize("d_model,warmup", [(512, 4000), (128, 100), (64, 1)])
def test_noam_peak_at_warmup(d_model, warmup):
    lrs = [noam_lr(s, d_model, warmup) for s in range(1, 3 * warmup + 2)]
    assert int(np.argmax(lrs)) + 1 == warmup
    assert math.isclose(max(lrs), d_model**-0.5 * warmup**-0.5)
    assert noam_lr(0, d_model, warmup) == noam_lr(1, d_model, warmup)
    assert math.isclose(noam_lr(4 * warmup, d_model, warmup), d_model**-0.5 * (4 * warmup) ** -0.5)


def test_noam_scheduler_drives_the_optimizer():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = noam_scheduler(opt, 64, 10, factor=2.0)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([noam_lr(i + 1, 64, 10, 2.0) for i in range(20)])
    assert NoamSchedule(64, 10)(9) == noam_lr(10, 64, 10)
    with pytest.raises(ValueError, match=r"d_model=0, warmup=10"):
        noam_lr(5, 0, 10)


def test_warmup_cosine():
    values = [warmup_cosine_lr(s, 10, 110, min_ratio=0.1) for s in range(130)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[60] == pytest.approx(0.55) and values[110] == pytest.approx(0.1) and values[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[9:], values[10:]))
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    warmup_cosine_scheduler(opt, 10, 110)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match=r"warmup=20, total=10"):
        warmup_cosine_lr(0, 20, 10)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 1.0])
def test_label_smoothing_equals_torch(eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 7, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, 7, (12,), generator=g)
    targets[[2, 5]] = -100
    exact = dict(atol=1e-12, rtol=0)  # float64 all the way: the smoothed targets too
    ours = label_smoothing_loss(logits, targets, eps)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, F.cross_entropy(logits, targets, label_smoothing=eps), **exact)
    targets[[2, 5]] = 3
    torch.testing.assert_close(
        label_smoothing_loss(logits, targets, eps, ignore_index=0),
        F.cross_entropy(logits, targets, ignore_index=0, label_smoothing=eps),
        **exact,
    )


def test_smoothed_target_distribution():
    q = smoothed_targets(torch.tensor([2, 0]), 5, 0.1)
    assert q.shape == (2, 5)
    torch.testing.assert_close(q.sum(-1), torch.ones(2))
    assert q[0, 2].item() == pytest.approx(0.9 + 0.02) and q[0, 1].item() == pytest.approx(0.02)
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\], got 1.5"):
        smoothed_targets(torch.tensor([1]), 3, 1.5)
    with pytest.raises(ValueError, match=r"logits must be \(N, C\) and targets \(N,\)"):
        label_smoothing_loss(torch.randn(2, 3, 4), torch.tensor([1, 2]), 0.1)


def test_set_seed_makes_everything_repeat():
    def draw():
        set_seed(7)
        return random.random(), np.random.rand(), torch.rand(1).item()

    assert draw() == draw()


def _fit(seed):
    set_seed(seed)
    model = nn.Linear(3, 1)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    hist = fit(
        model,
        lambda step: F.mse_loss(model(x), y),
        opt,
        60,
        clip_norm=1.0,
        progress=False,
        eval_fn=lambda: {"val_loss": F.mse_loss(model(x), y).item()},
        eval_every=20,
        log_every=10,
    )
    return model, hist


def test_train_loop_records_history_and_is_deterministic():
    model, hist = _fit(0)
    assert isinstance(hist, History)
    losses = [r["loss"] for r in hist if "loss" in r]
    assert losses[-1] < 0.1 * losses[0]
    assert [r["step"] for r in hist if "val_loss" in r] == [20, 40, 60]
    frame = hist.to_frame()
    assert {"step", "loss", "lr", "time", "val_loss"} <= set(frame.columns)
    model2, hist2 = _fit(0)
    assert torch.equal(model.weight, model2.weight)
    assert [r["loss"] for r in hist if "loss" in r] == [r["loss"] for r in hist2 if "loss" in r]
    assert not model.training
    with pytest.raises(ValueError, match=r"num_steps must be >= 1, got 0"):
        fit(model, lambda s: model(torch.zeros(1, 3)).sum(), torch.optim.SGD(model.parameters(), 0.1), 0)


def _regression(seed: int = 0):
    """A linear model, a fixed regression batch, and a loss on it."""
    set_seed(seed)
    model = nn.Linear(3, 1)
    x = torch.randn(32, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    return model, lambda step: F.mse_loss(model(x), y)


def test_fit_lr_fn_sets_and_records_the_rate_each_step_uses():
    model, loss_fn = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=123.0)
    hist = fit(model, loss_fn, opt, 4, lr_fn=lambda step: 0.1 * (step + 1), clip_norm=None, log_every=1, progress=False)
    assert [r["lr"] for r in hist] == pytest.approx([0.1, 0.2, 0.3, 0.4]) and [r["step"] for r in hist] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="not both"):
        fit(model, loss_fn, opt, 1, lr_fn=lambda s: 0.1, scheduler=noam_scheduler(opt, 8, 2), progress=False)
    model, loss_fn = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    hist = fit(
        model,
        loss_fn,
        opt,
        3,
        scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s),
        log_every=1,
        progress=False,
    )
    assert [r["lr"] for r in hist] == [1.0, 0.5, 0.25]  # the rate of the step, not the next one


def test_fit_grad_norm_is_measured_before_clipping():
    model, loss_fn = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    hist = fit(model, loss_fn, opt, 1, clip_norm=1e-3, grad_norm=True, progress=False)
    model2, loss_fn2 = _regression()
    loss_fn2(0).backward()
    assert hist[0]["grad_norm"] == global_grad_norm(model2) > 1e-3
    assert list(hist[0]) == ["step", "loss", "grad_norm", "lr", "time"]


def test_fit_in_chunks_equals_one_run_and_log_when_picks_the_steps():
    def run(chunks):
        model, loss_fn = _regression()
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        hist, done = History(), 0
        for n in chunks:
            hist += fit(
                model,
                loss_fn,
                opt,
                n,
                lr_fn=lambda step: 0.05 / (step + 1),
                start_step=done,
                log_when=lambda s: s % 3 == 0 or s == 1,
                progress=False,
            )
            done += n
        return model, hist

    (m1, h1), (m2, h2) = run([7]), run([2, 4, 1])
    assert torch.equal(m1.weight, m2.weight)
    assert [(r["step"], r["loss"], r["lr"]) for r in h1] == [(r["step"], r["loss"], r["lr"]) for r in h2]
    assert [r["step"] for r in h1] == [1, 3, 6]


def test_accuracy_by_length_columns_and_perfect_oracle():
    tok = task_tokenizer("reverse")
    _, test = train_test_pairs("reverse", 10, 12, range(2, 5), seed=0)
    model = Seq2Seq(Seq2SeqConfig(len(tok), emb_dim=4, hidden_size=8, attention="bahdanau"))
    acc = accuracy_by_length(model, test, tok)
    assert list(acc.columns) == ["length", "n", "exact_match", "char_accuracy"]
    assert acc.length.tolist() == [2, 3, 4] and acc.n.tolist() == [4, 4, 4]

    def oracle(batch, max_len):  # decodes by reading the answer: must score 100 %
        return batch.tgt_out

    perfect = accuracy_by_length(model, test, tok, decode_fn=oracle)
    assert (perfect.exact_match == 1.0).all() and (perfect.char_accuracy == 1.0).all()


def test_train_seq2seq_is_deterministic():
    tok = task_tokenizer("reverse")
    train_set, _ = train_test_pairs("reverse", 200, 4, range(2, 6), seed=0)

    def run():
        set_seed(3)
        model = Seq2Seq(Seq2SeqConfig(len(tok), emb_dim=4, hidden_size=8, attention="luong-general"))
        hist = train_seq2seq(model, train_set, tok, 5, batch_size=16, progress=False)
        return model, [r["loss"] for r in hist]

    (m1, l1), (m2, l2) = run(), run()
    assert l1 == l2
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
