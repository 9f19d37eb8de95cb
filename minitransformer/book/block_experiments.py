"""Chapter 6's experiments on the transformer block: LayerNorm by hand, the FFN
as 1x1 convolutions, gradients through residual stacks, and Post-LN versus
Pre-LN trained side by side.

* :func:`layer_norm` is ``gamma * (x - mean) / sqrt(var + eps) + beta`` over
  the LAST axis (the features of one position), with the biased variance --
  exactly ``torch.nn.LayerNorm``.
* :class:`ConvFeedForward` is a :class:`~minitransformer.layers.FeedForward`
  rewritten as two ``Conv1d(kernel_size=1)`` layers with the same weights.
* :func:`input_gradient_norms` measures ``||dL/dx_0|| / ||dL/dx_L||`` through a
  stack of ``L`` feed-forward sub-layers, with and without residual connections.
* :func:`norm_placement_experiment` trains a Post-LN and a Pre-LN encoder of
  the same depth on the same task, from the same seed and batches, with Adam
  at a constant learning rate (no warmup), and returns both loss curves.

The toy task, :class:`PreviousTokenTask`, asks every position for the token one
place to its left (cyclically): easy for attention with positions, and
impossible without attending to another position, so a model that does not
learn stays at the uniform loss ``log(vocab_size)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..layers import FeedForward
from ..train import fit
from ..transformer import Encoder

__all__ = [
    "layer_norm",
    "ConvFeedForward",
    "input_gradient_norms",
    "PreviousTokenTask",
    "BlockStackModel",
    "linear_warmup",
    "train_block_stack",
    "norm_placement_experiment",
]


# ---------------------------------------------------------------- LayerNorm by hand
def layer_norm(
    x: Tensor,
    gamma: Tensor | None = None,
    beta: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """LayerNorm over the last axis: ``gamma * (x - mu) / sqrt(sigma^2 + eps) + beta``.

    Args:
        x: ``(..., d)``; every position (every vector along the last axis) is
            normalised on its own, so batch and sequence axes never mix.
        gamma, beta: ``(d,)`` gain and bias (default 1 and 0).
        eps: added to the variance INSIDE the square root.

    Returns:
        ``(..., d)``, equal to ``nn.LayerNorm(d, eps)`` with the same
        ``gamma``/``beta``.
    """
    mu = x.mean(dim=-1, keepdim=True)  # (..., 1): mean of each position's features
    # (..., 1): the biased variance (divide by d)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    # (..., d): zero mean, unit variance per position
    y = (x - mu) / torch.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


# ---------------------------------------------------------------- the FFN as convolutions
class ConvFeedForward(nn.Module):
    """A :class:`FeedForward` as two ``Conv1d(kernel_size=1)`` layers (a "1x1 convolution").

    ``Conv1d`` wants channels first, ``(B, d, T)``; a kernel of width 1 looks at
    one position at a time, so each output position depends on its own input
    position only -- which is what "position-wise" means.

    Args:
        ffn: the feed-forward network whose weights are copied
            (``linear.weight (out, in)`` becomes ``conv.weight (out, in, 1)``).
    """

    def __init__(self, ffn: FeedForward):
        super().__init__()
        bias = ffn.linear1.bias is not None
        self.activation = ffn.activation
        self.conv1 = nn.Conv1d(ffn.d_model, ffn.d_ff, kernel_size=1, bias=bias)
        self.conv2 = nn.Conv1d(ffn.d_ff, ffn.d_model, kernel_size=1, bias=bias)
        with torch.no_grad():
            self.conv1.weight.copy_(ffn.linear1.weight.unsqueeze(-1))  # (d_ff, d, 1)
            self.conv2.weight.copy_(ffn.linear2.weight.unsqueeze(-1))  # (d, d_ff, 1)
            if bias:
                self.conv1.bias.copy_(ffn.linear1.bias)
                self.conv2.bias.copy_(ffn.linear2.bias)
        self.to(ffn.linear1.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x ``(B, T, d)``. Returns: ``(B, T, d)``."""
        act = F.gelu if self.activation == "gelu" else F.relu
        h = act(self.conv1(x.transpose(1, 2)))  # (B, d_ff, T): channels first
        return self.conv2(h).transpose(1, 2)  # (B, T, d)


