"""scaled_dot_product_attention and the masks, against PyTorch and float64 loops."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from helpers import load_benchmark, rand
from minitransformer import causal_mask, padding_mask, scaled_dot_product_attention
from minitransformer.attention import causal_bias
from minitransformer.reference import attention_ref, causal_mask_ref, gqa_attention_ref

SHAPES = [  # (lead, Lq, Lk, d, dv)
    ((), 1, 1, 4, 4),
    ((), 3, 5, 8, 2),
    ((2,), 7, 7, 16, 16),
    ((2, 3), 5, 9, 8, 4),
    ((1, 4), 1, 13, 32, 8),
]


@pytest.mark.parametrize("lead,Lq,Lk,d,dv", SHAPES)
def test_matches_float64_reference_and_torch(lead, Lq, Lk, d, dv):
    q, k, v = rand(*lead, Lq, d, seed=1), rand(*lead, Lk, d, seed=2), rand(*lead, Lk, dv, seed=3)
    out, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    ref_out, ref_w = attention_ref(q, k, v, return_weights=True)
    assert torch.allclose(out, torch.from_numpy(ref_out), atol=1e-12)
    assert torch.allclose(w, torch.from_numpy(ref_w), atol=1e-12)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-12)


@pytest.mark.parametrize("lead,Lq,Lk,d,dv", SHAPES)
def test_rows_sum_to_one(lead, Lq, Lk, d, dv):
    _, w = scaled_dot_product_attention(
        rand(*lead, Lq, d), rand(*lead, Lk, d, seed=1), rand(*lead, Lk, dv, seed=2), return_weights=True
    )
    assert torch.allclose(w.sum(-1), torch.ones(w.shape[:-1], dtype=w.dtype))


@pytest.mark.parametrize("seed", range(4))
def test_random_masks_match_torch_and_reference(seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = rand(2, 3, 6, 8, seed=seed), rand(2, 3, 9, 8, seed=seed + 10), rand(2, 3, 9, 5, seed=seed + 20)
    mask = torch.rand(2, 1, 6, 9, generator=g) > 0.5
    mask[0, 0, 2] = False  # a fully masked row
    out = scaled_dot_product_attention(q, k, v, mask)
    assert torch.allclose(out, torch.from_numpy(attention_ref(q, k, v, mask)), atol=1e-12)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask).nan_to_num(), atol=1e-12)


def test_fully_masked_row_is_zero_not_nan_with_zero_gradient():
    q, k, v = (rand(1, n, 4, seed=s).requires_grad_() for s, n in enumerate((3, 4, 4)))
    mask = torch.tensor([[True, False, True, True], [False] * 4, [True] * 4])
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert (out[0, 1] == 0).all() and (w[0, 1] == 0).all()
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    assert (q.grad[0, 1] == 0).all()


def test_masked_keys_get_zero_weight_and_do_not_matter():
    q, k, v = rand(2, 4, 8), rand(2, 6, 8, seed=1), rand(2, 6, 3, seed=2)
    tokens = torch.tensor([[4, 5, 6, 0, 0, 0], [1, 2, 3, 4, 5, 0]])
    mask = padding_mask(tokens, 0)[:, 0]  # (2, 1, 6)
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert (w[0, :, 3:] == 0).all() and (w[1, :, 5:] == 0).all()
    v2 = v.clone()
    v2[0, 3:] = 1e6  # changing padded values changes nothing
    assert torch.allclose(out, scaled_dot_product_attention(q, k, v2, mask))


@pytest.mark.parametrize("Lq,Lk", [(1, 1), (4, 4), (2, 5), (1, 7), (7, 7)])
def test_causal_mask_matches_reference_and_is_causal(Lq, Lk):
    assert torch.equal(causal_mask(Lq, Lk), torch.from_numpy(causal_mask_ref(Lq, Lk)))
    q, k, v = rand(2, Lq, 8), rand(2, Lk, 8, seed=1), rand(2, Lk, 4, seed=2)
    out = scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(out, scaled_dot_product_attention(q, k, v, causal_mask(Lq, Lk)))
    if Lq == Lk:
        assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-12)


def test_causal_output_unchanged_by_future_tokens():
    x = rand(1, 8, 16)
    out = scaled_dot_product_attention(x, x, x, is_causal=True)
    y = x.clone()
    y[:, 5:] = rand(1, 3, 16, seed=9)
    out2 = scaled_dot_product_attention(y, y, y, is_causal=True)
    assert torch.allclose(out[:, :5], out2[:, :5]) and not torch.allclose(out[:, 5:], out2[:, 5:])


def test_causal_combines_with_mask():
    q = k = v = rand(1, 5, 4)
    pad = torch.tensor([True, True, True, False, True])
    out = scaled_dot_product_attention(q, k, v, pad, is_causal=True)
    assert torch.allclose(out, torch.from_numpy(attention_ref(q, k, v, pad & causal_mask(5))))


def test_permutation_equivariance_without_mask():
    x = rand(6, 8)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out = scaled_dot_product_attention(x, x, x)
    assert torch.allclose(scaled_dot_product_attention(x[perm], x[perm], x[perm]), out[perm])


def test_scale_and_dropout():
    q, k, v = rand(3, 4), rand(5, 4, seed=1), rand(5, 2, seed=2)
    assert torch.allclose(
        scaled_dot_product_attention(q, k, v, scale=0.3), torch.from_numpy(attention_ref(q, k, v, scale=0.3))
    )
    assert torch.allclose(scaled_dot_product_attention(q, k, v, dropout_p=0.0), scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("p", [0.5, 0.75])  # 1 / (1 - p) = 2 and 4: the rescaling is exact in floating point
def test_dropout_zeroes_weights_and_rescales_the_kept_ones(p):
    q, k, v = rand(4, 64, 16, seed=3), rand(4, 96, 16, seed=4), rand(4, 96, 8, seed=5)
    _, w0 = scaled_dot_product_attention(q, k, v, return_weights=True)  # (4, 64, 96), no dropout
    assert (w0 > 0).all()  # so a zero after dropout is a dropped weight
    torch.manual_seed(0)
    out, w = scaled_dot_product_attention(q, k, v, dropout_p=p, return_weights=True)
    kept = w != 0
    assert torch.equal(w[kept], w0[kept] / (1 - p))  # kept weights: exactly the plain ones times 1 / (1 - p)
    dropped = 1 - kept.double().mean().item()
    assert abs(dropped - p) < 0.02, dropped  # 24576 weights: the fraction's standard deviation is ~0.003
    assert torch.allclose(out, w @ v, atol=1e-12)  # the returned weights are the ones that multiplied v


def test_gradcheck():
    q, k, v = (rand(2, 3, 4, seed=s).requires_grad_() for s in range(3))
    mask = torch.tensor([[True, True, False], [False, False, False], [True, True, True]])
    assert torch.autograd.gradcheck(lambda a, b, c: scaled_dot_product_attention(a, b, c, mask), (q, k, v))


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        (
            (torch.zeros(2, 3, 8), torch.zeros(2, 4, 4), torch.zeros(2, 4, 4)),
            {},
            ValueError,
            "q has head dim 8 but k has 4",
        ),
        ((torch.zeros(3, 8), torch.zeros(4, 8), torch.zeros(5, 8)), {}, ValueError, "k has 4 keys but v has 5"),
        (
            (torch.zeros(3, 8), torch.zeros(4, 8), torch.zeros(4, 8), torch.ones(3, 4)),
            {},
            TypeError,
            "dtype torch.bool",
        ),
        (
            (torch.zeros(3, 8), torch.zeros(4, 8), torch.zeros(4, 8), torch.ones(3, 5, dtype=torch.bool)),
            {},
            ValueError,
            "does not broadcast",
        ),
        (
            (torch.zeros(3, 8), torch.zeros(4, 8), torch.zeros(4, 8), torch.ones(2, 3, 4, dtype=torch.bool)),
            {},
            ValueError,
            "does not broadcast",
        ),
        ((torch.zeros(8), torch.zeros(4, 8), torch.zeros(4, 8)), {}, ValueError, "at least 2 dims"),
        ((torch.zeros(3, 8), torch.zeros(4, 8), torch.zeros(4, 8)), {"dropout_p": 1.0}, ValueError, "dropout_p"),
        ((torch.zeros(2, 3, 8), torch.zeros(3, 4, 8), torch.zeros(3, 4, 8)), {}, ValueError, "do not broadcast"),
        ((torch.zeros(5, 8), torch.zeros(4, 8), torch.zeros(4, 8)), {"is_causal": True}, ValueError, "Lk=4 < Lq=5"),
    ],
)
def test_clear_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        scaled_dot_product_attention(*args, **kwargs)


def test_mask_helper_errors():
    with pytest.raises(ValueError, match="must be a .B, S. tensor"):
        padding_mask(torch.zeros(2, 3, 4, dtype=torch.long), 0)
    with pytest.raises(TypeError, match="integer ids"):
        padding_mask(torch.zeros(2, 3), 0)
    with pytest.raises(ValueError, match="non-negative int"):
        causal_mask(-1)
    assert padding_mask(torch.tensor([[1, 0]]), 0).shape == (1, 1, 1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("Lq,Lk", [(1, 1), (5, 5), (3, 9), (64, 64)])
def test_causal_bias_is_masked_fill_bit_for_bit(dtype, Lq, Lk):
    g = torch.Generator().manual_seed(Lq * 100 + Lk)
    scores = torch.randn(2, 3, Lq, Lk, generator=g, dtype=dtype)
    bias = causal_bias(Lq, Lk, dtype=dtype)
    assert bias.shape == (Lq, Lk) and bias.dtype == dtype
    assert torch.equal((bias == 0), causal_mask(Lq, Lk)) and bool((bias[~causal_mask(Lq, Lk)] == float("-inf")).all())
    assert torch.equal(scores + bias, scores.masked_fill(~causal_mask(Lq, Lk), float("-inf")))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_causal_path_equals_masked_fill_path_in_value_and_gradient(dtype):
    """The causal-only fast path (additive bias) gives exactly what masking gives."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 3, 11, 8, generator=g, dtype=dtype, requires_grad=True) for _ in range(3))
    dout = torch.randn(2, 3, 11, 8, generator=g, dtype=dtype)
    fast = scaled_dot_product_attention(q, k, v, is_causal=True)
    grads_fast = torch.autograd.grad(fast, (q, k, v), dout)
    # the general path: an explicit all-True mask AND the causal mask, with masked_fill
    slow = scaled_dot_product_attention(q, k, v, torch.ones(11, 11, dtype=torch.bool), is_causal=True)
    grads_slow = torch.autograd.grad(slow, (q, k, v), dout)
    assert torch.equal(fast, slow)
    for a, b in zip(grads_fast, grads_slow):
        assert torch.equal(a, b)


