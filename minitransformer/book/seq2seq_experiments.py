"""The digit-reversal experiment of chapters 1 and 2, in one place.

Chapter 1 trains the GRU encoder-decoder *without* attention and plots its
exact-match accuracy against input length; chapter 2 trains the same model
with Bahdanau and Luong attention on the same data, with the same recipe, and
draws every curve on one chart. Both chapters call :func:`run_reversal`, so
the no-attention curve of chapter 2 is chapter 1's curve, re-trained from the
same seed (training is deterministic on the CPU), not a cached copy.

The recipe (:data:`REVERSAL`): 20,000 training strings of 5-30 digits, a
held-out set balanced over lengths 5-35 (50 strings per length, none in the
training set; lengths 31-35 never occur in training), the ``"small"`` model
(embeddings 32, hidden 64, bidirectional encoder), batches of 128, Adam with
peak learning rate 1e-2, warmup and cosine decay, 600 steps.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from ..data import Example, Tokenizer, make_pairs, task_tokenizer
from ..rnn import ATTENTION_KINDS, Seq2Seq, Seq2SeqConfig
from ..train import History, accuracy_by_length, train_seq2seq
from ..validation import check_positive_int

__all__ = [
    "ReversalSetup",
    "REVERSAL",
    "ReversalRun",
    "reversal_data",
    "run_reversal",
    "summary_row",
    "model_label",
    "decode_examples",
    "gru_update_gates",
    "fixed_gate_norms",
    "ablate_attention",
]


@dataclass(frozen=True)
class ReversalSetup:
    """Everything that defines one run of the reversal experiment (except the attention kind)."""

    train_lengths: tuple[int, int] = (5, 30)  # inclusive range of training lengths
    test_lengths: tuple[int, int] = (5, 35)  # inclusive range of held-out lengths
    n_train: int = 20_000
    n_test_per_length: int = 50
    preset: str = "small"
    steps: int = 600
    batch_size: int = 128
    lr: float = 1e-2
    seed: int = 0

    def __post_init__(self):
        for name in ("train_lengths", "test_lengths"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be (lo, hi) with 1 <= lo <= hi, got {(lo, hi)}")
        for name in ("n_train", "n_test_per_length", "steps", "batch_size"):
            check_positive_int(name, getattr(self, name))


#: The setting both chapters use.
REVERSAL = ReversalSetup()


def model_label(attention: str | None, setup: ReversalSetup = REVERSAL) -> str:
    """The name a model gets in tables and chart legends; a run with fewer or more
    training steps than :data:`REVERSAL` says so (``"Luong general (300 steps)"``)."""
    label = {
        None: "no attention",
        "bahdanau": "Bahdanau (additive)",
        "luong-dot": "Luong dot",
        "luong-general": "Luong general",
        "luong-concat": "Luong concat",
    }[attention]
    return label if setup.steps == REVERSAL.steps else f"{label} ({setup.steps} steps)"


def reversal_data(setup: ReversalSetup = REVERSAL) -> tuple[list[Example], list[Example], Tokenizer]:
    """The training set, the held-out set (balanced over ``test_lengths``, disjoint
    from training) and the tokenizer. Same ``setup`` -> same data."""
    lo, hi = setup.train_lengths
    train = make_pairs("reverse", setup.n_train, range(lo, hi + 1), seed=setup.seed)
    tlo, thi = setup.test_lengths
    n_lengths = thi - tlo + 1
    test = make_pairs(
        "reverse",
        setup.n_test_per_length * n_lengths,
        range(tlo, thi + 1),
        seed=setup.seed + 1_000_003,
        exclude={e.src for e in train},
        balanced=True,
    )
    return train, test, task_tokenizer("reverse")


@dataclass
class ReversalRun:
    """The result of :func:`run_reversal`."""

    attention: str | None
    model: Seq2Seq
    history: History
    accuracy: pd.DataFrame  # length, n, exact_match, char_accuracy, model, trained_length
    cpu_seconds: float  # process CPU time of the training (all threads)
    setup: ReversalSetup

    @property
    def label(self) -> str:
        return model_label(self.attention, self.setup)

    def summary(self) -> dict:
        """One row for a results table: mean exact match on trained and on longer lengths."""
        return summary_row(self.label, sum(p.numel() for p in self.model.parameters()), self.accuracy)


def summary_row(model: str, params: int, accuracy: pd.DataFrame) -> dict:
    """One row of a results table from a per-length accuracy frame (columns ``length``,
    ``exact_match``, ``trained_length``): mean and worst exact match on the trained lengths,
    mean on the longer ones, and the value at the longest length."""
    seen, unseen = accuracy[accuracy.trained_length], accuracy[~accuracy.trained_length]
    row = {
        "model": model,
        "params": params,
        "exact_match_trained": seen.exact_match.mean(),
        "min_exact_match_trained": seen.exact_match.min(),
    }
    if len(unseen):
        row["exact_match_longer"] = unseen.exact_match.mean()
    row[f"exact_match_at_{int(accuracy.length.max())}"] = accuracy.exact_match.iloc[-1]
    return row


def run_reversal(
    attention: str | None,
    setup: ReversalSetup = REVERSAL,
    *,
    data=None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    hidden_size: int | None = None,
) -> ReversalRun:
    """Train one GRU encoder-decoder on digit reversal and measure it per length.

    Args:
        attention: ``None``, ``"bahdanau"``, ``"luong-dot"``, ``"luong-general"``
            or ``"luong-concat"``.
        setup: the data sizes and training recipe (default :data:`REVERSAL`).
        data: ``reversal_data(setup)``, if already made (saves a second or two).
        device: where to train.
        progress: show a progress bar (off in the book: nbval compares outputs).
        hidden_size: the model's hidden size ``H`` (the size of chapter 1's context
            vector) instead of the preset's 64, for the capacity sweep of
            :mod:`minitransformer.book.reversal_sweeps`.

    Returns:
        a :class:`ReversalRun`. The model's weights are initialised from
        ``torch.manual_seed(setup.seed)`` and the batches drawn from
        ``setup.seed``, so the same call gives the same model.
    """
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
    train, test, tok = data if data is not None else reversal_data(setup)
    torch.manual_seed(setup.seed)
    config = Seq2SeqConfig.preset(setup.preset, len(tok), attention=attention)
    if hidden_size is not None:
        config = dataclasses.replace(config, hidden_size=hidden_size)
    model = Seq2Seq(config).to(device)
    start = time.process_time()
    history = train_seq2seq(
        model, train, tok, setup.steps, batch_size=setup.batch_size, lr=setup.lr, seed=setup.seed, progress=progress
    )
    cpu = time.process_time() - start
    model.cpu().eval()
    acc = accuracy_by_length(model, test, tok)
    acc["model"] = model_label(attention, setup)
    lo, hi = setup.train_lengths
    acc["trained_length"] = acc.length.between(lo, hi)
    return ReversalRun(attention, model, history, acc, cpu, setup)


@torch.no_grad()
def decode_examples(model: Seq2Seq, examples: list[Example], tokenizer: Tokenizer):
    """Greedy outputs of ``model`` for ``examples``.

    Returns:
        ``(outputs, weights)``: the decoded strings, and per example the
        alignment weights ``(T_out, S)`` cut to the real output and input
        lengths (None for the model without attention).
    """
    from ..data import collate

    model.eval()
    batch = collate(examples, tokenizer)
    tokens, weights = model.greedy_decode(batch.src, batch.tgt_out.shape[1] + 1, batch.src_lengths)
    outputs, cut = [], []
    for i, ex in enumerate(examples):
        text = tokenizer.decode(tokens[i])
        outputs.append(text)
        if weights is not None:
            cut.append(weights[i, : len(text) + 1, : len(ex.src)].clone())  # (T_out incl. eos, S)
    return outputs, (cut if weights is not None else None)


@torch.no_grad()
def gru_update_gates(cell: torch.nn.GRUCell, inputs: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """The update gate ``z_t`` of every step of ``cell`` reading ``inputs``.

    ``z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)`` in PyTorch's convention, where
    ``h_t = (1 - z_t) * n_t + z_t * h_{t-1}``: ``z_t`` near 1 keeps the old state.

    Args:
        cell: an ``nn.GRUCell`` (rows of its weights: reset, update, candidate).
        inputs: ``(T, input_size)`` one sequence, or ``(T, B, input_size)`` a batch read in step.
        h0: the initial state, ``(hidden_size,)`` or ``(B, hidden_size)``; zeros by default.

    Returns:
        ``(T, hidden_size)`` or ``(T, B, hidden_size)``: the gates of each step.
    """
    if not isinstance(cell, torch.nn.GRUCell):
        raise TypeError(f"cell must be an nn.GRUCell, got {type(cell).__name__}")
    single = inputs.dim() == 2
    x_all = inputs[:, None] if single else inputs  # (T, B, I)
    H = cell.hidden_size
    h = x_all.new_zeros(x_all.shape[1], H) if h0 is None else h0.reshape(-1, H).expand(x_all.shape[1], H)  # (B, H)
    rows = slice(H, 2 * H)  # the update gate's rows
    gates = []
    for x in x_all:  # x: (B, I)
        z = torch.sigmoid(
            x @ cell.weight_ih[rows].T + cell.bias_ih[rows] + h @ cell.weight_hh[rows].T + cell.bias_hh[rows]
        )  # (B, H)
        gates.append(z)
        h = cell(x, h)  # (B, H)
    out = torch.stack(gates)  # (T, B, H)
    return out[:, 0] if single else out


class _FixedGateCell(torch.nn.GRUCell):
    """An ``nn.GRUCell`` whose step is ``step(x, h, W_ih, W_hh, b_ih, b_hh, z)`` with a constant ``z``."""

    def __init__(self, cell: torch.nn.GRUCell, step: Callable, z: float):
        super().__init__(cell.input_size, cell.hidden_size)
        self.load_state_dict(cell.state_dict())
        self.step, self.z = step, z

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:  # (B, I), (B, H) -> (B, H)
        return self.step(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.z)


def fixed_gate_norms(step: Callable, cell: torch.nn.GRUCell, inputs: torch.Tensor, zs) -> pd.DataFrame:
    """Chapter 1's exercise 4: ``||dh_t/dh_0||`` of ``cell`` with its update gate held at each ``z``.

    Args:
        step: ``step(x, h, W_ih, W_hh, b_ih, b_hh, z) -> h_new``, a GRU step with a constant update gate.
        cell: the ``nn.GRUCell`` whose weights the step uses (e.g. the trained encoder's).
        inputs: ``(T, input_size)`` the sequence it reads.
        zs: the constant gates to try.

    Returns:
        columns z, t, norm (t = 0..T).
    """
    from ..rnn import hidden_jacobian_norms

    rows = []
    for z in zs:
        norms = hidden_jacobian_norms(_FixedGateCell(cell, step, float(z)), inputs)  # (T + 1,)
        rows += [{"z": float(z), "t": t, "norm": float(v)} for t, v in enumerate(norms.tolist())]
    return pd.DataFrame(rows)


class _AverageAttention(torch.nn.Module):
    """Stands in for a model's attention: the context is ``average(states, mask)``, the weights uniform."""

    def __init__(self, average: Callable):
        super().__init__()
        self.average = average

    def precompute_keys(self, keys: torch.Tensor) -> None:
        return None

    def forward(self, query, keys, values=None, mask=None, projected_keys=None):
        states = keys if values is None else values  # (B, S, d)
        if mask is None:
            mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)  # (B, S)
        weights = mask.to(states.dtype) / mask.sum(dim=-1, keepdim=True)  # (B, S)
        return self.average(states, mask), weights  # (B, d), (B, S)


def ablate_attention(model: Seq2Seq, examples: list[Example], tokenizer: Tokenizer, average: Callable) -> pd.DataFrame:
    """Chapter 2's exercise 4: a trained attention model decoded with its attention replaced.

    Args:
        model: a trained :class:`Seq2Seq` with attention (left unchanged: a copy is modified).
        examples: held-out examples.
        tokenizer: the task's tokenizer.
        average: ``average(h (B, S, d), mask (B, S)) -> (B, d)``, the context every step gets instead.

    Returns:
        :func:`minitransformer.train.accuracy_by_length` of the modified copy.
    """
    if model.config.attention is None:
        raise ValueError("ablate_attention needs a model with attention (its config.attention is None)")
    ablated = copy.deepcopy(model).eval()
    ablated.attn = _AverageAttention(average)
    return accuracy_by_length(ablated, examples, tokenizer)