# ---------------------------------------------------------------- gradients through depth
def input_gradient_norms(
    depths=(1, 2, 4, 8, 16, 32, 64), d_model: int = 32, batch: int = 16, seed: int = 0
) -> pd.DataFrame:
    """How much gradient reaches the input of a stack of ``L`` feed-forward sub-layers.

    Four stacks, each of ``L`` freshly initialised :class:`FeedForward` s ``f_l``
    (ReLU, ``d_ff = 4 d``, PyTorch's default initialisation):

    * ``plain``: ``x <- f_l(x)``;
    * ``plain + LN``: ``x <- f_l(LN(x))``;
    * ``residual``: ``x <- x + f_l(x)``;
    * ``residual + LN`` (Pre-LN): ``x <- x + f_l(LN(x))``.

    The loss is ``L = <u, x_L>`` for a fixed random ``u``, so ``dL/dx_L = u``;
    the ratio ``||dL/dx_0|| / ||u||`` is 1 for the identity map.

    Returns:
        a DataFrame with columns ``depth, stack, grad_ratio``.
    """
    rows = []
    stacks = ("plain", "plain + LN", "residual", "residual + LN")
    for depth in depths:
        for stack in stacks:
            torch.manual_seed(seed)  # the same sub-layer weights for every stack of this depth
            fs = [FeedForward(d_model).double() for _ in range(depth)]  # float64: tiny ratios stay > 0
            norms = [nn.LayerNorm(d_model).double() for _ in range(depth)]
            g = torch.Generator().manual_seed(seed + 1)
            x0 = torch.randn(batch, d_model, generator=g, dtype=torch.float64, requires_grad=True)  # (N, d)
            u = torch.randn(batch, d_model, generator=g, dtype=torch.float64)  # (N, d): dL/dx_L
            x = x0
            for f, ln in zip(fs, norms):
                h = ln(x) if stack.endswith("LN") else x
                x = x + f(h) if stack.startswith("residual") else f(h)  # (N, d)
            (x * u).sum().backward()
            rows.append({"depth": depth, "stack": stack, "grad_ratio": (x0.grad.norm() / u.norm()).item()})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the toy task and model