def test_causal_bias_cache_and_inference_mode():
    assert causal_bias(6, 6) is causal_bias(6, 6)  # small: cached
    assert causal_bias(6, 6, dtype=torch.float64) is not causal_bias(6, 6)
    big = causal_bias(1025, 1025)
    assert big is not causal_bias(1025, 1025) and big.shape == (1025, 1025)  # large: built each time
    with torch.inference_mode():
        first = causal_bias(13, 13)  # first built under inference mode
        scaled_dot_product_attention(*(torch.randn(1, 13, 4) for _ in range(3)), is_causal=True)
    q = torch.randn(1, 13, 4, requires_grad=True)
    out = scaled_dot_product_attention(q, q, q, is_causal=True)  # still trains afterwards
    out.sum().backward()
    assert not first.is_inference() and torch.isfinite(q.grad).all()


# -- half precision ------------------------------------------------------------------------------------------------


def _half_inputs(dtype, shape=(2, 4, 128, 64), seed=0, magnitude=1.0):
    g = torch.Generator().manual_seed(seed)
    return tuple((magnitude * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype) for _ in range(3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [None, 5.0])
@pytest.mark.parametrize("is_causal", [False, True])
def test_half_precision_error_is_within_twice_torchs(dtype, scale, is_causal):
    """Scores, softmax and weighted sum in float32: as close to float64 as PyTorch's own kernel, or closer."""
    q, k, v = _half_inputs(dtype)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=scale, is_causal=is_causal)
    ours = scaled_dot_product_attention(q, k, v, scale=scale, is_causal=is_causal)
    theirs = F.scaled_dot_product_attention(q, k, v, scale=scale, is_causal=is_causal)
    assert ours.dtype == dtype and ours.shape == q.shape
    err_ours = (ours.double() - ref).abs().max().item()
    err_torch = (theirs.double() - ref).abs().max().item()
    assert err_ours <= 2 * err_torch, (err_ours, err_torch)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_mask_and_gradients(dtype):
    q, k, v = (t.requires_grad_() for t in _half_inputs(dtype, shape=(2, 3, 9, 16), seed=1))
    mask = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(2)) > 0.4
    mask[0, 0, 3] = False  # a fully masked row
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert out.dtype == w.dtype == dtype
    ref_out, ref_w = attention_ref(q, k, v, mask, return_weights=True)
    tol = 1e-2 if dtype == torch.float16 else 5e-2
    torch.testing.assert_close(out.double(), torch.from_numpy(ref_out), atol=tol, rtol=0)
    torch.testing.assert_close(w.double(), torch.from_numpy(ref_w), atol=tol, rtol=0)
    assert torch.equal(out[0, :, 3], torch.zeros_like(out[0, :, 3]))  # the masked row: zeros, never NaN
    out.float().square().sum().backward()
    for t in (q, k, v):
        assert t.grad.dtype == dtype and torch.isfinite(t.grad).all()


