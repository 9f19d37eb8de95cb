"""Graphs as token sets: attention restricted by an adjacency mask is message passing.

A graph's nodes are the tokens. Full self-attention lets every node read every
other node, which ignores the graph. Masking the scores with the adjacency
matrix (plus self-loops), ``True`` = may attend as everywhere in the package,
lets a node read only its neighbours: one layer is one round of message passing
(as in graph attention networks, Veličković et al., 2018), and ``L`` layers
reach exactly the nodes at most ``L`` hops away.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from torch import Tensor

from ..layers import EncoderLayer

__all__ = [
    "adjacency_mask",
    "path_graph",
    "hop_distances",
    "receptive_field",
    "dependency_matrix",
    "GraphTransformer",
    "laplacian_positional_encoding",
]


def adjacency_mask(edges, num_nodes: int, self_loops: bool = True, directed: bool = False) -> Tensor:
    """A boolean attention mask from an edge list.

    Args:
        edges: ``(E, 2)`` integer tensor or sequence of ``(i, j)`` pairs.
        num_nodes: ``N``.
        self_loops: let every node attend to itself (keeps its own state in the mix).
        directed: if True an edge ``(i, j)`` lets ``j`` read ``i`` only (messages flow
            along the edge); if False both ways.

    Returns:
        ``(N, N)`` bool, entry ``[q, k]`` True when node ``q`` may attend to node ``k``.
    """
    e = torch.as_tensor(edges, dtype=torch.long).reshape(-1, 2)  # (E, 2)
    if e.numel() and (e.min() < 0 or e.max() >= num_nodes):
        raise ValueError(
            f"adjacency_mask: edge endpoints must be in [0, {num_nodes}), "
            f"got min {e.min().item()} and max {e.max().item()}"
        )
    mask = torch.zeros(num_nodes, num_nodes, dtype=torch.bool)
    mask[e[:, 1], e[:, 0]] = True  # the edge i -> j: query j may read key i
    if not directed:
        mask[e[:, 0], e[:, 1]] = True
    if self_loops:
        mask |= torch.eye(num_nodes, dtype=torch.bool)
    return mask


def path_graph(n: int) -> Tensor:
    """The edges ``(0, 1), (1, 2), ..., (n-2, n-1)`` of a path: ``(n-1, 2)``."""
    i = torch.arange(n - 1)
    return torch.stack([i, i + 1], dim=1)


def hop_distances(mask: Tensor) -> Tensor:
    """Shortest-path lengths (in hops along the mask's edges) from every query node:
    ``(N, N)`` int64, ``-1`` where unreachable. ``dist[q, k]`` counts the steps a
    message needs from ``k`` to ``q``."""
    N = mask.shape[0]
    adj = mask.clone() | torch.eye(N, dtype=torch.bool)
    dist = torch.full((N, N), -1, dtype=torch.long)
    dist[torch.eye(N, dtype=torch.bool)] = 0
    reach = torch.eye(N, dtype=torch.bool)
    for hop in range(1, N):
        new = (adj.float() @ reach.float()) > 0  # [q, k]: some neighbour m of q was reached from k
        newly = new & ~reach
        if not newly.any():
            break
        dist[newly] = hop
        reach = new
    return dist


def receptive_field(mask: Tensor, num_layers: int) -> Tensor:
    """Which nodes can influence which after ``num_layers`` masked attention layers with
    residual connections: ``(N, N)`` bool, ``[q, k]`` True when ``k`` is at most
    ``num_layers`` hops from ``q`` (the nonzero pattern of ``(A + I)^L``)."""
    N = mask.shape[0]
    step = (mask | torch.eye(N, dtype=torch.bool, device=mask.device)).float()  # (N, N): A + I
    reach = torch.eye(N, device=mask.device)
    for _ in range(num_layers):
        reach = ((step @ reach) > 0).float()  # one more hop
    return reach.bool()


def dependency_matrix(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """How strongly each output row depends on each input row: ``D[i, j] = ||d out_i / d x_j||``.

    Args:
        fn: maps ``(N, d)`` node features to ``(N, d_out)``.
        x: ``(N, d)``.

    Returns:
        ``(N, N)`` Frobenius norms of the Jacobian blocks (exactly 0 where no path exists).
    """
    jac = torch.autograd.functional.jacobian(fn, x)  # (N, d_out, N, d)
    return jac.pow(2).sum(dim=(1, 3)).sqrt()  # (N, N)


class GraphTransformer(nn.Module):
    """A stack of pre-LN encoder layers over node features, every layer using the same
    attention mask (an adjacency mask: message passing; ``None``: full attention).

    ``forward(x (B, N, d) or (N, d), mask (N, N) or None) -> same shape``.
    """

    def __init__(self, d_model: int = 16, num_heads: int = 2, num_layers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, 2 * d_model, norm_first=True) for _ in range(num_layers)
        )

    def forward(self, x: Tensor, mask: Tensor | None = None, num_layers: int | None = None) -> Tensor:
        squeeze = x.dim() == 2
        h = x[None] if squeeze else x  # (B, N, d)
        for layer in self.layers[:num_layers]:
            h = layer(h, mask=mask)  # (B, N, d)
        return h[0] if squeeze else h


def laplacian_positional_encoding(mask: Tensor, k: int) -> Tensor:
    """Node positions from the graph itself (Dwivedi & Bresson, 2020): the ``k`` eigenvectors
    of the normalised Laplacian ``I - D^-1/2 A D^-1/2`` with the smallest nonzero eigenvalues.

    The sign of each eigenvector is arbitrary (papers flip it at random during
    training). Returns ``(N, k)``.
    """
    N = mask.shape[0]
    adj = (mask | mask.T).double()
    adj.fill_diagonal_(0.0)
    deg = adj.sum(1).clamp_min(1.0)
    d_inv_sqrt = deg.rsqrt()
    lap = torch.eye(N, dtype=torch.float64) - d_inv_sqrt[:, None] * adj * d_inv_sqrt[None, :]
    _, vecs = torch.linalg.eigh(lap)  # ascending eigenvalues
    return vecs[:, 1 : k + 1].float()  # (N, k): skip the constant-like first one
