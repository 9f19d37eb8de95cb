"""Chapter 5's experiment: which positional encodings work past the training length?

The task, "copy the token ``offset`` places back", depends on *relative*
position only: at every position ``t >= offset`` the target is the input token
``x[t - offset]`` (earlier positions have no target). A one-layer causal
attention model solves it by attending from ``t`` to exactly ``t - offset``.

Three otherwise identical models differ only in how they learn where a token is:

* ``"learned"``: a trained vector per position added to the token embedding
  (:class:`~minitransformer.positional.LearnedPositionalEmbedding`). The table
  has rows for every test position, but rows past the training length never
  receive a gradient, so they stay at their random initialisation;
* ``"sinusoidal"``: the fixed sinusoidal table added to the token embedding
  (:class:`~minitransformer.positional.SinusoidalPositionalEncoding`);
* ``"rope"``: nothing added; queries and keys are rotated
  (:class:`~minitransformer.rotary.RotaryEmbedding`) inside attention;
* ``"alibi"``: nothing added; every head's scores get ALiBi's fixed penalty
  ``-slope_h * (t - s)`` (:func:`~minitransformer.relative.alibi_bias`, passed to
  attention as ``attn_bias``).

Train each on sequences of ``train_len`` tokens, then measure the accuracy on
longer sequences (:func:`extrapolation_experiment`, one seed;
:func:`extrapolation_seeds`, several seeds with and without a sliding window).
Everything is seeded; a model trains in a few seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..multihead import MultiHeadAttention
from ..positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from ..relative import alibi_bias
from ..rotary import RotaryEmbedding
from ..train import fit
from ..validation import check_positive_int

__all__ = [
    "CopyTask",
    "PositionToyModel",
    "POSITION_KINDS",
    "copy_task_loss",
    "train_position_model",
    "accuracy",
    "accuracy_by_position",
    "attention_by_offset",
    "extrapolation_experiment",
    "extrapolation_seeds",
    "window_mask",
]

POSITION_KINDS = ("learned", "sinusoidal", "rope", "alibi", "none")
IGNORE = -100  # target id of positions without a target (cross_entropy's ignore_index)


@dataclass(frozen=True)
class CopyTask:
    """ "Copy the token ``offset`` places back": random tokens in, shifted tokens out.

    Args:
        vocab_size: number of distinct tokens.
        offset: how far back the answer is (``target[t] = x[t - offset]``).
    """

    vocab_size: int = 16
    offset: int = 3

    def batch(
        self, batch_size: int, length: int, generator: torch.Generator | None = None, device=None
    ) -> tuple[Tensor, Tensor]:
        """A batch of inputs and targets.

        Args:
            batch_size: number of sequences ``B``.
            length: sequence length ``T`` (must exceed ``offset``).
            generator: random generator (for reproducible batches).

        Returns:
            ``x (B, T)`` int64 tokens and ``y (B, T)`` targets, ``-100`` where ``t < offset``.
        """
        if length <= self.offset:
            raise ValueError(f"CopyTask: length={length} must exceed offset={self.offset}")
        x = torch.randint(self.vocab_size, (batch_size, length), generator=generator)  # (B, T)
        y = torch.full_like(x, IGNORE)  # (B, T)
        y[:, self.offset :] = x[:, : -self.offset]  # target at t is the token at t - offset
        return x.to(device), y.to(device)


def window_mask(length: int, window: int, device=None) -> Tensor:
    """Bool ``(T, T)``, True where ``0 <= t - s < window``: each query sees its last ``window`` positions."""
    check_positive_int("window", window, where="window_mask")
    t = torch.arange(length, device=device)  # (T,)
    back = t[:, None] - t[None, :]  # (T, T): how far back key s is from query t
    return (back >= 0) & (back < window)  # (T, T)


class PositionToyModel(nn.Module):
    """Token embedding, one causal multi-head attention layer, a linear read-out.

    Args:
        vocab_size: number of tokens.
        d_model: width.
        num_heads: attention heads.
        position: ``"learned"``, ``"sinusoidal"``, ``"rope"``, ``"alibi"`` or ``"none"``.
        max_len: positions the learned table has rows for (the longest test length).

    ``forward(x (B, T)) -> logits (B, T, vocab_size)``.
    """

    def __init__(
        self, vocab_size: int, d_model: int = 64, num_heads: int = 4, position: str = "rope", max_len: int = 256
    ):
        super().__init__()
        if position not in POSITION_KINDS:
            raise ValueError(f"PositionToyModel: position={position!r} is not one of {POSITION_KINDS}")
        self.position, self.max_len, self.num_heads = position, max_len, num_heads
        self.embed = nn.Embedding(vocab_size, d_model)  # (V, d)
        if position == "learned":
            self.pos = LearnedPositionalEmbedding(max_len, d_model)
        elif position == "sinusoidal":
            self.pos = SinusoidalPositionalEncoding(d_model, max_len=max_len)
        else:
            self.pos = None
        rotary = RotaryEmbedding(d_model // num_heads) if position == "rope" else None
        self.attn = MultiHeadAttention(d_model, num_heads, rotary=rotary)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, x: Tensor, window: int | None = None, need_weights: bool = False):
        """Logits ``(B, T, V)`` [and attention weights ``(B, H, T, T)``].

        Args:
            x: tokens ``(B, T)``.
            window: if given, position ``t`` may attend only to ``t - window + 1 .. t``
                (a sliding window; ``None`` means every earlier position).
            need_weights: also return the attention weights.
        """
        h = self.embed(x)  # (B, T, d)
        if self.pos is not None:
            h = self.pos(h)  # (B, T, d): positions added
        T = x.shape[1]
        mask = None if window is None else window_mask(T, window, x.device)  # (T, T)
        extra = {}
        if self.position == "alibi":  # -slope_h * (t - s) added to head h's scores
            bias = alibi_bias(self.num_heads, T, T, dtype=h.dtype, device=x.device)
            extra["attn_bias"] = bias  # (H, T, T); -inf above the diagonal
        # a: (B, T, d), w: (B, H, T, T)
        a, w = self.attn(h, mask=mask, is_causal=True, need_weights=True, **extra)
        logits = self.head(a)  # (B, T, V)
        return (logits, w) if need_weights else logits


def copy_task_loss(model: PositionToyModel, x: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of ``model(x)`` against ``y``, over the positions that have a target.

    Args:
        x: tokens ``(B, T)``.
        y: targets ``(B, T)``, ``-100`` where there is none.

    Returns:
        a scalar.
    """
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)  # (B*T, V)


