"""Chapter 9 exercises: patchify an image, an adjacency mask, the L-hop receptive field, attention entropy,
and the tiny ViT changed (another patch size: tokens and attention size)."""

from __future__ import annotations

import torch

from ..book.vision import TinyViT
from .core import Case, Exercise, Forbidden, Mistake, register


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- 1. patchify --------------------------------------------------------------------


def patchify_solution(images: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C*p*p): patches row by row, each flattened in (C, p, p) order."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p)  # (B, C, gh, p, gw, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)
    return x.reshape(B, (H // p) * (W // p), C * p * p)  # (B, N, C*p*p)


def _patchify_cases() -> list[Case]:
    g = _gen(0)
    return [
        Case("one 1x4x4 image numbered 0..15, p = 2", (torch.arange(16.0).reshape(1, 1, 4, 4), 2)),
        Case(
            "a 2x3x6x4 batch (3 channels, non-square), p = 2",
            (torch.randn(2, 3, 6, 4, generator=g, dtype=torch.float64), 2),
        ),
        Case("a 1x2x8x8 image, p = 4", (torch.randn(1, 2, 8, 8, generator=g, dtype=torch.float64), 4)),
    ]


def _patchify_plain_reshape(images, p):
    B, C, H, W = images.shape
    return images.reshape(B, (H // p) * (W // p), C * p * p)


def _patchify_channels_last(images, p):
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    return x.reshape(B, (H // p) * (W // p), C * p * p)


def _patchify_column_major(images, p):
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5)  # grid column first
    return x.reshape(B, (H // p) * (W // p), C * p * p)


register(
    Exercise(
        "ch09.patchify",
        "cut images into p x p patches (tokens)",
        patchify_solution,
        _patchify_cases,
        hint="reshape to (B, C, H/p, p, W/p, p), permute to (B, H/p, W/p, C, p, p), then reshape to "
        "(B, N, C*p*p); a plain reshape mixes pixels of different patches.",
        mistakes=[
            Mistake(
                _patchify_plain_reshape,
                "a plain reshape cuts the image into runs of consecutive pixels in memory, not into "
                "square patches: split H and W into (H/p, p) and (W/p, p) and permute first.",
            ),
            Mistake(
                _patchify_channels_last,
                "your patches are flattened in (p, p, C) order; the convention here (that of "
                "nn.Conv2d and F.unfold) is (C, p, p): channel first.",
            ),
            Mistake(
                _patchify_column_major,
                "your patches are listed column by column; list them row by row "
                "(patch n at grid row n // (W/p), column n % (W/p)).",
            ),
        ],
        forbidden=[
            Forbidden(
                "the exercise is to cut the patches with reshape and permute; F.unfold (im2col) and the "
                "package's patchify are what it is checked against.",
                torch_names=("im2col",),
                functions=("torch.nn.functional:unfold", "minitransformer.book.vision:patchify"),
            )
        ],
    )
)


# -- 2. the adjacency mask ----------------------------------------------------------------


def adjacency_mask_solution(edges: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Bool (N, N), True = may attend: undirected edges both ways, and every node to itself."""
    mask = torch.eye(num_nodes, dtype=torch.bool)  # self-loops: a node keeps its own state
    mask[edges[:, 0], edges[:, 1]] = True  # i may read j ...
    mask[edges[:, 1], edges[:, 0]] = True  # ... and j may read i
    return mask


def _adjacency_cases() -> list[Case]:
    return [
        Case("a path 0-1-2-3", (torch.tensor([[0, 1], [1, 2], [2, 3]]), 4)),
        Case("a star: node 0 linked to 1, 2, 3, 4", (torch.tensor([[0, 1], [0, 2], [0, 3], [0, 4]]), 5)),
        Case("a triangle 0-1-2 and an isolated node 3", (torch.tensor([[1, 0], [2, 1], [0, 2]]), 4)),
    ]


def _adj_no_loops(edges, n):
    m = torch.zeros(n, n, dtype=torch.bool)
    m[edges[:, 0], edges[:, 1]] = True
    m[edges[:, 1], edges[:, 0]] = True
    return m


def _adj_one_way(edges, n):
    m = torch.eye(n, dtype=torch.bool)
    m[edges[:, 0], edges[:, 1]] = True
    return m


register(
    Exercise(
        "ch09.adjacency_mask",
        "an attention mask from a graph's edges (True = may attend)",
        adjacency_mask_solution,
        _adjacency_cases,
        hint="start from torch.eye(N, dtype=torch.bool) (self-loops), then set both [i, j] and [j, i] "
        "to True for every edge (i, j).",
        mistakes=[
            Mistake(
                _adj_no_loops,
                "you left out the self-loops: without them a node cannot attend to itself, and an "
                "isolated node has no key at all.",
            ),
            Mistake(_adj_one_way, "the edges are undirected: set both [i, j] and [j, i]."),
            Mistake(
                lambda e, n: ~adjacency_mask_solution(e, n),
                "your mask is inverted: True must mean 'may attend' (neighbours and the node itself).",
            ),
        ],
        forbidden=[
            Forbidden(
                "build the mask yourself from torch.eye and the edge list; the package's adjacency_mask is what "
                "it is checked against.",
                functions=("minitransformer.book.graphs:adjacency_mask",),
            )
        ],
    )
)


# -- 3. the L-hop receptive field ------------------------------------------------------------


def receptive_field_solution(mask: torch.Tensor, num_layers: int) -> torch.Tensor:
    """Bool (N, N): [q, k] True when k is at most num_layers hops from q (the pattern of (A + I)^L)."""
    N = mask.shape[0]
    step = (mask | torch.eye(N, dtype=torch.bool)).float()  # A + I: the residual keeps what a node had
    reach = torch.eye(N)  # 0 layers: each node sees only itself
    for _ in range(num_layers):
        reach = ((step @ reach) > 0).float()  # one more round of message passing
    return reach.bool()


def _field_cases() -> list[Case]:
    path6 = torch.zeros(6, 6, dtype=torch.bool)
    i = torch.arange(5)
    path6[i, i + 1] = path6[i + 1, i] = True  # a path without self-loops
    ring = torch.zeros(8, 8, dtype=torch.bool)
    j = torch.arange(8)
    ring[j, (j + 1) % 8] = ring[(j + 1) % 8, j] = True
    return [
        Case("a path of 6 nodes, 1 layer", (path6, 1)),
        Case("a path of 6 nodes, 2 layers", (path6, 2)),
        Case("a ring of 8 nodes, 3 layers", (ring, 3)),
        Case("a path of 6 nodes, 0 layers", (path6, 0)),
    ]


def _field_power_no_identity(mask, L):
    a = mask.float()
    r = torch.eye(mask.shape[0])
    for _ in range(L):
        r = ((a @ r) > 0).float()
    return r.bool()


def _field_off_by_one(mask, L):
    return receptive_field_solution(mask, L + 1)


register(
    Exercise(
        "ch09.receptive_field",
        "which nodes reach which after L masked layers",
        receptive_field_solution,
        _field_cases,
        hint="repeat L times: reach = (A + I) @ reach > 0, starting from the identity; the + I is the "
        "residual connection (a node keeps what it already had).",
        mistakes=[
            Mistake(
                _field_power_no_identity,
                "you took A^L without the identity: that counts walks of EXACTLY L steps, so a node "
                "forgets nodes it had already reached; use (A + I).",
            ),
            Mistake(
                _field_off_by_one,
                "off by one: with L layers a message travels L hops, and 0 layers reach only the node itself.",
            ),
        ],
        forbidden=[
            Forbidden(
                "repeat the (A + I) step yourself; the package's receptive_field and hop_distances are what it "
                "is checked against.",
                functions=("minitransformer.book.graphs:receptive_field", "minitransformer.book.graphs:hop_distances"),
            )
        ],
    )
)


# -- 4. attention entropy -----------------------------------------------------------------------


def entropy_solution(weights: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of weights (..., m) -> (...), with 0 log 0 = 0."""
    logs = torch.where(weights > 0, weights.log(), torch.zeros_like(weights))  # 0 log 0 := 0
    return -(weights * logs).sum(dim=-1)


def _entropy_cases() -> list[Case]:
    g = _gen(3)
    return [
        Case("uniform over 4 keys (answer log 4)", (torch.full((4,), 0.25, dtype=torch.float64),)),
        Case("one-hot rows with exact zeros (answer 0)", (torch.eye(3, dtype=torch.float64),)),
        Case(
            "a (2, 3, 5) batch of softmax rows",
            (torch.softmax(torch.randn(2, 3, 5, generator=g, dtype=torch.float64) * 2, -1),),
        ),
    ]


register(
    Exercise(
        "ch09.entropy",
        "the entropy of attention weights, per query",
        entropy_solution,
        _entropy_cases,
        hint="H = -sum_j w_j log w_j over the LAST axis, natural log, and treat 0 * log 0 as 0.",
        mistakes=[
            Mistake(
                lambda w: -(w * torch.log2(torch.where(w > 0, w, torch.ones_like(w)))).sum(-1),
                "you used log base 2 (bits); use the natural log (nats), so that uniform over m keys gives log m.",
            ),
            Mistake(
                lambda w: -(w * w.log()).sum(-1),
                "0 * log 0 gives NaN in floating point (0 * -inf): treat zero weights as contributing 0.",
            ),
            Mistake(
                lambda w: (w * torch.where(w > 0, w.log(), torch.zeros_like(w))).sum(-1),
                "you forgot the minus sign: entropy is -sum w log w, never negative.",
            ),
        ],
        forbidden=[
            Forbidden(
                "write -sum w log w yourself (with 0 log 0 = 0); torch.special.entr, "
                "torch.distributions.Categorical(...).entropy(), scipy.stats.entropy and the package's "
                "attention_entropy compute it for you.",
                torch_names=("special_entr",),
                functions=(
                    "torch.distributions.categorical:Categorical.entropy",
                    "minitransformer.book.diagnostics:attention_entropy",
                    "minitransformer.book.diagnostics:normalized_entropy",
                    "scipy.stats._entropy:entropy",
                ),
            )
        ],
    )
)


# -- 5. change an experiment: the ViT's patch size ------------------------------------------------


def vit_patch_cost_solution(image_size: int, patch_size: int) -> tuple[int, int]:
    """Section 2's tiny ViT with another patch size: build it (1 channel, 4 classes, width 32,
    2 heads, 2 layers), run one random image through it with ``need_weights=True``, and read
    off the first layer's attention weights ``(1, H, T, T)``. Returns ``(T, H * T * T)``: the
    tokens the encoder sees (CLS included) and the entries of one layer's attention weights
    for one image, all heads.

    Interpretation (the question under the exercise). Halving the patch side multiplies the
    patches by 4 and the attention entries by about 16 (exactly so without the CLS token),
    while the pixels per image stay the same: the attention cost grows like (S / p)^4. That is
    why ViTs use patches of 16 x 16 pixels rather than pixels, and why high-resolution images
    call for larger patches or windowed attention (chapter 8).
    """
    model = TinyViT(image_size=image_size, patch_size=patch_size, channels=1, num_classes=4, d_model=32)
    with torch.no_grad():
        _, weights = model(torch.randn(1, 1, image_size, image_size), need_weights=True)
    _, heads, tokens, _ = weights[0].shape  # (1, H, T, T)
    return tokens, heads * tokens * tokens


def _vit_patch_cost_count(image_size, patch_size, cls=True, heads=2, squared=True, layers=1):
    """The same numbers by arithmetic (the known mistakes change one rule)."""
    side = image_size // patch_size
    tokens = (side * side if squared else side) + (1 if cls else 0)
    return tokens, layers * heads * tokens * tokens


def _vit_patch_cases() -> list[Case]:
    return [
        Case("32 x 32 images, 8 x 8 patches (section 2)", (32, 8)),
        Case("32 x 32 images, 4 x 4 patches", (32, 4)),
        Case("28 x 28 digits, 7 x 7 patches", (28, 7)),
        Case("32 x 32 images, 2 x 2 patches", (32, 2)),
    ]


register(
    Exercise(
        "ch09.vit_patch_cost",
        "the tiny ViT with another patch size: tokens and attention entries per layer",
        vit_patch_cost_solution,
        _vit_patch_cases,
        hint="build TinyViT(image_size=..., patch_size=..., channels=1, num_classes=4, d_model=32), call it on "
        "torch.randn(1, 1, S, S) with need_weights=True, take weights[0].shape = (1, H, T, T) and return "
        "(T, H * T * T).",
        mistakes=[
            Mistake(
                lambda S, p: _vit_patch_cost_count(S, p, cls=False),
                "you left out the CLS token: the encoder sees the (S/p)^2 patches AND the CLS token.",
            ),
            Mistake(
                lambda S, p: _vit_patch_cost_count(S, p, heads=1),
                "that is one head's T x T matrix; count the entries of all heads (H * T * T).",
            ),
            Mistake(
                lambda S, p: _vit_patch_cost_count(S, p, squared=False),
                "S/p is the number of patches along ONE side; the image has (S/p)^2 patches.",
            ),
            Mistake(
                lambda S, p: _vit_patch_cost_count(S, p, layers=2),
                "you added up both layers; the question asks for ONE layer's attention weights.",
            ),
        ],
        reference=_vit_patch_cost_count,
    )
)
