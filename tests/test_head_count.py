"""Chapter 4's wide-against-narrow heads experiment (minitransformer.book.head_count), on a tiny budget."""

from __future__ import annotations

import pytest
import torch

from minitransformer.book.head_count import head_count_experiment, head_count_summary
from minitransformer.book.heads import AttentionOnlyTransformer, evaluate, repeated_sequences, train_induction_model

TASK = dict(seq_len=12, vocab_size=10, min_period=2, max_period=4)


def test_equal_parameters_and_one_row_per_run():
    runs = head_count_experiment(
        (1, 2, 8), seeds=(0, 1), steps=3, d_model=8, n_layer=1, batch_size=4, test_size=8, **TASK
    )
    assert list(runs.columns) == ["heads", "head_dim", "seed", "parameters", "loss", "accuracy", "final_train_loss"]
    assert len(runs) == 6 and runs.parameters.nunique() == 1, "the head count must not change the parameter count"
    assert (runs.heads * runs.head_dim == 8).all()
    summary = head_count_summary(runs)
    assert list(summary.heads) == [1, 2, 8] and (summary.seeds == 2).all()
    assert (summary.accuracy_min <= summary.accuracy_mean).all() and (
        summary.accuracy_mean <= summary.accuracy_max
    ).all()


def test_a_run_is_the_documented_recipe_and_is_reproducible():
    kw = dict(seeds=(3,), steps=4, d_model=8, n_layer=2, batch_size=4, test_size=16, test_seed=5, **TASK)
    runs = head_count_experiment((2,), **kw)
    torch.manual_seed(3)  # the weights from the seed, the batches from a generator with the same seed
    model = AttentionOnlyTransformer(10, 12, n_layer=2, n_head=2, d_model=8)
    train_induction_model(model, steps=4, batch_size=4, lr=3e-3, seed=3, **TASK)
    idx, targets = repeated_sequences(16, **TASK, generator=torch.Generator().manual_seed(5))
    assert runs.loss.item() == pytest.approx(evaluate(model, idx, targets)["loss"], abs=1e-12)
    assert runs.equals(head_count_experiment((2,), **kw))


def test_a_head_count_that_does_not_divide_d_model_is_refused():
    with pytest.raises(ValueError, match="not divisible"):
        head_count_experiment((3,), seeds=(0,), steps=1, d_model=8, **TASK)