def train_position_model(
    position: str,
    task: CopyTask = CopyTask(),
    train_len: int = 16,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 3e-3,
    d_model: int = 64,
    num_heads: int = 4,
    max_len: int = 256,
    seed: int = 0,
) -> tuple[PositionToyModel, list[float]]:
    """Build one :class:`PositionToyModel` with positional encoding ``position`` and train it on
    sequences of exactly ``train_len`` tokens of ``task``.

    A call to :func:`~minitransformer.train.fit`: Adam at a constant learning rate, no
    gradient clipping. The weights come from ``torch.manual_seed(seed)``, the batches from
    a generator seeded with ``seed + 1``.

    Returns:
        the trained model (in eval mode) and the loss of every step.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    model = PositionToyModel(task.vocab_size, d_model, num_heads, position, max_len)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = fit(
        model,
        lambda step: copy_task_loss(model, *task.batch(batch_size, train_len, g)),
        opt,
        steps,
        clip_norm=None,
        log_every=1,
        progress=False,
    )
    return model, [r["loss"] for r in history]


@torch.no_grad()
def accuracy_by_position(
    model: PositionToyModel,
    task: CopyTask,
    length: int,
    window: int | None = None,
    num_sequences: int = 256,
    seed: int = 1234,
) -> Tensor:
    """Fraction of correct predictions at each position ``offset .. length-1``: ``(length - offset,)``."""
    g = torch.Generator().manual_seed(seed)
    x, y = task.batch(num_sequences, length, g)  # (N, T) each
    pred = model(x, window=window).argmax(-1)  # (N, T)
    return (pred == y)[:, task.offset :].double().mean(0)  # (T - offset,)


def accuracy(
    model: PositionToyModel,
    task: CopyTask,
    length: int,
    window: int | None = None,
    num_sequences: int = 256,
    seed: int = 1234,
) -> float:
    """Fraction of correct predictions over every position that has a target."""
    return float(accuracy_by_position(model, task, length, window, num_sequences, seed).mean())


@torch.no_grad()
def attention_by_offset(
    model: PositionToyModel,
    task: CopyTask,
    length: int,
    first_query: int = 0,
    window: int | None = None,
    num_sequences: int = 256,
    seed: int = 1234,
) -> Tensor:
    """Mean attention weight (over heads, sequences and queries ``t >= first_query``) at each offset ``t - s``.

    Returns:
        ``(length,)``: entry ``o`` is the average weight a query puts on the key ``o`` places back,
        averaged over the queries that have such a key.
    """
    if not 0 <= first_query < length:
        raise ValueError(f"attention_by_offset: need 0 <= first_query < length, got {first_query}, {length}")
    g = torch.Generator().manual_seed(seed)
    x, _ = task.batch(num_sequences, length, g)  # (N, T)
    _, w = model(x, window=window, need_weights=True)  # (N, H, T, T)
    w = w.mean(dim=(0, 1))[first_query:]  # (T', T): queries first_query .. T-1
    t = torch.arange(first_query, length)[:, None]  # (T', 1)
    s = torch.arange(length)[None, :]  # (1, T)
    offset = (t - s).clamp(min=0)  # (T', T); future keys (weight 0) are folded into offset 0 harmlessly
    total = torch.zeros(length, dtype=torch.float64).index_add_(0, offset.flatten(), w.flatten().double())
    count = torch.zeros(length, dtype=torch.float64).index_add_(
        0, offset.flatten(), (t >= s).flatten().double()
    )  # how many (query, key) pairs have each offset
    return total / count.clamp(min=1)  # (T,)


def extrapolation_experiment(
    kinds=("learned", "sinusoidal", "rope"),
    task: CopyTask = CopyTask(),
    train_len: int = 16,
    test_lengths=(16, 24, 32, 48, 64, 96, 128),
    steps: int = 400,
    seed: int = 0,
    **train_kwargs,
):
    """Train one model per kind on ``train_len`` tokens and test it on every test length.

    Returns:
        ``(table, models)``: a DataFrame with columns ``position``, ``test_length``,
        ``accuracy`` (one row per kind and length), and the trained models by kind.
    """
    max_len = max(max(test_lengths), train_len)
    rows, models = [], {}
    for kind in kinds:
        model, _ = train_position_model(kind, task, train_len, steps, max_len=max_len, seed=seed, **train_kwargs)
        models[kind] = model
        for length in test_lengths:
            rows.append({"position": kind, "test_length": length, "accuracy": accuracy(model, task, length)})
    return pd.DataFrame(rows), models


def extrapolation_seeds(
    kinds=("learned", "sinusoidal", "rope", "alibi"),
    task: CopyTask = CopyTask(),
    train_len: int = 16,
    test_lengths=(16, 24, 32, 48, 64, 96, 128),
    steps: int = 400,
    seeds=(0, 1, 2),
    windows=(None, 16),
    **train_kwargs,
):
    """:func:`extrapolation_experiment` for several seeds: every kind trains with the same seeds,
    steps and batches, and each trained model is tested with every attention window.

    Args:
        kinds: positional schemes (see :data:`POSITION_KINDS`).
        task, train_len, test_lengths, steps: as in :func:`extrapolation_experiment`.
        seeds: one training run per seed and kind (weights from ``seed``, batches from ``seed + 1``).
        windows: ``None`` (full causal attention) and/or sliding-window sizes for the test.
        train_kwargs: passed to :func:`train_position_model`.

    Returns:
        ``(table, models)``: a DataFrame with columns ``position``, ``seed``, ``window``
        (``0`` for full attention), ``test_length``, ``accuracy``; and the trained models
        by ``(kind, seed)``.
    """
    max_len = max(max(test_lengths), train_len)
    rows, models = [], {}
    for kind in kinds:
        for seed in seeds:
            model, _ = train_position_model(kind, task, train_len, steps, max_len=max_len, seed=seed, **train_kwargs)
            models[kind, seed] = model
            for window in windows:
                for length in test_lengths:
                    acc = accuracy(model, task, length, window=window)
                    rows.append(
                        {"position": kind, "seed": seed, "window": window or 0, "test_length": length, "accuracy": acc}
                    )
    return pd.DataFrame(rows), models
