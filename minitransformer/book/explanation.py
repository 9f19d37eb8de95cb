"""Attention is not explanation: different attention distributions with the same output.

An attention head's output for one query is ``o = alpha @ V`` with
``alpha`` a distribution over the ``n`` keys (``alpha >= 0``, ``sum(alpha) = 1``)
and ``V`` the ``(n, d_v)`` values. Any ``u`` with

    ``V^T u = 0``   (the output does not move)   and   ``1^T u = 0``   (the weights still sum to 1)

gives ``(alpha + t u) @ V = o`` for every ``t``; as long as ``alpha + t u >= 0`` it is
again a valid attention distribution. Those ``u`` form the null space of the
``(d_v + 1, n)`` matrix ``A = [V^T; 1^T]``, which has dimension at least
``n - d_v - 1``: whenever a head attends over more positions than its value
width plus one, infinitely many distributions give exactly its output
(Jain & Wallace, "Attention is not Explanation", 2019, built such alternatives
by search; here they are exact, by linear algebra).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "constraint_matrix",
    "null_space_projection",
    "null_space_basis",
    "same_output_weights",
    "move_weight_off",
    "gpt_head_values",
]


def constraint_matrix(V: Tensor) -> Tensor:
    """``A = [V^T; 1^T]``, shape ``(d_v + 1, n)``: ``A @ alpha`` is the output and the weights' sum."""
    if V.dim() != 2:
        raise ValueError(f"V must be (n, d_v), got shape {tuple(V.shape)}")
    return torch.cat([V.T, torch.ones(1, V.shape[0], dtype=V.dtype, device=V.device)], dim=0)  # (d_v + 1, n)


def null_space_projection(V: Tensor, r: Tensor) -> Tensor:
    """Project ``r`` (``(n,)``) onto ``{u : V^T u = 0 and sum(u) = 0}``.

    With ``A = [V^T; 1^T]`` the projection is ``r - A^T (A A^T)^+ A r``: remove the
    part of ``r`` in the row space of ``A``; what is left is orthogonal to every row of
    ``A``.
    (The pseudo-inverse handles values whose columns are linearly dependent.)

    Args:
        V: values ``(n, d_v)``.
        r: any direction ``(n,)``.

    Returns:
        ``u`` ``(n,)`` with ``V^T u = 0`` and ``sum(u) = 0`` (to rounding).
    """
    A = constraint_matrix(V)  # (d_v + 1, n)
    if r.shape != (V.shape[0],):
        n, shape, got = V.shape[0], tuple(V.shape), tuple(r.shape)
        raise ValueError(f"r must have shape ({n},) to match V {shape}, got {got}")
    return r - A.T @ (torch.linalg.pinv(A @ A.T) @ (A @ r))  # (n,)


def null_space_basis(V: Tensor, rtol: float = 1e-10) -> Tensor:
    """An orthonormal basis ``(n, k)`` of ``{u : V^T u = 0, sum(u) = 0}`` (from the SVD of ``A``)."""
    A = constraint_matrix(V)  # (d_v + 1, n)
    _, S, Vh = torch.linalg.svd(A, full_matrices=True)  # Vh (n, n)
    rank = int((S > rtol * S.max()).sum())
    return Vh[rank:].T  # (n, n - rank)