def test_float16_product_that_overflows_before_scaling_stays_finite():
    """Keys aligned with the queries: ``q . k ~ 64 * 40^2 > 65504``, so the float16 product itself
    would be inf (and the softmax NaN) before any scale could shrink it; it is formed in float32."""
    g = torch.Generator().manual_seed(3)
    q = 40 * torch.randn(1, 2, 8, 64, generator=g, dtype=torch.float64)
    k = (q.flip(-2) + torch.randn(1, 2, 8, 64, generator=g, dtype=torch.float64)).half()
    q, v = q.half(), torch.randn(1, 2, 8, 64, generator=g, dtype=torch.float64).half()
    raw = (q.double() @ k.double().transpose(-2, -1)).abs().max().item()
    assert raw > torch.finfo(torch.float16).max  # the unscaled product overflows float16
    for scale in (None, 1e-3):
        out = scaled_dot_product_attention(q, k, v, scale=scale)
        ref = attention_ref(q, k, v, scale=scale)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.double(), torch.from_numpy(ref), atol=1e-2, rtol=0)


# -- grouped-query attention --------------------------------------------------------------------------------------


@pytest.mark.parametrize("H,H_kv", [(4, 4), (4, 2), (6, 3), (8, 1)])
@pytest.mark.parametrize("Lq,Lk", [(5, 5), (1, 7), (3, 9)])
@pytest.mark.parametrize("is_causal", [False, True])
def test_gqa_matches_torch_and_reference(H, H_kv, Lq, Lk, is_causal):
    q, k, v = rand(2, H, Lq, 8, seed=1), rand(2, H_kv, Lk, 8, seed=2), rand(2, H_kv, Lk, 4, seed=3)
    out = scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=True)
    assert out.shape == (2, H, Lq, 4)
    ref = gqa_attention_ref(q, k, v, is_causal=is_causal).out  # queries are the LAST Lq positions, as ours
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    if not is_causal or Lq == Lk:  # torch's is_causal aligns the queries with the FIRST keys
        theirs = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=True)
        torch.testing.assert_close(out, theirs, atol=1e-12, rtol=0)
    # the same as repeating each key/value head for its group of query heads
    kk, vv = k.repeat_interleave(H // H_kv, dim=1), v.repeat_interleave(H // H_kv, dim=1)
    torch.testing.assert_close(out, scaled_dot_product_attention(q, kk, vv, is_causal=is_causal), atol=1e-12, rtol=0)


def test_gqa_with_mask_weights_dropout_and_gradients():
    q, k, v = rand(2, 6, 5, 8, seed=4), rand(2, 2, 7, 8, seed=5), rand(2, 2, 7, 3, seed=6)
    mask = torch.rand(2, 6, 5, 7, generator=torch.Generator().manual_seed(7)) > 0.5
    mask[1, 4, 2] = False
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True, enable_gqa=True)
    assert w.shape == (2, 6, 5, 7)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    ok = mask.any(-1, keepdim=True)  # torch gives NaN on fully masked rows, we give zeros
    torch.testing.assert_close(out * ok, theirs.nan_to_num() * ok, atol=1e-12, rtol=0)
    assert torch.equal(out[1, 4, 2], torch.zeros(3))
    kk, vv = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)
    torch.testing.assert_close(out, scaled_dot_product_attention(q, kk, vv, mask), atol=1e-12, rtol=0)
    torch.manual_seed(0)
    out_d, w_d = scaled_dot_product_attention(q, k, v, dropout_p=0.5, return_weights=True, enable_gqa=True)
    torch.testing.assert_close(out_d, w_d @ vv, atol=1e-12, rtol=0)
    qs, ks, vs = (t.clone().requires_grad_() for t in (q[:1, :, :3, :4], k[:1, :, :4, :4], v[:1, :, :4]))
    assert torch.autograd.gradcheck(
        lambda a, b, c: scaled_dot_product_attention(a, b, c, is_causal=True, enable_gqa=True), (qs, ks, vs)
    )


