"""Positional information (chapter 5): sinusoidal, learned, 2-D, RoPE, T5 buckets, ALiBi."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minitransformer.kv_cache import KVCache
from minitransformer.multihead import MultiHeadAttention
from minitransformer.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
    sinusoidal_encoding_2d,
    transition_matrix,
)
from minitransformer.reference import (
    alibi_slopes_ref,
    rope_complex_ref,
    sinusoidal_ref,
    t5_bucket_ref,
)
from minitransformer.relative import (
    RelativePositionBias,
    alibi_bias,
    alibi_slopes,
    relative_position_bucket,
)
from minitransformer.rotary import RotaryEmbedding, half_to_interleaved, interleaved_to_half

LAYOUTS = ["interleaved", "half"]


# -- sinusoidal ------------------------------------------------------------------


@pytest.mark.parametrize("P,d", [(1, 2), (17, 6), (50, 32), (128, 64)])
def test_sinusoidal_matches_formula_loop(P, d):
    pe = sinusoidal_encoding(P, d, dtype=torch.float64)
    assert pe.shape == (P, d) and pe.dtype == torch.float64
    np.testing.assert_allclose(pe.numpy(), sinusoidal_ref(P, d), rtol=0, atol=1e-12)


def test_sinusoidal_bounded_and_rows_unique():
    pe = sinusoidal_encoding(2048, 64, dtype=torch.float64)
    assert pe.abs().max() <= 1.0
    dist = torch.cdist(pe, pe)  # (P, P)
    dist.fill_diagonal_(float("inf"))
    assert dist.min() > 1e-3  # no two positions share an encoding
    assert torch.equal(sinusoidal_encoding(3, 4)[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_sinusoidal_errors():
    with pytest.raises(ValueError, match="d_model must be a positive even int, got 7"):
        sinusoidal_encoding(4, 7)
    with pytest.raises(ValueError, match="num_positions must be a non-negative int, got -1"):
        sinusoidal_encoding(-1, 8)


@pytest.mark.parametrize("d", [2, 8, 64])
def test_transition_matrix_shifts_every_position(d):
    pe = sinusoidal_encoding(400, d, dtype=torch.float64)  # (P, d)
    for k in [0, 1, 2, 5, 37, 150]:
        T = transition_matrix(k, d, dtype=torch.float64)  # (d, d)
        assert T.shape == (d, d)
        torch.testing.assert_close(T @ T.T, torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-12)
        for p in [0, 1, 3, 10, 99, 200]:
            torch.testing.assert_close(T @ pe[p], pe[p + k], rtol=0, atol=1e-10)  # column vectors
        torch.testing.assert_close(pe[:250] @ T.T, pe[k : k + 250], rtol=0, atol=1e-10)  # row vectors
    # T_{-k} undoes T_k, and T_a T_b = T_{a+b}
    T3, Tm3 = transition_matrix(3, d, dtype=torch.float64), transition_matrix(-3, d, dtype=torch.float64)
    torch.testing.assert_close(Tm3, T3.T)
    torch.testing.assert_close(
        T3 @ transition_matrix(4, d, dtype=torch.float64), transition_matrix(7, d, dtype=torch.float64)
    )


def test_transition_matrix_is_block_diagonal():
    T = transition_matrix(5, 8, dtype=torch.float64)
    blocks = torch.block_diag(*[T[i : i + 2, i : i + 2] for i in range(0, 8, 2)])
    assert torch.equal(T, blocks)
    b = 5.0  # first pair turns by k * 10000^0
    expected = torch.tensor([[math.cos(b), math.sin(b)], [-math.sin(b), math.cos(b)]], dtype=torch.float64)
    torch.testing.assert_close(T[:2, :2], expected)
    with pytest.raises(TypeError, match="k must be an int offset, got float 1.5"):
        transition_matrix(1.5, 8)
    with pytest.raises(ValueError, match="d_model must be a positive even int, got 5"):
        transition_matrix(1, 5)


def test_sinusoidal_module_adds_table_and_extends_past_max_len():
    torch.manual_seed(0)
    m = SinusoidalPositionalEncoding(16, max_len=10)
    assert "pe" not in m.state_dict()
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(m(x), x + sinusoidal_encoding(7, 16))
    torch.testing.assert_close(m(x, offset=3), x + sinusoidal_encoding(10, 16)[3:])
    long = torch.randn(1, 25, 16)  # past max_len: computed on the fly, same formula
    torch.testing.assert_close(m(long), long + sinusoidal_encoding(25, 16))
    torch.testing.assert_close(m(long[:, 20:], offset=20), long[:, 20:] + sinusoidal_encoding(25, 16)[20:])
    assert m(x.double()).dtype == torch.float64


def test_sinusoidal_module_dropout_and_errors():
    m = SinusoidalPositionalEncoding(8, max_len=4, dropout=0.5).train()
    x = torch.zeros(4, 4, 8)
    out = m(x)
    assert (out == 0).any() and not torch.allclose(out, x + sinusoidal_encoding(4, 8))
    m.eval()
    torch.testing.assert_close(m(x), x + sinusoidal_encoding(4, 8))
    with pytest.raises(ValueError, match=r"x has 6 features but d_model=8 \(shape \(2, 3, 6\)\)"):
        m(torch.zeros(2, 3, 6))
    with pytest.raises(ValueError, match=r"x must be \(B, T, d_model=8\), got \(3, 8\)"):
        m(torch.zeros(3, 8))
    with pytest.raises(ValueError, match="dropout must be in"):
        SinusoidalPositionalEncoding(8, dropout=1.0)


def test_learned_embedding_adds_rows_and_refuses_to_extrapolate():
    torch.manual_seed(0)
    m = LearnedPositionalEmbedding(6, 4)
    assert m.embedding.weight.shape == (6, 4)
    x = torch.randn(3, 5, 4)
    torch.testing.assert_close(m(x), x + m.embedding.weight[:5])
    torch.testing.assert_close(m(x[:, :2], offset=4), x[:, :2] + m.embedding.weight[4:6])
    with pytest.raises(ValueError, match="position 6 exceeds the 6 learned positions"):
        m(torch.randn(1, 7, 4))
    with pytest.raises(ValueError, match="position 6 exceeds the 6 learned positions"):
        m(torch.randn(1, 2, 4), offset=5)
    with pytest.raises(ValueError, match="x has 3 features but d_model=4"):
        m(torch.randn(1, 2, 3))


def test_sinusoidal_2d_layout():
    H, W, d = 3, 5, 16
    pe = sinusoidal_encoding_2d(H, W, d, dtype=torch.float64)
    assert pe.shape == (H * W, d)
    rows = sinusoidal_encoding(H, d // 2, dtype=torch.float64)
    cols = sinusoidal_encoding(W, d // 2, dtype=torch.float64)
    for n in range(H * W):
        r, c = divmod(n, W)  # row-major patch order
        torch.testing.assert_close(pe[n], torch.cat([rows[r], cols[c]]), rtol=0, atol=0)
    # same order as flattening a (B, C, H, W) feature map
    grid = pe.T.reshape(1, d, H, W)
    torch.testing.assert_close(grid.flatten(2).transpose(1, 2)[0], pe)
    assert len({tuple(v.tolist()) for v in pe}) == H * W  # every patch distinct
    with pytest.raises(ValueError, match="d_model must be a positive multiple of 4.*got 18"):
        sinusoidal_encoding_2d(2, 2, 18)
    with pytest.raises(ValueError, match="height must be a positive int, got 0"):
        sinusoidal_encoding_2d(0, 3, 8)


# -- RoPE ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rope_preserves_norms_and_position_zero_is_identity(layout):
    torch.manual_seed(0)
    rope = RotaryEmbedding(16, layout=layout)
    x = torch.randn(2, 3, 11, 16, dtype=torch.float64)
    y = rope(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[..., 0, :], x[..., 0, :], rtol=0, atol=0)
    assert not torch.allclose(y[..., 1:, :], x[..., 1:, :])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rope_scores_depend_only_on_offset(layout):
    torch.manual_seed(1)
    d = 32
    rope = RotaryEmbedding(d, layout=layout)
    q, k = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)

    def score(m: int, n: int) -> torch.Tensor:
        qm = rope(q[None], torch.tensor([m]))[0]
        kn = rope(k[None], torch.tensor([n]))[0]
        return qm @ kn

    for offset in [0, 1, -3, 7, 50]:
        pairs = [(m, m - offset) for m in [60, 75, 100, 517, 1000]]
        scores = torch.stack([score(m, n) for m, n in pairs])
        torch.testing.assert_close(scores, scores[0].expand(len(pairs)), rtol=0, atol=1e-10)
    assert not torch.isclose(score(10, 9), score(10, 7))  # ...and does depend on the offset


def test_rope_matches_complex_reference():
    torch.manual_seed(2)
    rope = RotaryEmbedding(12, base=500.0)
    x = torch.randn(2, 4, 9, 12, dtype=torch.float64)
    positions = torch.tensor([0, 3, 1, 7, 100, 4, 4, 2048, 5])
    np.testing.assert_allclose(
        rope(x, positions).numpy(), rope_complex_ref(x, positions, base=500.0), rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(rope(x).numpy(), rope_complex_ref(x, np.arange(9), base=500.0), rtol=0, atol=1e-12)


def test_rope_layouts_are_the_same_rotation_up_to_a_permutation():
    torch.manual_seed(3)
    d = 10
    inter, half = RotaryEmbedding(d), RotaryEmbedding(d, layout="half")
    x = torch.randn(3, 7, d, dtype=torch.float64)
    positions = torch.tensor([5, 0, 2, 9, 9, 31, 4])
    torch.testing.assert_close(half(interleaved_to_half(x), positions), interleaved_to_half(inter(x, positions)))
    torch.testing.assert_close(inter(half_to_interleaved(x), positions), half_to_interleaved(half(x, positions)))
    torch.testing.assert_close(half_to_interleaved(interleaved_to_half(x)), x, rtol=0, atol=0)
    assert interleaved_to_half(torch.arange(6.0)).tolist() == [0, 2, 4, 1, 3, 5]
    assert half_to_interleaved(torch.arange(6.0)).tolist() == [0, 3, 1, 4, 2, 5]
    assert not torch.allclose(half(x, positions), inter(x, positions))  # the layouts do differ
    with pytest.raises(ValueError, match=r"even last dimension .* got shape \(2, 5\)"):
        interleaved_to_half(torch.zeros(2, 5))


def test_rope_half_layout_is_rotate_half():
    """The "half" layout equals the GPT-NeoX/Llama formula x * cos + rotate_half(x) * sin."""
    torch.manual_seed(4)
    d, T = 8, 6
    x = torch.randn(2, T, d, dtype=torch.float64)
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(T, dtype=torch.float64)[:, None] * theta[None, :]  # (T, d/2)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)  # (T, d)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    expected = x * cos + torch.cat([-x2, x1], -1) * sin
    torch.testing.assert_close(RotaryEmbedding(d, layout="half")(x), expected)


def test_rope_dtypes_and_cache():
    torch.manual_seed(5)
    rope = RotaryEmbedding(8)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    ref = rope(x)
    for dtype, tol in [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)]:
        y = rope(x.to(dtype))
        assert y.dtype == dtype
        torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol)
    rope(torch.randn(1, 3, 8), torch.tensor([0, 1, 300]))  # grows the cached table lazily
    cos, _ = rope.cos_sin(1, "cpu", torch.float32)
    assert cos.shape[0] >= 301 and cos.dtype == torch.float32
    assert rope(torch.randn(2, 0, 8)).shape == (2, 0, 8)


def test_rope_errors():
    with pytest.raises(ValueError, match="head_dim must be a positive even int, got 7"):
        RotaryEmbedding(7)
    with pytest.raises(ValueError, match="unknown layout 'neox'"):
        RotaryEmbedding(8, layout="neox")
    rope = RotaryEmbedding(8)
    with pytest.raises(ValueError, match=r"x has last dim 6 but head_dim=8 \(shape \(2, 3, 6\)\)"):
        rope(torch.zeros(2, 3, 6))
    with pytest.raises(ValueError, match=r"positions must be 1-D of length T=3 .* got shape \(4,\)"):
        rope(torch.zeros(2, 3, 8), torch.arange(4))
    with pytest.raises(ValueError, match=r"positions must be 1-D of length T=3 .* got shape \(1, 3\)"):
        rope(torch.zeros(2, 3, 8), torch.arange(3)[None])
    with pytest.raises(TypeError, match="positions must be an integer tensor, got torch.float32"):
        rope(torch.zeros(2, 3, 8), torch.zeros(3))
    with pytest.raises(ValueError, match="positions must be >= 0, got min -1"):
        rope(torch.zeros(2, 3, 8), torch.tensor([-1, 0, 1]))
    with pytest.raises(ValueError, match=r"x must be \(..., T, head_dim=8\), got shape \(8,\)"):
        rope(torch.zeros(8))


@pytest.mark.parametrize("layout,num_kv_heads", [("interleaved", None), ("half", 2)])
def test_rope_in_multihead_attention_with_kv_cache(layout, num_kv_heads):
    torch.manual_seed(6)
    B, T, d, H = 2, 9, 32, 4
    mha = MultiHeadAttention(d, H, num_kv_heads=num_kv_heads, rotary=RotaryEmbedding(d // H, layout=layout))
    mha = mha.double().eval()
    x = torch.randn(B, T, d, dtype=torch.float64)
    full = mha(x, is_causal=True)  # (B, T, d)
    assert not torch.allclose(full, MultiHeadAttention(d, H, num_kv_heads).double().eval()(x, is_causal=True))

    cache = KVCache(B, mha.num_kv_heads, T, mha.head_dim, dtype=torch.float64)
    steps = [mha(x[:, :3], is_causal=True, kv_cache=cache)]  # prefill three tokens at once
    for t in range(3, T):  # then one token at a time, at positions 3, 4, ...
        steps.append(mha(x[:, t : t + 1], is_causal=True, kv_cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-12)


def test_rope_makes_attention_position_aware():
    """Without positions attention is permutation-equivariant; with RoPE it is not."""
    torch.manual_seed(7)
    plain = MultiHeadAttention(16, 2).double().eval()
    roped = MultiHeadAttention(16, 2, rotary=RotaryEmbedding(8)).double().eval()
    roped.load_state_dict(plain.state_dict())
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(plain(x[:, perm]), plain(x)[:, perm])
    assert not torch.allclose(roped(x[:, perm]), roped(x)[:, perm])


# -- RoPE with per-token positions: packed, padded and offset sequences ---------------------------


def block_causal_mask(lengths: list[int]) -> torch.Tensor:
    """Sequences of these lengths packed one after another: each token sees the earlier tokens
    of its OWN sequence only, ``(L, L)`` bool with ``L = sum(lengths)``."""
    doc = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))  # (L,) sequence id
    return (doc[:, None] == doc[None, :]) & torch.tril(torch.ones(len(doc), len(doc), dtype=torch.bool))


def restarted_positions(lengths: list[int]) -> torch.Tensor:
    """``[0, 1, .., n_1 - 1, 0, 1, .., n_2 - 1, ...]``, ``(sum(lengths),)``."""
    return torch.cat([torch.arange(n) for n in lengths])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rope_relative_property_with_arbitrary_positions(layout):
    """<rope(q)[m], rope(k)[n]> depends only on n - m, for unsorted, repeated and large positions."""
    d = 16
    rope = RotaryEmbedding(d, base=1000.0, layout=layout)
    g = torch.Generator().manual_seed(11)
    q, k = (
        torch.randn(3, 7, d, generator=g, dtype=torch.float64),
        torch.randn(3, 7, d, generator=g, dtype=torch.float64),
    )
    m, n = torch.tensor([5, 0, 9, 9, 2, 130, 1]), torch.tensor([3, 3, 0, 64, 7, 1, 12])
    scores = rope(q, m) @ rope(k, n).transpose(-2, -1)  # (3, 7, 7): entry (i, j) has offset n_j - m_i
    for shift in (1, 17, 1000):
        shifted = rope(q, m + shift) @ rope(k, n + shift).transpose(-2, -1)
        torch.testing.assert_close(shifted, scores, rtol=0, atol=1e-10)
    # and it is not constant: moving one key changes its scores
    moved = rope(q, m) @ rope(k, n + torch.eye(7, dtype=torch.long)[2]).transpose(-2, -1)
    assert not torch.allclose(moved[..., 2], scores[..., 2])
    torch.testing.assert_close(moved[..., [0, 1, 3, 4, 5, 6]], scores[..., [0, 1, 3, 4, 5, 6]], rtol=0, atol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rope_per_sequence_positions_equal_row_by_row(layout):
    rope = RotaryEmbedding(8, layout=layout)
    x = torch.randn(3, 2, 5, 8, generator=torch.Generator().manual_seed(12), dtype=torch.float64)  # (B, H, T, d)
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11], [0, 1, 0, 1, 2]])  # (B, T)
    out = rope(x, positions)
    for b in range(3):
        torch.testing.assert_close(out[b], rope(x[b], positions[b]), rtol=0, atol=0)
    inter = RotaryEmbedding(8)
    expected = np.stack([rope_complex_ref(x[b], positions[b]) for b in range(3)])
    np.testing.assert_allclose(inter(x, positions).numpy(), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(rope(x[:, 0], positions), out[:, 0], rtol=0, atol=0)  # (B, T, d) inputs too
    with pytest.raises(ValueError, match=r"positions must be 1-D of length T=5 or \(B, T\) = \(3, 5\)"):
        rope(x, positions[:2])
    with pytest.raises(ValueError, match="positions must be >= 0, got min -2"):
        rope(x, positions - 2)


def llama_block(rope, seed=0):
    torch.manual_seed(seed)
    from minitransformer.layers import EncoderLayer

    block = EncoderLayer(
        16, 4, 40, norm_first=True, activation="swiglu", num_kv_heads=2, bias=False, rotary=rope, norm="rms",
        qk_norm=True,
    )  # fmt: skip
    return block.double().eval()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["attention", "block"])
def test_packed_sequences_equal_separate_runs(layout, kind):
    """Sequences packed into one row with a block-diagonal causal mask and restarted positions
    give exactly what running each alone gives."""
    rope = RotaryEmbedding(4, layout=layout)
    torch.manual_seed(13)
    model = (
        MultiHeadAttention(16, 4, 2, rotary=rope, qk_norm=True).double() if kind == "attention" else llama_block(rope)
    )
    lengths = [4, 1, 6]
    seqs = [torch.randn(2, n, 16, dtype=torch.float64) for n in lengths]
    packed = model(torch.cat(seqs, dim=1), mask=block_causal_mask(lengths), positions=restarted_positions(lengths))
    separate = torch.cat([model(s, is_causal=True) for s in seqs], dim=1)
    torch.testing.assert_close(packed, separate, rtol=0, atol=1e-12)
    # RoPE sees only position DIFFERENCES, and the mask keeps them inside each sequence: without
    # restarting, the positions 0..10 give the same result up to rounding
    without = model(torch.cat(seqs, dim=1), mask=block_causal_mask(lengths))
    torch.testing.assert_close(without, separate, rtol=0, atol=1e-10)


def test_candidates_at_the_same_position_after_a_cache():
    """Tree / speculative decoding: two candidate next tokens, both at position P, each seeing the
    cached prefix and itself only, equal feeding each candidate alone after the prefix."""
    torch.manual_seed(15)
    mha = MultiHeadAttention(16, 4, 2, rotary=RotaryEmbedding(4), qk_norm=True).double().eval()
    B, P = 2, 5
    prefix, cands = torch.randn(B, P, 16, dtype=torch.float64), torch.randn(B, 2, 16, dtype=torch.float64)
    see = torch.cat([torch.ones(2, P, dtype=torch.bool), torch.eye(2, dtype=torch.bool)], dim=1)  # (2, P + 2)

    def after_prefix(x, **kw):
        cache = KVCache(B, 2, P + 2, 4, dtype=torch.float64)
        mha(prefix, is_causal=True, kv_cache=cache)
        return mha(x, kv_cache=cache, **kw)

    tree = after_prefix(cands, mask=see, positions=torch.tensor([P, P]))
    for i in range(2):
        torch.testing.assert_close(tree[:, i], after_prefix(cands[:, i : i + 1])[:, 0], rtol=0, atol=1e-12)
    default = after_prefix(cands, mask=see)  # the second candidate would sit at P + 1
    torch.testing.assert_close(default[:, 0], tree[:, 0], rtol=0, atol=1e-12)
    assert not torch.allclose(default[:, 1], tree[:, 1])


def test_right_padded_batch_decodes_with_per_row_positions():
    """Prompts of lengths 3 and 5 right-padded to 5: the next token sits at position 3 in row 0
    and 5 in row 1 (a (B, T) positions tensor), after a gap of padding in the cache."""
    torch.manual_seed(16)
    mha = MultiHeadAttention(16, 4, rotary=RotaryEmbedding(4, layout="half")).double().eval()
    lengths = [3, 5]
    prompts = torch.randn(2, 5, 16, dtype=torch.float64)
    new = torch.randn(2, 1, 16, dtype=torch.float64)
    real = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]  # (B, 5)
    see = torch.cat([real, torch.ones(2, 1, dtype=torch.bool)], dim=1)[:, None, None, :]  # (B, 1, 1, 6)

    def decode(positions):
        cache = KVCache(2, 4, 6, 4, dtype=torch.float64)
        mha(prompts, mask=real[:, None, None, :], is_causal=True, kv_cache=cache)
        return mha(new, mask=see, kv_cache=cache, positions=positions)  # (B, 1, 16)

    out = decode(torch.tensor(lengths)[:, None])  # (B, 1) positions
    for b, n in enumerate(lengths):
        alone = mha(torch.cat([prompts[b : b + 1, :n], new[b : b + 1]], dim=1), is_causal=True)[:, -1]
        torch.testing.assert_close(out[b], alone[0][None], rtol=0, atol=1e-12)
    default = decode(None)  # position 5 in both rows: right for row 1 only
    torch.testing.assert_close(default[1], out[1], rtol=0, atol=1e-12)
    assert not torch.allclose(default[0], out[0])


def test_packed_rows_with_different_layouts_use_per_row_positions():
    """Two rows packed differently, (B, T) positions and a (B, 1, T, T) mask."""
    rope = RotaryEmbedding(4)
    block = llama_block(rope, seed=1)
    a, b, c = (torch.randn(1, n, 16, dtype=torch.float64) for n in (3, 5, 8))
    x = torch.cat([torch.cat([a, b], dim=1), c], dim=0)  # (2, 8, 16): row 0 = a|b, row 1 = c
    positions = torch.stack([restarted_positions([3, 5]), restarted_positions([8])])  # (2, 8)
    mask = torch.stack([block_causal_mask([3, 5]), block_causal_mask([8])])[:, None]  # (2, 1, 8, 8)
    out = block(x, mask, positions=positions)
    torch.testing.assert_close(out[0, :3], block(a, is_causal=True)[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[0, 3:], block(b, is_causal=True)[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[1], block(c, is_causal=True)[0], rtol=0, atol=1e-12)


def test_left_padded_batch_with_per_row_positions_equals_unpadded_runs():
    rope = RotaryEmbedding(4, layout="half")
    mha = MultiHeadAttention(16, 4, rotary=rope, qk_norm=True).double().eval()
    T, pads = 7, [3, 0]
    seqs = [torch.randn(1, T - p, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(p)) for p in pads]
    x = torch.cat([torch.cat([torch.zeros(1, p, 16, dtype=torch.float64), s], dim=1) for p, s in zip(pads, seqs)])
    real = torch.arange(T)[None, :] >= torch.tensor(pads)[:, None]  # (B, T)
    positions = (torch.arange(T)[None, :] - torch.tensor(pads)[:, None]).clamp(min=0)  # (B, T): 0 at the first real
    out = mha(x, mask=real[:, None, None, :], is_causal=True, positions=positions)
    for b, (p, s) in enumerate(zip(pads, seqs)):
        torch.testing.assert_close(out[b, p:], mha(s, is_causal=True)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_offset_positions_equal_the_cached_path(layout):
    rope = RotaryEmbedding(4, layout=layout)
    torch.manual_seed(14)
    mha = MultiHeadAttention(16, 4, 2, rotary=rope, qk_norm=True).double().eval()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    P = 5
    cache = KVCache(2, 2, 9, 4, dtype=torch.float64)
    mha(x[:, :P], is_causal=True, kv_cache=cache)
    cached = mha(x[:, P:], is_causal=True, kv_cache=cache)  # default positions P .. 8
    # the same keys and values supplied by hand: the prefix rotated at 0..P-1 in a fresh cache, then the
    # suffix with EXPLICIT offset positions, (T,) and (B, T)
    for positions in (torch.arange(P, 9), torch.arange(P, 9).expand(2, -1)):
        fresh = KVCache(2, 2, 9, 4, dtype=torch.float64)
        mha(x[:, :P], is_causal=True, kv_cache=fresh, positions=torch.arange(P))
        explicit = mha(x[:, P:], is_causal=True, kv_cache=fresh, positions=positions)
        torch.testing.assert_close(explicit, cached, rtol=0, atol=0)
    full = mha(x, is_causal=True)
    torch.testing.assert_close(cached, full[:, P:], rtol=0, atol=1e-12)
    # and shifting every position by the same offset changes nothing (RoPE sees only differences)
    shifted = mha(x, is_causal=True, positions=torch.arange(100, 109))
    torch.testing.assert_close(shifted, full, rtol=0, atol=1e-10)


def test_positions_errors():
    mha = MultiHeadAttention(16, 4, rotary=RotaryEmbedding(4))
    x = torch.zeros(2, 3, 16)
    with pytest.raises(ValueError, match="positions were given but this MultiHeadAttention has no rotary"):
        MultiHeadAttention(16, 4)(x, positions=torch.arange(3))
    with pytest.raises(ValueError, match="positions apply to self-attention only"):
        mha(x, torch.zeros(2, 5, 16), positions=torch.arange(3))
    with pytest.raises(ValueError, match=r"positions must have shape \(T,\) = \(3,\) or \(B, T\) = \(2, 3\)"):
        mha(x, positions=torch.arange(4))
    with pytest.raises(ValueError, match=r"got \(1, 3\)"):
        mha(x, positions=torch.arange(3)[None])
    with pytest.raises(TypeError, match="positions must be an integer tensor, got torch.float32"):
        mha(x, positions=torch.zeros(3))
    with pytest.raises(TypeError, match="positions must be an integer tensor"):
        mha(x, positions=[0, 1, 2])


# -- T5 relative position bias -----------------------------------------------------


def test_t5_buckets_hand_computed():
    # bidirectional, 32 buckets (16 per direction, 8 exact), max_distance 128
    rel = torch.tensor([0, -1, -7, -8, -9, -12, -20, -50, -100, -127, -128, -500, 1, 7, 8, 12, 500])
    expected = [0, 1, 7, 8, 8, 9, 10, 13, 15, 15, 15, 15, 17, 23, 24, 25, 31]
    assert relative_position_bucket(rel).tolist() == expected
    # bidirectional, 8 buckets (4 per direction, 2 exact), max_distance 16
    rel = torch.tensor([0, -1, -2, -5, -6, -15, -16, -99, 1, 2, 5, 6, 99])
    assert relative_position_bucket(rel, True, 8, 16).tolist() == [0, 1, 2, 2, 3, 3, 3, 3, 5, 6, 6, 7, 7]
    # unidirectional (decoder), 8 buckets (4 exact), max_distance 16: future keys -> bucket 0
    rel = torch.tensor([3, 1, 0, -1, -3, -4, -5, -6, -7, -9, -11, -12, -16, -40])
    assert relative_position_bucket(rel, False, 8, 16).tolist() == [0, 0, 0, 1, 3, 4, 4, 5, 5, 6, 6, 7, 7, 7]


@pytest.mark.parametrize(
    "bidirectional,num_buckets,max_distance", [(True, 32, 128), (False, 32, 128), (True, 10, 40), (False, 6, 20)]
)
def test_t5_buckets_match_reference_and_are_monotonic(bidirectional, num_buckets, max_distance):
    rel = torch.arange(-400, 401)
    got = relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    assert got.dtype == torch.int64 and got.min() >= 0 and got.max() < num_buckets
    assert got.tolist() == [t5_bucket_ref(r, bidirectional, num_buckets, max_distance) for r in rel.tolist()]
    past = got[:401].flip(0)  # distances 0, 1, 2, ... into the past
    assert (past[1:] >= past[:-1]).all()
    if bidirectional:
        future = got[401:]  # distances 0, 1, 2, ... into the future
        assert (future[1:] >= future[:-1]).all()


def test_relative_position_bias_module():
    torch.manual_seed(8)
    H = 3
    rpb = RelativePositionBias(H, num_buckets=8, max_distance=16)
    assert rpb.embedding.weight.shape == (8, H)
    bias = rpb(5, 7, query_offset=0)
    assert bias.shape == (1, H, 5, 7)
    for i in range(5):
        for j in range(7):
            b = t5_bucket_ref(j - i, True, 8, 16)
            torch.testing.assert_close(bias[0, :, i, j], rpb.embedding.weight[b])
    full = rpb(6, 6)
    torch.testing.assert_close(rpb(2, 6), full[:, :, 4:])  # default: queries are the last Lq positions
    torch.testing.assert_close(full[0, :, 1, 3], full[0, :, 2, 4])  # Toeplitz: depends on j - i only
    full.sum().backward()
    assert rpb.embedding.weight.grad is not None
    with pytest.raises(ValueError, match=r"query_offset must be >= 0, got -2 \(Lq=5 > Lk=3"):
        rpb(5, 3)
    with pytest.raises(ValueError, match="need num_buckets >= 4 and max_distance > the exact range"):
        RelativePositionBias(2, num_buckets=2)
    with pytest.raises(TypeError, match="relative_position must be an integer tensor"):
        relative_position_bucket(torch.zeros(3))


# -- ALiBi ----------------------------------------------------------------------------


def test_alibi_slopes():
    assert alibi_slopes(8, torch.float64).tolist() == [2.0**-i for i in range(1, 9)]
    assert alibi_slopes(6, torch.float64).tolist() == [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]
    for n in [1, 2, 3, 5, 6, 7, 12, 16, 24, 40]:
        np.testing.assert_allclose(alibi_slopes(n, torch.float64).numpy(), alibi_slopes_ref(n), rtol=1e-12)
    with pytest.raises(ValueError, match="num_heads must be a positive int, got 0"):
        alibi_slopes(0)


def test_alibi_bias():
    H, Lq, Lk = 4, 3, 5
    bias = alibi_bias(H, Lq, Lk, dtype=torch.float64)
    assert bias.shape == (H, Lq, Lk)
    slopes = alibi_slopes(H, torch.float64)
    for h in range(H):
        for i in range(Lq):
            q_pos = Lk - Lq + i  # queries are the last Lq positions
            for j in range(Lk):
                expected = -slopes[h].item() * (q_pos - j) if j <= q_pos else float("-inf")
                assert bias[h, i, j].item() == expected
    full = alibi_bias(H, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(alibi_bias(H, 2, 5, dtype=torch.float64), full[:, 3:])
    sym = alibi_bias(2, 4, 4, causal=False, dtype=torch.float64)
    torch.testing.assert_close(sym, sym.transpose(1, 2))
    assert torch.isfinite(sym).all() and (sym <= 0).all()
    # adding the causal bias to the scores is causal attention with a recency penalty
    scores = torch.randn(1, H, Lq, Lk, dtype=torch.float64)
    w = torch.softmax(scores + bias, dim=-1)
    assert (w[..., 0, 3:] == 0).all() and torch.allclose(w.sum(-1), torch.ones(1, H, Lq, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"need 0 < Lq <= Lk .* got Lq=4, Lk=3"):
        alibi_bias(2, 4, 3)
