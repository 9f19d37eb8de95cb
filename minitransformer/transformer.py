"""Encoder and decoder stacks and the encoder-decoder ``Transformer`` of "Attention Is All You Need".

* :class:`Encoder`: ``N`` :class:`EncoderLayer` s (bidirectional self-attention).
* :class:`Decoder`: ``N`` :class:`DecoderLayer` s; every layer's cross-attention
  reads the SAME final encoder output ``memory``.
* :class:`Transformer`: token embeddings scaled by ``sqrt(d_model)`` plus the
  sinusoidal position table, encoder, decoder, and a linear map to the target
  vocabulary. Trained with teacher forcing (``tgt_in`` is the target shifted
  right, starting with BOS); decoded autoregressively by :meth:`Transformer.greedy_decode`.

Pre-LN stacks (``norm_first=True``) end with a final LayerNorm (the residual
stream is never normalised otherwise; an RMSNorm with ``norm="rms"``); Post-LN
stacks do not need one.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn as nn
from torch import Tensor

from .attention import padding_mask
from .configs import TransformerConfig
from .kv_cache import KVCache
from .layers import DecoderLayer, EncoderLayer
from .norms import make_norm
from .positional import sinusoidal_encoding
from .validation import check_positive_int, describe

__all__ = ["Encoder", "Decoder", "Transformer"]


def _check_tokens(name: str, tokens: Tensor) -> None:
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
        raise ValueError(f"{name} must be an integer tensor (B, L), got {describe(tokens)}")


class _LayerStack(nn.Module):
    """``N`` identical layers (and a final LayerNorm for Pre-LN): what :class:`Encoder` and
    :class:`Decoder` share. A subclass names its layer class in ``layer_class``.

    Args:
        num_layers: ``N``.
        d_model, num_heads, d_ff, dropout, norm_first, activation, num_kv_heads:
            passed to every layer.
        **layer_kwargs: the layers' keyword options (``bias``, ``layer_norm_eps``,
            ``rotary``, ``ffn_dropout``, ``norm``, ``qk_norm``, ``qkv_bias``, ``out_bias``),
            passed to every layer; ``norm``, ``bias`` and ``layer_norm_eps`` also shape
            the final normalisation.
    """

    layer_class: type[EncoderLayer] | type[DecoderLayer]
    torch_class: type[nn.TransformerEncoder] | type[nn.TransformerDecoder]

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        norm_first: bool = False,
        activation: str = "relu",
        num_kv_heads: int | None = None,
        **layer_kwargs,
    ):
        super().__init__()
        check_positive_int("num_layers", num_layers)
        args = (d_model, num_heads, d_ff, dropout, norm_first, activation, num_kv_heads)
        self.layers = nn.ModuleList(self.layer_class(*args, **layer_kwargs) for _ in range(num_layers))
        self.norm = None
        if norm_first:  # the residual stream of a Pre-LN stack is normalised once, at the end
            eps, bias = layer_kwargs.get("layer_norm_eps", 1e-5), layer_kwargs.get("bias", True)
            self.norm = make_norm(layer_kwargs.get("norm", "layer"), d_model, eps, bias)

    @classmethod
    def from_torch(cls, stack: nn.TransformerEncoder | nn.TransformerDecoder):
        """Copy a batch-first ``torch.nn.TransformerEncoder`` / ``TransformerDecoder`` (the
        class matching ``cls``), its optional final ``norm`` included."""
        if not isinstance(stack, cls.torch_class):
            raise TypeError(f"from_torch expects torch.nn.{cls.torch_class.__name__}, got {type(stack).__name__}")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.layers = nn.ModuleList(cls.layer_class.from_torch(layer) for layer in stack.layers)
        new.norm = copy.deepcopy(stack.norm)
        return new.train(stack.training)


class Encoder(_LayerStack):
    """A stack of :class:`EncoderLayer` s (and a final LayerNorm for Pre-LN).

    Args: see :class:`_LayerStack` (``num_layers, d_model, num_heads, d_ff, dropout,
    norm_first, activation, num_kv_heads, **layer_kwargs``), and
        embedding: optional module run first, mapping token ids ``(B, S)`` (and
            ``token_types``) to ``(B, S, d_model)``, e.g. a BERT-style
            :class:`~minitransformer.embeddings.TokenEmbedding`; without it the encoder
            reads vectors.

    A BERT encoder (see :mod:`minitransformer.pretrained`): ``Encoder(6, 384, 12, 1536,
    activation="gelu", layer_norm_eps=1e-12, embedding=TokenEmbedding(30522, 384,
    max_positions=512, type_vocab_size=2, norm_eps=1e-12))`` (Post-LN, the default).
    """

    layer_class = EncoderLayer
    torch_class = nn.TransformerEncoder

    def __init__(self, *args, embedding: nn.Module | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.embedding = embedding

    @classmethod
    def from_torch(cls, stack: nn.TransformerEncoder) -> Encoder:
        new = super().from_torch(stack)
        new.embedding = None
        return new

    def _embed(self, x: Tensor, token_types: Tensor | None) -> Tensor:
        if self.embedding is not None:
            return self.embedding(x, token_types)  # (B, S) ids -> (B, S, d)
        if token_types is not None:
            raise ValueError("token_types needs an Encoder built with embedding=TokenEmbedding(..., type_vocab_size>0)")
        return x

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        need_weights: bool = False,
        positions: Tensor | None = None,
        token_types: Tensor | None = None,
    ):
        """Args:
            x: ``(B, S, d_model)`` embedded source, or token ids ``(B, S)`` if the encoder
                was built with an ``embedding`` (e.g. :class:`~minitransformer.embeddings.TokenEmbedding`).
            mask: bool, True = may attend, e.g. ``padding_mask(src, pad_id)`` ``(B, 1, 1, S)``.
            need_weights: also return each layer's self-attention weights.
            positions: RoPE positions ``(S,)`` or ``(B, S)`` for layers built with ``rotary``.
            token_types: segment ids ``(B, S)`` for the ``embedding`` (BERT's token types).

        Returns:
            ``memory (B, S, d_model)`` [, list of ``N`` weights ``(B, H, S, S)``].
        """
        x = self._embed(x, token_types)  # (B, S, d)
        weights = []
        for layer in self.layers:
            x = layer(x, mask, need_weights=need_weights, positions=positions)
            if need_weights:
                x, w = x  # (B, S, d), (B, H, S, S)
                weights.append(w)
        if self.norm is not None:
            x = self.norm(x)  # (B, S, d)
        return (x, weights) if need_weights else x

    def hidden_states(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        positions: Tensor | None = None,
        token_types: Tensor | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Every layer's input and output, and every layer's attention weights (for probing and parity tests).

        Args: as :meth:`forward`.

        Returns:
            ``(hidden, weights)``: ``N + 1`` tensors ``(B, S, d_model)`` (the embedded input,
            then each layer's output; the last one after the final norm of a Pre-LN stack)
            and ``N`` weights ``(B, H, S, S)``.
        """
        hidden, weights = [self._embed(x, token_types)], []  # [(B, S, d)]
        for layer in self.layers:
            h, w = layer(hidden[-1], mask, need_weights=True, positions=positions)  # (B, S, d), (B, H, S, S)
            hidden.append(h)
            weights.append(w)
        if self.norm is not None:
            hidden[-1] = self.norm(hidden[-1])  # (B, S, d)
        return hidden, weights


class Decoder(_LayerStack):
    """A stack of :class:`DecoderLayer` s (and a final LayerNorm for Pre-LN).

    Args: see :class:`_LayerStack` (``num_layers, d_model, num_heads, d_ff, dropout,
    norm_first, activation, num_kv_heads, **layer_kwargs``).
    """

    layer_class = DecoderLayer
    torch_class = nn.TransformerDecoder

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        *,
        is_causal: bool = True,
        self_caches: list[KVCache] | None = None,
        cross_caches: list[KVCache] | None = None,
        need_weights: bool = False,
        positions: Tensor | None = None,
    ):
        """Args:
            x: ``(B, T, d_model)`` embedded target (shifted right).
            memory: the final encoder output ``(B, S, d_model)``, fed to EVERY layer.
            self_mask, memory_mask, is_causal: as in :meth:`DecoderLayer.forward`.
            self_caches, cross_caches: one :class:`KVCache` per layer for incremental
                decoding.
            need_weights: also return the self- and cross-attention weights of each layer.
            positions: RoPE positions ``(T,)`` or ``(B, T)`` for layers built with
                ``rotary``.

        Returns:
            ``(B, T, d_model)`` [, list of self weights ``(B, H, T, T_total)``,
            list of cross weights ``(B, H, T, S)``].
        """
        n = len(self.layers)
        for name, caches in (("self_caches", self_caches), ("cross_caches", cross_caches)):
            if caches is not None and len(caches) != n:
                got = len(caches)
                raise ValueError(f"{name} must hold one KVCache per layer ({n}), got {got}")
        self_ws, cross_ws = [], []
        for i, layer in enumerate(self.layers):
            x = layer(
                x,
                memory,
                self_mask,
                memory_mask,
                is_causal=is_causal,
                self_cache=None if self_caches is None else self_caches[i],
                cross_cache=None if cross_caches is None else cross_caches[i],
                need_weights=need_weights,
                positions=positions,
            )
            if need_weights:
                x, sw, cw = x  # (B, T, d), (B, H, T, T_total), (B, H, T, S)
                self_ws.append(sw)
                cross_ws.append(cw)
        if self.norm is not None:
            x = self.norm(x)  # (B, T, d)
        return (x, self_ws, cross_ws) if need_weights else x


