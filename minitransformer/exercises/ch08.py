"""Chapter 8 exercises: the online-softmax update, the sliding-window mask,
linear attention, and the tiled forward pass changed (the tile sizes, causal)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..flash.tiled_numpy import flash_forward_steps
from ..reference import linear_attention_ref
from .core import Case, Exercise, Forbidden, Mistake, Pairwise, register


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- 1. one step of the online softmax ---------------------------------------------------------


def online_step_solution(m: torch.Tensor, o: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The un-normalised output after one more key tile.

    m: (r,) running max of each row's scores so far (-inf before the first tile);
    o: (r, dv) = sum over the keys seen so far of exp(s_j - m) v_j;
    s: (r, c) the new tile's scores; v: (c, dv) the new tile's values.
    Returns o_new = sum over all keys seen of exp(s_j - m_new) v_j, m_new = max(m, rowmax(s)).
    """
    m_new = torch.maximum(m, s.max(dim=-1).values)  # (r,)
    alpha = torch.exp(m - m_new)  # (r,) rescales the old terms; 0 when m = -inf
    p = torch.exp(s - m_new.unsqueeze(-1))  # (r, c), every entry <= 1
    return alpha.unsqueeze(-1) * o + p @ v  # (r, dv)


def _online_cases() -> list[Case]:
    g = _gen(8)
    r = lambda *sh: torch.randn(*sh, generator=g, dtype=torch.float64)  # noqa: E731
    m0 = torch.full((3,), float("-inf"), dtype=torch.float64)
    s1, v1 = r(3, 4), r(4, 2)
    o1 = online_step_solution(m0, torch.zeros(3, 2, dtype=torch.float64), s1, v1)
    m1 = s1.max(-1).values
    return [
        Case(
            "3 rows, a second tile of 4 keys whose scores are LARGER than the running max (m must grow)",
            (m1, o1, s1 + 3.0 + r(3, 5)[:, :4].abs(), r(4, 2)),
        ),
        Case("a second tile whose scores are all SMALLER than the running max", (m1, o1, s1 - 5.0, r(4, 2))),
        Case("the first tile: m = -inf, o = 0", (m0, torch.zeros(3, 2, dtype=torch.float64), s1, v1)),
        Case(
            "scores around 1000 (the overflow test)",
            (
                torch.tensor([998.0, 1000.0], dtype=torch.float64),
                r(2, 3),
                torch.tensor([[1000.0, 999.0], [1001.0, 1002.0]], dtype=torch.float64),
                r(2, 3),
            ),
        ),
    ]


register(
    Exercise(
        "ch08.online_step",
        "one online-softmax step: rescale the old output, add the new tile",
        online_step_solution,
        _online_cases,
        hint="m_new = max(m, s.max(-1)); the old terms were relative to m, so multiply o by exp(m - m_new); "
        "the new terms are exp(s - m_new[:, None]) @ v.",
        mistakes=[
            Mistake(
                lambda m, o, s, v: o + torch.exp(s - torch.maximum(m, s.max(-1).values)[:, None]) @ v,
                "you did not rescale the old output: o was computed relative to the OLD max m, "
                "so multiply it by exp(m - m_new) before adding the new tile.",
            ),
            Mistake(
                lambda m, o, s, v: (
                    torch.exp(torch.maximum(m, s.max(-1).values) - m)[:, None] * o
                    + torch.exp(s - torch.maximum(m, s.max(-1).values)[:, None]) @ v
                ),
                "the rescaling factor is upside down: it is exp(m_old - m_new) <= 1, not exp(m_new - m_old).",
            ),
            Mistake(
                lambda m, o, s, v: o + torch.exp(s - m[:, None]) @ v,
                "you used the OLD max for the new tile: when the tile holds a larger score, m must grow "
                "(m_new = max(m, rowmax(s))) and everything is expressed relative to m_new.",
            ),
            Mistake(
                lambda m, o, s, v: (
                    (torch.exp(m) / torch.exp(torch.maximum(m, s.max(-1).values)))[:, None] * o
                    + torch.exp(s - torch.maximum(m, s.max(-1).values)[:, None]) @ v
                ),
                "exp(m) / exp(m_new) is the right factor on paper, but exp(1000) = inf and inf / inf = NaN: "
                "compute exp(m - m_new), the difference first.",
            ),
        ],
        forbidden=[
            Forbidden(
                "write the update yourself (max, rescale, add); the package's online_softmax_step is what it "
                "is checked against.",
                functions=("minitransformer.flash.online_softmax:online_softmax_step",),
            )
        ],
    )
)


# -- 2. the sliding-window mask ----------------------------------------------------------------------


def sliding_window_mask_solution(n: int, window: int, causal: bool) -> torch.Tensor:
    """Bool (n, n), True = may attend: |i - j| <= window (causal: 0 <= i - j <= window)."""
    i = torch.arange(n).unsqueeze(1)  # (n, 1) query positions
    j = torch.arange(n).unsqueeze(0)  # (1, n) key positions
    if causal:
        return (i - j >= 0) & (i - j <= window)
    return (i - j).abs() <= window


