"""The generated session data and the session recommender."""

from __future__ import annotations

import pytest
import torch

from minitransformer.book.recsys import (
    PAD,
    Catalogue,
    SessionRecommender,
    adversarial_weights,
    hit_rate,
    make_sessions,
    remove_item,
    successor_of_last_baseline,
)


def test_sessions_have_the_stated_structure():
    cat = Catalogue()
    data = make_sessions(300, cat, max_len=10, seed=1)
    h, t, ev = data["history"], data["target"], data["evidence"]
    assert h.shape == (300, 10) and t.shape == (300,)
    rows = torch.arange(300)
    last_episode = h[rows, ev]
    assert not cat.is_trending(last_episode).any() and (last_episode != PAD).all()
    assert torch.equal(t, last_episode + 1)  # the target is the next episode
    after = torch.arange(10)[None, :] > ev[:, None]
    assert (cat.is_trending(h) | ~after).all()  # only trending clicks after the evidence
    first = (h != PAD).float().argmax(1)
    assert ((h != PAD) == (torch.arange(10)[None, :] >= first[:, None])).all()  # left-padded
    assert torch.equal(make_sessions(300, cat, seed=1)["history"], h)
    assert cat.name(cat.episode(2, 5)) == "S2E5" and cat.name(cat.trending(3)) == "trend3"


def test_model_shapes_masking_and_weight_override():
    torch.manual_seed(0)
    cat = Catalogue()
    data = make_sessions(16, cat, seed=2)
    model = SessionRecommender(cat.num_items, 10, 16)
    scores, w = model(data["history"], need_weights=True)
    assert scores.shape == (16, cat.num_items) and w.shape == (16, 10)
    assert torch.isinf(scores[:, PAD]).all()  # padding is never recommended
    assert torch.allclose(w.sum(-1), torch.ones(16))
    assert (w[data["history"] == PAD] == 0).all()  # no weight on padding
    assert torch.allclose(model(data["history"], weights=w), scores, atol=1e-6)
    with pytest.raises(ValueError, match="weights must be"):
        model(data["history"], weights=w[:, :5])


def test_hit_rate_remove_item_and_baseline():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    assert hit_rate(scores, torch.tensor([2, 0]), k=1) == 0.5
    assert hit_rate(scores, torch.tensor([2, 0]), k=2) == 1.0
    h = torch.tensor([[0, 3, 4, 5], [1, 2, 3, 4]])
    assert remove_item(h, torch.tensor([2, 0])).tolist() == [[0, 0, 3, 5], [0, 2, 3, 4]]
    cat = Catalogue()
    hist = torch.tensor([[0, cat.episode(0, 1), cat.episode(0, 2)], [0, cat.episode(1, 3), cat.trending(0)]])
    base = successor_of_last_baseline(hist, cat)
    assert base[0].argmax() == cat.episode(0, 3) and base[1].sum() == 0


def test_adversarial_weights_are_valid_distributions():
    torch.manual_seed(0)
    cat = Catalogue()
    data = make_sessions(4, cat, seed=3)
    model = SessionRecommender(cat.num_items, 10, 16)
    w0, w = adversarial_weights(model, data["history"], steps=20)
    assert w.shape == w0.shape == (4, 10)
    assert torch.allclose(w.sum(-1), torch.ones(4), atol=1e-6) and (w[data["history"] == PAD] == 0).all()
