"""Images as sequences of tokens: patches, a generated shapes dataset, a tiny ViT and a CNN baseline.

A vision transformer (Dosovitskiy et al., 2020) cuts an image into ``p x p``
patches, flattens each patch into a vector, projects it to ``d_model`` and adds a
2-D position code; from then on the patches are tokens like any others. A
``224 x 224`` image with ``16 x 16`` patches gives ``(224/16)^2 = 196`` tokens.

Conventions (the same as ``nn.Conv2d(C, d, kernel_size=p, stride=p)`` followed by
``.flatten(2).transpose(1, 2)``, and as :func:`torch.nn.functional.unfold`):

* patches are listed row by row: patch ``n`` is at grid row ``n // (W/p)`` and
  column ``n % (W/p)`` (the layout of :func:`~minitransformer.positional.sinusoidal_encoding_2d`);
* inside a patch the ``C * p * p`` numbers are ordered channel first, then pixel
  row, then pixel column (``(C, p, p)`` flattened).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..layers import EncoderLayer
from ..positional import sinusoidal_encoding_2d

__all__ = [
    "num_patches",
    "patchify",
    "unpatchify",
    "SHAPE_CLASSES",
    "make_shapes",
    "patch_coverage",
    "TinyViT",
    "TinyCNN",
    "cls_attention",
    "attention_rollout",
    "train_classifier",
    "evaluate_classifier",
    "image_picker_chart",
]

SHAPE_CLASSES = ("square", "disk", "triangle", "cross")


def _pair(x) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def num_patches(image_size, patch_size) -> int:
    """How many tokens an image becomes: ``(H / p_h) * (W / p_w)``.

    Args:
        image_size: ``H`` or ``(H, W)``.
        patch_size: ``p`` or ``(p_h, p_w)``; must divide the image size.

    Returns:
        the number of patches, e.g. ``num_patches(224, 16) == 196``.
    """
    (H, W), (ph, pw) = _pair(image_size), _pair(patch_size)
    if min(H, W, ph, pw) <= 0:
        raise ValueError(f"image_size and patch_size must be positive, got {(H, W)} and {(ph, pw)}")
    if H % ph or W % pw:
        raise ValueError(f"patch_size {(ph, pw)} does not divide image_size {(H, W)}")
    return (H // ph) * (W // pw)


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Cut images into non-overlapping square patches, one flattened patch per token.

    Args:
        images: ``(B, C, H, W)``.
        patch_size: ``p``; must divide ``H`` and ``W``.

    Returns:
        ``(B, N, C * p * p)`` with ``N = (H/p) * (W/p)``, patches row by row, each
        patch flattened in ``(C, p, p)`` order.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        is_tensor = isinstance(images, Tensor)
        shape = tuple(images.shape) if is_tensor else type(images).__name__
        raise ValueError(f"patchify: images must be (B, C, H, W), got {shape}")
    B, C, H, W = images.shape
    p = patch_size
    num_patches((H, W), p)  # validates divisibility
    x = images.reshape(B, C, H // p, p, W // p, p)  # (B, C, gh, p, gw, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)
    return x.reshape(B, (H // p) * (W // p), C * p * p)  # (B, N, C*p*p)


def unpatchify(patches: Tensor, image_size, patch_size: int, channels: int) -> Tensor:
    """The inverse of :func:`patchify`: ``(B, N, C*p*p) -> (B, C, H, W)``."""
    H, W = _pair(image_size)
    p = patch_size
    n = num_patches((H, W), p)
    if patches.dim() != 3 or patches.shape[1] != n or patches.shape[2] != channels * p * p:
        raise ValueError(
            f"unpatchify: expected patches of shape (B, {n}, {channels * p * p}) for "
            f"{channels}x{H}x{W} images and patch_size {p}, got {tuple(patches.shape)}"
        )
    B = patches.shape[0]
    x = patches.reshape(B, H // p, W // p, channels, p, p)  # (B, gh, gw, C, p, p)
    x = x.permute(0, 3, 1, 4, 2, 5)  # (B, C, gh, p, gw, p)
    return x.reshape(B, channels, H, W)  # (B, C, H, W)


# ---------------------------------------------------------------- a generated dataset
def _draw(kind: str, size: int, yy: Tensor, xx: Tensor, cy: float, cx: float) -> Tensor:
    """Boolean (H, W) pixels of one shape centred at (cy, cx) with extent ``size``."""
    r = size / 2
    dy, dx = yy - cy, xx - cx
    if kind == "square":
        return (dy.abs() <= r - 0.5) & (dx.abs() <= r - 0.5)
    if kind == "disk":
        return dy**2 + dx**2 <= r**2
    if kind == "triangle":  # apex up: the half-width grows linearly from top to bottom
        t = (dy + r) / (2 * r)  # 0 at the apex row, 1 at the base
        return (t >= 0) & (t <= 1) & (dx.abs() <= t * r)
    if kind == "cross":  # a plus sign with arms of width about size / 3
        arm = max(1.0, size / 6)
        return ((dy.abs() <= arm) & (dx.abs() <= r)) | ((dx.abs() <= arm) & (dy.abs() <= r))
    raise ValueError(f"unknown shape {kind!r}; known: {SHAPE_CLASSES}")


def make_shapes(
    n: int, image_size: int = 32, seed: int = 0, min_size: int = 8, max_size: int = 13, noise: float = 0.2
) -> tuple[Tensor, Tensor, Tensor]:
    """Generate ``n`` grey images, each with one shape (square, disk, triangle or cross) somewhere.

    The shape's class, size (``min_size .. max_size`` pixels), position and
    brightness are random; the background is Gaussian noise. Nothing is
    downloaded and the same seed gives the same images.

    Returns:
        ``images (n, 1, S, S)`` float32, ``labels (n,)`` int64 (indices into
        :data:`SHAPE_CLASSES`), ``masks (n, S, S)`` bool (the shape's pixels).
    """
    if n < 1 or image_size < max_size + 2 or not 1 <= min_size <= max_size:
        raise ValueError(
            f"make_shapes: need n >= 1 and 1 <= min_size <= max_size <= image_size - 2, "
            f"got n={n}, sizes {min_size}..{max_size}, image_size={image_size}"
        )
    g = torch.Generator().manual_seed(seed)
    S = image_size
    yy, xx = torch.meshgrid(
        torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij"
    )  # (S, S) each
    labels = torch.randint(len(SHAPE_CLASSES), (n,), generator=g)  # (n,)
    sizes = torch.randint(min_size, max_size + 1, (n,), generator=g)  # (n,)
    bright = 0.6 + 0.4 * torch.rand(n, generator=g)  # (n,)
    images = noise * torch.randn(n, 1, S, S, generator=g)  # (n, 1, S, S)
    masks = torch.zeros(n, S, S, dtype=torch.bool)
    for i in range(n):
        size = int(sizes[i])
        r = size / 2
        lo, hi = r, S - 1 - r  # keep the whole shape inside the image
        cy = lo + (hi - lo) * torch.rand((), generator=g).item()
        cx = lo + (hi - lo) * torch.rand((), generator=g).item()
        masks[i] = _draw(SHAPE_CLASSES[int(labels[i])], size, yy, xx, cy, cx)
        images[i, 0][masks[i]] += bright[i]
    return images, labels, masks


def patch_coverage(masks: Tensor, patch_size: int) -> Tensor:
    """Fraction of each patch's pixels covered by the object: ``(n, H, W) -> (n, N)``."""
    return patchify(masks[:, None].float(), patch_size).mean(-1)  # (n, N)


# ---------------------------------------------------------------- models
class TinyViT(nn.Module):
    """A small vision transformer: patches -> linear embedding + 2-D sinusoidal positions,
    a CLS token, pre-LN encoder layers, and a linear classifier on the CLS output.

    Args:
        image_size: ``S`` (square images).
        patch_size: ``p``; must divide ``S``.
        channels: input channels ``C``.
        num_classes: classes.
        d_model, num_heads, num_layers: width, heads and depth.
        d_ff: FFN width (``2 * d_model`` by default).
        positions: ``"sinusoidal2d"`` (fixed, :func:`sinusoidal_encoding_2d`) or ``"none"``.
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 8,
        channels: int = 1,
        num_classes: int = 4,
        d_model: int = 32,
        num_heads: int = 2,
        num_layers: int = 2,
        d_ff: int | None = None,
        dropout: float = 0.0,
        positions: str = "sinusoidal2d",
    ):
        super().__init__()
        if positions not in ("sinusoidal2d", "none"):
            raise ValueError(f"positions must be 'sinusoidal2d' or 'none', got {positions!r}")
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        self.grid = image_size // patch_size
        self.num_patches = num_patches(image_size, patch_size)
        self.embed = nn.Linear(channels * patch_size * patch_size, d_model)  # one patch -> one token
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)  # the learned "summary" token
        pe = sinusoidal_encoding_2d(self.grid, self.grid, d_model)  # (N, d)
        self.register_buffer("pos", pe if positions == "sinusoidal2d" else torch.zeros_like(pe), persistent=False)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff or 2 * d_model, dropout, norm_first=True, activation="gelu")
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, images: Tensor, need_weights: bool = False):
        """``images (B, C, S, S) -> logits (B, num_classes)`` [, weights: a list of
        ``(B, H, 1+N, 1+N)`` per layer, token 0 being CLS]."""
        x = self.embed(patchify(images, self.patch_size)) + self.pos  # (B, N, d)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, d)
        weights = []
        for layer in self.layers:
            x, w = layer(x, need_weights=True)  # (B, 1+N, d), (B, H, 1+N, 1+N)
            weights.append(w)
        logits = self.head(self.norm(x[:, 0]))  # (B, num_classes): read the CLS token
        return (logits, weights) if need_weights else logits


class TinyCNN(nn.Module):
    """A small convolutional baseline: two 3x3 conv + ReLU + 2x2 max-pool stages, global
    average pooling and a linear classifier. Locality and translation equivariance are
    built in: the strong inductive bias the transformer lacks."""

    def __init__(self, channels: int = 1, num_classes: int = 4, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, C, S, S) -> (B, num_classes)``."""
        return self.head(self.features(images).mean(dim=(2, 3)))  # (B, 2w, S/4, S/4) -> (B, 2w) -> (B, K)


def cls_attention(weights: list[Tensor], layer: int = -1) -> Tensor:
    """How much the CLS token attends to each patch in one layer, averaged over heads.

    Args:
        weights: per-layer ``(B, H, 1+N, 1+N)`` from ``TinyViT(..., need_weights=True)``.
        layer: which layer.

    Returns:
        ``(B, N)``: row 0 (CLS as the query), columns 1.. (the patches). It sums to
        1 minus what CLS gives to itself.
    """
    return weights[layer][:, :, 0, 1:].mean(1)  # (B, H, N) -> (B, N)


def attention_rollout(weights: list[Tensor]) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): multiply the head-averaged weights of
    every layer, each mixed half-and-half with the identity for the residual path.

    Returns:
        ``(B, 1+N, 1+N)``; row 0, columns 1.. is how much each patch flowed into CLS.
    """
    rollout = None
    for w in weights:
        a = w.mean(1)  # (B, T, T)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)  # the residual stream
        rollout = a if rollout is None else a @ rollout  # (B, T, T)
    return rollout


# ---------------------------------------------------------------- training
def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    weight_decay: float = 0.01,
):
    """Train with AdamW (warmup then cosine decay, gradient clipping at 1) on random
    mini-batches of ``(images, labels)``; returns the :class:`~minitransformer.train.History`."""
    from ..train import fit, warmup_cosine_scheduler

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = warmup_cosine_scheduler(opt, warmup=max(1, steps // 10), total=steps)
    n = images.shape[0]

    def loss_fn(step: int) -> Tensor:
        idx = torch.randint(n, (min(batch_size, n),), generator=g)  # (b,)
        return F.cross_entropy(model(images[idx]), labels[idx])

    return fit(model, loss_fn, opt, steps, scheduler=sched, clip_norm=1.0, progress=False, log_every=10)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> dict:
    """Mean cross-entropy and accuracy on ``(images, labels)`` (eval mode)."""
    model.eval()
    losses, correct = [], 0
    for i in range(0, images.shape[0], batch_size):
        out = model(images[i : i + batch_size])
        out = out[0] if isinstance(out, tuple) else out  # (b, K)
        losses.append(F.cross_entropy(out, labels[i : i + batch_size], reduction="sum"))
        correct += (out.argmax(-1) == labels[i : i + batch_size]).sum().item()
    n = images.shape[0]
    return {"loss": torch.stack(losses).sum().item() / n, "accuracy": correct / n}


def image_picker_chart(
    images: Tensor,
    attention: Tensor,
    on_object: Tensor,
    labels: Tensor,
    logits: Tensor,
    index: int = 0,
    preview: int = 16,
    size: int = 200,
):
    """Test images one at a time, chosen with a slider: the image, the prediction and the
    CLS token's attention over the patch grid (a ``*`` on the patches touching the shape).

    Args:
        images: ``(N, 1, H, W)`` the images offered (every one gets a slider position).
        attention: ``(N, P)`` the CLS token's weights on the ``P`` patches (a square grid).
        on_object: ``(N, P)`` bool, the patches that contain part of the shape.
        labels: ``(N,)`` true classes (indices into :data:`SHAPE_CLASSES`).
        logits: ``(N, len(SHAPE_CLASSES))`` the model's outputs.
        index: the image shown first.
        preview: the image is shown average-pooled to ``preview x preview`` pixels.
        size: the width and height of each panel in pixels.

    Returns:
        an ``alt`` horizontally concatenated chart with one bound parameter, ``image``.
    """
    import altair as alt
    import pandas as pd

    from . import viz

    N, _, H, W = images.shape
    P = attention.shape[1]
    g = int(round(P**0.5))
    if g * g != P or on_object.shape != attention.shape or len(labels) != N or len(logits) != N:
        raise ValueError(
            f"need images (N, 1, H, W), attention and on_object (N, P) with P a square and N labels and logits; "
            f"got {tuple(images.shape)}, {tuple(attention.shape)}, {tuple(on_object.shape)}, "
            f"{len(labels)} labels, {len(logits)} logits"
        )
    if H % preview or W % preview:
        raise ValueError(f"preview {preview} must divide the image size {H}x{W}")
    param = viz.slider("image", 0, N - 1, 1, value=index, label="image")
    small = images[:, 0].reshape(N, preview, H // preview, preview, W // preview).mean((2, 4))  # (N, p, p)
    small = small.clamp(-0.3, 1.3)
    probs = torch.softmax(logits.double(), -1)  # (N, classes)
    pixels, cells, titles = [], [], []
    for n in range(N):
        pixels.append({"image": n, "v": [round(x, 2) for x in small[n].flatten().tolist()]})
        for p in range(P):
            mark = "*" if on_object[n, p] else ""
            w = round(float(attention[n, p]), 2)
            cells.append({"image": n, "row": p // g, "col": p % g, "weight": w, "label": f"{w:.2f}{mark}"})
        pred = int(probs[n].argmax())
        titles.append(
            {
                "image": n,
                "text": f"image {n}: true {SHAPE_CLASSES[int(labels[n])]}, predicted {SHAPE_CLASSES[pred]}"
                f" (p = {probs[n, pred].item():.2f})",
            }
        )
    at = viz.at_control(param)
    picture = (
        alt.Chart(pd.DataFrame(pixels), title="the image")
        .transform_filter(at)
        .transform_flatten(["v"])
        .transform_window(k="row_number()")
        .transform_calculate(row=f"floor((datum.k - 1) / {preview})", col=f"(datum.k - 1) % {preview}")
        .mark_rect()
        .encode(
            x=alt.X("col:O", axis=None),
            y=alt.Y("row:O", axis=None),
            color=alt.Color("v:Q", scale=alt.Scale(scheme="greys", reverse=True, domain=[-0.3, 1.3]), legend=None),
        )
        .properties(width=size, height=size)
    )
    grid = alt.Chart(pd.DataFrame(cells), title="CLS attention per patch (* = touches the shape)").transform_filter(at)
    enc = {"x": alt.X("col:O", axis=None), "y": alt.Y("row:O", axis=None)}
    heat = grid.mark_rect(stroke="white").encode(
        **enc, color=alt.Color("weight:Q", scale=alt.Scale(scheme="oranges", domain=[0, 0.5]), legend=None)
    )
    text = grid.mark_text(fontSize=13).encode(**enc, text="label:N")
    caption = viz.text_panel(pd.DataFrame(titles), "text", width=2 * size + 20, height=18, monospace=False)
    return alt.vconcat(
        caption.transform_filter(at),
        alt.hconcat(picture, (heat + text).properties(width=size, height=size)).resolve_scale(color="independent"),
    ).add_params(param)