def _window_cases() -> list[Case]:
    return [
        Case("n = 6, window = 1, not causal", (6, 1, False)),
        Case("n = 6, window = 2, causal", (6, 2, True)),
        Case("n = 4, window = 0 (only itself), not causal", (4, 0, False)),
        Case("n = 5, window = 10 (wider than the sequence), causal", (5, 10, True)),
    ]


register(
    Exercise(
        "ch08.sliding_window_mask",
        "the sliding-window (local) mask",
        sliding_window_mask_solution,
        _window_cases,
        hint="with i the query and j the key position: |i - j| <= window; causal: 0 <= i - j <= window. "
        "Build i and j with torch.arange and broadcast them.",
        mistakes=[
            Mistake(
                lambda n, w, c: (
                    sliding_window_mask_solution(n, w - 1, c) if w > 0 else torch.zeros(n, n, dtype=torch.bool)
                ),
                "off by one: a key exactly `window` positions away is still inside the window (use <=).",
            ),
            Mistake(
                lambda n, w, c: sliding_window_mask_solution(n, w, c).T if c else sliding_window_mask_solution(n, w, c),
                "your causal mask looks into the FUTURE: query i may see keys j <= i, i.e. i - j >= 0.",
            ),
            Mistake(
                lambda n, w, c: sliding_window_mask_solution(n, w, False),
                "with causal=True a query may not see later keys: also require i - j >= 0.",
            ),
        ],
        forbidden=[
            Forbidden(
                "build the mask yourself from torch.arange and a comparison; the package's sliding_window_mask "
                "is what it is checked against.",
                functions=(
                    "minitransformer.efficient:sliding_window_mask",
                    "minitransformer.book.position_experiments:window_mask",
                ),
            )
        ],
    )
)


# -- 3. linear attention ------------------------------------------------------------------------------


