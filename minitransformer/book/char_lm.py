"""A character-level GPT on Shakespeare: the recipe, a resumable trainer, and the book's checkpoint.

One training function serves three users: chapter 7's Lab 2 (a few hundred
iterations in the notebook), ``scripts/train_char_lm.py`` (the checkpoint the
book loads) and ``benchmarks/bench_char_lm.py`` (validation loss and speed,
our attention against ``F.scaled_dot_product_attention``).

The recipe (:attr:`CharLMRecipe.CPU`) is the well-known CPU setting for
"tiny Shakespeare" character models (nanoGPT's README): the model
:attr:`GPTConfig.CHAR_CPU <minitransformer.GPTConfig>` (4 layers, 4 heads,
``d_model`` 128, context 64, no dropout), batch 12, AdamW (betas 0.9/0.99,
weight decay 0.1 on matrices), learning rate 1e-3 with 100 warmup iterations
and cosine decay to 1e-4 at iteration 2000, gradient clipping at 1.0, on a
90/10 split of the ~1.1 MB corpus. Published: validation loss about 1.88.
:attr:`CharLMRecipe.GPU` is the larger GPU setting (``GPTConfig.CHAR_GPU``:
6 x 6 heads x 384, context 256, dropout 0.2; batch 64, 5000 iterations;
published about 1.47). A recipe holds the model's :class:`GPTConfig` and the
training fields, so the model sizes are written once, in the config presets.

Training is a call to :func:`~minitransformer.train.fit` per chunk of
iterations, and deterministic on the CPU: the weights come from
``torch.manual_seed(recipe.seed)`` and the batches from a generator seeded with
the same seed, so two runs of the same recipe give the same model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import torch
from torch import Tensor

from ..configs import GPTConfig
from ..data import CharLMData, Tokenizer, char_lm_splits, get_batch, load_shakespeare
from ..gpt import GPT
from ..train import History, fit, warmup_cosine_lr
from ..validation import check_positive_int

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CharLMRecipe",
    "CharLMTrainer",
    "CharLMRun",
    "train_char_lm",
    "estimate_loss",
    "save_char_lm",
    "load_char_lm",
    "LoadedCharLM",
    "sample_text",
    "shakespeare_data",
    "CHECKPOINT_PATH",
    "save_trained_char_lm",
    "sampling_chart",
    "head_browser_chart",
    "CHAR_HEAD_TARGETS",
    "character_head_targets",
    "ngram_loss",
]

#: Where ``scripts/train_char_lm.py`` writes the book's checkpoint (package data).
CHECKPOINT_PATH = Path(__file__).resolve().parent / "checkpoints" / "char_lm.pt"


_MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(GPTConfig))


@dataclass(frozen=True)
class CharLMRecipe:
    """A character-level GPT: the model (a :class:`~minitransformer.GPTConfig` preset, whose
    ``vocab_size`` is replaced by the corpus's) and its training schedule (see the module docstring).

    Args:
        model: the model's size (default :attr:`GPTConfig.CHAR_CPU`).
        batch_size: sequences of ``model.block_size`` characters per iteration.
        max_iters: iterations; the cosine decay ends here.
        lr, min_lr, warmup_iters: linear warmup to ``lr``, then cosine decay to ``min_lr``.
        weight_decay, betas: AdamW's (weight decay on matrices only).
        grad_clip: clip the global gradient norm to this (0: no clipping).
        train_frac: the share of the corpus to train on (the rest is the validation split).
        seed: of the initial weights and of the batches.
    """

    model: GPTConfig = GPTConfig.CHAR_CPU
    batch_size: int = 12
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    train_frac: float = 0.9
    seed: int = 1337

    CPU: ClassVar[CharLMRecipe]
    GPU: ClassVar[CharLMRecipe]

    def __post_init__(self):
        if not isinstance(self.model, GPTConfig):
            raise ValueError(f"model must be a GPTConfig, got {type(self.model).__name__}")
        for owner, name in [
            (self.model, "n_layer"),
            (self.model, "n_head"),
            (self.model, "d_model"),
            (self.model, "block_size"),
            (self, "batch_size"),
            (self, "max_iters"),
        ]:
            check_positive_int(name, getattr(owner, name))
        if not 0 <= self.warmup_iters <= self.max_iters:
            raise ValueError(f"warmup_iters={self.warmup_iters} must be in [0, max_iters={self.max_iters}]")
        if not 0 < self.min_lr <= self.lr:
            raise ValueError(f"need 0 < min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")

    def replace(self, **changes) -> CharLMRecipe:
        """A copy with some fields changed; fields of :class:`GPTConfig` change the model, e.g.
        ``CharLMRecipe.CPU.replace(max_iters=300)`` or ``CharLMRecipe.CPU.replace(d_model=64, n_layer=2)``."""
        model_changes = {k: changes.pop(k) for k in list(changes) if k in _MODEL_FIELDS}
        if model_changes:
            changes["model"] = dataclasses.replace(changes.get("model", self.model), **model_changes)
        return dataclasses.replace(self, **changes)

    @property
    def block_size(self) -> int:
        """The context length of the model (``model.block_size``), also the length of a training sequence."""
        return self.model.block_size

    def describe(self) -> str:
        """A one-line summary, e.g. ``"4x4x128, ctx 64, batch 12, 2000 it"`` (plus the dropout if any)."""
        m = self.model
        dropout = f", dropout {m.dropout}" if m.dropout else ""
        return (
            f"{m.n_layer}x{m.n_head}x{m.d_model}, ctx {m.block_size}, batch {self.batch_size}{dropout}, "
            f"{self.max_iters} it"
        )

    def gpt_config(self, vocab_size: int) -> GPTConfig:
        """The :class:`GPTConfig` of the model for a vocabulary of ``vocab_size`` characters."""
        return dataclasses.replace(self.model, vocab_size=vocab_size)

    def lr_at(self, iteration: int) -> float:
        """Learning rate of the ``iteration``-th update (0-based): warmup, then cosine to ``min_lr``."""
        return self.lr * warmup_cosine_lr(iteration, self.warmup_iters, self.max_iters, self.min_lr / self.lr)


CharLMRecipe.CPU = CharLMRecipe(model=GPTConfig.CHAR_CPU)
CharLMRecipe.GPU = CharLMRecipe(model=GPTConfig.CHAR_GPU, batch_size=64, max_iters=5000)


def shakespeare_data(train_frac: float = 0.9) -> CharLMData:
    """The Shakespeare corpus (:func:`~minitransformer.data.load_shakespeare`), encoded and split 90/10."""
    return char_lm_splits(load_shakespeare(), train_frac)


@torch.no_grad()
def estimate_loss(
    model: GPT, data: Tensor, n_batches: int = 200, batch_size: int = 12, block_size: int | None = None, seed: int = 0
) -> float:
    """Mean cross-entropy (nats per character) over ``n_batches`` random windows of ``data``.

    The windows are drawn from a generator seeded with ``seed``, so two models
    evaluated with the same arguments see exactly the same text. Runs in eval
    mode (no dropout) and restores the mode.
    """
    check_positive_int("n_batches", n_batches)
    block_size = model.block_size if block_size is None else block_size
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total = 0.0
    for _ in range(n_batches):
        x, y = get_batch(data, block_size, batch_size, g)  # (B, T), (B, T)
        _, loss = model(x.to(device), y.to(device))
        total += loss.item()
    model.train(was_training)
    return total / n_batches


class CharLMTrainer:
    """A GPT, its optimizer and its batch generator, advanced a few iterations at a time.

    ``step(n)`` runs ``n`` more iterations of the recipe and returns their wall
    time, so a benchmark can interleave two trainers chunk by chunk.

    Args:
        recipe: a :class:`CharLMRecipe`.
        data: from :func:`shakespeare_data` (or any :class:`CharLMData`).
        attn_backend: ``"minitransformer"``, ``"torch"`` or ``"flash"`` (see :class:`GPT`).
        device: where to train.
        log_every: record the training loss every this many iterations.
    """

    def __init__(
        self,
        recipe: CharLMRecipe,
        data: CharLMData,
        *,
        attn_backend: str = "minitransformer",
        device: torch.device | str = "cpu",
        log_every: int = 10,
    ):
        self.recipe, self.data, self.device, self.log_every = recipe, data, torch.device(device), log_every
        torch.manual_seed(recipe.seed)
        self.model = GPT.from_config(recipe.gpt_config(len(data.tokenizer)), attn_backend=attn_backend).to(self.device)
        self.optimizer = self.model.configure_optimizers(recipe.lr, recipe.weight_decay, recipe.betas)
        self.generator = torch.Generator().manual_seed(recipe.seed)  # the training batches
        self.iteration = 0
        self.seconds = 0.0
        self.history = History()

    @property
    def tokenizer(self) -> Tokenizer:
        return self.data.tokenizer

    def _loss(self, iteration: int) -> Tensor:
        """The training loss on the next batch of the trainer's generator."""
        r = self.recipe
        x, y = get_batch(self.data.train, r.block_size, r.batch_size, self.generator)  # (B, T), (B, T)
        return self.model(x.to(self.device), y.to(self.device))[1]

    def _logged(self, iteration: int) -> bool:
        """Whether to record the loss of the 1-based ``iteration``: every ``log_every``-th, the first, the last."""
        return iteration % self.log_every == 0 or iteration in (1, self.recipe.max_iters)

    def step(self, n: int = 1) -> float:
        """Run ``n`` iterations (never past ``recipe.max_iters``); returns their wall-clock seconds.

        The iterations are a call to :func:`~minitransformer.train.fit` that continues from
        ``self.iteration`` (learning rate ``recipe.lr_at``, clipping at ``recipe.grad_clip``).
        """
        r = self.recipe
        n = min(n, r.max_iters - self.iteration)
        start = time.perf_counter()
        if n > 0:
            records = fit(
                self.model,
                self._loss,
                self.optimizer,
                n,
                lr_fn=r.lr_at,
                clip_norm=r.grad_clip or None,
                log_when=self._logged,
                start_step=self.iteration,
                progress=False,
            )
            for record in records:
                record["time"] += self.seconds  # seconds since the trainer's first iteration
            self.history.extend(records)
            self.iteration += n
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        return elapsed

    def evaluate(self, n_batches: int = 200, seed: int = 0) -> dict:
        """Training and validation loss over ``n_batches`` fixed batches each; recorded in the history."""
        r = self.recipe
        row = {
            "step": self.iteration,
            "train_loss": estimate_loss(self.model, self.data.train, n_batches, r.batch_size, r.block_size, seed),
            "val_loss": estimate_loss(self.model, self.data.val, n_batches, r.batch_size, r.block_size, seed),
            "time": self.seconds,
        }
        self.history.append(row)
        return row

    @property
    def last_loss(self) -> float:
        """The most recently recorded training loss (NaN before the first iteration)."""
        return next((r["loss"] for r in reversed(self.history) if "loss" in r), float("nan"))

    def warm_up(self, n: int = 2) -> None:
        """Run ``n`` forward/backward passes on a COPY of the model (first-call overheads, outside
        any timing); the trainer's model, optimizer and batch generator are left untouched."""
        import copy

        model = copy.deepcopy(self.model).train()
        g = torch.Generator().manual_seed(self.recipe.seed + 1)
        for _ in range(n):
            x, y = get_batch(self.data.train, self.recipe.block_size, self.recipe.batch_size, g)
            model(x.to(self.device), y.to(self.device))[1].backward()

    @property
    def done(self) -> bool:
        return self.iteration >= self.recipe.max_iters


class CharLMRun(NamedTuple):
    """What :func:`train_char_lm` returns."""

    model: GPT
    tokenizer: Tokenizer
    history: History
    recipe: CharLMRecipe
    seconds: float  # wall time of the training iterations (evaluation not included)


def train_char_lm(
    recipe: CharLMRecipe = CharLMRecipe.CPU,
    *,
    data: CharLMData | None = None,
    attn_backend: str = "minitransformer",
    device: torch.device | str = "cpu",
    eval_every: int | None = None,
    eval_batches: int = 200,
    log_every: int = 10,
    progress: bool = True,
) -> CharLMRun:
    """Train a character-level GPT with ``recipe`` (a tqdm bar shows progress).

    Args:
        recipe: e.g. :attr:`CharLMRecipe.CPU`, or ``CharLMRecipe.CPU.replace(max_iters=300)``
            (the cosine schedule then decays over those 300 iterations).
        data: the encoded corpus (default: :func:`shakespeare_data` with ``recipe.train_frac``).
        attn_backend, device: see :class:`CharLMTrainer`.
        eval_every: evaluate training and validation loss every this many iterations
            (and at the end); ``None``: only at the end.
        eval_batches: batches per evaluation.
        log_every: record the training loss every this many iterations.
        progress: show a progress bar.

    Returns:
        a :class:`CharLMRun`; ``history.to_frame()`` has columns ``step, loss, lr, time``
        (training) and ``train_loss, val_loss`` (evaluations).
    """
    from tqdm.auto import tqdm

    data = shakespeare_data(recipe.train_frac) if data is None else data
    trainer = CharLMTrainer(recipe, data, attn_backend=attn_backend, device=device, log_every=log_every)
    # few, slow refreshes: each one is a widget message in a notebook
    with tqdm(total=recipe.max_iters, desc="char LM", disable=not progress, mininterval=1.0) as bar:
        while not trainer.done:
            n = log_every if eval_every is None else min(log_every, eval_every - trainer.iteration % eval_every)
            trainer.step(n)
            bar.update(n)
            bar.set_postfix(loss=f"{trainer.last_loss:.3f}", refresh=False)
            if eval_every is not None and trainer.iteration % eval_every == 0 and not trainer.done:
                trainer.evaluate(eval_batches)
    trainer.evaluate(eval_batches)
    trainer.model.eval()
    return CharLMRun(trainer.model, trainer.tokenizer, trainer.history, recipe, trainer.seconds)


# ------------------------------------------------------------------ the checkpoint
class LoadedCharLM(NamedTuple):
    """What :func:`load_char_lm` returns: the model (eval mode), its tokenizer and how it was trained."""

    model: GPT
    tokenizer: Tokenizer
    info: dict


def save_char_lm(
    model: GPT, tokenizer: Tokenizer, path: str | Path, info: dict | None = None, half: bool = True
) -> Path:
    """Save a character GPT: weights (float16 when ``half``, to halve the file), config, vocabulary, ``info``.

    ``info`` is stored as plain JSON types (tuples become lists), so the file loads with
    ``torch.load(..., weights_only=True)``.
    """
    cfg = {k: getattr(model, k) for k in ("vocab_size", "block_size", "n_layer", "n_head", "d_model", "positional")}
    cfg["bias"] = model.ln_f.bias is not None
    state = {
        k: (v.half() if half and v.is_floating_point() else v).cpu().clone() for k, v in model.state_dict().items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": "minitransformer.char_lm/1",
            "config": cfg,
            "chars": "".join(tokenizer.itos),
            "state_dict": state,
            "info": json.loads(json.dumps(info or {}, default=str)),
        },
        path,
    )
    return path


