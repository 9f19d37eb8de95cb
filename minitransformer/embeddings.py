"""The input embedding of an encoder: tokens, positions, segments, then (optionally) a LayerNorm.

BERT-style encoders turn token ids into vectors with three tables added together
and normalised::

    x = LayerNorm(E_token[tokens] + E_position[0 .. S-1] + E_type[token_types])

* ``E_position`` are learned absolute positions
  (:class:`~minitransformer.positional.LearnedPositionalEmbedding`): BERT cannot read
  past its ``max_positions`` (512).
* ``E_type`` marks the segment of each token (sentence A = 0, sentence B = 1 in
  BERT's sentence-pair inputs); omitted when ``type_vocab_size=0``.
* the LayerNorm (``norm_eps`` not None) normalises the sum before the first layer;
  a Post-LN stack needs it, since its residual stream is normalised only AFTER each
  sub-layer.

:class:`TokenEmbedding` is what :class:`~minitransformer.transformer.Encoder` runs
first when it is built with ``embedding=TokenEmbedding(...)``: the encoder then
reads token ids ``(B, S)`` instead of vectors.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from .positional import LearnedPositionalEmbedding
from .validation import check_positive_int, check_probability, describe

__all__ = ["TokenEmbedding"]


class TokenEmbedding(nn.Module):
    """Token ids -> vectors: token table, learned positions, token types, LayerNorm, dropout.

    Args:
        vocab_size: rows of the token table.
        d_model: embedding width.
        max_positions: learned absolute positions (``None``: no position table, e.g. for RoPE models).
        type_vocab_size: rows of the token-type (segment) table; 0 for none.
        norm_eps: epsilon of a LayerNorm applied to the sum (``None``: no LayerNorm). BERT: ``1e-12``.
        dropout: dropout on the result while training.
        padding_idx: the token table's padding row (its gradient is zero), as ``nn.Embedding``.

    Modules: ``tokens`` (``nn.Embedding``), ``positions``
    (:class:`~minitransformer.positional.LearnedPositionalEmbedding`) or None,
    ``token_types`` (``nn.Embedding``) or None, ``norm`` (``nn.LayerNorm``) or None.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        *,
        max_positions: int | None = None,
        type_vocab_size: int = 0,
        norm_eps: float | None = None,
        dropout: float = 0.0,
        padding_idx: int | None = None,
    ):
        super().__init__()
        check_positive_int("vocab_size", vocab_size, where="TokenEmbedding")
        check_positive_int("d_model", d_model, where="TokenEmbedding")
        check_probability("dropout", dropout, where="TokenEmbedding")
        if isinstance(type_vocab_size, bool) or not isinstance(type_vocab_size, int) or type_vocab_size < 0:
            raise ValueError(f"TokenEmbedding: type_vocab_size must be an int >= 0, got {type_vocab_size!r}")
        if norm_eps is not None and not (isinstance(norm_eps, (int, float)) and norm_eps > 0):
            raise ValueError(f"TokenEmbedding: norm_eps must be a positive number or None, got {norm_eps!r}")
        self.vocab_size, self.d_model = vocab_size, d_model
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)  # (V, d)
        self.positions = None if max_positions is None else LearnedPositionalEmbedding(max_positions, d_model)
        self.token_types = nn.Embedding(type_vocab_size, d_model) if type_vocab_size else None  # (types, d)
        self.norm = None if norm_eps is None else nn.LayerNorm(d_model, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, token_types: Tensor | None = None) -> Tensor:
        """Args:
            tokens: token ids ``(B, S)`` (integer).
            token_types: segment ids ``(B, S)``; all 0 when None (needs ``type_vocab_size > 0`` if given).

        Returns:
            ``(B, S, d_model)``.
        """
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
            raise ValueError(f"TokenEmbedding: tokens must be an integer tensor (B, S), got {describe(tokens)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(
                f"TokenEmbedding: token ids must lie in 0..{self.vocab_size - 1}, "
                f"got {int(tokens.min())}..{int(tokens.max())}"
            )
        x = self.tokens(tokens)  # (B, S, d)
        if self.positions is not None:
            x = self.positions(x)  # (B, S, d) + (S, d)
        if token_types is not None:
            if self.token_types is None:
                raise ValueError("TokenEmbedding: token_types given but the embedding has type_vocab_size=0")
            if not isinstance(token_types, Tensor) or token_types.shape != tokens.shape:
                raise ValueError(
                    f"TokenEmbedding: token_types must have the shape of tokens {tuple(tokens.shape)}, "
                    f"got {describe(token_types)}"
                )
            x = x + self.token_types(token_types)  # (B, S, d)
        elif self.token_types is not None:
            x = x + self.token_types.weight[0]  # every token in segment 0, (B, S, d)
        if self.norm is not None:
            x = self.norm(x)  # (B, S, d)
        return self.dropout(x)

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, d_model={self.d_model}"
