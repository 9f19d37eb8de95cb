"""Chapter 9's warmup-and-clipping experiment: the arms differ in one factor at a time."""

from __future__ import annotations

import math

import pytest
import torch

from minitransformer.book.warmup_experiment import (
    copy_batch,
    copy_task_optimum,
    summarize_warmup_runs,
    warmup_clipping_runs,
)


def test_copy_batch_repeats_its_first_half():
    x, y = copy_batch(torch.Generator().manual_seed(0), batch_size=4, vocab_size=16, half=8)
    assert x.shape == y.shape == (4, 15)
    seq = torch.cat([x, y[:, -1:]], 1)  # (4, 16): the whole sequence
    assert torch.equal(seq[:, :8], seq[:, 8:]) and int(seq.min()) >= 1 and int(seq.max()) <= 15


def test_optimum_is_the_entropy_of_the_unpredictable_targets():
    assert copy_task_optimum() == pytest.approx(7 / 15 * math.log(15))
    assert copy_task_optimum(vocab_size=3, half=2) == pytest.approx(1 / 3 * math.log(2))


@pytest.fixture(scope="module")
def short_runs():
    torch.set_num_threads(1)
    return warmup_clipping_runs(seeds=(0, 1), steps=6, warmup=3, clip=0.5)


def test_four_arms_each_with_every_seed_and_equal_steps(short_runs):
    runs = short_runs
    assert runs.groupby("arm").seed.nunique().eq(2).all() and runs.arm.nunique() == 4
    assert runs.groupby(["arm", "seed"]).step.agg(list).map(lambda s: s == list(range(6))).all()
    factors = runs.groupby("arm")[["warmup", "clip"]].first()
    assert sorted(map(tuple, factors.values.tolist())) == [(0, 0.0), (0, 0.5), (3, 0.0), (3, 0.5)]


def test_arms_share_weights_batches_and_schedule_but_the_changed_factor(short_runs):
    runs = short_runs
    for seed in (0, 1):
        first = runs[(runs.seed == seed) & (runs.step == 0)]
        # same initial weights and first batch in every arm: the same loss and gradient norm at step 0
        assert first.loss.nunique() == 1 and first.grad_norm.round(12).nunique() == 1
    lr = runs[runs.seed == 0].pivot(index="step", columns="arm", values="lr")
    # clipping does not touch the schedule; warmup does, and only during the warmup
    assert lr["no warmup, no clipping"].equals(lr["no warmup, clipping"])
    assert lr["warmup, no clipping"].equals(lr["warmup, clipping"])
    assert lr["no warmup, no clipping"].iloc[0] == pytest.approx(5e-2)  # cosine from the first step
    assert lr["warmup, no clipping"].iloc[:3].tolist() == pytest.approx([5e-2 / 3, 2 * 5e-2 / 3, 5e-2])
    # without clipping the runs of one seed only differ once the schedules do
    a = runs[(runs.seed == 0) & (runs.arm == "no warmup, no clipping")].loss.to_numpy()
    b = runs[(runs.seed == 0) & (runs.arm == "no warmup, clipping")].loss.to_numpy()
    assert a[0] == b[0] and not (a == b).all()  # clipping at 0.5 changes the later steps


def test_summary_reads_each_run(short_runs):
    table = summarize_warmup_runs(short_runs, optimum=2.0, last=2, tolerance=0.5)
    assert len(table) == 8
    run = short_runs[(short_runs.arm == "warmup, clipping") & (short_runs.seed == 1)]
    row = table[(table.arm == "warmup, clipping") & (table.seed == 1)].iloc[0]
    assert row.final_loss == pytest.approx(run.loss.tail(2).mean())
    assert row.max_grad_norm == pytest.approx(run.grad_norm.max())
    assert bool(row.solved) == (row.final_loss - 2.0 < 0.5)
    assert (table.spikes >= 0).all()


def test_runs_do_not_depend_on_the_callers_thread_count():
    """Chaotic runs: pinned to one thread inside, and the caller's setting is restored."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = warmup_clipping_runs(seeds=(0,), steps=4, warmup=2)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        b = warmup_clipping_runs(seeds=(0,), steps=4, warmup=2)
    finally:
        torch.set_num_threads(before)
    assert a.equals(b)
