"""Do attention heads specialise? A toy task, a tiny model, head scores and head ablation.

Chapter 4 trains a two-layer, attention-only transformer on a task that
*needs* two heads working together, then looks inside it:

* :func:`repeated_sequences` — a beginning-of-sequence token, then a random
  pattern of random period (4 to 12 tokens, no token twice in one period)
  repeated until the sequence is full. The first period cannot be predicted;
  every later token can, by finding the previous occurrence of the current
  token and copying the token that followed it. That is the algorithm of an
  *induction head* (Olsson et al., 2022): a *previous-token head* in layer 0
  writes "my left neighbour was A" into each position, and a head in layer 1
  matches the current token against it.
* :class:`AttentionOnlyTransformer` — embeddings, ``n_layer`` pre-LN residual
  blocks that contain only :class:`~minitransformer.MultiHeadAttention`
  (no feed-forward network), a final LayerNorm and an unembedding.
* :func:`train_induction_model` — a short, seeded training run (a call to
  :func:`~minitransformer.train.fit`).
* :func:`head_scores` — per-head measures: weight on the previous token, on
  the first token, on itself, on the induction target, and the entropy.
* :func:`ablate_heads` / :func:`ablation_table` — zero one head's output
  (its slice of the input of ``W^O``) and measure how much the loss rises
  (:func:`evaluate` gives loss and accuracy).
* :func:`text_attention_map` / :func:`head_grid_chart` — one head as shaded
  text (for widgets), every head as altair heatmaps.

Everything works on any model whose attention layers are
:class:`~minitransformer.MultiHeadAttention` modules (the package's
:class:`~minitransformer.GPT` included), found in registration order.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..multihead import MultiHeadAttention
from ..train import fit
from ..validation import check_positive_int

__all__ = [
    "BOS",
    "repeated_sequences",
    "AttentionOnlyTransformer",
    "train_induction_model",
    "attention_layers",
    "ablate_heads",
    "evaluate",
    "ablation_table",
    "head_scores",
    "HEAD_ROLES",
    "SYMBOLS",
    "encode",
    "decode",
    "text_attention_map",
    "head_grid_chart",
]

BOS = 0  # the beginning-of-sequence token; pattern tokens are 1 .. vocab_size - 1
# one printable symbol per token id: "^" for BOS, then A-Z, a-z, 0-9
SYMBOLS = "^" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz" + "0123456789"


def encode(text: str) -> Tensor:
    """Symbols -> token ids ``(1, len(text))``, e.g. ``encode("^MULTIHEADMULTIHEAD")``."""
    unknown = sorted(set(text) - set(SYMBOLS))
    if unknown:
        raise ValueError(f"encode: symbols {unknown} are not in SYMBOLS")
    return torch.tensor([[SYMBOLS.index(c) for c in text]])


def decode(idx: Tensor) -> str:
    """Token ids ``(T,)`` -> their symbols."""
    return "".join(SYMBOLS[int(i)] for i in idx)


# -- the task ---------------------------------------------------------------------------


def repeated_sequences(
    batch_size: int,
    seq_len: int = 32,
    vocab_size: int = 24,
    min_period: int = 4,
    max_period: int = 12,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """A batch of "BOS, pattern, pattern, pattern, ..." sequences and their next-token targets.

    Each row draws a period ``P`` uniformly from ``min_period .. max_period`` and
    ``P`` distinct tokens from ``1 .. vocab_size - 1``; positions ``1 ..`` repeat
    them. The target at position ``t`` is the token at ``t + 1``; it is ``-1``
    (ignored by the loss) where it cannot be predicted: inside the first period
    (``t < P``) and at the last position.

    Args:
        batch_size: B.
        seq_len: T, including the BOS token.
        vocab_size: V (token 0 is BOS); needs ``max_period <= vocab_size - 1``.
        min_period, max_period: the range of periods.
        generator: random generator (reproducible batches).

    Returns:
        ``idx (B, T)`` int64 and ``targets (B, T)`` int64.
    """
    if not 1 <= min_period <= max_period <= vocab_size - 1:
        raise ValueError(
            f"need 1 <= min_period={min_period} <= max_period={max_period} <= vocab_size - 1 = {vocab_size - 1}"
        )
    check_positive_int("seq_len", seq_len, minimum=2)
    periods = torch.randint(min_period, max_period + 1, (batch_size, 1), generator=generator)  # (B, 1)
    tokens = torch.rand(batch_size, vocab_size - 1, generator=generator).argsort(-1) + 1  # (B, V-1), shuffled
    where = torch.arange(seq_len - 1) % periods  # (B, T-1): index into each row's pattern
    body = torch.gather(tokens, 1, where)  # (B, T-1)
    idx = torch.cat([torch.full((batch_size, 1), BOS), body], dim=1)  # (B, T)
    targets = torch.cat([idx[:, 1:], torch.full((batch_size, 1), -1)], dim=1)  # (B, T), shifted left
    targets = targets.masked_fill(torch.arange(seq_len) < periods, -1)  # first period unpredictable
    return idx, targets


# -- the model --------------------------------------------------------------------------


class AttentionOnlyTransformer(nn.Module):
    """Token + learned position embeddings, ``n_layer`` blocks ``x = x + MHA(LN(x))``, LN, unembedding.

    No feed-forward networks: whatever the model computes, its attention heads compute.

    Args:
        vocab_size: V.
        block_size: the longest sequence T.
        n_layer: number of attention layers.
        n_head: heads per layer.
        d_model: width (divisible by ``n_head``).
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int = 2, n_head: int = 4, d_model: int = 64):
        super().__init__()
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(block_size, d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layer))
        self.attns = nn.ModuleList(MultiHeadAttention(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, vocab_size, bias=False)

    def _run(self, idx: Tensor, need_weights: bool = False):
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"idx has {T} tokens but block_size={self.block_size}")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))  # (B, T, d)
        weights = []
        for norm, attn in zip(self.norms, self.attns):
            out = attn(norm(x), is_causal=True, need_weights=need_weights)
            if need_weights:
                out, w = out  # (B, T, d), (B, H, T, T)
                weights.append(w)
            x = x + out  # (B, T, d): the residual stream
        logits = self.unembed(self.ln_f(x))  # (B, T, V)
        return logits, weights

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``idx (B, T)`` -> ``(logits (B, T, V), loss or None)``; targets ``-1`` are ignored."""
        logits, _ = self._run(idx)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)  # (B*T, V) vs (B*T,)
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx: Tensor) -> Tensor:
        """Every layer's and head's weights, ``(n_layer, B, H, T, T)``."""
        return torch.stack(self._run(idx, need_weights=True)[1])


@contextlib.contextmanager
def _one_cpu_thread(model: nn.Module) -> Iterator[None]:
    """Within the block, torch uses one CPU thread if ``model`` is on the CPU.

    A model this small is fastest on one thread (more threads only add overhead), and
    one thread makes the run the same on machines with different numbers of cores.
    """
    threads = torch.get_num_threads()
    if next(model.parameters()).device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _window_means(losses: list[float], window: int) -> pd.DataFrame:
    """``step, loss``: the mean of each complete window of ``window`` losses, at its last step (1-based)."""
    rows = [
        {"step": end, "loss": sum(losses[end - window : end]) / window}
        for end in range(window, len(losses) + 1, window)
    ]
    return pd.DataFrame(rows)


def train_induction_model(
    model: nn.Module,
    steps: int = 400,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    log_every: int = 25,
    **task,
) -> pd.DataFrame:
    """Train ``model`` on :func:`repeated_sequences` (the induction task) with AdamW; return the loss curve.

    A call to :func:`~minitransformer.train.fit`: AdamW at a constant learning rate,
    no weight decay, no gradient clipping, on one CPU thread (if the model is on the CPU).

    Args:
        model: called as ``model(idx, targets) -> (logits, loss)``, ``idx (B, T)``.
        steps, batch_size, lr: the training run.
        seed: seeds the batches (the model's initialisation is the caller's).
        log_every: average the loss over windows of this many steps.
        task: keyword arguments of :func:`repeated_sequences` (``seq_len``, ``vocab_size``, ...).

    Returns:
        a DataFrame with columns ``step`` and ``loss`` (the mean of the last ``log_every`` steps),
        and ``attrs["seconds"]``, the wall-clock training time. The model ends in eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    device = next(model.parameters()).device

    def loss_fn(step: int) -> Tensor:
        idx, targets = repeated_sequences(batch_size, generator=g, **task)  # (B, T) each
        return model(idx.to(device), targets.to(device))[1]

    start = time.perf_counter()
    with _one_cpu_thread(model):
        history = fit(model, loss_fn, opt, steps, clip_norm=None, log_every=1, progress=False)
    curve = _window_means([r["loss"] for r in history], log_every)
    curve.attrs["seconds"] = time.perf_counter() - start
    return curve


