"""A decoder-only language model (GPT) and the sampling rules of autoregressive generation.

A GPT block is a Pre-LN :class:`EncoderLayer` run with a causal mask: a
decoder-only model has no encoder, hence no cross-attention, so its "decoder"
layer has the encoder layer's two sub-layers. Tokens and positions are
embedded, ``n_layer`` blocks follow, then a final LayerNorm and a linear map
to the vocabulary (tied to the token embedding by default).

Beyond ``block_size``: the model has (learned) positions ``0 .. block_size-1``
only, so :meth:`GPT.forward` rejects longer inputs and :meth:`GPT.generate`
crops the context to its last ``block_size`` tokens (the nanoGPT behaviour).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .configs import GPTConfig
from .kv_cache import KVCache
from .layers import EncoderLayer
from .multihead import _check_backend
from .positional import sinusoidal_encoding
from .rotary import RotaryEmbedding
from .validation import check_positive_int, check_probability, describe

__all__ = ["GPT", "sampling_probs", "sample_next_token"]

POSITIONAL = ("learned", "sinusoidal", "rotary")


def _check_sampling(temperature: float, top_k: int | None) -> None:
    """``ValueError`` unless ``temperature`` is a number ``>= 0`` and ``top_k`` a positive int or None."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")


def sampling_probs(logits: Tensor, temperature: float = 1.0, top_k: int | None = None) -> Tensor:
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
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)  # (B, V)
    logits = logits / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1), the k-th largest
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
    probs = sampling_probs(logits, temperature, top_k)  # (B, V)
    if temperature == 0:
        return probs.argmax(dim=-1, keepdim=True)  # (B, 1), greedy
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