def load_char_lm(path: str | Path | None = None, device: torch.device | str = "cpu") -> LoadedCharLM:
    """Load the character GPT that ``scripts/train_char_lm.py`` trained (or any :func:`save_char_lm` file).

    Args:
        path: default :data:`CHECKPOINT_PATH` (shipped with the package).
        device: where to put the model.

    Returns:
        :class:`LoadedCharLM` ``(model, tokenizer, info)``; the model is float32 and in
        eval mode; ``info`` holds the recipe, iterations, losses and training time.
    """
    path = CHECKPOINT_PATH if path is None else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; make it with:  python scripts/train_char_lm.py")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != "minitransformer.char_lm/1":
        raise ValueError(f"{path} is not a minitransformer char-LM checkpoint")
    cfg = dict(blob["config"])
    tokenizer = Tokenizer(blob["chars"], specials=())
    if len(tokenizer) != cfg["vocab_size"]:
        raise ValueError(f"{path}: vocabulary has {len(tokenizer)} characters but vocab_size={cfg['vocab_size']}")
    model = GPT(
        cfg.pop("vocab_size"), cfg.pop("block_size"), cfg.pop("n_layer"), cfg.pop("n_head"), cfg.pop("d_model"), **cfg
    )
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    return LoadedCharLM(model.to(device).eval(), tokenizer, blob["info"])