def test_gqa_half_precision_and_errors():
    q, k, v = _half_inputs(torch.bfloat16, shape=(1, 4, 6, 16))
    out = scaled_dot_product_attention(q, k[:, :2], v[:, :2], enable_gqa=True)
    ref = gqa_attention_ref(q, k[:, :2], v[:, :2]).out
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=0)
    q, k = torch.zeros(2, 4, 3, 8), torch.zeros(2, 2, 5, 8)
    with pytest.raises(ValueError, match="do not broadcast; for grouped-query attention .* pass enable_gqa=True"):
        scaled_dot_product_attention(q, k, k)  # different head counts need the explicit switch
    with pytest.raises(ValueError, match="enable_gqa=True: q has 4 heads, not a multiple of k's 3 heads"):
        scaled_dot_product_attention(q, torch.zeros(2, 3, 5, 8), torch.zeros(2, 3, 5, 8), enable_gqa=True)
    with pytest.raises(ValueError, match=r"enable_gqa=True needs a head axis: q must be \(..., H, L, d\)"):
        scaled_dot_product_attention(torch.zeros(3, 8), torch.zeros(5, 8), torch.zeros(5, 8), enable_gqa=True)
    with pytest.raises(TypeError, match="enable_gqa must be True or False"):
        scaled_dot_product_attention(q, k, k, enable_gqa=1)
    with pytest.raises(ValueError, match="does not broadcast to the scores' shape"):
        scaled_dot_product_attention(q, k, k, torch.ones(2, 2, 3, 5, dtype=torch.bool), enable_gqa=True)


# -- the precision benchmark -------------------------------------------------------------------------------------


def test_precision_benchmark_prints_ours_torch_and_ratio(tmp_path, capsys):
    bench = load_benchmark("precision_sdpa")
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    assert "PyTorch" in capsys.readouterr().out
    out = tmp_path / "p.json"
    assert bench.main(["--shape", "1", "2", "32", "16", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ours/torch" in text
    rows = json.loads(out.read_text())["rows"]
    assert [(r["dtype"], r["scale"]) for r in rows] == [
        ("float16", "default"),
        ("float16", 5.0),
        ("bfloat16", "default"),
        ("bfloat16", 5.0),
    ]
    for r in rows:
        assert r["ours"] > 0 and r["torch"] > 0 and r["ratio"] == pytest.approx(r["ours"] / r["torch"])
        assert f"{r['ratio']:.2f}" in text
        assert r["ratio"] <= 2.0
