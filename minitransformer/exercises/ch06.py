"""Chapter 6 exercises: LayerNorm by hand, the Pre-LN block, the warmup schedule, label smoothing,
and the Post-LN experiment changed (depth and warmup).

Three reference solutions are the package's own functions (``layer_norm``,
``noam_lr``, ``smoothed_targets``), so the solution a reader reveals is the
code the chapter runs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..book.block_experiments import PreviousTokenTask, layer_norm, train_block_stack
from ..layers import FeedForward
from ..multihead import MultiHeadAttention
from ..train import noam_lr, smoothed_targets
from .core import Case, Exercise, Forbidden, Mistake, register


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- 1. LayerNorm by hand --------------------------------------------------------------


def _layer_norm_cases() -> list[Case]:
    g = _gen(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    near_constant = 1e5 + 0.01 * r(3, 4)  # variance ~1e-4 around a large mean: eps matters, E[x^2] - mu^2 fails
    return [
        Case("x (2, 5, 6) (batch, sequence, features), random gamma and beta", (r(2, 5, 6) * 2, r(6), r(6), 1e-5)),
        Case(
            "x (3, 4), gamma = 1, beta = 0",
            (r(3, 4) * 3 + 1, torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64), 1e-5),
        ),
        Case(
            "x (3, 4) whose features are nearly constant (about 1e5, variance ~1e-4), eps = 1e-5",
            (near_constant, torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64), 1e-5),
        ),
        Case("x (4, 8), eps = 0.1", (r(4, 8), r(8), r(8), 0.1)),
    ]


register(
    Exercise(
        "ch06.layer_norm",
        "LayerNorm over the features: gamma * (x - mu) / sqrt(var + eps) + beta",
        layer_norm,
        _layer_norm_cases,
        hint="mean and variance over the LAST axis (dim=-1, keepdim=True), the biased variance "
        "(unbiased=False), and eps inside the square root.",
        mistakes=[
            Mistake(
                lambda x, g, b, eps: (
                    g * (x - x.mean(0, keepdim=True)) / torch.sqrt(x.var(0, unbiased=False, keepdim=True) + eps) + b
                ),
                "you normalised over the FIRST axis (across the batch, like BatchNorm); LayerNorm "
                "normalises each position over its own features: dim=-1.",
            ),
            Mistake(
                lambda x, g, b, eps: g * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) + b,
                "you used the unbiased variance (divide by d - 1); LayerNorm divides by d: "
                "x.var(-1, unbiased=False, keepdim=True).",
            ),
            Mistake(
                lambda x, g, b, eps: (
                    g * (x - x.mean(-1, keepdim=True)) / (x.std(-1, unbiased=False, keepdim=True) + eps) + b
                ),
                "you added eps outside the square root; it belongs inside: sqrt(var + eps).",
            ),
            Mistake(
                lambda x, g, b, eps: (
                    g * (x - x.mean(-2, keepdim=True)) / torch.sqrt(x.var(-2, unbiased=False, keepdim=True) + eps) + b
                ),
                "you normalised over the sequence axis (-2); LayerNorm uses the features (-1).",
            ),
            Mistake(
                lambda x, g, b, eps: (
                    g
                    * (x - x.mean(-1, keepdim=True))
                    / torch.sqrt((x * x).mean(-1, keepdim=True) - x.mean(-1, keepdim=True) ** 2 + eps)
                    + b
                ),
                "you computed the variance as E[x^2] - E[x]^2, which cancels catastrophically when the mean is "
                "large next to the spread (here about 1e5 against 0.01): compute ((x - mu) ** 2).mean(-1) or "
                "x.var(-1, unbiased=False).",
            ),
        ],
        forbidden=[
            Forbidden(
                "the exercise is to normalise by hand (mean, variance, eps, gamma, beta); F.layer_norm and "
                "nn.LayerNorm are what it is checked against.",
                torch_names=("layer_norm", "native_layer_norm"),
                functions=(
                    "torch.nn.functional:layer_norm",
                    "minitransformer.book.block_experiments:layer_norm",
                ),
            )
        ],
    )
)


# -- 2. the Pre-LN block ------------------------------------------------------------------


def pre_ln_block_solution(x: torch.Tensor, attn, ffn, norm1, norm2) -> torch.Tensor:
    """One Pre-LN block: x = x + attn(norm1(x)); x = x + ffn(norm2(x))."""
    x = x + attn(norm1(x))  # the attention sub-layer reads a normalised copy, writes to the stream
    x = x + ffn(norm2(x))  # the FFN reads the UPDATED stream (attention's output included)
    return x


def _block_cases() -> list[Case]:
    cases = []
    for n, (B, T, d, H) in enumerate([(1, 3, 4, 2), (2, 5, 8, 2)]):
        torch.manual_seed(100 + n)
        attn = MultiHeadAttention(d, H).double().eval()
        ffn = FeedForward(d, 2 * d).double().eval()
        norm1, norm2 = nn.LayerNorm(d).double(), nn.LayerNorm(d).double()
        with torch.no_grad():  # distinct gains and biases, so norm1 and norm2 cannot be swapped
            for ln in (norm1, norm2):
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.normal_(0.0, 0.3)
        x = torch.randn(B, T, d, generator=_gen(n), dtype=torch.float64) * 2
        cases.append(
            Case(f"x ({B}, {T}, {d}), {H}-head attention, FFN with d_ff = {2 * d}", (x, attn, ffn, norm1, norm2))
        )
    return cases


register(
    Exercise(
        "ch06.pre_ln_block",
        "a Pre-LN transformer block from its sub-layers",
        pre_ln_block_solution,
        _block_cases,
        hint="two residual steps, each reading a normalised copy of the stream: "
        "x = x + attn(norm1(x)), then x = x + ffn(norm2(x)) with the NEW x.",
        mistakes=[
            Mistake(
                lambda x, a, f, n1, n2: n2((h := n1(x + a(x))) + f(h)),
                "that is the Post-LN block (the norm after each residual addition): "
                "Pre-LN normalises the sub-layer's INPUT and adds to the un-normalised stream.",
            ),
            Mistake(
                lambda x, a, f, n1, n2: x + f(n2(x + a(n1(x)))),
                "the attention output was not carried in the residual stream (x + FFN(x + Attn(x))): "
                "after the first step the stream is x + attn(norm1(x)); add the FFN output to THAT.",
            ),
            Mistake(
                lambda x, a, f, n1, n2: x + a(n1(x)) + f(n2(x)),
                "the FFN read the OLD stream: normalise the stream after the attention step, "
                "norm2(x + attn(norm1(x))).",
            ),
            Mistake(
                lambda x, a, f, n1, n2: (h := x + a(x)) + f(h),
                "no LayerNorm at all: each sub-layer reads norm(x), not x.",
            ),
            Mistake(
                lambda x, a, f, n1, n2: (h := x + a(n2(x))) + f(n1(h)),
                "norm1 and norm2 are swapped: norm1 goes before attention, norm2 before the FFN.",
            ),
        ],
    )
)


# -- 3. the warmup ("Noam") schedule ---------------------------------------------------------


def _noam_cases() -> list[Case]:
    return [
        Case("step 1, d_model 512, warmup 4000", (1, 512, 4000)),
        Case("step 1000 (during warmup), d_model 512, warmup 4000", (1000, 512, 4000)),
        Case("step 4000 (the peak), d_model 512, warmup 4000", (4000, 512, 4000)),
        Case("step 100000 (decay), d_model 512, warmup 4000", (100000, 512, 4000)),
        Case("step 30, d_model 64, warmup 100", (30, 64, 100)),
        Case("step 250, d_model 1024, warmup 100", (250, 1024, 100)),
    ]


register(
    Exercise(
        "ch06.noam_lr",
        "the learning rate of 'Attention Is All You Need'",
        noam_lr,
        _noam_cases,
        hint="lr = d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5); steps count from 1.",
        mistakes=[
            Mistake(
                lambda s, d, w: d**-0.5 * min(s**-0.5, s * w**-0.5),
                "the warmup exponent is -1.5, not -0.5: the linear ramp is step * warmup ** -1.5, "
                "which meets step ** -0.5 exactly at step == warmup.",
            ),
            Mistake(lambda s, d, w: min(s**-0.5, s * w**-1.5), "the factor d_model ** -0.5 is missing."),
            Mistake(
                lambda s, d, w: d**-0.5 * max(s**-0.5, s * w**-1.5),
                "use min, not max: the rate is the SMALLER of the ramp and the decay.",
            ),
            Mistake(
                lambda s, d, w: d**0.5 * min(s**-0.5, s * w**-1.5),
                "d_model enters as d_model ** -0.5 (wider models get smaller rates), not ** 0.5.",
            ),
        ],
        forbidden=[
            Forbidden(
                "write the formula yourself; the package's noam_lr is what it is checked against.",
                functions=("minitransformer.train:noam_lr", "minitransformer.train:NoamSchedule.__call__"),
            )
        ],
    )
)


# -- 4. label smoothing -----------------------------------------------------------------------


def _smoothing_cases() -> list[Case]:
    return [
        Case("targets [2], 5 classes, eps = 0.1", (torch.tensor([2]), 5, 0.1)),
        Case("targets [0, 3, 3], 4 classes, eps = 0.1", (torch.tensor([0, 3, 3]), 4, 0.1)),
        Case("targets [1, 0], 10 classes, eps = 0.3", (torch.tensor([1, 0]), 10, 0.3)),
        Case("targets [4], 6 classes, eps = 0 (no smoothing)", (torch.tensor([4]), 6, 0.0)),
    ]


register(
    Exercise(
        "ch06.smoothed_targets",
        "the target distribution of label smoothing (as in F.cross_entropy)",
        smoothed_targets,
        _smoothing_cases,
        hint="mix the one-hot target with the uniform distribution: (1 - eps) * one_hot + eps / C; "
        "the true class gets 1 - eps + eps / C, every other class eps / C.",
        mistakes=[
            Mistake(
                lambda t, C, e: (1 - e) * F.one_hot(t, C).float() + (e / (C - 1)) * (1 - F.one_hot(t, C).float()),
                "you spread eps over the C - 1 WRONG classes; PyTorch (and the book) spread it over all "
                "C classes, true one included: eps / C each, and 1 - eps + eps / C on the true class.",
            ),
            Mistake(
                lambda t, C, e: (1 - e) * F.one_hot(t, C).float() + (e / C) * (1 - F.one_hot(t, C).float()),
                "your rows do not sum to 1: the true class gets 1 - eps + eps / C, not 1 - eps.",
            ),
            Mistake(
                lambda t, C, e: F.one_hot(t, C).float() * (1 - e) + e,
                "each class gets eps / C of the smoothing mass, not eps.",
            ),
        ],
        forbidden=[
            Forbidden(
                "build the distribution yourself from F.one_hot; the package's smoothed_targets is what it is "
                "checked against.",
                functions=("minitransformer.train:smoothed_targets", "minitransformer.train:label_smoothing_loss"),
            )
        ],
    )
)


# -- 5. change an experiment: Post-LN with another depth and warmup ----------------------------


def post_ln_loss_solution(num_layers: int, warmup: int) -> float:
    """Section 5's experiment, changed: the Post-LN stack with ``num_layers`` blocks and
    ``warmup`` steps of linear warmup (0 = none), trained for 100 steps with the chapter's
    recipe otherwise (the previous-token task over 16 tokens of length 10, d_model 32,
    4 heads, Adam at 1e-2, batches of 32, seed 0). Returns the loss at the last step.

    Interpretation (the question under the exercise). The need for warmup grows with depth:
    a 4-block Post-LN stack learns the task without any warmup, while the 8-block stack
    stays at the uniform loss log 16 without warmup and also with a warmup of 10 steps
    (section 5's 50 steps were enough). "Post-LN needs warmup" is a statement about deep
    stacks at a given learning rate, and this is one seed: rerun with other seeds before
    trusting where the line falls.
    """
    task = PreviousTokenTask(vocab_size=16, length=10)
    _, history = train_block_stack(False, num_layers=num_layers, task=task, steps=100, warmup=warmup, seed=0)
    return float(history["loss"].iloc[-1])


@functools.lru_cache(maxsize=32)
def _block_stack_losses(norm_first: bool, num_layers: int, warmup: int, steps: int) -> tuple[float, ...]:
    """The logged losses of one run (cached: the checker and its known mistakes share runs)."""
    task = PreviousTokenTask(vocab_size=16, length=10)
    _, history = train_block_stack(norm_first, num_layers=num_layers, task=task, steps=steps, warmup=warmup, seed=0)
    return tuple(float(x) for x in history["loss"])


def _post_ln_loss_reference(num_layers: int, warmup: int) -> float:
    return _block_stack_losses(False, num_layers, warmup, 100)[-1]


def _post_ln_cases() -> list[Case]:
    return [
        Case("4 blocks, no warmup", (4, 0)),
        Case("8 blocks, 10 warmup steps", (8, 10)),
    ]


register(
    Exercise(
        "ch06.post_ln_loss",
        "the Post-LN experiment with another depth and warmup: the loss after 100 steps",
        post_ln_loss_solution,
        _post_ln_cases,
        hint="call train_block_stack(False, num_layers=num_layers, task=PreviousTokenTask(vocab_size=16, length=10), "
        "steps=100, warmup=warmup, seed=0) and return the last value of its 'loss' column as a float.",
        mistakes=[
            Mistake(
                lambda n, w: _block_stack_losses(True, n, w, 100)[-1],
                "that is the Pre-LN stack (norm_first=True); the experiment is about Post-LN: norm_first=False.",
            ),
            Mistake(
                lambda n, w: _block_stack_losses(False, n, w, 100)[0],
                "that is the loss at the FIRST step; report the loss at the last step (history['loss'].iloc[-1]).",
            ),
            Mistake(
                lambda n, w: _block_stack_losses(False, n, w, 150)[-1],
                "that run has 150 steps (the chapter's); this exercise trains for steps=100.",
            ),
            Mistake(
                lambda n, w: _block_stack_losses(False, n, 0, 100)[-1],
                "your run ignores the warmup: pass warmup=warmup to train_block_stack.",
            ),
            Mistake(
                lambda n, w: _block_stack_losses(False, 8, w, 100)[-1],
                "your run always has 8 blocks (the default): pass num_layers=num_layers.",
            ),
        ],
        reference=_post_ln_loss_reference,
    )
)