def sample_text(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str = "\n",
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """Generate text after ``prompt`` (returned without the prompt); ``seed`` fixes the draws."""
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)  # (1, T0)
    g = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=g)
    return tokenizer.decode(out[0, idx.shape[1] :])


def save_trained_char_lm(
    model: GPT,
    data: CharLMData,
    recipe: CharLMRecipe,
    history: History,
    seconds: float,
    path: str | Path = CHECKPOINT_PATH,
    eval_batches: int = 200,
    **extra,
) -> dict:
    """Save a trained model with :func:`save_char_lm`, then measure what was STORED.

    The float32 model's losses and the training curve go into ``info``; the file
    is loaded back (float16 weights -> float32) and its training and validation
    losses over ``eval_batches`` fixed batches are recorded as ``info["val_loss"]``
    and ``info["train_loss"]``. Both training routes (``scripts/train_char_lm.py``
    and ``benchmarks/bench_char_lm.py --save-checkpoint``) call this.

    Returns:
        the ``info`` dict stored in the file.
    """
    r = recipe
    evals = [{k: round(v, 4) for k, v in row.items()} for row in history if "val_loss" in row]
    info = {
        "recipe": dataclasses.asdict(recipe),
        "iterations": max((row["step"] for row in history), default=0),
        "train_seconds": round(seconds, 1),
        "device": str(next(model.parameters()).device),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "date": dt.date.today().isoformat(),
        "evaluations": evals,
        "train_curve": [{"step": row["step"], "loss": round(row["loss"], 4)} for row in history if "loss" in row],
        **extra,
    }
    if evals:
        info["float32_val_loss"], info["float32_train_loss"] = evals[-1]["val_loss"], evals[-1]["train_loss"]
    path = save_char_lm(model, data.tokenizer, path, info)
    stored = load_char_lm(path).model
    info["val_loss"] = round(estimate_loss(stored, data.val, eval_batches, r.batch_size, r.block_size), 4)
    info["train_loss"] = round(estimate_loss(stored, data.train, eval_batches, r.batch_size, r.block_size), 4)
    info["eval_batches"] = eval_batches
    save_char_lm(model, data.tokenizer, path, info)
    return info


