"""Patches, the generated shapes, the tiny ViT and its attention read-outs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minitransformer.book.vision import (
    SHAPE_CLASSES,
    TinyCNN,
    TinyViT,
    attention_rollout,
    cls_attention,
    make_shapes,
    num_patches,
    patch_coverage,
    patchify,
    unpatchify,
)
from minitransformer.exercises.ch09 import patchify_solution


def test_patch_count_formula():
    assert num_patches(224, 16) == 196
    assert num_patches(384, 16) == 576
    assert num_patches((32, 48), 8) == 24
    assert num_patches((32, 48), (8, 16)) == 12
    with pytest.raises(ValueError, match="does not divide"):
        num_patches(224, 15)


def test_patchify_ordering_on_a_numbered_image():
    img = torch.arange(16.0).reshape(1, 1, 4, 4)
    p = patchify(img, 2)  # (1, 4, 4)
    assert p.shape == (1, 4, 4)
    assert p[0, 0].tolist() == [0, 1, 4, 5]  # top-left patch, row-major pixels
    assert p[0, 1].tolist() == [2, 3, 6, 7]  # then the patch to its right
    assert p[0, 2].tolist() == [8, 9, 12, 13]  # then the next row of patches


@pytest.mark.parametrize("shape,p", [((2, 3, 8, 12), 4), ((1, 1, 6, 6), 3), ((3, 2, 4, 4), 1), ((1, 3, 5, 5), 5)])
def test_patchify_matches_unfold_and_conv_and_round_trips(shape, p):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    patches = patchify(x, p)
    B, C, H, W = shape
    assert patches.shape == (B, (H // p) * (W // p), C * p * p)
    assert torch.equal(patches, F.unfold(x, p, stride=p).transpose(1, 2))
    assert torch.equal(patches, patchify_solution(x, p))
    conv = torch.nn.Conv2d(C, 5, p, stride=p, bias=False).double()
    via_conv = conv(x).flatten(2).transpose(1, 2)  # (B, N, 5)
    via_linear = patches @ conv.weight.reshape(5, -1).T  # the same linear map on flattened patches
    assert torch.allclose(via_conv, via_linear)
    assert torch.equal(unpatchify(patches, (H, W), p, C), x)


def test_patchify_rejects_bad_input():
    with pytest.raises(ValueError, match="does not divide"):
        patchify(torch.zeros(1, 1, 10, 10), 3)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        patchify(torch.zeros(10, 10), 2)
    with pytest.raises(ValueError, match="unpatchify"):
        unpatchify(torch.zeros(1, 5, 4), 4, 2, 1)


def test_shapes_are_reproducible_and_inside_the_image():
    a = make_shapes(20, 32, seed=3)
    b = make_shapes(20, 32, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    images, labels, masks = a
    assert images.shape == (20, 1, 32, 32) and labels.shape == (20,) and masks.shape == (20, 32, 32)
    assert set(labels.tolist()) <= set(range(len(SHAPE_CLASSES)))
    assert (masks.flatten(1).sum(1) > 20).all()  # every image has a visible shape
    assert not masks[:, 0].any() and not masks[:, :, 0].any()  # never touching the border
    cov = patch_coverage(masks, 8)  # (20, 16)
    assert cov.shape == (20, 16) and ((cov >= 0) & (cov <= 1)).all()
    assert torch.allclose(cov.sum(1) * 64, masks.flatten(1).sum(1).float())


def test_vit_shapes_weights_and_positions():
    torch.manual_seed(0)
    vit = TinyViT(32, 8, 1, 4, d_model=16, num_heads=2, num_layers=2)
    x = torch.randn(3, 1, 32, 32)
    logits, weights = vit(x, need_weights=True)
    assert logits.shape == (3, 4) and len(weights) == 2 and weights[0].shape == (3, 2, 17, 17)
    assert torch.allclose(weights[0].sum(-1), torch.ones(3, 2, 17))
    c = cls_attention(weights)
    assert c.shape == (3, 16) and (c.sum(-1) <= 1 + 1e-6).all()
    roll = attention_rollout(weights)
    assert roll.shape == (3, 17, 17) and torch.allclose(roll.sum(-1), torch.ones(3, 17), atol=1e-5)
    assert torch.allclose(vit(x), logits)
    # without positions, shuffling the patches (consistently) cannot change the CLS output
    nopos = TinyViT(32, 8, 1, 4, d_model=16, num_heads=2, num_layers=1, positions="none")
    perm = torch.randperm(16)
    shuffled = unpatchify(patchify(x, 8)[:, perm], 32, 8, 1)
    assert torch.allclose(nopos(shuffled), nopos(x), atol=1e-5)
    assert not torch.allclose(vit(shuffled), vit(x), atol=1e-4)


def test_cnn_shapes():
    assert TinyCNN(1, 4, 8)(torch.randn(2, 1, 32, 32)).shape == (2, 4)
