"""Absolute positional encodings: the sinusoidal table, learned embeddings, 2-D grids.

``PE[p, 2i] = sin(p / 10000^(2i/d))`` and ``PE[p, 2i+1] = cos(p / 10000^(2i/d))``
(sine and cosine interleaved, as in "Attention Is All You Need").

Each pair of columns ``(2i, 2i+1)`` is a point on the unit circle at angle
``p * w_i`` with ``w_i = 1 / 10000^(2i/d)``. Moving ``k`` positions on rotates
every pair by ``k * w_i``, whatever ``p`` is: ``PE[p + k] = T_k PE[p]`` with
:func:`transition_matrix` ``T_k`` (block-diagonal 2x2 rotations). That is why
a fixed linear map can attend "``k`` tokens back".
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .validation import FLOAT_DTYPES, MAX_TABLE_ENTRIES, check_positive_int, check_probability, check_real, describe

__all__ = [
    "sinusoidal_encoding",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "sinusoidal_encoding_2d",
    "transition_matrix",
]


def _check_table(where: str, entries: int, sizes: str, base: float, dtype) -> None:
    """A table of ``entries`` numbers is not absurdly large; ``base > 0``; ``dtype`` floating."""
    if entries > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"{where}: {sizes} would build a table of {entries:,} entries, more than the cap of "
            f"{MAX_TABLE_ENTRIES:,} (2 GiB of float64); ask for fewer positions"
        )
    check_real("base", base, low=0.0, low_open=True, where=where)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{where}: dtype must be a floating dtype {FLOAT_DTYPES}, got {dtype}")


def sinusoidal_encoding(
    num_positions: int,
    d_model: int,
    base: float = 10000.0,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The sinusoidal position table.

    Args:
        num_positions: how many positions (rows), ``>= 0``; the table may have at most
            :data:`~minitransformer.validation.MAX_TABLE_ENTRIES` (2**28) entries.
        d_model: encoding size; must be even.
        base: the wavelength base (10000 in the paper), a finite number > 0.
        device, dtype: of the result (a floating dtype).

    Returns:
        ``(num_positions, d_model)`` with sines in even columns, cosines in odd ones.

    Raises:
        ValueError: bad sizes, a table above the cap, a bad ``base``; TypeError: a
            non-floating dtype.
    """
    check_positive_int("d_model", d_model, multiple_of=2, where="sinusoidal_encoding")
    check_positive_int(
        "num_positions",
        num_positions,
        minimum=0,
        where="sinusoidal_encoding",
    )
    _check_table(
        "sinusoidal_encoding",
        num_positions * d_model,
        f"num_positions={num_positions}, d_model={d_model}",
        base,
        dtype,
    )
    pos = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)  # (P, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d/2,)
    angle = pos / base ** (two_i / d_model)  # (P, d/2)
    pe = torch.empty(num_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe.to(device=device, dtype=dtype)  # (P, d)


def transition_matrix(
    k: int,
    d_model: int,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The matrix ``T_k`` that moves every sinusoidal encoding ``k`` positions on.

    Column-vector convention: ``PE[p + k] = T_k @ PE[p]`` for every ``p``, where
    ``PE[p]`` is a row of :func:`sinusoidal_encoding` read as a column vector
    (for whole tables of row vectors: ``PE[p + k] = PE[p] @ T_k.T``).

    ``T_k`` is block-diagonal; block ``i`` acts on columns ``(2i, 2i+1)`` =
    ``(sin a, cos a)`` with ``a = p * w_i``, ``w_i = base^(-2i/d)``, ``b = k * w_i``::

        [ cos b   sin b ] [ sin a ]   [ sin a cos b + cos a sin b ]   [ sin(a + b) ]
        [-sin b   cos b ] [ cos a ] = [ cos a cos b - sin a sin b ] = [ cos(a + b) ]

    It depends on ``k`` only, never on ``p``. ``T_{-k} = T_k^T = T_k^{-1}``.

    Args:
        k: the offset (any int, negative allowed).
        d_model: encoding size; must be even.
        base: the wavelength base of the table it applies to.

    Returns:
        ``(d_model, d_model)`` orthogonal matrix.
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(
            f"transition_matrix: k must be an int offset, got {type(k).__name__} {k!r}",
        )
    check_positive_int("d_model", d_model, multiple_of=2, where="transition_matrix")
    _check_table(
        "transition_matrix",
        d_model * d_model,
        f"d_model={d_model}",
        base,
        dtype,
    )
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d/2,)
    b = k / base ** (two_i / d_model)  # (d/2,) rotation angle of each pair
    cos, sin = torch.cos(b), torch.sin(b)  # (d/2,) each
    T = torch.zeros(d_model, d_model, dtype=torch.float64)  # (d, d)
    idx = torch.arange(0, d_model, 2)  # (d/2,) first column of each pair
    T[idx, idx] = cos
    T[idx, idx + 1] = sin
    T[idx + 1, idx] = -sin
    T[idx + 1, idx + 1] = cos
    return T.to(dtype)  # (d, d)


def sinusoidal_encoding_2d(
    height: int,
    width: int,
    d_model: int,
    base: float = 10000.0,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sinusoidal encodings for a ``height x width`` grid of image patches.

    Layout: patch ``n`` is at row ``r = n // width`` and column ``c = n % width``
    (row-major, the order of ``x.flatten(2)`` on a ``(B, C, H, W)`` feature map).
    Its encoding is ``[PE_row[r], PE_col[c]]``: the first ``d_model / 2``
    features are the 1-D :func:`sinusoidal_encoding` of the row index, the last
    ``d_model / 2`` that of the column index (each with interleaved sin/cos).

    Args:
        height: number of patch rows.
        width: number of patch columns.
        d_model: encoding size; must be divisible by 4 (two even halves).
        base: the wavelength base.

    Returns:
        ``(height * width, d_model)``.
    """
    check_positive_int(
        "d_model",
        d_model,
        multiple_of=4,  # two even halves
        where="sinusoidal_encoding_2d",
    )
    check_positive_int("height", height, where="sinusoidal_encoding_2d")
    check_positive_int("width", width, where="sinusoidal_encoding_2d")
    _check_table(
        "sinusoidal_encoding_2d",
        height * width * d_model,
        f"height={height}, width={width}, d_model={d_model}",
        base,
        dtype,
    )
    half = d_model // 2
    rows = sinusoidal_encoding(height, half, base, device, dtype)  # (H, d/2)
    cols = sinusoidal_encoding(width, half, base, device, dtype)  # (W, d/2)
    rows = rows[:, None, :].expand(height, width, half)  # (H, W, d/2)
    cols = cols[None, :, :].expand(height, width, half)  # (H, W, d/2)
    return torch.cat([rows, cols], dim=-1).reshape(height * width, d_model)  # (H*W, d)


def _check_embeddings(name: str, x: Tensor, d_model: int, offset: int) -> None:
    """``x`` a floating ``(B, T, d_model)`` tensor; ``offset`` an int ``>= 0``."""
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"{name}: x must be (B, T, d_model={d_model}), got {describe(x)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: x must be floating point (token embeddings), got {x.dtype}")
    if x.shape[-1] != d_model:
        raise ValueError(f"{name}: x has {x.shape[-1]} features but d_model={d_model} (shape {tuple(x.shape)})")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"{name}: offset must be an int, got {describe(offset)} {offset!r}")
    if offset < 0:
        raise ValueError(f"{name}: offset must be >= 0, got {offset}")


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the sinusoidal table to token embeddings, then applies dropout.

    The first ``max_len`` rows are precomputed in a (non-persistent) buffer, so
    they follow ``.to(device)`` and are not saved in ``state_dict``. The formula
    is defined for every position, so longer inputs still work: rows past
    ``max_len`` are computed on the fly.

    Args:
        d_model: embedding size; must be even.
        max_len: rows to precompute.
        dropout: dropout probability applied to ``x + PE`` (0.1 in the paper).
        base: the wavelength base.
    """

    def __init__(self, d_model: int, max_len: int = 4096, dropout: float = 0.0, base: float = 10000.0):
        super().__init__()
        check_positive_int("d_model", d_model, multiple_of=2, where="SinusoidalPositionalEncoding")
        check_positive_int("max_len", max_len, where="SinusoidalPositionalEncoding")
        check_probability("dropout", dropout, where="SinusoidalPositionalEncoding")
        self.d_model, self.max_len, self.base = d_model, max_len, base
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model, base), persistent=False)  # (max_len, d)

    def table(self, start: int, stop: int) -> Tensor:
        """Rows ``start .. stop-1`` of the table, ``(stop - start, d_model)``, on the buffer's device."""
        if stop <= self.max_len:
            return self.pe[start:stop]  # (T, d)
        full = sinusoidal_encoding(stop, self.d_model, self.base, self.pe.device, self.pe.dtype)  # (stop, d)
        return full[start:]  # (T, d)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Add positions ``offset .. offset + T - 1`` to ``x``.

        Args:
            x: token embeddings ``(B, T, d_model)``.
            offset: position of the first token (e.g. the cache length while decoding).

        Returns:
            ``(B, T, d_model)``, in ``x``'s dtype.
        """
        _check_embeddings("SinusoidalPositionalEncoding", x, self.d_model, offset)
        T = x.shape[1]
        pe = self.table(offset, offset + T).to(x.dtype)  # (T, d)
        return self.dropout(x + pe)  # (B, T, d) + (T, d) -> (B, T, d)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}, base={self.base}"


class LearnedPositionalEmbedding(nn.Module):
    """A trained vector per position (BERT, GPT-2), added to token embeddings.

    Flexible, but it only knows ``num_positions`` positions: asking for one
    beyond raises an error instead of inventing a vector it never learned.

    Args:
        num_positions: how many positions have a vector (the training length).
        d_model: embedding size.
        init_std: standard deviation of the normal initialisation (0.02 as in GPT-2).
    """

    def __init__(self, num_positions: int, d_model: int, init_std: float = 0.02):
        super().__init__()
        check_positive_int("num_positions", num_positions, where="LearnedPositionalEmbedding")
        check_positive_int("d_model", d_model, where="LearnedPositionalEmbedding")
        check_real("init_std", init_std, low=0.0, where="LearnedPositionalEmbedding")
        if num_positions * d_model > MAX_TABLE_ENTRIES:
            raise ValueError(
                f"LearnedPositionalEmbedding: num_positions={num_positions} x d_model={d_model} would be "
                f"{num_positions * d_model:,} parameters, more than the cap of {MAX_TABLE_ENTRIES:,}"
            )
        self.num_positions, self.d_model = num_positions, d_model
        self.embedding = nn.Embedding(num_positions, d_model)  # weight (P, d)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=init_std)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Add the learned vectors of positions ``offset .. offset + T - 1`` to ``x``.

        Args:
            x: token embeddings ``(B, T, d_model)``.
            offset: position of the first token.

        Returns:
            ``(B, T, d_model)``.
        """
        _check_embeddings("LearnedPositionalEmbedding", x, self.d_model, offset)
        T = x.shape[1]
        last = offset + T - 1
        if last >= self.num_positions:
            raise ValueError(
                f"position {last} exceeds the {self.num_positions} learned positions "
                f"(0..{self.num_positions - 1}; input of length T={T} at offset={offset}): "
                "learned embeddings cannot extrapolate past the training length"
            )
        positions = torch.arange(offset, offset + T, device=x.device)  # (T,)
        return x + self.embedding(positions)  # (B, T, d) + (T, d) -> (B, T, d)

    def extra_repr(self) -> str:
        return f"num_positions={self.num_positions}, d_model={self.d_model}"
