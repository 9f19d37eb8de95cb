"""Bahdanau and Luong attention against explicit float64 formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minitransformer.reference import additive_attention_ref, luong_attention_ref
from minitransformer.rnn_attention import AdditiveAttention, LuongAttention, masked_softmax


def _inputs(B=3, S=5, dq=6, dk=4, dv=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, dq, generator=g, dtype=torch.float64)
    k = torch.randn(B, S, dk, generator=g, dtype=torch.float64)
    v = None if dv is None else torch.randn(B, S, dv, generator=g, dtype=torch.float64)
    mask = torch.rand(B, S, generator=g) > 0.3
    mask[:, 0] = True
    return q, k, v, mask


def _ref(module, q, k, v, mask):
    if isinstance(module, AdditiveAttention):
        return additive_attention_ref(q, k, module.W_a.weight, module.U_a.weight, module.v_a.weight, v, mask)
    if module.score == "dot":
        return luong_attention_ref(q, k, "dot", values=v, mask=mask)
    if module.score == "general":
        return luong_attention_ref(q, k, "general", module.W_a.weight, values=v, mask=mask)
    W = torch.cat([module.W_q.weight, module.W_k.weight], dim=1)  # W_a [s; h] = W_q s + W_k h
    return luong_attention_ref(q, k, "concat", W, module.v_a.weight, values=v, mask=mask)


MODULES = [
    lambda dq, dk: AdditiveAttention(dq, dk, 7),
    lambda dq, dk: LuongAttention(dq, dk, "general"),
    lambda dq, dk: LuongAttention(dq, dk, "concat", hidden_dim=5),
]


@pytest.mark.parametrize("make", MODULES, ids=["additive", "general", "concat"])
@pytest.mark.parametrize("S,dv,use_mask", [(5, None, True), (1, 3, False), (8, 2, True)])
def test_matches_float64_formula(make, S, dv, use_mask):
    torch.manual_seed(1)
    q, k, v, mask = _inputs(S=S, dv=dv)
    module = make(6, 4).double()
    mask = mask if use_mask else None
    context, weights = module(q, k, v, mask)
    ref_c, ref_w = _ref(module, q, k, v, mask)
    np.testing.assert_allclose(weights.detach().numpy(), ref_w, atol=1e-12)
    np.testing.assert_allclose(context.detach().numpy(), ref_c, atol=1e-12)
    assert context.shape == (3, 4 if dv is None else dv) and weights.shape == (3, S)


def test_luong_dot_matches_formula():
    q, k, v, mask = _inputs(dq=4, dk=4, dv=3)
    context, weights = LuongAttention(4, 4, "dot")(q, k, v, mask)
    ref_c, ref_w = luong_attention_ref(q, k, "dot", values=v, mask=mask)
    np.testing.assert_allclose(weights.numpy(), ref_w, atol=1e-12)
    np.testing.assert_allclose(context.numpy(), ref_c, atol=1e-12)


@pytest.mark.parametrize("make", MODULES + [lambda dq, dk: LuongAttention(dq, dq, "dot")])
def test_weights_sum_to_one_and_mask_respected(make):
    q, k, _, mask = _inputs(dq=4, dk=4)
    module = make(4, 4).double()
    context, weights = module(q, k, mask=mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, dtype=torch.float64))
    assert (weights[~mask] == 0).all()
    # padded keys do not influence the result
    k2 = k.clone()
    k2[~mask] = 100.0
    torch.testing.assert_close(module(q, k, mask=mask), module(q, k2, mask=mask))


@pytest.mark.parametrize("make", MODULES + [lambda dq, dk: LuongAttention(dq, dq, "dot")])
def test_fully_masked_row_gives_zeros(make):
    q, k, _, mask = _inputs(dq=4, dk=4)
    mask[1] = False
    context, weights = make(4, 4).double()(q, k, mask=mask)
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    assert (weights[1] == 0).all() and (context[1] == 0).all()
    assert torch.allclose(weights[0].sum(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("make", MODULES + [lambda dq, dk: LuongAttention(dq, dq, "dot")])
def test_precomputed_keys_give_the_same_result(make):
    q, k, v, mask = _inputs(dq=4, dk=4, dv=2)
    module = make(4, 4).double()
    pk = module.precompute_keys(k)
    torch.testing.assert_close(module(q, k, v, mask, projected_keys=pk), module(q, k, v, mask))


def test_masked_softmax_gradients_are_finite():
    scores = torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[True, False, True, False], [False] * 4])
    masked_softmax(scores, mask).sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_errors():
    with pytest.raises(ValueError, match=r"score='dot' needs query_dim == key_dim.*query_dim=6 and key_dim=4"):
        LuongAttention(6, 4, "dot")
    with pytest.raises(ValueError, match=r"score must be one of .*'cosine'"):
        LuongAttention(4, 4, "cosine")
    with pytest.raises(ValueError, match=r"hidden_dim must be a positive int, got 0"):
        AdditiveAttention(4, 4, 0)
    att = AdditiveAttention(6, 4, 8)
    q, k, v, mask = _inputs()
    with pytest.raises(ValueError, match=r"expected query \(B, 6\) and keys \(B, S, 4\).*\(3, 5, 3\)"):
        att(q.float(), torch.randn(3, 5, 3))
    with pytest.raises(ValueError, match=r"query must have 2 dims, got shape \(3, 1, 6\)"):
        att(q.float()[:, None], k.float())
    with pytest.raises(ValueError, match=r"mask must have shape \(B, S\) = \(3, 5\), got \(3, 4\)"):
        att(q.float(), k.float(), mask=mask[:, :4])
    with pytest.raises(TypeError, match=r"mask must be a bool tensor"):
        att(q.float(), k.float(), mask=mask.float())
    with pytest.raises(ValueError, match=r"values must be \(B, S, dv\) = \(3, 5, dv\), got \(3, 4, 2\)"):
        att(q.float(), k.float(), values=torch.randn(3, 4, 2))
    with pytest.raises(ValueError, match=r"projected_keys must be precompute_keys"):
        att(q.float(), k.float(), projected_keys=torch.randn(3, 5, 4))