# ----------------------------------------------------------------------------------------
# Chapter 7's kernel-free charts: sampling rules and the heads of the character model.
# ----------------------------------------------------------------------------------------


def _show_char(c: str) -> str:
    return {" ": "␣", "\n": "¶"}.get(c, c)


def _wrap_lines(text: str, width: int) -> str:
    import textwrap

    lines = []
    for line in text.split("\n"):
        lines += textwrap.wrap(line, width, drop_whitespace=False) or ["\u200b"]  # a blank line: Vega trims spaces
    return "\n".join(lines)


def sampling_chart(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    temperatures: tuple[float, float, float] = (0.0, 2.0, 0.1),
    top_ks: tuple[int, ...] = (0, 1, 3, 10, 20),
    temperature: float = 0.8,
    top_k: int = 0,
    shown: int = 8,
    n_new: int = 160,
    seed: int = 0,
):
    """The next-character distribution after ``prompt`` and a sample, under a temperature slider
    and a top-k drop-down (precomputed for every position, so it responds without a kernel).

    The bars show the ``shown`` characters with the largest logits (their order does not
    depend on the rule) and the rest as "others", with the probability that
    :func:`~minitransformer.gpt.sampling_probs` gives each; the text is
    :func:`sample_text` with ``seed`` at the same setting.

    Args:
        model: a character :class:`~minitransformer.GPT`.
        tokenizer: its tokenizer.
        prompt: the text to continue (its last ``block_size`` characters are read).
        temperatures: ``(lowest, highest, step)`` of the temperature slider.
        top_ks: the drop-down's choices (0 = keep every character).
        temperature, top_k: the position shown first.
        shown: how many characters get a bar.
        n_new: characters sampled per position.
        seed: the sampling seed (the same for every position).

    Returns:
        a vertically concatenated ``alt`` chart with two bound parameters,
        ``temperature`` and ``top_k``.
    """
    import altair as alt
    import pandas as pd

    from ..gpt import sampling_probs
    from . import viz

    lo, hi, step = temperatures
    t_param = viz.slider("temperature", lo, hi, step, value=temperature, label="temperature")
    labels = ["all" if k == 0 else str(k) for k in top_ks]
    k_param = viz.picker("top_k", list(top_ks), value=top_k, label="top-k", labels=labels)
    ids = torch.tensor([tokenizer.encode(prompt[-model.block_size :])])  # (1, T)
    model.eval()
    with torch.no_grad():
        logits = model(ids)[0][:, -1].double()  # (1, V)
    order = logits[0].argsort(descending=True)[:shown].tolist()
    names = [repr(_show_char(tokenizer.itos[i])) for i in order] + ["others"]
    bars, texts = [], []
    for t in viz._positions(lo, hi, step):
        for k in top_ks:
            p = sampling_probs(logits, t, k or None)[0]  # (V,)
            top = [p[i].item() for i in order]
            for rank, (name, value) in enumerate(zip(names, [*top, 1.0 - sum(top)])):
                bars.append({"temperature": t, "top_k": k, "rank": rank, "char": name, "p": round(max(value, 0.0), 3)})
            sample = sample_text(model, tokenizer, prompt, n_new, temperature=t, top_k=k or None, seed=seed)
            texts.append({"temperature": t, "top_k": k, "text": _wrap_lines(prompt + sample, 72)})
    lines = max(x["text"].count("\n") + 1 for x in texts)
    head = prompt.split("\n")[-1][-24:]
    base = alt.Chart(pd.DataFrame(bars), title=f"next character after “…{head}”").encode(
        y=alt.Y("char:N", sort=names, title=None),
        x=alt.X("p:Q", scale=alt.Scale(domain=[0, 1]), title="probability"),
    )
    chart = (
        base.mark_bar(color="#4c78a8") + base.mark_text(align="left", dx=3).encode(text=alt.Text("p:Q", format=".3f"))
    ).properties(width=380, height=20 * len(names))
    chart = chart.transform_filter(viz.at_control(t_param)).transform_filter(viz.at_control(k_param))
    text = viz.text_panel(pd.DataFrame(texts), "text", width=560, height=15 * lines, title="a sample at this setting")
    text = text.transform_filter(viz.at_control(t_param)).transform_filter(viz.at_control(k_param))
    return alt.vconcat(chart, text).add_params(t_param, k_param)