class Transformer(nn.Module):
    """The encoder-decoder transformer.

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes.
        d_model, num_heads, num_encoder_layers, num_decoder_layers, d_ff, dropout,
            norm_first, activation, num_kv_heads: the architecture (see :class:`EncoderLayer`).
        max_len: longest source or target sequence (rows of the position table).
        share_embeddings: one embedding matrix for source and target (needs equal vocabularies).
        tie_output: the output projection reuses the target embedding matrix (plus its own bias).
        pad_id: if given, padding masks are built from the tokens when none are passed.

    With ``share_embeddings`` and ``tie_output`` the paper's three matrices are one.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int = 512,
        num_heads: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        d_ff: int | None = None,
        dropout: float = 0.1,
        norm_first: bool = False,
        activation: str = "relu",
        num_kv_heads: int | None = None,
        *,
        max_len: int = 512,
        share_embeddings: bool = False,
        tie_output: bool = False,
        pad_id: int | None = None,
    ):
        super().__init__()
        for name, value in (
            ("src_vocab_size", src_vocab_size),
            ("tgt_vocab_size", tgt_vocab_size),
            ("max_len", max_len),
        ):
            check_positive_int(name, value)
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError(
                f"share_embeddings needs src_vocab_size == tgt_vocab_size, got {src_vocab_size} and {tgt_vocab_size}"
            )
        layer_args = (d_model, num_heads, d_ff, dropout, norm_first, activation, num_kv_heads)
        self.encoder = Encoder(num_encoder_layers, *layer_args)
        self.decoder = Decoder(num_decoder_layers, *layer_args)
        self.d_model, self.max_len, self.pad_id = d_model, max_len, pad_id
        self.src_embed = nn.Embedding(src_vocab_size, d_model)
        self.tgt_embed = self.src_embed if share_embeddings else nn.Embedding(tgt_vocab_size, d_model)
        self.generator = nn.Linear(d_model, tgt_vocab_size)  # logits over the target vocabulary
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model), persistent=False)  # (max_len, d)
        self.dropout = nn.Dropout(dropout)
        for p in self.parameters():  # Xavier, as in the Annotated Transformer
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        if tie_output:
            self.generator.weight = self.tgt_embed.weight

    @classmethod
    def from_config(cls, config: TransformerConfig, **overrides) -> Transformer:
        """Build from a :class:`~minitransformer.configs.TransformerConfig`: each field is the
        argument of the same name (keyword ``overrides`` replace fields)."""
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"from_config expects a TransformerConfig, got {type(config).__name__}")
        return cls(**{**dataclasses.asdict(config), **overrides})

    def num_parameters(self) -> int:
        """Number of distinct parameters (tied matrices counted once)."""
        return sum(p.numel() for p in self.parameters())

    # -- the pieces ------------------------------------------------------------
    def _embed(self, tokens: Tensor, table: nn.Embedding, name: str, start: int = 0) -> Tensor:
        _check_tokens(name, tokens)
        L = tokens.shape[1]
        if start + L > self.max_len:
            raise ValueError(f"{name} reaches position {start + L} > max_len={self.max_len}")
        x = table(tokens) * math.sqrt(self.d_model)  # (B, L, d)
        return self.dropout(x + self.pe[start : start + L])  # (B, L, d)

    def _pad_mask(self, tokens: Tensor, mask: Tensor | None) -> Tensor | None:
        if mask is None and self.pad_id is not None:
            return padding_mask(tokens, self.pad_id)  # (B, 1, 1, L)
        return mask

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """``src (B, S)`` -> ``memory (B, S, d_model)``. ``src_mask``: bool ``(B, 1, 1, S)``, True = real."""
        _check_tokens("src", src)
        return self.encoder(self._embed(src, self.src_embed, "src"), self._pad_mask(src, src_mask))

    def decode(
        self,
        tgt_in: Tensor,
        memory: Tensor,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        *,
        start: int = 0,
        self_caches: list[KVCache] | None = None,
        cross_caches: list[KVCache] | None = None,
    ) -> Tensor:
        """Decoder logits ``(B, T, tgt_vocab)`` for ``tgt_in (B, T)`` at positions ``start ..``.

        ``src_mask`` masks source padding, ``tgt_mask`` target padding (both ``(B, 1, 1, L)``,
        True = real token); the causal mask is always applied.
        """
        y = self._embed(tgt_in, self.tgt_embed, "tgt_in", start)  # (B, T, d)
        y = self.decoder(
            y, memory, tgt_mask, src_mask, is_causal=True, self_caches=self_caches, cross_caches=cross_caches
        )  # (B, T, d)
        return self.generator(y)  # (B, T, V)

    def forward(
        self, src: Tensor, tgt_in: Tensor, src_mask: Tensor | None = None, tgt_mask: Tensor | None = None
    ) -> Tensor:
        """Teacher-forced logits.

        Args:
            src: source tokens ``(B, S)``.
            tgt_in: target tokens shifted right, ``(B, T)`` (BOS first).
            src_mask: bool ``(B, 1, 1, S)``, True = real token; built from ``pad_id`` if None.
            tgt_mask: bool ``(B, 1, 1, T)`` for target padding; built from ``pad_id`` if None.

        Returns:
            logits ``(B, T, tgt_vocab)``: position ``t`` predicts target token ``t``.
        """
        _check_tokens("src", src)
        _check_tokens("tgt_in", tgt_in)
        if src.shape[0] != tgt_in.shape[0]:
            raise ValueError(f"src {tuple(src.shape)} and tgt_in {tuple(tgt_in.shape)} have different batch sizes")
        src_mask = self._pad_mask(src, src_mask)
        memory = self.encode(src, src_mask)  # (B, S, d)
        return self.decode(tgt_in, memory, src_mask, self._pad_mask(tgt_in, tgt_mask))  # (B, T, V)

    def attention_maps(self, src: Tensor, tgt_in: Tensor, src_mask: Tensor | None = None) -> dict[str, list[Tensor]]:
        """All attention weights of a teacher-forced pass, for plotting.

        Returns:
            ``{"encoder": [(B, H, S, S)] * N, "decoder_self": [(B, H, T, T)] * N,
            "cross": [(B, H, T, S)] * N}``.
        """
        _check_tokens("src", src)
        _check_tokens("tgt_in", tgt_in)
        src_mask = self._pad_mask(src, src_mask)
        memory, enc_w = self.encoder(self._embed(src, self.src_embed, "src"), src_mask, need_weights=True)
        y = self._embed(tgt_in, self.tgt_embed, "tgt_in")  # (B, T, d)
        _, self_w, cross_w = self.decoder(y, memory, self._pad_mask(tgt_in, None), src_mask, need_weights=True)
        return {"encoder": enc_w, "decoder_self": self_w, "cross": cross_w}

    @torch.no_grad()
    def greedy_decode(
        self,
        src: Tensor,
        max_len: int,
        bos_id: int,
        eos_id: int,
        src_mask: Tensor | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Autoregressive greedy decoding: feed BOS, append the argmax token, repeat.

        With ``use_cache`` every decoder layer keeps a :class:`KVCache` of its
        self-attention keys/values (one new position per step) and a static cache
        of the projected encoder output (computed at the first step, reused after),
        so each step runs the decoder on ONE new token. The tokens are identical
        either way. The model is run in eval mode (no dropout) and restored after.

        Args:
            src: ``(B, S)`` source tokens.
            max_len: how many tokens to generate at most (EOS included).
            bos_id, eos_id: start and end tokens.
            src_mask: as in :meth:`forward`.
            use_cache: decode incrementally with KV caches.

        Returns:
            the generated tokens ``(B, n)``, ``n <= max_len``, BOS not included (as the
            RNN models of chapters 1-2 return them); decoding stops when every sequence
            has produced EOS, and after its EOS a sequence is filled with ``pad_id``
            (``eos_id`` if the model has no ``pad_id``).
        """
        _check_tokens("src", src)
        check_positive_int("max_len", max_len)
        if max_len > self.max_len:
            limit = f"the model's max_len={self.max_len} positions"
            raise ValueError(f"max_len={max_len} exceeds {limit}")
        was_training = self.training
        self.eval()
        src_mask = self._pad_mask(src, src_mask)
        memory = self.encode(src, src_mask)  # (B, S, d)
        B, S = src.shape
        ys = torch.full((B, 1), bos_id, dtype=torch.long, device=src.device)  # (B, 1)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)  # (B,)
        fill = eos_id if self.pad_id is None else self.pad_id
        self_caches = cross_caches = None
        if use_cache:
            layers = self.decoder.layers
            self_caches = [self._new_cache(B, max_len, layer.self_attn) for layer in layers]
            cross_caches = [
                self._new_cache(B, S, layer.cross_attn, static=True)  # memory: once
                for layer in layers
            ]
        for step in range(max_len):
            if use_cache:
                logits = self.decode(
                    ys[:, -1:],
                    memory,
                    src_mask,
                    start=step,
                    self_caches=self_caches,
                    cross_caches=cross_caches,
                )  # (B, 1, V)
            else:
                logits = self.decode(ys, memory, src_mask)  # (B, step + 1, V)
            next_token = logits[:, -1].argmax(dim=-1).masked_fill(done, fill)  # (B,)
            ys = torch.cat([ys, next_token[:, None]], dim=1)  # (B, step + 2)
            done |= next_token == eos_id
            if bool(done.all()):
                break
        self.train(was_training)
        return ys[:, 1:]  # (B, n)

    def _new_cache(self, batch_size: int, length: int, attn, static: bool = False) -> KVCache:
        p = self.generator.weight
        return KVCache(
            batch_size, attn.num_kv_heads, length, attn.head_dim, device=p.device, dtype=p.dtype, static=static
        )