# -- ablation ---------------------------------------------------------------------------


def attention_layers(model: nn.Module) -> list[MultiHeadAttention]:
    """The model's :class:`MultiHeadAttention` modules, in order (layer 0 first)."""
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no MultiHeadAttention modules")
    return layers


@contextlib.contextmanager
def ablate_heads(model: nn.Module, heads: Iterable[tuple[int, int]]) -> Iterator[None]:
    """Within the ``with`` block, the listed ``(layer, head)`` pairs output zeros.

    A head's output is its ``head_dim``-wide slice of the concatenation that
    ``W^O`` multiplies, so zeroing that slice removes exactly that head's
    contribution (``W^O``'s bias stays). Implemented with forward pre-hooks on
    ``W^O``, removed on exit.
    """
    layers = attention_layers(model)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        if not 0 <= layer < len(layers) or not 0 <= head < layers[layer].num_heads:
            shape = f"{len(layers)} layers of {layers[0].num_heads} heads"
            raise ValueError(f"no head ({layer}, {head}): the model has {shape}")
        by_layer.setdefault(layer, []).append(head)
    handles = []
    for layer, hs in by_layer.items():
        attn = layers[layer]

        def zero(module, inputs, hs=hs, hd=attn.head_dim):
            concat = inputs[0].clone()  # (B, T, H * hd): the heads side by side
            for h in hs:
                concat[..., h * hd : (h + 1) * hd] = 0.0
            return (concat,)

        handles.append(attn.out.register_forward_pre_hook(zero))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def evaluate(model: nn.Module, idx: Tensor, targets: Tensor) -> dict:
    """``{"loss": mean cross-entropy, "accuracy": share of argmax predictions that are right}``
    over the positions whose target is not ``-1``."""
    was_training = model.training
    model.eval()
    logits, loss = model(idx, targets)  # (B, T, V), ()
    model.train(was_training)
    scored = targets >= 0  # (B, T)
    accuracy = (logits.argmax(-1) == targets)[scored].double().mean().item()
    return {"loss": loss.item(), "accuracy": accuracy}