class GPT(nn.Module):
    """Decoder-only transformer language model.

    Args:
        vocab_size: number of tokens ``V``.
        block_size: the longest context (positions ``0 .. block_size-1``).
        n_layer, n_head, d_model: depth, heads, width (``d_model`` divisible by ``n_head``).
        dropout: on the embeddings, the attention weights and each residual branch
            (not on the FFN's hidden units, as in GPT-2 and nanoGPT).
        d_ff: FFN hidden width (``4 * d_model`` by default); GELU activation.
        num_kv_heads: grouped-query attention (default ``n_head``: ordinary multi-head).
        positional: ``"learned"`` (GPT-2, default), ``"sinusoidal"`` (fixed table)
            or ``"rotary"`` (RoPE on queries and keys, nothing added to the embeddings).
        tie_weights: the output projection shares the token embedding matrix.
        bias: biases in linear layers and LayerNorms.
        attn_backend: ``"minitransformer"``, ``"torch"`` (``F.scaled_dot_product_attention``)
            or ``"flash"`` (:mod:`minitransformer.flash`: the CuPy kernels on a GPU for
            training, and the split-KV decode kernel in ``generate(use_cache=True)``;
            needs ``dropout=0``); see :attr:`attn_backend`.

    Weights are initialised as GPT-2: normal(0, 0.02), zero biases, and the
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
        if positional not in POSITIONAL:
            raise ValueError(f"positional={positional!r} is not one of {POSITIONAL}")
        _check_backend(attn_backend)
        self.vocab_size, self.block_size, self.n_layer = vocab_size, block_size, n_layer
        self.n_head, self.d_model, self.positional = n_head, d_model, positional

        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(block_size, d_model) if positional == "learned" else None
        if positional == "sinusoidal":
            self.register_buffer("pe", sinusoidal_encoding(block_size, d_model), persistent=False)  # (T_max, d)
        rotary = RotaryEmbedding(d_model // n_head) if positional == "rotary" else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            EncoderLayer(
                d_model,
                n_head,
                d_ff,
                dropout,
                norm_first=True,
                activation="gelu",
                num_kv_heads=num_kv_heads,
                bias=bias,
                rotary=rotary,
                ffn_dropout=0.0,
            )
            for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(d_model, bias=bias)
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
        p = self.tok_emb.weight
        attn = self.blocks[0].self_attn
        return [
            KVCache(batch_size, attn.num_kv_heads, self.block_size, attn.head_dim, device=p.device, dtype=p.dtype)
            for _ in self.blocks
        ]

    # -- forward -----------------------------------------------------------------
    def _check_idx(self, idx: Tensor, past: int = 0, any_length: bool = False) -> None:
        if not isinstance(idx, Tensor) or idx.dim() != 2 or idx.is_floating_point() or idx.dtype == torch.bool:
            desc = f"{tuple(idx.shape)} {idx.dtype}" if isinstance(idx, Tensor) else type(idx).__name__
            raise ValueError(f"idx must be an integer tensor of token ids (B, T), got {desc}")
        T = idx.shape[1]
        if T == 0:
            raise ValueError(f"idx must hold at least one token, got shape {tuple(idx.shape)}")
        if past + T > self.block_size and not any_length:
            raise ValueError(
                f"idx has {T} tokens (after {past} cached) but block_size={self.block_size}; "
                "crop the context to the last block_size tokens"
            )
        lo, hi = torch.aminmax(idx)
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(f"idx holds ids in [{int(lo)}, {int(hi)}] but vocab_size={self.vocab_size}")

    def _hidden(self, idx: Tensor, kv_caches: list[KVCache] | None = None, need_weights: bool = False):
        """Final hidden states ``(B, T, d)`` [and each block's weights ``(B, H, T, S)``]."""
        past = 0 if kv_caches is None else len(kv_caches[0])
        self._check_idx(idx, past)
        T = idx.shape[1]
        x = self.tok_emb(idx)  # (B, T, d)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(past, past + T, device=idx.device))  # (B, T, d)
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

        Args:
            idx: token ids ``(B, T)``, ``T <= block_size`` (including cached positions).
            targets: ``(B, T)`` the next tokens (``idx`` shifted left); ``-1`` is ignored.
            kv_caches: from :meth:`new_kv_caches`; ``idx`` then holds only the NEW tokens,
                at positions ``len(cache) ..``, and the caches grow by ``T``.

        Returns:
            ``(logits (B, T, V), loss)``; loss is the mean cross-entropy, or None.
        """
        if targets is not None and (not isinstance(targets, Tensor) or targets.shape != idx.shape):
            raise ValueError(f"targets must have idx's shape {tuple(idx.shape)}, got {describe(targets)}")
        logits = self.lm_head(self._hidden(idx, kv_caches))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)  # (B*T, V) vs (B*T,)
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx: Tensor) -> Tensor:
        """Attention weights of every block and head: ``(n_layer, B, H, T, T)`` (eval mode, no dropout)."""
        was_training = self.training
        self.eval()
        _, weights = self._hidden(idx, need_weights=True)
        self.train(was_training)
        return torch.stack(weights)  # (L, B, H, T, T)

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
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

        Args:
            idx: prompt ``(B, T0)``, ``T0 >= 1`` (longer than ``block_size`` is cropped).
            max_new_tokens: how many tokens to add.
            temperature, top_k: see :func:`sampling_probs`.
            use_cache: decode incrementally with KV caches.
            generator: optional random generator for sampling.

        Returns:
            ``(B, T0 + max_new_tokens)``.
        """
        check_positive_int("max_new_tokens", max_new_tokens, minimum=0)
        _check_sampling(temperature, top_k)
        self._check_idx(idx, any_length=True)
        was_training = self.training
        self.eval()
        caches = None
        for _ in range(max_new_tokens):
            window = idx[:, -self.block_size :]  # (B, <= block_size)
            if not use_cache:
                logits, _ = self(window)  # (B, T, V)
            elif caches is None or len(caches[0]) == self.block_size:
                caches = self.new_kv_caches(idx.shape[0])  # (re)fill from the cropped window
                logits, _ = self(window, kv_caches=caches)  # (B, T, V)
            else:
                logits, _ = self(idx[:, -1:], kv_caches=caches)  # (B, 1, V)
            next_token = sample_next_token(logits[:, -1], temperature, top_k, generator)  # (B, 1)
            idx = torch.cat([idx, next_token], dim=1)  # (B, T + 1)
        self.train(was_training)
        return idx