@dataclass(frozen=True)
class PreviousTokenTask:
    """Random tokens in; at every position the target is the token one place to the left
    (position 0 gets the last token: ``y = x.roll(1, dims=1)``).

    Args:
        vocab_size: number of distinct tokens (the uniform guess has loss ``log(vocab_size)``).
        length: sequence length ``T``.
    """

    vocab_size: int = 16
    length: int = 10

    def batch(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``x (B, T)`` and ``y (B, T)`` int64 tokens."""
        x = torch.randint(self.vocab_size, (batch_size, self.length), generator=generator)  # (B, T)
        return x, x.roll(1, dims=1)  # (B, T), (B, T)


class BlockStackModel(nn.Module):
    """Token embedding + learned positions, an :class:`~minitransformer.Encoder` of
    ``num_layers`` blocks (bidirectional, no dropout), and a linear read-out.

    Args:
        vocab_size, length: the task's vocabulary and sequence length.
        d_model, num_heads, num_layers: the stack; ``d_ff = 4 * d_model``.
        norm_first: Pre-LN (True; the stack then ends with a LayerNorm) or Post-LN (False).

    ``forward(x (B, T)) -> logits (B, T, vocab_size)``.
    """

    def __init__(
        self,
        vocab_size: int,
        length: int,
        d_model: int = 32,
        num_heads: int = 4,
        num_layers: int = 8,
        norm_first: bool = False,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)  # N(0, 1) entries
        self.pos = nn.Parameter(torch.randn(length, d_model))  # (T, d): learned, same scale
        self.encoder = Encoder(num_layers, d_model, num_heads, 4 * d_model, 0.0, norm_first=norm_first)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x) + self.pos[: x.shape[1]]  # (B, T, d)
        return self.head(self.encoder(h))  # (B, T, V)


def _task_loss(model: BlockStackModel, x: Tensor, y: Tensor) -> Tensor:
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())  # (B*T, V), (B*T,)


def linear_warmup(lr: float, warmup: int) -> Callable[[int], float]:
    """The learning rate of each step: a linear ramp over the first ``warmup`` steps, then constant.

    Args:
        lr: the rate after the warmup.
        warmup: ramp length in steps (0: the full ``lr`` from the first step).

    Returns:
        ``step -> lr * min(1, (step + 1) / warmup)`` for the 0-based ``step`` (for :func:`fit`'s ``lr_fn``).
    """

    def lr_at(step: int) -> float:
        return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr

    return lr_at


def train_block_stack(
    norm_first: bool,
    *,
    num_layers: int = 8,
    d_model: int = 32,
    num_heads: int = 4,
    task: PreviousTokenTask = PreviousTokenTask(),
    steps: int = 150,
    batch_size: int = 32,
    lr: float = 1e-2,
    warmup: int = 0,
    betas: tuple[float, float] = (0.9, 0.98),
    seed: int = 0,
    log_every: int = 5,
    dtype: torch.dtype = torch.float64,
) -> tuple[BlockStackModel, pd.DataFrame]:
    """Train one :class:`BlockStackModel` with Adam, no gradient clipping, on batches
    drawn from ``seed + 1`` (the model's weights come from ``seed``): a call to
    :func:`~minitransformer.train.fit`.

    Args:
        warmup: 0 (the default) uses the full ``lr`` from the very first step;
            otherwise step ``i`` (from 1) uses ``lr * min(1, i / warmup)``: a linear
            ramp, then constant.
        dtype: of the weights. float64 by default, so that the printed losses are the
            same on every CPU: float32 rounding differs between matrix-multiply kernels,
            and an unstable run amplifies the difference into the third decimal of the
            loss.

    Returns:
        the model (eval mode) and a DataFrame ``step, loss, lr`` (every ``log_every``
        steps and the first and last), the loss being that of the step's batch before
        its update.
    """
    torch.manual_seed(seed)
    sizes = (task.vocab_size, task.length, d_model, num_heads, num_layers)
    model = BlockStackModel(*sizes, norm_first).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
    history = fit(
        model,
        lambda step: _task_loss(model, *task.batch(batch_size, g)),
        optimizer,
        steps,
        lr_fn=linear_warmup(lr, warmup),
        clip_norm=None,
        progress=False,
        log_when=lambda step: step % log_every == 0 or step in (1, steps),
    )
    return model, history.to_frame()[["step", "loss", "lr"]]


def norm_placement_experiment(
    *,
    num_layers: int = 8,
    d_model: int = 32,
    num_heads: int = 4,
    task: PreviousTokenTask = PreviousTokenTask(),
    steps: int = 150,
    batch_size: int = 32,
    lr: float = 1e-2,
    seed: int = 0,
    log_every: int = 5,
    post_ln_warmup: int = 0,
    dtype: torch.dtype = torch.float64,
) -> pd.DataFrame:
    """Post-LN and Pre-LN stacks trained side by side: same task, seed, batches and
    optimiser, no warmup (see :func:`train_block_stack`).

    Args:
        post_ln_warmup: if positive, also train the Post-LN stack with this many steps of
            linear warmup to the same ``lr`` (run ``"Post-LN + warmup"``).
        dtype: of the weights (float64 by default, see :func:`train_block_stack`).

    Returns:
        a DataFrame with columns ``step, loss, lr, run`` (``"Post-LN"``, ``"Pre-LN"``
        [, ``"Post-LN + warmup"``]) and, in ``frame.attrs``, ``uniform_loss = log(vocab_size)``
        (the loss of a model that learned nothing).
    """
    runs = [(False, 0, "Post-LN"), (True, 0, "Pre-LN")]
    if post_ln_warmup > 0:
        runs.append((False, post_ln_warmup, "Post-LN + warmup"))
    frames = []
    for norm_first, warmup, name in runs:
        _, frame = train_block_stack(
            norm_first,
            num_layers=num_layers,
            d_model=d_model,
            num_heads=num_heads,
            task=task,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            warmup=warmup,
            seed=seed,
            log_every=log_every,
            dtype=dtype,
        )
        frames.append(frame.assign(run=name))
    out = pd.concat(frames, ignore_index=True)
    out.attrs["uniform_loss"] = math.log(task.vocab_size)
    return out
