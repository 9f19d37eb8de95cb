"""Adjacency masks: message passing, and L layers reach exactly L hops."""

from __future__ import annotations

import pytest
import torch

from minitransformer.book.graphs import (
    GraphTransformer,
    adjacency_mask,
    dependency_matrix,
    hop_distances,
    laplacian_positional_encoding,
    path_graph,
    receptive_field,
)


def test_adjacency_mask_conventions():
    m = adjacency_mask([(0, 1), (1, 2)], 4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert m[0, 1] and m[1, 0] and m[1, 2] and m[2, 1] and m.diagonal().all()
    assert not m[0, 2] and m[3].sum() == 1  # node 3 is isolated: only itself
    d = adjacency_mask([(0, 1)], 2, self_loops=False, directed=True)
    assert d.tolist() == [[False, False], [True, False]]  # edge 0 -> 1: node 1 may read node 0
    with pytest.raises(ValueError, match="edge endpoints"):
        adjacency_mask([(0, 5)], 3)


def test_hop_distances_and_receptive_field_on_a_path():
    m = adjacency_mask(path_graph(6), 6)
    dist = hop_distances(m)
    assert torch.equal(dist, (torch.arange(6)[:, None] - torch.arange(6)[None, :]).abs())
    for L in range(0, 7):
        assert torch.equal(receptive_field(m, L), dist <= L)
    two = adjacency_mask([(0, 1), (2, 3)], 4)
    assert hop_distances(two)[0, 3] == -1


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_masked_layers_propagate_exactly_L_hops(num_layers):
    torch.manual_seed(0)
    mask = adjacency_mask(path_graph(7), 7)
    model = GraphTransformer(d_model=8, num_heads=2, num_layers=3).double()
    x = torch.randn(7, 8, dtype=torch.float64)
    dep = dependency_matrix(lambda h: model(h, mask, num_layers=num_layers), x)  # (7, 7)
    reach = receptive_field(mask, num_layers)
    assert (dep[~reach] == 0).all()  # no path: exactly no influence
    assert (dep[reach] > 1e-8).all()  # a path: some influence
    full = dependency_matrix(lambda h: model(h, None, num_layers=1), x)
    assert (full > 1e-8).all()  # full attention: everyone after one layer


def test_laplacian_positions():
    mask = adjacency_mask(path_graph(5), 5)
    pe = laplacian_positional_encoding(mask, 2)
    assert pe.shape == (5, 2)
    assert torch.allclose(pe.norm(dim=0), torch.ones(2), atol=1e-5)
    # the first nontrivial eigenvector of a path runs monotonically from one end to the other
    diffs = pe[1:, 0] - pe[:-1, 0]
    assert ((diffs >= -1e-6).all() or (diffs <= 1e-6).all()) and diffs.abs().sum() > 0.5
    assert torch.allclose(pe[:, 0], -pe.flip(0)[:, 0], atol=1e-5)  # antisymmetric about the middle