def head_browser_chart(
    weights: Tensor, text: str, roles: list[str] | None = None, layer: int = 1, head: int = 3, size: int = 504
):
    """Every head's attention over one passage, one head at a time, chosen with two drop-downs.

    Each row is a query character, the shading its weights over the keys (weights under
    0.01 are left blank); a red dot marks each row's largest weight.

    Args:
        weights: ``(L, H, T, T)`` attention weights of the passage.
        text: the passage, ``T`` characters (spaces and line breaks are shown as ␣ and ¶).
        roles: optional ``L * H`` labels (layer by layer), shown in the title.
        layer, head: the head shown first.
        size: the map's width and height in pixels.

    Returns:
        an ``alt`` layered chart with two bound parameters, ``layer`` and ``head``.
    """
    import json as _json

    import altair as alt
    import pandas as pd

    from . import viz

    L, H, T, _ = weights.shape
    if len(text) != T:
        raise ValueError(f"{len(text)} characters for weights over {T} positions")
    if roles is not None and len(roles) != L * H:
        raise ValueError(f"need {L * H} roles (one per head, layer by layer), got {len(roles)}")
    w = (weights.detach().double() * 100).round().long()  # (L, H, T, T) in hundredths
    rows = []
    for l_ in range(L):
        for h_ in range(H):
            q, k = torch.nonzero(w[l_, h_], as_tuple=True)
            top = weights[l_, h_].argmax(-1)  # (T,)
            rows.append({"layer": l_, "head": h_, "q": q.tolist(), "k": k.tolist(), "w": w[l_, h_, q, k].tolist()})
            rows[-1]["top"] = [int(top[i]) for i in q.tolist()]
    pick_layer = viz.picker("layer", list(range(L)), value=layer, label="layer")
    pick_head = viz.picker("head", list(range(H)), value=head, label="head")
    names = _json.dumps([_show_char(c) for c in text])
    title = "'layer ' + layer + ', head ' + head"
    if roles is not None:
        title += f" + ' (role in the table: ' + {_json.dumps(list(roles))}[layer * {H} + head] + ')'"

    def axis(name: str) -> alt.Axis:
        return alt.Axis(title=name, labelExpr=f"{names}[datum.value]", labelAngle=0, labelFontSize=8)

    base = (
        alt.Chart(pd.DataFrame(rows), title=alt.TitleParams(text=alt.ExprRef(expr=title)))
        .transform_filter(viz.at_control(pick_layer))
        .transform_filter(viz.at_control(pick_head))
        .transform_flatten(["q", "k", "w", "top"])
        .transform_calculate(weight="datum.w / 100", key_char=f"{names}[datum.k]", query_char=f"{names}[datum.q]")
        .encode(
            x=alt.X("k:O", scale=alt.Scale(domain=list(range(T))), axis=axis("key")),
            y=alt.Y("q:O", scale=alt.Scale(domain=list(range(T))), axis=axis("query")),
        )
    )
    cells = base.mark_rect().encode(
        color=alt.Color("weight:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="weight"),
        tooltip=[
            alt.Tooltip("q:O", title="query"),
            alt.Tooltip("query_char:N", title="character"),
            alt.Tooltip("k:O", title="key"),
            alt.Tooltip("key_char:N", title="key character"),
            alt.Tooltip("weight:Q", format=".2f"),
        ],
    )
    dots = base.transform_filter("datum.k == datum.top").mark_point(color="#d62728", filled=True, size=12)
    return (cells + dots).add_params(pick_layer, pick_head).properties(width=size, height=size)


CHAR_HEAD_TARGETS = ("previous", "first letter of the word", "word start", "line start")


def _char_targets(text: str) -> Tensor:
    """For every query position of ``text``, the key each rule of :data:`CHAR_HEAD_TARGETS` points to.

    Args:
        text: the window's characters (length ``T``).

    Returns:
        ``(T, 4)`` long: the previous character (``t - 1``); the first letter of the current
        word (the character after the most recent space or line break at or before ``t``);
        that space or line break (the word's start, as the tokenizer sees it); the most recent
        line break at or before ``t``. ``-1`` where the rule points nowhere (before the window,
        or after ``t``).
    """
    out = torch.full((len(text), 4), -1, dtype=torch.long)
    space = line = -1
    for t, c in enumerate(text):
        if c in " \n":
            space = t
        if c == "\n":
            line = t
        out[t, 0] = t - 1
        out[t, 1] = space + 1 if space >= 0 and space + 1 <= t else -1
        out[t, 2] = space
        out[t, 3] = line
    return out


def character_head_targets(weights: Tensor, windows: Tensor, tokenizer: Tokenizer) -> pd.DataFrame:
    """How often each head of a character model puts its largest weight on a given character.

    For every layer, head and query (from the second position of each window on), the key with
    the largest weight is compared with the keys of :data:`CHAR_HEAD_TARGETS`; a rule that
    points nowhere for a query (no line break yet in the window, say) counts as a miss.

    Args:
        weights: ``(n_layer, B, H, T, T)`` attention weights (``GPT.attention_maps``).
        windows: ``(B, T)`` the token ids they were computed on.
        tokenizer: decodes ``windows`` to text.

    Returns:
        One row per (layer, head): the share of queries whose largest weight is on each target.
    """
    import pandas as pd

    L, B, H, T, _ = weights.shape
    if windows.shape != (B, T):
        raise ValueError(f"windows has shape {tuple(windows.shape)}; the weights need ({B}, {T})")
    targets = torch.stack([_char_targets(tokenizer.decode(w)) for w in windows])  # (B, T, 4)
    best = weights.argmax(-1)  # (L, B, H, T): the key of each query's largest weight
    hit = best[..., None] == targets[None, :, None]  # (L, B, H, T, 4)
    share = hit[:, :, :, 1:].float().mean((1, 3))  # (L, H, 4): over windows and queries 1..T-1
    rows = [
        {"layer": l, "head": h, **{name: share[l, h, i].item() for i, name in enumerate(CHAR_HEAD_TARGETS)}}
        for l in range(L)
        for h in range(H)
    ]
    return pd.DataFrame(rows)


def ngram_loss(train: Tensor, val: Tensor, vocab_size: int, n: int) -> float:
    """Cross-entropy (nats per character) on ``val`` of an add-one n-gram model counted on ``train``.

    ``p(x_t | the n - 1 characters before) = (count(context, x_t) + 1) / (count(context) + V)``,
    with the counts taken over the n-grams of ``train``; ``n = 1`` is the unigram model,
    ``n = 2`` the bigram. The counts are kept sparse (one entry per n-gram that occurs), so long
    contexts cost memory in proportion to the training text, not to ``V ** n``.

    Args:
        train: ``(N,)`` long character ids below ``vocab_size``.
        val: ``(M,)`` long character ids, ``M >= n``.
        vocab_size: ``V``.
        n: the order (1 = no context), with ``V ** n < 2 ** 62``.

    Returns:
        The mean of ``-log p(val[t] | val[t-n+1 .. t-1])`` over ``t = n-1 .. M-1``.
    """
    check_positive_int("n", n)
    if vocab_size**n >= 2**62:
        raise ValueError(f"vocab_size ** n = {vocab_size}**{n} does not fit an int64 key; use a smaller n")
    if len(val) < n or len(train) < n:
        raise ValueError(f"train and val need at least n = {n} characters")

    def keys(x: Tensor) -> Tensor:  # (len(x) - n + 1,): each n-gram as one base-V integer
        x = x.long()
        k = torch.zeros(len(x) - n + 1, dtype=torch.long)
        for i in range(n):
            k = k * vocab_size + x[i : len(x) - n + 1 + i]
        return k

    def lookup(table: Tensor, counts: Tensor, query: Tensor) -> Tensor:  # counts of query keys, 0 if unseen
        pos = torch.searchsorted(table, query).clamp_max(len(table) - 1)
        return torch.where(table[pos] == query, counts[pos], 0).double()

    grams, gram_counts = torch.unique(keys(train), return_counts=True)  # sorted
    contexts = torch.unique(grams // vocab_size)  # sorted contexts (the first n - 1 characters)
    context_counts = torch.zeros(len(contexts), dtype=torch.long).index_add_(
        0, torch.searchsorted(contexts, grams // vocab_size), gram_counts
    )
    q = keys(val)
    p = (lookup(grams, gram_counts, q) + 1) / (lookup(contexts, context_counts, q // vocab_size) + vocab_size)
    return -p.log().mean().item()
