"""Chapter 5 exercises: the sinusoidal table, its transition matrix, RoPE, relative positions, and how far
ALiBi's heads look (a change to the chapter's length experiment)."""

from __future__ import annotations

import math

import torch

from ..reference import rope_complex_ref, sinusoidal_ref
from .core import Case, Exercise, Forbidden, Mistake, register


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- 1. the sinusoidal table ---------------------------------------------------------


def sinusoidal_solution(num_positions: int, d_model: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)); shape (P, d)."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]  # (P, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d/2,): 0, 2, 4, ...
    angle = pos / 10000 ** (two_i / d_model)  # (P, d/2)
    pe = torch.zeros(num_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)  # even columns: sine
    pe[:, 1::2] = torch.cos(angle)  # odd columns: cosine of the SAME angle
    return pe


def _pe_variant(P: int, d: int, swap: bool = False, exponent: str = "2i", layout: str = "interleaved"):
    pos = torch.arange(P, dtype=torch.float64)[:, None]
    i = torch.arange(d // 2, dtype=torch.float64)
    if exponent == "2i":
        angle = pos / 10000 ** (2 * i / d)
    elif exponent == "i":
        angle = pos / 10000 ** (i / d)
    else:  # "column": the odd column uses its own index 2i+1
        angle = pos / 10000 ** (2 * i / d)
        odd = pos / 10000 ** ((2 * i + 1) / d)
    s, c = torch.sin(angle), torch.cos(odd if exponent == "column" else angle)
    if swap:
        s, c = torch.cos(angle), torch.sin(angle)
    if layout == "concat":
        return torch.cat([s, c], dim=1)
    pe = torch.zeros(P, d, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = s, c
    return pe


def _sinusoidal_cases() -> list[Case]:
    return [
        Case("num_positions=4, d_model=2", (4, 2)),
        Case("num_positions=10, d_model=8", (10, 8)),
        Case("num_positions=50, d_model=16", (50, 16)),
        Case("num_positions=1, d_model=64 (position 0 only)", (1, 64)),
    ]


register(
    Exercise(
        "ch05.sinusoidal",
        "the sinusoidal position table (P, d)",
        sinusoidal_solution,
        _sinusoidal_cases,
        hint="angle[p, i] = p / 10000**(2*i/d) for the pair index i = 0 .. d/2-1; put sin(angle) in the even "
        "columns 0, 2, 4, ... and cos(angle) in the odd columns 1, 3, 5, ...",
        mistakes=[
            Mistake(
                lambda P, d: _pe_variant(P, d, swap=True),
                "sine and cosine are swapped: the EVEN columns (0, 2, ...) hold the sines, the odd ones the cosines.",
            ),
            Mistake(
                lambda P, d: _pe_variant(P, d, exponent="i"),
                "your exponent is i/d with the pair index i; it must be 2i/d (the column index of the sine), "
                "so the wavelengths run from 2π up to 10000·2π.",
            ),
            Mistake(
                lambda P, d: _pe_variant(P, d, exponent="column"),
                "the cosine in column 2i+1 must use the SAME angle as the sine in column 2i (exponent 2i/d), "
                "not its own column index (2i+1)/d.",
            ),
            Mistake(
                lambda P, d: _pe_variant(P, d, layout="concat"),
                "you put all sines first and all cosines after them; the table interleaves them: "
                "column 2i is a sine, column 2i+1 the cosine of the same angle.",
            ),
        ],
        reference=sinusoidal_ref,
        forbidden=[
            Forbidden(
                "the exercise is to build the table yourself (torch.arange, the angles, sin and cos); the "
                "package's sinusoidal_encoding is what it is checked against.",
                functions=(
                    "minitransformer.positional:sinusoidal_encoding",
                    "minitransformer.positional:SinusoidalPositionalEncoding.__init__",
                    "minitransformer.reference:sinusoidal_ref",
                ),
            )
        ],
    )
)


# -- 2. the transition matrix T_k -------------------------------------------------------


def transition_solution(k: int, d_model: int) -> torch.Tensor:
    """The (d, d) matrix T_k with PE[p + k] = T_k @ PE[p] for every position p."""
    T = torch.zeros(d_model, d_model, dtype=torch.float64)
    for i in range(d_model // 2):
        b = k / 10000 ** (2 * i / d_model)  # how far pair i turns in k steps
        c, s = math.cos(b), math.sin(b)
        # (sin a, cos a) -> (sin a cos b + cos a sin b, cos a cos b - sin a sin b) = (sin(a+b), cos(a+b))
        T[2 * i, 2 * i], T[2 * i, 2 * i + 1] = c, s
        T[2 * i + 1, 2 * i], T[2 * i + 1, 2 * i + 1] = -s, c
    return T


def _transition_variant(k: int, d: int, exponent: str = "2i", flip: bool = False) -> torch.Tensor:
    blocks = []
    for i in range(d // 2):
        b = k / 10000 ** ((2 * i if exponent == "2i" else i) / d)
        s = -math.sin(b) if flip else math.sin(b)
        blocks.append(torch.tensor([[math.cos(b), s], [-s, math.cos(b)]], dtype=torch.float64))
    return torch.block_diag(*blocks)


def _transition_cases() -> list[Case]:
    return [
        Case("k=1, d_model=2", (1, 2)),
        Case("k=3, d_model=8", (3, 8)),
        Case("k=-5, d_model=6 (a negative offset)", (-5, 6)),
        Case("k=40, d_model=16", (40, 16)),
    ]


register(
    Exercise(
        "ch05.transition",
        "the transition matrix T_k: PE[p + k] = T_k @ PE[p]",
        transition_solution,
        _transition_cases,
        hint="T_k is block-diagonal; block i acts on (PE[2i], PE[2i+1]) = (sin a, cos a) and turns it by "
        "b = k / 10000**(2i/d): rows [cos b, sin b] and [-sin b, cos b] (expand sin(a+b) and cos(a+b)).",
        mistakes=[
            Mistake(
                lambda k, d: _transition_variant(k, d, flip=True),
                "your matrix is the transpose T_k^T = T_{-k}: it moves positions k steps BACK. The pair is "
                "(sin a, cos a), so sin(a+b) = sin a cos b + cos a sin b puts +sin b in the FIRST row.",
            ),
            Mistake(
                lambda k, d: transition_solution(1, d),
                "your matrix does not depend on k: the angle of block i is k / 10000**(2i/d), not 1 / 10000**(2i/d).",
            ),
            Mistake(
                lambda k, d: _transition_variant(k, d, exponent="i"),
                "the angle of block i is k / 10000**(2i/d): the exponent is 2i/d, not i/d.",
            ),
        ],
        forbidden=[
            Forbidden(
                "the exercise is to fill in the 2 x 2 rotation blocks yourself; the package's "
                "transition_matrix is what it is checked against.",
                functions=("minitransformer.positional:transition_matrix",),
            )
        ],
    )
)


# -- 3. RoPE on a batch of vectors -------------------------------------------------------


def rope_solution(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, d) by RoPE, interleaved pairs (x_{2j}, x_{2j+1}), theta_j = 10000^(-2j/d)."""
    d = x.shape[-1]
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    angle = positions.to(torch.float64)[:, None] * theta[None, :]  # (T, d/2): m * theta_j
    cos, sin = torch.cos(angle), torch.sin(angle)  # (T, d/2) each
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (..., T, d/2): the two halves of each pair
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin  # first coordinate of the rotated pair
    out[..., 1::2] = x1 * sin + x2 * cos  # second coordinate
    return out


def _rope_variant(
    x, positions, halves: bool = False, sign: float = 1.0, exponent: str = "2j", dtype: torch.dtype = torch.float64
):
    d = x.shape[-1]
    j = torch.arange(d // 2, dtype=dtype)
    theta = 10000.0 ** (-(2 * j if exponent == "2j" else j) / d)
    angle = sign * positions.to(dtype)[:, None] * theta[None, :]
    cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    if halves:
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)
    out = torch.empty_like(x)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out[..., 0::2], out[..., 1::2] = x1 * cos - x2 * sin, x1 * sin + x2 * cos
    return out


def _rope_cases() -> list[Case]:
    g = _gen(5)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return [
        Case(
            "one 2-D vector [1, 0] at position 1", (torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([1]))
        ),
        Case("x (4, 6) at positions 0, 1, 2, 3", (r(4, 6), torch.arange(4))),
        Case("x (2, 3, 5, 8) (batch, heads, T, d) at positions 7 .. 11", (r(2, 3, 5, 8), torch.arange(7, 12))),
        Case(
            "x (3, 4) at positions 123457, 0, 42 (any order; a long context)", (r(3, 4), torch.tensor([123457, 0, 42]))
        ),
    ]


register(
    Exercise(
        "ch05.rope",
        "rotary position embedding (interleaved pairs)",
        rope_solution,
        _rope_cases,
        hint="pair j is (x[..., 2j], x[..., 2j+1]); turn it by the angle positions[t] * 10000**(-2j/d): "
        "(a, b) -> (a cos - b sin, a sin + b cos). Even columns take the first result, odd the second.",
        mistakes=[
            Mistake(
                lambda x, p: _rope_variant(x, p, halves=True),
                "you paired x_j with x_{j+d/2} (the rotate-half layout); this exercise uses interleaved "
                "pairs (x_0, x_1), (x_2, x_3), ...: take x[..., 0::2] and x[..., 1::2].",
            ),
            Mistake(
                lambda x, p: _rope_variant(x, p, sign=-1.0),
                "you rotate the wrong way (clockwise): [1, 0] at position 1 must become [cos 1, +sin 1]. "
                "The first coordinate is a cos - b sin, the second a sin + b cos.",
            ),
            Mistake(
                lambda x, p: _rope_variant(x, p, exponent="j"),
                "theta_j = 10000**(-2j/d) for the pair index j; you used j/d.",
            ),
            Mistake(
                lambda x, p: _rope_variant(x, torch.arange(x.shape[-2])),
                "use the positions you are given (e.g. 7 .. 11 after a cache), not 0 .. T-1.",
            ),
            Mistake(
                lambda x, p: _rope_variant(x, p, dtype=torch.float32),
                "your angles were computed in float32 (torch.arange and integer positions give float32 once "
                "divided): at position 123457 float32 angles are off by about 1e-4 radians. Compute theta and "
                "the angles in x's dtype (dtype=x.dtype, here float64).",
            ),
        ],
        reference=rope_complex_ref,
        forbidden=[
            Forbidden(
                "the exercise is to rotate the pairs yourself (cos and sin of positions x theta); the package's "
                "RotaryEmbedding is what it is checked against.",
                functions=(
                    "minitransformer.rotary:RotaryEmbedding.forward",
                    "minitransformer.rotary:RotaryEmbedding.cos_sin",
                    "minitransformer.reference:rope_complex_ref",
                ),
            )
        ],
    )
)


# -- 4. Shaw et al.'s clipped relative positions --------------------------------------------


def relative_positions_solution(n: int, max_distance: int) -> torch.Tensor:
    """(n, n) int64: entry (i, j) = clip(j - i, -K, K) + K, an index into 2K + 1 learned vectors."""
    i = torch.arange(n)[:, None]  # (n, 1): query position
    j = torch.arange(n)[None, :]  # (1, n): key position
    relative = (j - i).clamp(-max_distance, max_distance)  # (n, n): negative = the key is in the past
    return relative + max_distance  # shift into 0 .. 2K


def _relative_cases() -> list[Case]:
    return [
        Case("n=3, K=5 (no clipping needed)", (3, 5)),
        Case("n=5, K=2", (5, 2)),
        Case("n=7, K=1", (7, 1)),
        Case("n=1, K=3", (1, 3)),
    ]


register(
    Exercise(
        "ch05.relative_positions",
        "Shaw et al.'s clipped relative position indices",
        relative_positions_solution,
        _relative_cases,
        hint="entry (i, j) is clip(j - i, -K, K) + K: key position minus query position, clipped to [-K, K], "
        "then shifted by K so it can index a table of 2K + 1 vectors.",
        mistakes=[
            Mistake(
                lambda n, K: (torch.arange(n)[:, None] - torch.arange(n)[None, :]).clamp(-K, K) + K,
                "you computed i - j; the convention here is key minus query, j - i (negative = the past).",
            ),
            Mistake(
                lambda n, K: (torch.arange(n)[None, :] - torch.arange(n)[:, None]).clamp(-K, K),
                "clip(j - i, -K, K) runs from -K to K; add K so every index is in 0 .. 2K.",
            ),
            Mistake(
                lambda n, K: (torch.arange(n)[None, :] - torch.arange(n)[:, None]) + K,
                "you did not clip: offsets beyond K must share the index of ±K (clamp(-K, K)).",
            ),
        ],
    )
)


# -- 5. change the experiment: how far do ALiBi's heads look? ------------------------


def alibi_far_mass_solution(num_heads: int, length: int, window: int) -> torch.Tensor:
    """(H,): for the LAST query of a ``length``-token sequence and scores that ignore content,
    the share of each ALiBi head's weight on keys at least ``window`` positions back."""
    from ..relative import alibi_slopes

    slopes = alibi_slopes(num_heads, torch.float64)  # (H,)
    distance = torch.arange(length, dtype=torch.float64)  # (L,): keys 0 .. L-1 positions back
    weights = torch.softmax(-slopes[:, None] * distance[None, :], dim=-1)  # (H, L): each row sums to 1
    return weights[:, window:].sum(-1)  # (H,)


def _alibi_variant(H: int, L: int, W: int, sign: float = 1.0, edge: int = 0, rev: bool = False) -> torch.Tensor:
    """Known slips: the penalty's sign, the window's edge, the order of the heads."""
    from ..relative import alibi_slopes

    slopes = alibi_slopes(H, torch.float64)
    if rev:
        slopes = slopes.flip(0)
    w = torch.softmax(-sign * slopes[:, None] * torch.arange(L, dtype=torch.float64)[None, :], dim=-1)
    return w[:, W + edge :].sum(-1)


def _alibi_cases() -> list[Case]:
    return [
        Case("8 heads, length 16, window 4", (8, 16, 4)),
        Case("4 heads (the chapter's model), length 128, window 16 (the training length)", (4, 128, 16)),
        Case("6 heads (not a power of 2), length 40, window 10", (6, 40, 10)),
        Case("2 heads, length 10, window 10: no key is that far back", (2, 10, 10)),
        Case("1 head, length 5, window 1: every key but the query's own", (1, 5, 1)),
    ]


register(
    Exercise(
        "ch05.alibi_far_mass",
        "change the experiment: how much of an ALiBi head's weight lies beyond the trained span",
        alibi_far_mass_solution,
        _alibi_cases,
        hint="the last query sees keys 0, 1, ..., length-1 positions back; head h's score for a key d back is "
        "-slope_h * d (alibi_slopes(num_heads) gives the slopes); softmax over ALL the keys, then add the weights "
        "of the keys d >= window back.",
        mistakes=[
            Mistake(
                lambda H, L, W: _alibi_variant(H, L, W, sign=-1.0),
                "the penalty has the wrong sign: ALiBi SUBTRACTS slope_h * d, so far keys get less weight, not more.",
            ),
            Mistake(
                lambda H, L, W: _alibi_variant(H, L, W, edge=1),
                "off by one at the window's edge: the window of W positions is d = 0 .. W-1 back (the query's "
                "own position is d = 0), so the far keys start at d = W.",
            ),
            Mistake(
                lambda H, L, W: _alibi_variant(H, L, W, rev=True),
                "the heads are in the wrong order: head 0 has the STEEPEST slope (2^(-8/H)), the last head the "
                "flattest (2^-8).",
            ),
        ],
        rtol=1e-9,
        atol=1e-12,
    )
)
