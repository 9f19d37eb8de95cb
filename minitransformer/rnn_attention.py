"""Attention for RNN encoder-decoders: Bahdanau (additive) and Luong
(multiplicative) scores.

At each decoder step one query vector (a decoder state) looks at all the
encoder states ``h_j`` (the keys, and by default also the values):

* Bahdanau et al. (2015), additive: ``e_j = v_a^T tanh(W_a s + U_a h_j)``.
* Luong et al. (2015): ``dot`` ``e_j = s^T h_j``; ``general``
  ``e_j = s^T W_a h_j``; ``concat`` ``e_j = v_a^T tanh(W_a [s; h_j])``.

Then ``alpha = softmax(e)`` over the real (unmasked) positions and the context
is ``c = sum_j alpha_j v_j``.

The keys are the same at every decoder step, so their projection (``U_a h_j``
for Bahdanau, ``W_a h_j`` for Luong's general) can be computed ONCE per
sequence with :meth:`precompute_keys` and passed back as ``projected_keys=``
at every step; this turns an ``O(T * S * d * d_hidden)`` cost into
``O(S * d * d_hidden)`` plus a cheap ``O(T * S * d_hidden)`` per-step part.

Masks are bool ``(B, S)`` with True = a real position (may be attended).
A fully masked row gives zero weights and a zero context, never NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import masked_softmax  # one copy, also exported from here (chapter 2 imports it)
from .validation import check_positive_int, describe

__all__ = ["AdditiveAttention", "LuongAttention", "masked_softmax"]

LUONG_SCORES = ("dot", "general", "concat")


def _check(
    module: nn.Module,
    query: Tensor,
    keys: Tensor,
    values: Tensor | None,
    mask: Tensor | None,
    projected_keys: Tensor | None,
    proj_dim: int | None,
) -> None:
    name = type(module).__name__
    for arg, t, dims in (("query", query, 2), ("keys", keys, 3), ("values", values, 3)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {describe(t)}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: {arg} must be a floating tensor, got {t.dtype}")
        if arg != "values" and t.dim() != dims:
            raise ValueError(f"{name}: {arg} must have {dims} dims, got shape {tuple(t.shape)}")
    B, S = keys.shape[:2]
    if query.shape != (B, module.query_dim) or keys.shape[2] != module.key_dim:
        raise ValueError(
            f"{name}: expected query (B, {module.query_dim}) and keys (B, S, {module.key_dim}), "
            f"got query {tuple(query.shape)} and keys {tuple(keys.shape)}"
        )
    if values is not None and (values.dim() != 3 or values.shape[:2] != (B, S)):
        raise ValueError(f"{name}: values must be (B, S, dv) = ({B}, {S}, dv), got {tuple(values.shape)}")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(
                f"{name}: mask must be a bool tensor (True = real position), got "
                f"{getattr(mask, 'dtype', type(mask).__name__)}"
            )
        if mask.shape != (B, S):
            raise ValueError(f"{name}: mask must have shape (B, S) = ({B}, {S}), got {tuple(mask.shape)}")
    if projected_keys is not None and projected_keys.shape != (B, S, proj_dim):
        raise ValueError(
            f"{name}: projected_keys must be precompute_keys(keys) of shape "
            f"({B}, {S}, {proj_dim}), got {tuple(projected_keys.shape)}"
        )


class AdditiveAttention(nn.Module):
    """Bahdanau (additive) attention: ``e_j = v_a^T tanh(W_a s + U_a h_j)``.

    Args:
        query_dim: size of the decoder state ``s`` (``dq``).
        key_dim: size of the encoder states ``h_j`` (``dk``).
        hidden_dim: size of the tanh layer (``d_a``).
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int):
        super().__init__()
        for arg, value in (("query_dim", query_dim), ("key_dim", key_dim), ("hidden_dim", hidden_dim)):
            check_positive_int(arg, value, where="AdditiveAttention")
        self.query_dim, self.key_dim, self.hidden_dim = query_dim, key_dim, hidden_dim
        self.W_a = nn.Linear(query_dim, hidden_dim, bias=False)
        self.U_a = nn.Linear(key_dim, hidden_dim, bias=False)
        self.v_a = nn.Linear(hidden_dim, 1, bias=False)

    def precompute_keys(self, keys: Tensor) -> Tensor:
        """``U_a h_j`` for all positions: ``(B, S, dk) -> (B, S, d_a)``.
        Compute once per source sequence and pass as ``projected_keys``."""
        return self.U_a(keys)  # (B, S, d_a)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        mask: Tensor | None = None,
        projected_keys: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attend from one decoder state to all encoder states.

        Args:
            query: ``s`` of shape ``(B, dq)``.
            keys: ``h`` of shape ``(B, S, dk)``.
            values: ``(B, S, dv)``; defaults to ``keys``.
            mask: bool ``(B, S)``, True = real position.
            projected_keys: ``precompute_keys(keys)`` ``(B, S, d_a)``, if already computed.

        Returns:
            context ``(B, dv)`` and weights ``(B, S)``.
        """
        _check(self, query, keys, values, mask, projected_keys, self.hidden_dim)
        values = keys if values is None else values
        # (B, S, d_a)
        uh = self.precompute_keys(keys) if projected_keys is None else projected_keys
        ws = self.W_a(query).unsqueeze(1)  # (B, 1, d_a)
        scores = self.v_a(torch.tanh(ws + uh)).squeeze(-1)  # (B, S)
        weights = masked_softmax(scores, mask)  # (B, S)
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)  # (B, dv)
        return context, weights


class LuongAttention(nn.Module):
    """Luong (multiplicative) attention with the ``dot``, ``general`` or
    ``concat`` score.

    Args:
        query_dim: size of the decoder state ``s`` (``dq``).
        key_dim: size of the encoder states ``h_j`` (``dk``); must equal
            ``query_dim`` for ``dot``.
        score: ``"dot"`` (``s^T h_j``), ``"general"`` (``s^T W_a h_j``) or
            ``"concat"`` (``v_a^T tanh(W_a [s; h_j])``).
        hidden_dim: size of the tanh layer of ``concat`` (default ``query_dim``).
    """

    def __init__(self, query_dim: int, key_dim: int, score: str = "dot", hidden_dim: int | None = None):
        super().__init__()
        if score not in LUONG_SCORES:
            raise ValueError(f"LuongAttention: score must be one of {LUONG_SCORES}, got {score!r}")
        hidden_dim = query_dim if hidden_dim is None else hidden_dim
        for arg, value in (("query_dim", query_dim), ("key_dim", key_dim), ("hidden_dim", hidden_dim)):
            check_positive_int(arg, value, where="LuongAttention")
        if score == "dot" and query_dim != key_dim:
            raise ValueError(
                f"LuongAttention: score='dot' needs query_dim == key_dim, got "
                f"query_dim={query_dim} and key_dim={key_dim}; use score='general'"
            )
        self.query_dim, self.key_dim, self.score, self.hidden_dim = query_dim, key_dim, score, hidden_dim
        if score == "general":
            self.W_a = nn.Linear(key_dim, query_dim, bias=False)
        elif score == "concat":
            # W_a [s; h_j] = W_q s + W_k h_j: split so the key half is precomputable.
            self.W_q = nn.Linear(query_dim, hidden_dim, bias=False)
            self.W_k = nn.Linear(key_dim, hidden_dim, bias=False)
            self.v_a = nn.Linear(hidden_dim, 1, bias=False)

    @property
    def _proj_dim(self) -> int:
        return {"dot": self.key_dim, "general": self.query_dim, "concat": self.hidden_dim}[self.score]

    def precompute_keys(self, keys: Tensor) -> Tensor:
        """The query-independent part of the score, computed once per sequence:
        ``h`` itself for dot, ``W_a h`` for general, ``W_k h`` for concat."""
        if self.score == "general":
            return self.W_a(keys)  # (B, S, dq)
        if self.score == "concat":
            return self.W_k(keys)  # (B, S, d_a)
        return keys  # (B, S, dk)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        mask: Tensor | None = None,
        projected_keys: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Same contract as :meth:`AdditiveAttention.forward`:
        ``query (B, dq), keys (B, S, dk) -> context (B, dv), weights (B, S)``."""
        _check(self, query, keys, values, mask, projected_keys, self._proj_dim)
        values = keys if values is None else values
        # (B, S, ·)
        pk = self.precompute_keys(keys) if projected_keys is None else projected_keys
        if self.score == "concat":
            hidden = torch.tanh(self.W_q(query).unsqueeze(1) + pk)  # (B, S, d_a)
            scores = self.v_a(hidden).squeeze(-1)  # (B, S)
        else:
            scores = torch.bmm(pk, query.unsqueeze(-1)).squeeze(-1)  # (B, S)
        weights = masked_softmax(scores, mask)  # (B, S)
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)  # (B, dv)
        return context, weights