@torch.no_grad()
def ablation_table(model: nn.Module, idx: Tensor, targets: Tensor) -> pd.DataFrame:
    """Loss and accuracy with each head ablated in turn, and the loss increase over the intact model.

    Returns:
        a DataFrame with one row per head: ``layer``, ``head``, ``loss``, ``increase``,
        ``accuracy`` (``attrs["base_loss"]`` and ``attrs["base_accuracy"]`` hold the
        intact model's).
    """
    base = evaluate(model, idx, targets)
    rows = []
    for layer, attn in enumerate(attention_layers(model)):
        for head in range(attn.num_heads):
            with ablate_heads(model, [(layer, head)]):
                r = evaluate(model, idx, targets)
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "loss": r["loss"],
                    "increase": r["loss"] - base["loss"],
                    "accuracy": r["accuracy"],
                }
            )
    table = pd.DataFrame(rows)
    table.attrs["base_loss"], table.attrs["base_accuracy"] = base["loss"], base["accuracy"]
    return table


# -- what each head does ------------------------------------------------------------------

HEAD_ROLES = ("previous-token", "induction", "first-token", "self", "diffuse")


def _induction_targets(idx: Tensor) -> Tensor:
    """Bool ``(B, T, T)``: key ``j`` is an induction target of query ``t`` when ``j <= t`` and
    the token BEFORE ``j`` equals the token AT ``t`` (an earlier occurrence's successor)."""
    prev = torch.cat([torch.full_like(idx[:, :1], -1), idx[:, :-1]], dim=1)  # (B, T): token before each j
    match = idx[:, :, None] == prev[:, None, :]  # (B, T, T): idx[t] == idx[j - 1]
    T = idx.shape[1]
    return match & torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()