def same_output_weights(alpha: Tensor, V: Tensor, r: Tensor, fraction: float = 1.0) -> Tensor:
    """Move ``alpha`` as far as possible along the null-space projection of ``r``.

    The step ``t`` is the largest that keeps every weight ``>= 0`` (times ``fraction``),
    so at ``fraction = 1`` at least one weight becomes exactly 0.

    Args:
        alpha: a distribution ``(n,)`` over the keys.
        V: values ``(n, d_v)``.
        r: the direction to move in (projected first).
        fraction: how far to go, in ``(0, 1]``.

    Returns:
        ``alpha'`` ``(n,)``: ``alpha' >= 0``, ``sum(alpha') = 1``, ``alpha' @ V = alpha @ V``.
    """
    if alpha.shape != (V.shape[0],):
        raise ValueError(f"alpha must have shape ({V.shape[0]},), got {tuple(alpha.shape)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    u = null_space_projection(V, r)  # (n,)
    if u.abs().max() < 1e-12:
        raise ValueError("the direction has no component in the null space: nothing to move along")
    down = u < 0
    t = (alpha[down] / -u[down]).min() if down.any() else torch.tensor(1.0, dtype=alpha.dtype)
    return (alpha + fraction * t * u).clamp_min(0.0)  # (n,); clamp only removes rounding below 0


@torch.no_grad()
def gpt_head_values(model, idx: Tensor, layer: int, head: int) -> tuple[Tensor, Tensor]:
    """One head of a :class:`~minitransformer.GPT`: its attention weights and its value vectors.

    Args:
        model: a GPT (its blocks' ``self_attn`` are :class:`~minitransformer.MultiHeadAttention`).
        idx: one sequence of token ids ``(1, T)``.
        layer, head: which head.

    Returns:
        ``(weights (T, T), values (T, d_head))``: row ``t`` of ``weights @ values`` is what the
        head hands to its output projection at position ``t``.
    """
    if idx.dim() != 2 or idx.shape[0] != 1:
        raise ValueError(f"idx must be one sequence (1, T), got {tuple(idx.shape)}")
    attn = model.blocks[layer].self_attn
    if not 0 <= head < attn.num_heads:
        raise ValueError(f"head must be in [0, {attn.num_heads}), got {head}")
    captured = {}
    hook = attn.register_forward_pre_hook(lambda module, args: captured.setdefault("x", args[0]))
    try:
        weights = model.attention_maps(idx)[layer, 0, head]  # (T, T)
    finally:
        hook.remove()
    d, kv = attn.d_model, attn.kv_dim
    v = attn.qkv(captured["x"])[..., d + kv :]  # (1, T, kv)
    kv_head = head // (attn.num_heads // attn.num_kv_heads)
    values = v[0].view(v.shape[1], attn.num_kv_heads, attn.head_dim)[:, kv_head]  # (T, d_head)
    return weights, values


def move_weight_off(alpha: Tensor, V: Tensor, key: int) -> Tensor:
    """An attention distribution with the same output as ``alpha``, less weight on ``key``, and few nonzero weights.

    Carathéodory's construction inside ``{alpha' >= 0, sum = 1, alpha' @ V = alpha @ V}``:
    each round takes a direction ``u`` in the null space of the constraints restricted to the
    keys that still have weight (the projection of ``-e_key`` when it lowers ``key``'s weight,
    else any null-space direction), and moves along it until a weight reaches 0. Every round
    switches off at least one key, so at the end at most ``rank([V^T; 1^T]) <= d_v + 1`` keys
    carry weight, and the output is unchanged throughout.

    Args:
        alpha: a distribution ``(n,)`` (float64 recommended).
        V: values ``(n, d_v)``.
        key: the key whose weight to push down first.

    Returns:
        ``alpha'`` ``(n,)`` with ``alpha' @ V == alpha @ V`` (to rounding).
    """
    if alpha.shape != (V.shape[0],):
        raise ValueError(f"alpha must have shape ({V.shape[0]},), got {tuple(alpha.shape)}")
    if not 0 <= key < V.shape[0]:
        raise ValueError(f"key must be in [0, {V.shape[0]}), got {key}")
    out = alpha.clone()
    for _ in range(V.shape[0]):
        support = out > 1e-12  # keys at 0 stay at 0
        basis = null_space_basis(V[support])  # (|support|, k)
        if basis.shape[1] == 0:
            break  # a corner: no direction keeps the output
        r = torch.zeros(int(support.sum()), dtype=alpha.dtype)
        if support[key]:
            r[int(support[:key].sum())] = -1.0  # -e_key among the supported keys
        u_s = basis @ (basis.T @ r)
        if not support[key] or u_s.abs().max() < 1e-12 or u_s[int(support[:key].sum())] > -1e-12:
            u_s = basis[:, 0]  # key cannot go lower: just switch another key off
        u = torch.zeros_like(out)
        u[support] = u_s
        down = u < -1e-15
        out = (out + (out[down] / -u[down]).min() * u).clamp_min(0.0)
        out[out < 1e-12] = 0.0
    return out
