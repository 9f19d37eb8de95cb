"""Sparse masks, sliding-window, linear and FAVOR+ attention, and the cost helpers, against
float64 brute-force definitions (the masks' rules pair by pair here; attention from
minitransformer.reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import minitransformer as mt
from helpers import rand
from minitransformer.book.cost import TensorMemoryTracker, loglog_slope, measure_cost, peak_tensor_bytes, time_call
from minitransformer.efficient import (
    global_token_mask,
    mask_density,
    random_mask,
    sliding_window_attention,
    sliding_window_mask,
    sparse_attention,
    strided_mask,
)
from minitransformer.linear_attention import (
    elu_feature_map,
    favor_attention,
    favor_features,
    linear_attention,
    linear_attention_from_features,
    orthogonal_random_features,
)
from minitransformer.reference import attention_ref, linear_attention_ref

f64 = torch.float64


# ---- masks against their definitions, pair by pair ----------------------------------------------


def brute(n, rule):
    return torch.tensor([[bool(rule(i, j)) for j in range(n)] for i in range(n)])


@pytest.mark.parametrize("n", [1, 2, 7, 16])
@pytest.mark.parametrize("w", [0, 1, 3, 20])
def test_sliding_window_mask_matches_definition(n, w):
    assert torch.equal(sliding_window_mask(n, w), brute(n, lambda i, j: abs(i - j) <= w))
    assert torch.equal(sliding_window_mask(n, w, causal=True), brute(n, lambda i, j: 0 <= i - j <= w))
    assert sliding_window_mask(n, w).dtype == torch.bool


@pytest.mark.parametrize("n,s", [(1, 1), (9, 1), (16, 4), (17, 3), (10, 12)])
def test_strided_mask_matches_definition(n, s):
    rule = lambda i, j: abs(i - j) < s or (i - j) % s == 0  # noqa: E731
    assert torch.equal(strided_mask(n, s, causal=False), brute(n, rule))
    assert torch.equal(strided_mask(n, s), brute(n, lambda i, j: j <= i and rule(i, j)))


def test_strided_mask_reaches_everything_in_two_hops():
    m = strided_mask(64, 8).double()
    two_hops = (m @ m) > 0
    assert torch.equal(two_hops, mt.causal_mask(64))


@pytest.mark.parametrize("glob", [0, 2, [0, 5], [3]])
@pytest.mark.parametrize("w", [0, 2])
def test_global_token_mask_matches_definition(glob, w):
    n = 9
    G = set(range(glob)) if isinstance(glob, int) else set(glob)
    rule = lambda i, j: i in G or j in G or abs(i - j) <= w  # noqa: E731
    assert torch.equal(global_token_mask(n, glob, window=w), brute(n, rule))
    assert torch.equal(global_token_mask(n, glob, window=w, causal=True), brute(n, lambda i, j: j <= i and rule(i, j)))


@pytest.mark.parametrize("causal", [False, True])
def test_random_mask_counts_and_reproducibility(causal):
    n, r = 12, 3
    m = random_mask(n, r, causal=causal, seed=1)
    candidates = torch.arange(1, n + 1) if causal else torch.full((n,), n)
    assert torch.equal(m.sum(1), candidates.clamp(max=r))
    if causal:
        assert not (m & ~mt.causal_mask(n)).any()
    assert torch.equal(m, random_mask(n, r, causal=causal, seed=1))
    assert not torch.equal(m, random_mask(n, r, causal=causal, seed=2))


def test_mask_density():
    assert mask_density(sliding_window_mask(10, 0)) == pytest.approx(0.1)
    assert mask_density(mt.causal_mask(4)) == pytest.approx(10 / 16)
    with pytest.raises(TypeError, match="bool"):
        mask_density(torch.ones(3, 3))


@pytest.mark.parametrize("bad", [(0, 1), (-3, 1), (4, -1), (4, 1.5), (True, 1)])
def test_mask_builders_reject_bad_sizes(bad):
    n, w = bad
    with pytest.raises(ValueError):
        sliding_window_mask(n, w)


def test_other_builders_reject_bad_arguments():
    with pytest.raises(ValueError, match="stride"):
        strided_mask(8, 0)
    with pytest.raises(ValueError, match="outside"):
        global_token_mask(8, [8])
    with pytest.raises(ValueError, match="between 0 and n"):
        global_token_mask(8, 9)
    with pytest.raises(ValueError, match="num_random"):
        random_mask(8, -1)


# ---- sparse attention ------------------------------------------------------------------------------


def test_sparse_attention_is_masked_attention_and_reference():
    q, k, v = rand(2, 3, 11, 8, seed=1), rand(2, 3, 11, 8, seed=2), rand(2, 3, 11, 5, seed=3)
    mask = strided_mask(11, 3) | global_token_mask(11, 1, causal=True)
    got = sparse_attention(q, k, v, mask)
    assert torch.allclose(got, torch.from_numpy(attention_ref(q, k, v, mask)), atol=1e-12)


def test_sparse_attention_rejects_bad_masks():
    q = rand(5, 4)
    with pytest.raises(TypeError, match="bool"):
        sparse_attention(q, q, q, torch.ones(5, 5))
    with pytest.raises(ValueError, match=r"\(Lq, Lk\) = \(5, 5\)"):
        sparse_attention(q, q, q, torch.ones(4, 5, dtype=torch.bool))


@pytest.mark.parametrize("n", [1, 5, 33])
@pytest.mark.parametrize("w", [0, 1, 4, 40])
@pytest.mark.parametrize("causal", [False, True])
def test_sliding_window_attention_equals_masked_reference(n, w, causal):
    q, k, v = rand(2, 2, n, 8, seed=4), rand(2, 2, n, 8, seed=5), rand(2, 2, n, 3, seed=6)
    got = sliding_window_attention(q, k, v, w, causal=causal)
    ref = attention_ref(q, k, v, sliding_window_mask(n, w, causal=causal).numpy())
    assert got.shape == (2, 2, n, 3)
    assert np.allclose(got.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("block", [4, 5, 64])
def test_sliding_window_attention_block_sizes(block):
    q, k, v = rand(3, 30, 8, seed=19), rand(3, 30, 8, seed=20), rand(3, 30, 2, seed=21)
    for causal in (False, True):
        got = sliding_window_attention(q, k, v, 4, causal=causal, block_size=block)
        ref = attention_ref(q, k, v, sliding_window_mask(30, 4, causal=causal).numpy())
        assert np.allclose(got.numpy(), ref, atol=1e-12)


def test_sliding_window_attention_gradients_are_finite_and_match():
    q, k, v = (rand(2, 21, 8, seed=s).requires_grad_() for s in (22, 23, 24))
    sliding_window_attention(q, k, v, 3, causal=True).sum().backward()
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    sparse_attention(q, k, v, sliding_window_mask(21, 3, causal=True)).sum().backward()
    for g_, t in zip(got, (q, k, v)):
        assert torch.isfinite(g_).all() and torch.allclose(g_, t.grad, atol=1e-12)


def test_sliding_window_attention_custom_scale_and_float32():
    q, k, v = (rand(3, 20, 16, seed=s).float() for s in (7, 8, 9))
    got = sliding_window_attention(q, k, v, 3, scale=0.5)
    ref = attention_ref(q, k, v, sliding_window_mask(20, 3).numpy(), scale=0.5)
    assert got.dtype == torch.float32 and np.allclose(got.numpy(), ref, atol=1e-5)


def test_sliding_window_attention_rejects_bad_arguments():
    q = rand(6, 4)
    with pytest.raises(ValueError, match="as many keys as queries"):
        sliding_window_attention(q, rand(7, 4), rand(7, 4), 2)
    with pytest.raises(ValueError, match="head dim 4 but k has 3"):
        sliding_window_attention(q, rand(6, 3), rand(6, 4), 2)
    with pytest.raises(ValueError, match="window"):
        sliding_window_attention(q, q, q, -1)
    with pytest.raises(ValueError, match="block_size"):
        sliding_window_attention(q, q, q, 4, block_size=3)


def test_sliding_window_memory_is_linear_in_n():
    peaks = []
    for n in (512, 1024, 2048):
        q = torch.randn(1, n, 32)
        peaks.append(peak_tensor_bytes(sliding_window_attention, q, q, q, 8))
    assert 1.8 < peaks[1] / peaks[0] < 2.2 and 1.8 < peaks[2] / peaks[1] < 2.2


# ---- linear attention -------------------------------------------------------------------------------


def test_elu_feature_map_is_positive():
    x = torch.linspace(-30, 30, 101, dtype=f64)
    assert (elu_feature_map(x) > 0).all()
    assert torch.allclose(elu_feature_map(x), torch.where(x > 0, x + 1, torch.exp(x)))


@pytest.mark.parametrize("n,m", [(1, 1), (7, 13), (32, 32)])
def test_linear_attention_equals_quadratic_form(n, m):
    q, k, v = rand(2, 3, n, 8, seed=10), rand(2, 3, m, 8, seed=11), rand(2, 3, m, 5, seed=12)
    got = linear_attention(q, k, v)
    assert got.shape == (2, 3, n, 5)
    assert np.allclose(got.numpy(), linear_attention_ref(q, k, v, elu_feature_map), atol=1e-12)


@pytest.mark.parametrize("n", [1, 6, 37])
@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
def test_causal_linear_attention_equals_masked_quadratic_form(n, chunk):
    q, k, v = rand(2, n, 8, seed=13), rand(2, n, 8, seed=14), rand(2, n, 4, seed=15)
    got = linear_attention(q, k, v, causal=True, chunk_size=chunk)
    assert np.allclose(got.numpy(), linear_attention_ref(q, k, v, elu_feature_map, causal=True), atol=1e-12)


def test_linear_attention_with_another_feature_map_and_broadcast_kv():
    phi = lambda x: torch.cat([torch.relu(x), torch.relu(-x)], -1) + 0.1  # noqa: E731  (r = 2d)
    q, k, v = rand(2, 9, 4, seed=16), rand(1, 9, 4, seed=17), rand(1, 9, 3, seed=18)
    got = linear_attention(q, k, v, feature_map=phi, causal=True, chunk_size=4)
    ref = linear_attention_ref(q, k.expand(2, 9, 4), v.expand(2, 9, 3), phi, causal=True)
    assert np.allclose(got.numpy(), ref, atol=1e-12)


def test_linear_attention_rejects_bad_arguments():
    q = rand(5, 4)
    with pytest.raises(ValueError, match="as many keys as queries"):
        linear_attention(q, rand(6, 4), rand(6, 4), causal=True)
    with pytest.raises(ValueError, match="k has 6 keys but v has 5 values"):
        linear_attention(q, rand(6, 4), rand(5, 4))
    with pytest.raises(ValueError, match="head dim 4 but k has 3"):
        linear_attention(q, rand(5, 3), rand(5, 4))
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention(q, q, q, causal=True, chunk_size=0)
    with pytest.raises(ValueError, match="features"):
        linear_attention_from_features(rand(5, 4), rand(5, 3), rand(5, 2))


# ---- random features (FAVOR+) --------------------------------------------------------------------


def test_orthogonal_random_features_shape_orthogonality_and_seed():
    W = orthogonal_random_features(20, 8, seed=3)
    assert W.shape == (20, 8)
    U = W / W.norm(dim=1, keepdim=True)
    block = U[:8] @ U[:8].T
    assert torch.allclose(block, torch.eye(8, dtype=f64), atol=1e-12)  # a block is orthogonal
    assert torch.equal(W, orthogonal_random_features(20, 8, seed=3))
    assert not torch.equal(W, orthogonal_random_features(20, 8, seed=4))
    with pytest.raises(ValueError, match="num_features"):
        orthogonal_random_features(0, 8)


def test_row_lengths_are_chi_distributed():
    W = orthogonal_random_features(4096, 16, seed=0)
    sq = (W * W).sum(1)  # chi-square with 16 degrees of freedom: mean 16, var 32
    assert abs(sq.mean().item() - 16) < 0.5 and abs(sq.var().item() - 32) < 4


def test_positive_random_features_estimate_exp_dot_product_unbiasedly():
    x, y = rand(6, seed=20) * 0.4, rand(6, seed=21) * 0.4
    W = orthogonal_random_features(60000, 6, seed=0)
    fx = favor_features(x[None], W, stabilizer="none")[0] * math.sqrt(60000)  # one term per feature
    fy = favor_features(y[None], W, stabilizer="none")[0] * math.sqrt(60000)
    terms = (fx * fy).numpy()  # each term is an unbiased estimate of exp(x . y)
    assert (fx > 0).all()
    standard_error = terms.std() / math.sqrt(terms.size)
    assert abs(terms.mean() - math.exp(x @ y)) < 4 * standard_error < 0.06  # exp(x . y) = 0.98


def favor_error(n_features, seed, causal=False):
    # moderate scores (|q . k| / sqrt(d) of order 0.1): the estimator's variance grows like exp(|q|^2 + |k|^2)
    q, k, v = rand(2, 64, 16, seed=30) * 0.3, rand(2, 64, 16, seed=31) * 0.3, rand(2, 64, 8, seed=32)
    exact = attention_ref(q, k, v, is_causal=causal)
    approx = favor_attention(q, k, v, n_features, causal=causal, seed=seed).numpy()
    return np.linalg.norm(approx - exact) / np.linalg.norm(exact)


@pytest.mark.parametrize("causal", [False, True])
def test_favor_error_shrinks_as_features_grow(causal):
    errs = [np.mean([favor_error(r, s, causal) for s in range(4)]) for r in (16, 128, 1024)]
    assert errs[0] > 2 * errs[1] > 4 * errs[2]
    assert errs[2] < 0.05


def test_favor_causal_equals_its_own_quadratic_form_and_stabilizer_cancels():
    q, k, v = rand(10, 8, seed=40), rand(10, 8, seed=41), rand(10, 3, seed=42)
    W = orthogonal_random_features(32, 8, seed=0)
    got = favor_attention(q, k, v, causal=True, features=W, chunk_size=3)
    s = 1 / math.sqrt(8) ** 0.5
    phi = lambda x: favor_features(x * s, W, stabilizer="none")  # noqa: E731
    assert np.allclose(got.numpy(), linear_attention_ref(q, k, v, phi, causal=True), atol=1e-10)


def test_favor_rejects_bad_arguments():
    q = rand(5, 4)
    with pytest.raises(ValueError, match=r"W must be \(num_features, 4\)"):
        favor_attention(q, q, q, features=rand(8, 3))
    with pytest.raises(ValueError, match="stabilizer"):
        favor_features(q, rand(8, 4), stabilizer="max")
    with pytest.raises(ValueError, match="num_features"):
        favor_attention(q, q, q, 0)


# ---- cost helpers ----------------------------------------------------------------------------------------


def test_tracker_counts_live_tensors_exactly():
    x = torch.zeros(1000)
    with TensorMemoryTracker() as t:
        a = x + 1  # 4000 bytes
        b = a * 2  # 8000 live
        del a  # 4000 live
        c = b.view(10, 100)  # a view: nothing new
        b.add_(1)  # in place: nothing new
        d = torch.empty(250)  # 5000 live
    assert t.peak == 8000 and t.live == 5000
    del b, c, d


def test_peak_of_naive_attention_is_quadratic():
    def naive(q):
        return torch.softmax(q @ q.transpose(-1, -2), -1) @ q

    peaks = [peak_tensor_bytes(naive, torch.zeros(n, 8)) for n in (64, 128, 256)]
    # the scores and the weights are alive together; the scores are freed before the output exists
    assert peaks == [2 * n * n * 4 for n in (64, 128, 256)]


def test_measure_cost_and_time_call():
    x = torch.randn(64, 64)
    cost = measure_cost(torch.matmul, x, x, repeats=2, warmup=0)
    assert cost.seconds > 0 and cost.peak_bytes == 64 * 64 * 4
    assert time_call(lambda: None, repeats=1, warmup=0) >= 0
    assert time_call(lambda: None, repeats=2, warmup=0, statistic="min") >= 0
    with pytest.raises(ValueError, match="repeats"):
        time_call(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="statistic"):
        time_call(lambda: None, statistic="mean")


def test_loglog_slope():
    n = np.array([1, 2, 4, 8])
    assert loglog_slope(n, 3 * n**2) == pytest.approx(2.0)
    assert loglog_slope(n, n) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        loglog_slope([1, 2], [0, 1])


def test_exports():
    import minitransformer.efficient as efficient

    for name in (
        "sliding_window_mask",
        "strided_mask",
        "global_token_mask",
        "sparse_attention",
        "sliding_window_attention",
        "linear_attention",
        "favor_attention",
    ):
        assert hasattr(efficient, name) and name in efficient.__all__