def linear_attention_solution(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal linear attention with phi(x) = elu(x) + 1, computed right to left."""
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1  # (..., n, r), (..., m, r) positive features
    kv = phi_k.transpose(-2, -1) @ v  # (..., r, dv): the keys' summary, built once
    z = phi_k.sum(dim=-2)  # (..., r)
    num = phi_q @ kv  # (..., n, dv)
    den = phi_q @ z.unsqueeze(-1)  # (..., n, 1): each query's total weight
    return num / den


def _linear_cases() -> list[Case]:
    g = _gen(9)
    r = lambda *sh: torch.randn(*sh, generator=g, dtype=torch.float64)  # noqa: E731
    return [
        Case("q (4, 3), k (6, 3), v (6, 2)", (r(4, 3), r(6, 3), r(6, 2))),
        Case("batched q (2, 5, 8), k (2, 7, 8), v (2, 7, 4)", (r(2, 5, 8), r(2, 7, 8), r(2, 7, 4))),
        Case(
            "strongly negative inputs (where elu(x) + 1 is close to 0 but positive)",
            (r(3, 4) - 3.0, r(5, 4) - 3.0, r(5, 2)),
        ),
    ]


def _elu1(x):
    return F.elu(x) + 1


def _linear_attention_ref(q, k, v):
    """The float64 quadratic form with phi(x) = elu(x) + 1, one query at a time."""
    return linear_attention_ref(q, k, v, _elu1)


register(
    Exercise(
        "ch08.linear_attention",
        "linear attention phi(Q) (phi(K)^T V), normalised",
        linear_attention_solution,
        _linear_cases,
        hint="phi(x) = F.elu(x) + 1; kv = phi(k)^T @ v (r x dv); z = phi(k).sum over keys; "
        "out = (phi(q) @ kv) / (phi(q) @ z)[..., None].",
        mistakes=[
            Mistake(
                lambda q, k, v: _elu1(q) @ (_elu1(k).transpose(-2, -1) @ v),
                "you forgot the normaliser: divide each query's output by phi(q_i) . sum_j phi(k_j) "
                "so that its weights sum to 1.",
            ),
            Mistake(
                lambda q, k, v: (
                    (F.elu(q) @ (F.elu(k).transpose(-2, -1) @ v)) / (F.elu(q) @ F.elu(k).sum(-2).unsqueeze(-1))
                ),
                "the feature map is elu(x) + 1, not elu(x): without the +1 the features can be negative "
                "and the 'weights' are no longer positive.",
            ),
            Mistake(
                lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, -1) @ v,
                "that is softmax attention; here the similarity is phi(q) . phi(k) with phi(x) = elu(x) + 1.",
            ),
        ],
        reference=_linear_attention_ref,
        forbidden=[
            Forbidden(
                "write linear attention yourself; the package's linear_attention is what it is checked against.",
                functions=(
                    "minitransformer.linear_attention:linear_attention",
                    "minitransformer.linear_attention:linear_attention_from_features",
                    "minitransformer.reference:linear_attention_ref",
                ),
            )
        ],
        pairwise=Pairwise(
            lambda q, k, v: (q.shape[-2], k.shape[-2]),
            "the point of linear attention is never to form the n x m matrix phi(Q) phi(K)^T: compute the "
            "keys' summary phi(K)^T V (r x d_v) and phi(K).sum over the keys (r,) first, then multiply phi(Q) "
            "by them. Memory and time then grow with n + m, not n x m.",
        ),
    )
)


# -- 4. change an experiment: the tile sizes of causal flash attention ----------------------------


def causal_tiles_solution(N: int, Br: int, Bc: int) -> tuple[int, float]:
    """Run the tiled forward pass of section 3.3 (``flash_forward_steps``) with ``is_causal=True``
    on one head of length ``N`` (random q, k, v of width 4, seed 0) and tiles of ``Br`` query rows
    and ``Bc`` keys. Returns ``(tiles, fraction)``: the number of score tiles it computes, and the
    entries of those tiles as a fraction of the full ``N x N`` score matrix.

    Interpretation (the question under the exercise). Causal attention needs only the lower
    triangle, (N + 1) / (2N) of the scores, a little over a half. Tiles above the diagonal are skipped
    whole, but a tile that crosses the diagonal is computed in full and then partly masked, so
    the fraction computed sits above (N + 1) / (2N) by the diagonal tiles' masked part: larger tiles
    waste more, and one tile covering everything computes all N x N scores. Smaller tiles waste
    less but need more steps (more loop iterations, on a GPU more loads of K and V per query
    tile), which is why kernels pick the largest tiles that fit in shared memory.
    """
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(N, 4, generator=g, dtype=torch.float64).numpy() for _ in range(3))
    tiles, entries = 0, 0
    for step in flash_forward_steps(q, k, v, Br=Br, Bc=Bc, is_causal=True):
        tiles += 1
        entries += step.S.size  # this tile's scores, masked ones included
    return tiles, entries / (N * N)


def _causal_tiles_count(N, Br, Bc, causal=True, clipped=True, skip_rule="ceil"):
    """The tile count and computed fraction by arithmetic (the known mistakes vary one rule)."""
    Tr, Tc = math.ceil(N / Br), math.ceil(N / Bc)
    tiles = entries = 0
    for i in range(Tr):
        r0, r1 = i * Br, min((i + 1) * Br, N)
        if not causal:
            Tc_i = Tc
        elif skip_rule == "ceil":
            Tc_i = min(Tc, math.ceil(r1 / Bc))
        else:  # the floor: drops the key tile that holds the diagonal's end
            Tc_i = max(1, min(Tc, r1 // Bc))
        for j in range(Tc_i):
            c0, c1 = j * Bc, min((j + 1) * Bc, N)
            tiles += 1
            entries += ((r1 - r0) * (c1 - c0)) if clipped else Br * Bc
    return tiles, entries / (N * N)


def _causal_tiles_cases() -> list[Case]:
    return [
        Case("N = 64, Br = Bc = 16", (64, 16, 16)),
        Case("N = 64, Br = 8, Bc = 32 (tall and wide tiles differ)", (64, 8, 32)),
        Case("N = 100, Br = 32, Bc = 16 (N not a multiple of the tiles: short last tiles)", (100, 32, 16)),
        Case("N = 64, one tile Br = Bc = 64", (64, 64, 64)),
    ]


register(
    Exercise(
        "ch08.causal_tiles",
        "causal flash attention with other tile sizes: tiles computed and the share of the N x N scores",
        causal_tiles_solution,
        _causal_tiles_cases,
        hint="loop over flash_forward_steps(q, k, v, Br=Br, Bc=Bc, is_causal=True) on (N, 4) inputs: count the "
        "steps, add up step.S.size, and divide that by N * N; return (tiles, fraction).",
        mistakes=[
            Mistake(
                lambda N, Br, Bc: _causal_tiles_count(N, Br, Bc, causal=False),
                "you counted every tile: with is_causal=True the tiles entirely above the diagonal are skipped.",
            ),
            Mistake(
                lambda N, Br, Bc: _causal_tiles_count(N, Br, Bc, clipped=False),
                "you counted Br x Bc entries for every tile, but the last tiles are short when N is not a "
                "multiple of the tile: use each tile's own size (step.S.size).",
            ),
            Mistake(
                lambda N, Br, Bc: (_causal_tiles_count(N, Br, Bc)[0], (N + 1) / (2 * N)),
                "that fraction is the lower triangle, what causal attention NEEDS; the tiles that cross "
                "the diagonal are computed in full and masked afterwards: count all their entries.",
            ),
            Mistake(
                lambda N, Br, Bc: _causal_tiles_count(N, Br, Bc, skip_rule="floor"),
                "you dropped the key tile that holds the end of a query tile's diagonal: query tile i needs "
                "key tiles 0 .. ceil(r1 / Bc) - 1, where r1 is the tile's last row + 1.",
            ),
        ],
        reference=_causal_tiles_count,
    )
)
