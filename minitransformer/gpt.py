"""A decoder-only language model (GPT) and the sampling rules of autoregressive generation.

A GPT block is a Pre-LN :class:`EncoderLayer` run with a causal mask: a
decoder-only model has no encoder, hence no cross-attention, so its "decoder"
layer has the encoder layer's two sub-layers. Tokens and positions are
embedded, ``n_layer`` blocks follow, then a final LayerNorm (or RMSNorm) and a linear map
to the vocabulary (tied to the token embedding by default).

Beyond ``block_size``: the model has (learned) positions ``0 .. block_size-1``
only, so :meth:`GPT.forward` rejects longer inputs and :meth:`GPT.generate`
crops the context to its last ``block_size`` tokens (the nanoGPT behaviour).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .configs import GPT_POSITIONAL, GPTConfig
from .kv_cache import KVCache
from .layers import EncoderLayer
from .multihead import _check_backend
from .norms import check_norm, make_norm
from .positional import sinusoidal_encoding
from .rotary import RotaryEmbedding
from .validation import check_bool, check_choice, check_positive_int, check_probability, describe

__all__ = ["GPT", "sampling_probs", "sample_next_token", "torch_threads", "DECODE_ONE_THREAD_MAX_MACS"]

POSITIONAL = GPT_POSITIONAL  # ("learned", "sinusoidal", "rotary")


def _check_sampling(temperature: float, top_k: int | None) -> None:
    """``ValueError`` unless ``temperature`` is a finite number ``>= 0`` and ``top_k`` a positive int or None."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
        raise ValueError(f"temperature must be a number >= 0 (and finite), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")