def head_scores(weights: Tensor, idx: Tensor, min_lift: float = 2.0) -> pd.DataFrame:
    """Per-head measures of where the attention goes, and a role for each head.

    Args:
        weights: ``(L, B, H, T, T)`` causal attention weights from ``attention_maps``.
        idx: the tokens ``(B, T)`` they were computed on.
        min_lift: how many times more than a uniform (causal) head a measure must be
            for the head to get that role.

    Returns:
        one row per head (``layer``, ``head``) with the mean weight, over queries
        ``t >= 1``, on the ``previous`` token ``t - 1``, on the ``first`` token (BOS),
        on ``self`` (``t``); the mean ``induction`` weight (on the successors of
        earlier occurrences of the current token, over the queries that have one);
        ``content``, how much the pattern changes from one input to the next (the
        mean total-variation distance between a row and the batch's average row:
        0 means the same weights for every input, a purely positional head); the
        mean ``entropy`` in nats; and the ``role``: the measure of the first four
        with the largest ratio to what a uniform head would score, if that ratio is
        at least ``min_lift``, else ``"diffuse"``.
    """
    if (
        weights.dim() != 5
        or weights.shape[-1] != weights.shape[-2]
        or weights.shape[1] != idx.shape[0]
        or weights.shape[-1] != idx.shape[1]
    ):
        raise ValueError(
            f"weights must be (L, B, H, T, T) matching idx (B, T) = {tuple(idx.shape)}, got {tuple(weights.shape)}"
        )
    L, B, H, T, _ = weights.shape
    w = weights.double()
    t = torch.arange(1, T)
    previous = w[..., t, t - 1].mean(dim=(1, 3))  # (L, H)
    first = w[..., 1:, 0].mean(dim=(1, 3))  # (L, H)
    self_ = w[..., t, t].mean(dim=(1, 3))  # (L, H)
    targets = _induction_targets(idx)  # (B, T, T)
    has = targets.any(-1)  # (B, T): queries with an earlier occurrence
    n_has = has.sum().clamp_min(1)
    on_target = (w * targets[None, :, None]).sum(-1)  # (L, B, H, T)
    induction = (on_target * has[None, :, None]).sum(dim=(1, 3)) / n_has  # (L, H)
    mean_row = w.mean(dim=1, keepdim=True)  # (L, 1, H, T, T): the batch's average pattern
    content = 0.5 * (w - mean_row).abs().sum(-1)[..., 1:].mean(dim=(1, 3))  # (L, H)
    entropy = -(w * w.clamp_min(1e-12).log()).sum(-1)[..., 1:].mean(dim=(1, 3))  # (L, H)
    # what a head spreading its weight uniformly over the t + 1 visible keys would score
    uniform_one = (1.0 / (t + 1.0)).mean().item()  # one key per query
    per_query = targets.sum(-1) / torch.arange(1, T + 1)  # (B, T): share of the targets
    uniform_induction = ((per_query * has).sum() / n_has).item()
    baseline = {"previous": uniform_one, "first": uniform_one, "self": uniform_one, "induction": uniform_induction}
    names = {"previous": "previous-token", "first": "first-token", "self": "self", "induction": "induction"}
    rows = []
    for layer in range(L):
        for head in range(H):
            s = {
                "previous": previous[layer, head].item(),
                "first": first[layer, head].item(),
                "self": self_[layer, head].item(),
                "induction": induction[layer, head].item(),
            }
            lift = {k: v / max(baseline[k], 1e-12) for k, v in s.items()}
            best = max(lift, key=lift.get)
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    **s,
                    "content": content[layer, head].item(),
                    "entropy": entropy[layer, head].item(),
                    "role": names[best] if lift[best] >= min_lift else "diffuse",
                }
            )
    return pd.DataFrame(rows)


# -- displays ------------------------------------------------------------------------------

_SHADES = ((0.05, "  "), (0.15, "··"), (0.35, "░░"), (0.6, "▒▒"), (0.85, "▓▓"), (2.0, "██"))


def text_attention_map(weights: Tensor, labels: str) -> str:
    """One head's ``(T, T)`` weights as shaded text (rows = queries), with each query's top key.

    Shades: blank < 0.05 <= ·· < 0.15 <= ░░ < 0.35 <= ▒▒ < 0.6 <= ▓▓ < 0.85 <= ██.
    """
    T = weights.shape[-1]
    if weights.shape != (T, T) or len(labels) != T:
        raise ValueError(f"weights must be (T, T) with T = len(labels) = {len(labels)}, got {tuple(weights.shape)}")
    lines = ["query      keys: " + "".join(f"{c} " for c in labels)]
    for t in range(T):
        row = weights[t]
        cells = "".join(next(s for limit, s in _SHADES if float(w) < limit) for w in row)
        j = int(row.argmax())
        lines.append(f"{t:>3} {labels[t]}  ->{j:>3} {labels[j]} {float(row[j]):.2f} |{cells}|")
    return "\n".join(lines)


def head_grid_chart(weights: Tensor, labels: str, size: int = 150, title: str = ""):
    """Heatmaps of every head, ``weights (L, H, T, T)``: one row of charts per layer."""
    import altair as alt

    L, H, T, _ = weights.shape
    w = weights.detach().cpu().double().numpy().round(3)
    rows = [
        (f"layer {l}", f"head {h}", q, f"{q}: {labels[q]}", k, f"{k}: {labels[k]}", w[l, h, q, k])
        for l in range(L)
        for h in range(H)
        for q in range(T)
        for k in range(q + 1)
    ]
    df = pd.DataFrame(rows, columns=["layer", "head", "query", "query token", "key", "key token", "weight"])
    return (
        alt.Chart(df)
        .mark_rect()
        .encode(
            x=alt.X("key:O", axis=alt.Axis(values=list(range(0, T, 5)), labelAngle=0)),
            y=alt.Y("query:O", axis=alt.Axis(values=list(range(0, T, 5)))),
            color=alt.Color(
                "weight:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), legend=alt.Legend(orient="bottom")
            ),
            tooltip=["query token", "key token", alt.Tooltip("weight:Q", format=".2f")],
        )
        .properties(width=size, height=size)
        .facet(row=alt.Row("layer:N", title=None), column=alt.Column("head:N", title=None), title=title)
    )