def sampling_probs(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> Tensor:
    """The distribution the next token is drawn from.

    Divide the logits by ``temperature`` (lower = sharper), keep only the
    ``top_k`` largest (the rest get probability 0), then softmax. At
    ``temperature == 0`` it is one-hot on the argmax (greedy decoding).

    Args:
        logits: ``(B, V)`` scores of the next token.
        temperature: ``>= 0``.
        top_k: keep the ``k`` most likely tokens; ``None`` keeps all (``k > V`` too).

    Returns:
        probabilities ``(B, V)``, each row summing to 1.
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be (B, V), got {describe(logits)}")
    _check_sampling(temperature, top_k)
    if temperature == 0:
        # (B, V)
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
    logits = logits / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        # (B, 1), the k-th largest
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))  # (B, V)
    return torch.softmax(logits, dim=-1)  # (B, V)


def sample_next_token(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Pick the next token: argmax at ``temperature == 0``, else one draw from :func:`sampling_probs`.

    Args:
        logits: ``(B, V)``.
        temperature, top_k: see :func:`sampling_probs`.
        generator: optional random generator for the draw.

    Returns:
        token ids ``(B, 1)``.
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be (B, V), got {describe(logits)}")
    _check_sampling(temperature, top_k)
    _check_generator(generator)
    return _sample(logits, temperature, top_k, generator)  # (B, 1)


def _sample(logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None) -> Tensor:
    """:func:`sample_next_token` without its checks (``generate`` checks once per call): ``(B, V) -> (B, 1)``.

    The argmax of the logits is the argmax of :func:`sampling_probs`' one-hot rows, computed directly.
    """
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1), greedy
    return torch.multinomial(sampling_probs(logits, temperature, top_k), num_samples=1, generator=generator)  # (B, 1)


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {describe(generator)}")


#: A one-token decoding step with at most this many multiply-adds (a few milliseconds on one
#: core) runs on ONE torch thread in :meth:`GPT.generate`: such a step is ~100 tiny operations,
#: and waking a second OpenMP thread for each costs more than the thread saves (50-60 us per
#: operation with ``OMP_WAIT_POLICY=PASSIVE``, where the idle threads sleep).
DECODE_ONE_THREAD_MAX_MACS = 1 << 24


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(num_threads)``, then restore the caller's count.

    The count is restored also when the body raises. torch's thread count is
    process-wide: other Python threads see the change while the body runs.

    Args:
        num_threads: the count inside the body; ``None`` (or the current count) changes nothing.
    """
    before = torch.get_num_threads()
    if num_threads is None or num_threads == before:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class GPT(nn.Module):
    """Decoder-only transformer language model.

    Args:
        vocab_size: number of tokens ``V``.
        block_size: the longest context (positions ``0 .. block_size-1``).
        n_layer, n_head, d_model: depth, heads, width (``d_model`` divisible by ``n_head``).
        dropout: on the embeddings, the attention weights and each residual branch
            (not on the FFN's hidden units, as in GPT-2 and nanoGPT).
        d_ff: FFN hidden width (``4 * d_model`` by default; for a gated FFN with the
            same parameter count use :func:`~minitransformer.layers.glu_d_ff`).
        num_kv_heads: grouped-query attention (default ``n_head``: ordinary multi-head).
        positional: ``"learned"`` (GPT-2, default), ``"sinusoidal"`` (fixed table)
            or ``"rotary"`` (RoPE on queries and keys, nothing added to the embeddings).
        tie_weights: the output projection shares the token embedding matrix.
        bias: biases in linear layers and LayerNorms.
        attn_backend: ``"minitransformer"``, ``"torch"`` (``F.scaled_dot_product_attention``)
            or ``"flash"`` (:mod:`minitransformer.flash`: the CuPy kernels on a GPU for
            training, and the split-KV decode kernel in ``generate(use_cache=True)``;
            needs ``dropout=0``); see :attr:`attn_backend`.
        activation: the FFN's, ``"gelu"`` (exact, default), ``"gelu_tanh"`` (GPT-2's),
            ``"relu"``, ``"swiglu"`` or ``"geglu"`` (gated; Llama uses ``"swiglu"``).
        norm: ``"layer"`` (LayerNorm, default) or ``"rms"`` (RMSNorm) in the blocks and at the end.
        norm_eps: the normalisations' epsilon.
        qk_norm: RMSNorm of every query and key head before RoPE (OLMo 2, Qwen3).
        qkv_bias, out_bias: the attention projections' biases if they should differ from ``bias``.
        rope_base: RoPE's wavelength base with ``positional="rotary"`` (Llama 3: 500000).

    A Llama-style model: ``GPT(V, T, L, H, d, d_ff=glu_d_ff(d), num_kv_heads=H_kv,
    positional="rotary", tie_weights=False, bias=False, activation="swiglu", norm="rms")``.

    Weights are initialised as GPT-2: normal(0, 0.02), zero biases, unit norm gains, and the
    projections that write into the residual stream scaled by ``1/sqrt(2 n_layer)``.
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        d_model: int,
        dropout: float = 0.0,
        *,
        d_ff: int | None = None,
        num_kv_heads: int | None = None,
        positional: str = "learned",
        tie_weights: bool = True,
        bias: bool = True,
        attn_backend: str = "minitransformer",
        activation: str = "gelu",
        norm: str = "layer",
        norm_eps: float = 1e-5,
        qk_norm: bool = False,
        qkv_bias: bool | None = None,
        out_bias: bool | None = None,
        rope_base: float = 10000.0,
    ):
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("block_size", block_size),
            ("n_layer", n_layer),
            ("n_head", n_head),
            ("d_model", d_model),
        ):
            check_positive_int(name, value)
        if d_model % n_head != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_head={n_head}")
        check_probability("dropout", dropout)
        check_choice("positional", positional, POSITIONAL)
        _check_backend(attn_backend)
        check_norm(norm)
        self.vocab_size, self.block_size, self.n_layer = vocab_size, block_size, n_layer
        self.n_head, self.d_model, self.positional = n_head, d_model, positional

        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(block_size, d_model) if positional == "learned" else None
        if positional == "sinusoidal":
            self.register_buffer("pe", sinusoidal_encoding(block_size, d_model), persistent=False)  # (T_max, d)
        rotary = RotaryEmbedding(d_model // n_head, base=rope_base) if positional == "rotary" else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            EncoderLayer(
                d_model,
                n_head,
                d_ff,
                dropout,
                norm_first=True,
                activation=activation,
                num_kv_heads=num_kv_heads,
                bias=bias,
                layer_norm_eps=norm_eps,
                rotary=rotary,
                ffn_dropout=0.0,
                norm=norm,
                qk_norm=qk_norm,
                qkv_bias=qkv_bias,
                out_bias=out_bias,
            )
            for _ in range(n_layer)
        )
        self.ln_f = make_norm(norm, d_model, norm_eps, bias)  # final LayerNorm (or RMSNorm)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("self_attn.out.weight") or name.endswith("ffn.linear2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))
        self.attn_backend = attn_backend

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @classmethod
    def from_config(cls, config: GPTConfig, **overrides) -> GPT:
        """Build from a :class:`~minitransformer.configs.GPTConfig`: each field is the argument of
        the same name (keyword ``overrides`` replace fields or add ``attn_backend``)."""
        if not isinstance(config, GPTConfig):
            raise TypeError(f"from_config expects a GPTConfig, got {type(config).__name__}")
        return cls(**{**dataclasses.asdict(config), **overrides})

    @property
    def attn_backend(self) -> str:
        """The attention implementation of every block; assign to switch (e.g. in a benchmark)."""
        return self.blocks[0].self_attn.backend

    @attn_backend.setter
    def attn_backend(self, name: str) -> None:
        for block in self.blocks:
            block.self_attn.backend = name

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Distinct parameters (tied matrices once); ``non_embedding`` leaves out the position table."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.pos_emb is not None:
            n -= self.pos_emb.weight.numel()
        return n

    def configure_optimizers(
        self, lr: float = 1e-3, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95)
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices (linear and embedding weights) only, not on biases or norms."""
        params = {id(p): p for p in self.parameters() if p.requires_grad}.values()
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)

    def new_kv_caches(self, batch_size: int) -> list[KVCache]:
        """One empty :class:`KVCache` per block, each with room for ``block_size`` positions."""
        check_positive_int("batch_size", batch_size, where="new_kv_caches")
        p = self.tok_emb.weight
        attn = self.blocks[0].self_attn
        return [
            KVCache(batch_size, attn.num_kv_heads, self.block_size, attn.head_dim, device=p.device, dtype=p.dtype)
            for _ in self.blocks
        ]

    # -- checks: once per public call, before any work ---------------------------------------
    def _check_idx(self, idx: Tensor, past: int = 0, any_length: bool = False) -> None:
        """``idx``: an integer tensor ``(B, T)``, ``B, T >= 1``, ids in ``[0, vocab_size)``, on the
        model's device, ``past + T <= block_size`` (unless ``any_length``)."""
        self._check_ids("idx", idx)
        T = idx.shape[1]
        if past + T > self.block_size and not any_length:
            raise ValueError(
                f"idx has {T} tokens (after {past} cached) but block_size={self.block_size}; "
                "crop the context to the last block_size tokens"
            )
        lo, hi = torch.stack(torch.aminmax(idx)).tolist()  # one synchronisation
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(f"idx holds ids in [{lo}, {hi}] but vocab_size={self.vocab_size}")

    def _check_ids(self, name: str, t: Tensor) -> None:
        """Type, rank and device of ``idx`` or ``targets`` (``TypeError`` / ``ValueError`` naming ``name``)."""
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be an integer tensor of token ids (B, T), got {describe(t)}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor of token ids (B, T), got dtype {t.dtype}")
        if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
            raise ValueError(f"{name} must be token ids (B, T) with B, T >= 1, got shape {tuple(t.shape)}")
        device = self.tok_emb.weight.device
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but the model is on {device}; move it with .to({str(device)!r})")

    def _check_targets(self, targets: Tensor, idx: Tensor) -> None:
        """``targets``: integer ``(B, T)`` like ``idx``, ids in ``[0, vocab_size)`` or ``-1`` (ignored)."""
        self._check_ids("targets", targets)
        if targets.shape != idx.shape:
            raise ValueError(f"targets must have idx's shape {tuple(idx.shape)}, got {tuple(targets.shape)}")
        lo, hi = torch.stack(torch.aminmax(targets)).tolist()  # one synchronisation
        if lo < -1 or hi >= self.vocab_size:
            raise ValueError(
                f"targets holds ids in [{lo}, {hi}] but must be in [0, vocab_size={self.vocab_size}) or -1 (ignored)"
            )

    def _check_kv_caches(self, kv_caches: list[KVCache], idx: Tensor) -> int:
        """One growing :class:`KVCache` per block that fits the model and ``idx`` (checked too, with the
        cached positions); returns the cached length."""
        if not isinstance(kv_caches, (list, tuple)) or not all(isinstance(c, KVCache) for c in kv_caches):
            raise TypeError(f"kv_caches must be a list of KVCache (from new_kv_caches), got {describe(kv_caches)}")
        if len(kv_caches) != self.n_layer:
            raise ValueError(f"kv_caches must hold one KVCache per block ({self.n_layer}), got {len(kv_caches)}")
        attn, p = self.blocks[0].self_attn, self.tok_emb.weight
        B, T, past = idx.shape[0], idx.shape[1], len(kv_caches[0])
        for i, c in enumerate(kv_caches):
            _, H, _, D = c.k.shape
            if c.static:
                raise ValueError(f"kv_caches[{i}] is static (cross-attention); use new_kv_caches")
            if (c.k.shape[0], H, D) != (B, attn.num_kv_heads, attn.head_dim) or c.k.dtype != p.dtype:
                raise ValueError(
                    f"kv_caches[{i}] is {c!r} but this model and idx {tuple(idx.shape)} need B={B}, "
                    f"H_kv={attn.num_kv_heads}, head_dim={attn.head_dim}, dtype={p.dtype}; use new_kv_caches"
                )
            if c.k.device != p.device:
                raise ValueError(f"kv_caches[{i}] is on {c.k.device} but the model is on {p.device}")
            if len(c) != past:
                raise ValueError(f"kv_caches hold different lengths ({past} in kv_caches[0], {len(c)} in [{i}])")
        self._check_idx(idx, past)  # past + T <= block_size, ...
        for i, c in enumerate(kv_caches):  # ... and the caches have room (one made by hand may be shorter)
            if past + T > c.max_len:
                raise ValueError(f"kv_caches[{i}] holds {past} of max_len={c.max_len} positions: no room for {T} more")
        return past

    # -- forward -----------------------------------------------------------------------------
    def _hidden(
        self,
        idx: Tensor,
        kv_caches: list[KVCache] | None = None,
        need_weights: bool = False,
    ):
        """Final hidden states ``(B, T, d)`` [and each block's weights ``(B, H, T, S)``].

        No checks: :meth:`forward`, :meth:`attention_maps` and :meth:`generate` check their
        arguments once, before calling this (every step of ``generate`` calls it).
        """
        past = 0 if kv_caches is None else len(kv_caches[0])
        T = idx.shape[1]
        x = self.tok_emb(idx)  # (B, T, d)
        if self.pos_emb is not None:
            # (B, T, d)
            x = x + self.pos_emb(torch.arange(past, past + T, device=idx.device))
        elif self.positional == "sinusoidal":
            x = x + self.pe[past : past + T]  # (B, T, d)
        x = self.drop(x)
        weights = []
        for i, block in enumerate(self.blocks):
            cache = None if kv_caches is None else kv_caches[i]
            x = block(x, is_causal=True, kv_cache=cache, need_weights=need_weights)
            if need_weights:
                x, w = x  # (B, T, d), (B, H, T, S)
                weights.append(w)
        x = self.ln_f(x)  # (B, T, d)
        return (x, weights) if need_weights else x

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, kv_caches: list[KVCache] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Next-token logits (and the loss when targets are given).

        Every argument is checked before any work.

        Args:
            idx: token ids ``(B, T)``, an integer tensor with ids in ``[0, vocab_size)``,
                ``T <= block_size`` (including cached positions).
            targets: ``(B, T)`` the next tokens (``idx`` shifted left), integer ids in
                ``[0, vocab_size)``; ``-1`` is ignored.
            kv_caches: from :meth:`new_kv_caches`; ``idx`` then holds only the NEW tokens,
                at positions ``len(cache) ..``, and the caches grow by ``T``.

        Returns:
            ``(logits (B, T, V), loss)``; loss is the mean cross-entropy, or None.

        Raises:
            TypeError: ``idx`` or ``targets`` is not an integer tensor; ``kv_caches`` not a list of KVCache.
            ValueError: wrong shapes, ids out of range, too long a context, caches that do not fit.
        """
        if kv_caches is None:
            self._check_idx(idx)
        else:
            self._check_ids("idx", idx)
            self._check_kv_caches(kv_caches, idx)
        if targets is not None:
            self._check_targets(targets, idx)
        logits = self.lm_head(self._hidden(idx, kv_caches))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten().long(), ignore_index=-1)  # (B*T, V), (B*T,)
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx: Tensor) -> Tensor:
        """Attention weights of every block and head: ``(n_layer, B, H, T, T)`` (eval mode, no dropout)."""
        self._check_idx(idx)
        was_training = self.training
        self.eval()
        try:
            _, weights = self._hidden(idx, need_weights=True)
        finally:
            self.train(was_training)
        return torch.stack(weights)  # (L, B, H, T, T)

    def _decode_threads(self, batch_size: int) -> int | None:
        """Threads for a one-token step: 1 when its work is tiny on a CPU, else None (keep the caller's).

        The work of a step is about ``B * (parameters + 2 * n_layer * block_size * d_model)``
        multiply-adds (every weight once, attention over at most ``block_size`` cached positions);
        at most :data:`DECODE_ONE_THREAD_MAX_MACS` counts as tiny.
        """
        if self.tok_emb.weight.device.type != "cpu":
            return None
        attention = 2 * self.n_layer * self.block_size * self.d_model  # q k^T and weights v over the whole window
        macs = batch_size * (self.num_parameters(non_embedding=True) + attention)
        return 1 if macs <= DECODE_ONE_THREAD_MAX_MACS else None

    def _build_tables(self) -> None:
        """Build the tables the blocks keep between calls (RoPE's cos/sin) for every position
        up to ``block_size``, outside inference mode.

        The one-token steps of :meth:`generate` run in ``torch.inference_mode()`` (cheaper per
        operation than ``no_grad``); a table first built there would be an inference tensor,
        which a later training step could not save for backward.
        """
        p = self.tok_emb.weight
        rotaries = {id(b.self_attn.rotary): b.self_attn.rotary for b in self.blocks if b.self_attn.rotary is not None}
        for rotary in rotaries.values():
            x = torch.zeros(1, 1, 1, rotary.head_dim, device=p.device, dtype=p.dtype)  # (1, 1, 1, hd)
            rotary(x, torch.tensor([self.block_size - 1], device=p.device))  # fills positions 0 .. block_size - 1

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        *,
        decode_threads: int | None = None,
    ) -> Tensor:
        """Extend ``idx`` by ``max_new_tokens`` tokens, one at a time.

        Each step feeds the context, takes the last position's logits and picks
        the next token with :func:`sample_next_token` (greedy at ``temperature == 0``).
        The context is cropped to its last ``block_size`` tokens. With
        ``use_cache`` each block keeps a :class:`KVCache`, so a step feeds ONE
        token; once the cache is full the window slides, every position shifts,
        and the cache is refilled from the cropped window (so past ``block_size``
        a step costs as much as without a cache). The cached and uncached paths
        draw from the random generator identically: with the same seed they
        return the same tokens. Runs in eval mode (no dropout), then restores the mode.

        The arguments are checked once, before the first step; the steps themselves
        run unchecked. The one-token steps run in ``torch.inference_mode()``, and those
        of a small model on a CPU on one torch thread (see :data:`DECODE_ONE_THREAD_MAX_MACS`;
        waking a second thread for each tiny operation costs more than it saves); the
        prompt (and every refill) keeps the caller's thread count, which is restored when
        ``generate`` returns or raises. The returned tensor is a normal tensor.

        Args:
            idx: prompt ``(B, T0)``, integer ids, ``T0 >= 1`` (longer than ``block_size`` is cropped).
            max_new_tokens: how many tokens to add.
            temperature, top_k: see :func:`sampling_probs`.
            use_cache: decode incrementally with KV caches.
            generator: optional random generator for sampling.
            decode_threads: torch threads for the one-token cached steps; ``None`` picks 1 for
                a tiny step and the caller's count otherwise (``torch.get_num_threads()`` keeps it).

        Returns:
            ``(B, T0 + max_new_tokens)``, ``torch.long`` (``idx`` itself when ``max_new_tokens == 0``).

        Raises:
            TypeError / ValueError: a bad argument, before any work.
        """
        check_positive_int("max_new_tokens", max_new_tokens, minimum=0)
        _check_sampling(temperature, top_k)
        check_bool("use_cache", use_cache)
        _check_generator(generator)
        if decode_threads is not None:
            check_positive_int("decode_threads", decode_threads)
        self._check_idx(idx, any_length=True)
        if max_new_tokens == 0:
            return idx
        B, T0 = idx.shape
        threads = self._decode_threads(B) if decode_threads is None else decode_threads
        out = torch.empty(B, T0 + max_new_tokens, dtype=torch.long, device=idx.device)  # (B, T0 + n)
        out[:, :T0] = idx
        if use_cache:
            self._build_tables()
        was_training = self.training
        self.eval()
        try:
            caches = None
            for t in range(T0, T0 + max_new_tokens):  # out[:, :t] is known; pick out[:, t]
                one_token = use_cache and caches is not None and len(caches[0]) < self.block_size
                fast = torch.inference_mode() if one_token else contextlib.nullcontext()
                with torch_threads(threads if one_token else None), fast:  # tiny steps: `threads` threads
                    if one_token:  # the new token against the caches
                        logits = self.lm_head(self._hidden(out[:, t - 1 : t], caches))  # (B, 1, V)
                    else:
                        window = out[:, max(0, t - self.block_size) : t]  # (B, <= block_size)
                        if use_cache:  # (re)fill the caches from the cropped window
                            caches = self.new_kv_caches(B) if caches is None else caches
                            for cache in caches:
                                cache.reset()
                        logits = self.lm_head(self._hidden(window, caches))  # (B, T, V)
                    out[:, t : t + 1] = _sample(logits[:, -1], temperature, top_k, generator)  # (B, 1)
        finally:
            self.train(was_training)
        return out
