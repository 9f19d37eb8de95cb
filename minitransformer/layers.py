"""The transformer block: a position-wise feed-forward network and the encoder / decoder layers.

An encoder layer has two sub-layers, self-attention (mixes information ACROSS
positions) and a feed-forward network (transforms each position ALONE). A
decoder layer puts cross-attention to the encoder's output between them.
Every sub-layer ``F`` is wrapped in a residual connection and a LayerNorm:

* Post-LN (the original paper, ``norm_first=False``)::

      Z   = LN(X + MHA(X))
      out = LN(Z + FFN(Z))

* Pre-LN (GPT-2 and most modern models, ``norm_first=True``)::

      x = x + MHA(LN(x))
      x = x + FFN(LN(x))

Modern (Llama / Qwen / OLMo style) blocks change three parts, each an option:
``norm="rms"`` (RMSNorm instead of LayerNorm, see :mod:`minitransformer.norms`),
a gated feed-forward network (``activation="swiglu"`` or ``"geglu"``,
``FFN(x) = W_2(act(W_1 x) * W_3 x)``) and, in attention, ``qk_norm=True`` and
separate ``qkv_bias``/``out_bias`` switches (see :class:`MultiHeadAttention`).

Masks follow the package convention: bool, True = MAY attend. Dropout is
applied to each sub-layer's output before it is added to the residual stream
(and inside attention and the FFN), exactly as ``torch.nn.TransformerEncoderLayer``
does, so ``from_torch`` copies give identical outputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .kv_cache import KVCache
from .multihead import MultiHeadAttention
from .norms import check_norm, make_norm
from .validation import check_choice, check_positive_int, check_probability

__all__ = ["FeedForward", "EncoderLayer", "DecoderLayer", "ACTIVATIONS", "GATED_ACTIVATIONS", "glu_d_ff"]

# the nonlinearity applied to x W_1; a gated FFN multiplies it by x W_3 (SwiGLU: SiLU = x sigmoid(x), GeGLU: GELU)
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
    "swiglu": F.silu,
    "geglu": F.gelu,
}
ACTIVATIONS = tuple(_ACTIVATIONS)
GATED_ACTIVATIONS = ("swiglu", "geglu")


def glu_d_ff(d_model: int, d_ff: int | None = None, multiple_of: int = 1) -> int:
    """Hidden width of a gated FFN (SwiGLU/GeGLU) with the parameters of an ungated one
    of width ``d_ff``.

    A gated FFN has three ``d_model x d_ff`` matrices instead of two, so Llama
    shrinks its hidden width to two thirds, ``int(2 * d_ff / 3)``, and rounds it
    UP to a multiple of ``multiple_of`` (256 in Llama, for fast matrix shapes):
    for Llama-7B, ``glu_d_ff(4096, multiple_of=256) == 11008``.

    Args:
        d_model: model width.
        d_ff: the ungated FFN's hidden width to match (``4 * d_model`` by default).
        multiple_of: round the result up to a multiple of this.

    Returns:
        the hidden width (a positive int).
    """
    check_positive_int("d_model", d_model)
    d_ff = 4 * d_model if d_ff is None else check_positive_int("d_ff", d_ff)
    check_positive_int("multiple_of", multiple_of)
    hidden = max(1, int(2 * d_ff / 3))
    return multiple_of * -(-hidden // multiple_of)  # ceil to a multiple


def _check_common(
    d_model: int, num_heads: int, d_ff: int | None, dropout: float, ffn_dropout: float | None = None
) -> None:
    check_positive_int("d_model", d_model)
    check_positive_int("num_heads", num_heads)
    if d_model % num_heads != 0:
        raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
    if d_ff is not None:
        check_positive_int("d_ff", d_ff)
    check_probability("dropout", dropout)
    if ffn_dropout is not None:
        check_probability("ffn_dropout", ffn_dropout)


class FeedForward(nn.Module):
    """Position-wise feed-forward network ``FFN(x) = act(x W_1 + b_1) W_2 + b_2``, or a gated one.

    The same two-layer MLP is applied to every position independently, so it is
    exactly two ``Conv1d(kernel_size=1)`` layers, and shifting the sequence
    shifts its output.

    A gated FFN (GLU variants, Shazeer 2020; Llama, Qwen, Gemma) multiplies the
    activation elementwise by a second linear map of the input:
    ``FFN(x) = (act(x W_1) * (x W_3)) W_2`` with SiLU (``"swiglu"``) or GELU
    (``"geglu"``). It has three matrices instead of two; to keep the parameter
    count of an ungated FFN of width ``4 d`` use ``d_ff = glu_d_ff(d_model)``
    (about ``8 d / 3``, Llama's convention).

    Args:
        d_model: input and output width.
        d_ff: hidden width, ``4 * d_model`` by default (2048 for d_model 512), for
            every activation (gated ones included: pass :func:`glu_d_ff` to match parameters).
        dropout: dropout on the hidden activations while training.
        activation: ``"relu"`` (the original paper), ``"gelu"`` (exact, erf-based; BERT),
            ``"gelu_tanh"`` (the tanh approximation; GPT-2), ``"swiglu"`` or ``"geglu"`` (gated).
        bias: whether the linear maps have biases.

    Parameters: ``2 * d_model * d_ff + d_ff + d_model`` (with biases); gated:
    ``3 * d_model * d_ff + 2 * d_ff + d_model``. Modules: ``linear1`` (``W_1``),
    ``linear2`` (``W_2``) and, gated only, ``linear3`` (``W_3``, the gate's partner).
    """

    def __init__(
        self, d_model: int, d_ff: int | None = None, dropout: float = 0.0, activation: str = "relu", bias: bool = True
    ):
        super().__init__()
        _check_common(d_model, 1, d_ff, dropout)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.d_model, self.d_ff = d_model, d_ff
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)  # W_1
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)  # W_2
        self.linear3 = nn.Linear(d_model, d_ff, bias=bias) if activation in GATED_ACTIVATIONS else None  # W_3
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x ``(..., d_model)``. Returns: ``(..., d_model)``."""
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"FeedForward: x has {x.shape[-1]} features but d_model={self.d_model} "
                f"(shape {tuple(x.shape)})"
            )  # fmt: skip
        h = _ACTIVATIONS[self.activation](self.linear1(x))  # (..., d_ff)
        if self.linear3 is not None:  # gated (SwiGLU, GeGLU): act(x W_1) * (x W_3)
            h = h * self.linear3(x)  # (..., d_ff)
        return self.linear2(self.dropout(h))  # (..., d_model)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_ff={self.d_ff}, activation={self.activation!r}"


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, each with a residual connection and a LayerNorm (or RMSNorm).

    Used bidirectionally in the encoder (no mask, or a padding mask) and, with
    ``is_causal=True``, as the block of a decoder-only model such as GPT (which
    has no cross-attention, so its block has this shape).

    Args:
        d_model: model width.
        num_heads: attention heads; must divide ``d_model``.
        d_ff: FFN hidden width (``4 * d_model`` by default).
        dropout: dropout on attention weights, FFN hidden units and each sub-layer's output.
        norm_first: Pre-LN if True, Post-LN (the original) if False.
        activation: the FFN's, ``"relu"``, ``"gelu"``, ``"gelu_tanh"``, ``"swiglu"`` or ``"geglu"``
            (see :class:`FeedForward`).
        num_kv_heads: key/value heads for grouped-query attention (default ``num_heads``).
        bias: biases in the attention and FFN projections and in the LayerNorms.
        layer_norm_eps: the normalisations' epsilon (LayerNorm or RMSNorm, and the QK-norm's).
        rotary: optional rotary embedding passed to :class:`MultiHeadAttention`.
        ffn_dropout: dropout on the FFN's hidden units if it should differ from ``dropout``
            (GPT-2 / nanoGPT use none there: ``ffn_dropout=0.0``).
        norm: ``"layer"`` (LayerNorm, default) or ``"rms"`` (:class:`~minitransformer.norms.RMSNorm`,
            Llama-style; it has no bias whatever ``bias`` says).
        qk_norm: RMSNorm of every query and key head before RoPE and attention (OLMo 2, Qwen3).
        qkv_bias, out_bias: biases of the QKV and output projections if they should differ
            from ``bias`` (Qwen2: ``bias=False, qkv_bias=True``).

    A Llama-style block: ``EncoderLayer(d, h, glu_d_ff(d), norm_first=True, activation="swiglu",
    num_kv_heads=h_kv, bias=False, norm="rms", rotary=RotaryEmbedding(d // h, layout="half"))``
    called with ``is_causal=True``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        norm_first: bool = False,
        activation: str = "relu",
        num_kv_heads: int | None = None,
        *,
        bias: bool = True,
        layer_norm_eps: float = 1e-5,
        rotary: Callable[[Tensor, Tensor], Tensor] | None = None,
        ffn_dropout: float | None = None,
        norm: str = "layer",
        qk_norm: bool = False,
        qkv_bias: bool | None = None,
        out_bias: bool | None = None,
    ):
        super().__init__()
        _check_common(d_model, num_heads, d_ff, dropout, ffn_dropout)
        check_norm(norm)
        self.norm_first = norm_first
        attn_options = dict(qk_norm=qk_norm, qk_norm_eps=layer_norm_eps, qkv_bias=qkv_bias, out_bias=out_bias)
        self.self_attn = MultiHeadAttention(
            d_model, num_heads, num_kv_heads, dropout, bias, rotary=rotary, **attn_options
        )
        self.ffn = FeedForward(d_model, d_ff, dropout if ffn_dropout is None else ffn_dropout, activation, bias)
        self.norm1 = make_norm(norm, d_model, layer_norm_eps, bias)
        self.norm2 = make_norm(norm, d_model, layer_norm_eps, bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        kv_cache: KVCache | None = None,
        need_weights: bool = False,
        positions: Tensor | None = None,
    ):
        """Args:
            x: ``(B, T, d_model)``.
            mask: bool, broadcastable to ``(B, H, T, S)``, True = may attend
                (e.g. ``padding_mask(tokens, pad_id)`` of shape ``(B, 1, 1, T)``).
            is_causal: causal self-attention (GPT blocks).
            kv_cache: this layer's :class:`KVCache` for incremental decoding.
            need_weights: also return the attention weights.
            positions: RoPE positions ``(T,)`` or ``(B, T)`` (needs ``rotary``), see
                :meth:`MultiHeadAttention.forward`.

        Returns:
            ``(B, T, d_model)`` [, weights ``(B, H, T, S)``].
        """

        def self_block(h: Tensor) -> Tensor:  # the self-attention sub-layer, (B, T, d)
            out = self.self_attn(
                h,
                mask=mask,
                is_causal=is_causal,
                kv_cache=kv_cache,
                need_weights=need_weights,
                positions=positions,
            )
            # (B, T, d), (B, H, T, S)
            out, weights["self"] = out if need_weights else (out, None)
            return self.dropout1(out)

        weights: dict[str, Tensor | None] = {}
        if self.norm_first:
            x = x + self_block(self.norm1(x))  # x = x + MHA(LN(x))
            x = x + self.dropout2(self.ffn(self.norm2(x)))  # x = x + FFN(LN(x))
        else:
            x = self.norm1(x + self_block(x))  # Z = LN(X + MHA(X))
            x = self.norm2(x + self.dropout2(self.ffn(x)))  # out = LN(Z + FFN(Z))
        return (x, weights["self"]) if need_weights else x

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> EncoderLayer:
        """Copy a batch-first ``torch.nn.TransformerEncoderLayer`` (relu or gelu) into an equal layer.

        Masks then use OUR convention: torch's ``src_key_padding_mask`` marks padding with
        True, ours marks real tokens with True (``padding_mask`` gives it directly).
        """
        if not isinstance(layer, nn.TransformerEncoderLayer):
            raise TypeError(f"from_torch expects torch.nn.TransformerEncoderLayer, got {type(layer).__name__}")
        new = cls(
            layer.self_attn.embed_dim,
            layer.self_attn.num_heads,
            layer.linear1.out_features,
            layer.dropout.p,
            layer.norm_first,
            _torch_activation(layer),
            bias=layer.linear1.bias is not None,
            layer_norm_eps=layer.norm1.eps,
        )
        new.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        _copy_ffn_and_norms(new, layer, n_norms=2)
        return new.train(layer.training)


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder output, feed-forward.

    Post-LN: ``x = LN(x + SelfAttn(x)); x = LN(x + CrossAttn(x, memory)); x = LN(x + FFN(x))``.
    Pre-LN: ``x = x + SelfAttn(LN(x)); x = x + CrossAttn(LN(x), memory); x = x + FFN(LN(x))``.
    The queries of cross-attention come from the decoder, its keys and values from
    ``memory``, the FINAL encoder output, which is the same for every decoder layer.

    Args: as :class:`EncoderLayer` (``rotary`` applies to self-attention only; ``bias``,
    ``num_kv_heads``, ``dropout``, ``qk_norm``, ``qkv_bias`` and ``out_bias`` to both attentions).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        norm_first: bool = False,
        activation: str = "relu",
        num_kv_heads: int | None = None,
        *,
        bias: bool = True,
        layer_norm_eps: float = 1e-5,
        rotary: Callable[[Tensor, Tensor], Tensor] | None = None,
        ffn_dropout: float | None = None,
        norm: str = "layer",
        qk_norm: bool = False,
        qkv_bias: bool | None = None,
        out_bias: bool | None = None,
    ):
        super().__init__()
        _check_common(d_model, num_heads, d_ff, dropout, ffn_dropout)
        check_norm(norm)
        self.norm_first = norm_first
        attn_options = dict(qk_norm=qk_norm, qk_norm_eps=layer_norm_eps, qkv_bias=qkv_bias, out_bias=out_bias)
        self.self_attn = MultiHeadAttention(
            d_model, num_heads, num_kv_heads, dropout, bias, rotary=rotary, **attn_options
        )
        self.cross_attn = MultiHeadAttention(d_model, num_heads, num_kv_heads, dropout, bias, **attn_options)
        self.ffn = FeedForward(d_model, d_ff, dropout if ffn_dropout is None else ffn_dropout, activation, bias)
        self.norm1 = make_norm(norm, d_model, layer_norm_eps, bias)
        self.norm2 = make_norm(norm, d_model, layer_norm_eps, bias)
        self.norm3 = make_norm(norm, d_model, layer_norm_eps, bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        *,
        is_causal: bool = True,
        self_cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
        need_weights: bool = False,
        positions: Tensor | None = None,
    ):
        """Args:
            x: decoder input ``(B, T, d_model)``.
            memory: final encoder output ``(B, S, d_model)``.
            self_mask: bool mask for self-attention, broadcastable to
                ``(B, H, T, T_total)`` (e.g. the target padding mask ``(B, 1, 1, T)``);
                combined with the causal mask.
            memory_mask: bool mask over the source, broadcastable to ``(B, H, T, S)``
                (e.g. ``padding_mask(src, pad_id)``, ``(B, 1, 1, S)``).
            is_causal: look-ahead masking of self-attention (True for a decoder).
            self_cache: a :class:`KVCache` for self-attention (grows by one token per step).
            cross_cache: a ``static`` :class:`KVCache`: the projected memory is computed
                once and reused at every decoding step.
            need_weights: also return both attention maps.
            positions: RoPE positions of ``x`` for self-attention, ``(T,)`` or ``(B, T)``
                (needs ``rotary``).

        Returns:
            ``(B, T, d_model)`` [, self weights ``(B, H, T, T_total)``, cross weights
            ``(B, H, T, S)``].
        """
        if (
            memory.dim() != 3
            or memory.shape[0] != x.shape[0]  # batch size
            or memory.shape[-1] != x.shape[-1]  # d_model
        ):
            raise ValueError(
                f"memory must be (B={x.shape[0]}, S, d_model={x.shape[-1]}), "
                f"got {tuple(memory.shape)}"
            )  # fmt: skip

        def self_block(h: Tensor) -> Tensor:  # masked self-attention sub-layer, (B, T, d)
            out = self.self_attn(
                h,
                mask=self_mask,
                is_causal=is_causal,
                kv_cache=self_cache,
                need_weights=need_weights,
                positions=positions,
            )
            # (B, T, d), (B, H, T, T_total)
            out, weights["self"] = out if need_weights else (out, None)
            return self.dropout1(out)

        # queries from h, keys/values from memory, (B, T, d)
        def cross_block(h: Tensor) -> Tensor:
            out = self.cross_attn(
                h,
                memory,
                memory,
                mask=memory_mask,
                kv_cache=cross_cache,
                need_weights=need_weights,
            )
            # (B, T, d), (B, H, T, S)
            out, weights["cross"] = out if need_weights else (out, None)
            return self.dropout2(out)

        weights: dict[str, Tensor | None] = {}
        if self.norm_first:
            x = x + self_block(self.norm1(x))
            x = x + cross_block(self.norm2(x))
            x = x + self.dropout3(self.ffn(self.norm3(x)))
        else:
            x = self.norm1(x + self_block(x))
            x = self.norm2(x + cross_block(x))
            x = self.norm3(x + self.dropout3(self.ffn(x)))
        return (x, weights["self"], weights["cross"]) if need_weights else x

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> DecoderLayer:
        """Copy a batch-first ``torch.nn.TransformerDecoderLayer`` into an equal layer (our mask convention)."""
        if not isinstance(layer, nn.TransformerDecoderLayer):
            raise TypeError(f"from_torch expects torch.nn.TransformerDecoderLayer, got {type(layer).__name__}")
        new = cls(
            layer.self_attn.embed_dim,
            layer.self_attn.num_heads,
            layer.linear1.out_features,
            layer.dropout.p,
            layer.norm_first,
            _torch_activation(layer),
            bias=layer.linear1.bias is not None,
            layer_norm_eps=layer.norm1.eps,
        )
        new.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        new.cross_attn = MultiHeadAttention.from_torch(layer.multihead_attn)
        _copy_ffn_and_norms(new, layer, n_norms=3)
        return new.train(layer.training)


def _torch_activation(layer: nn.Module) -> str:
    """The name of a torch layer's activation (a function or a module): relu, exact gelu or tanh gelu."""
    act = layer.activation
    if act is F.relu or isinstance(act, nn.ReLU):
        return "relu"
    if act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
        return "gelu"
    if isinstance(act, nn.GELU) and act.approximate == "tanh":
        return "gelu_tanh"
    raise ValueError(f"from_torch supports relu and (exact or tanh) gelu activations, got {act!r}")


def _copy_ffn_and_norms(new: nn.Module, layer: nn.Module, n_norms: int) -> None:
    """Copy the FFN and LayerNorm weights of a torch layer (same names: linear1/2, norm1..n)."""
    ref = next(layer.parameters())
    new.to(device=ref.device, dtype=ref.dtype)
    new.ffn.linear1.load_state_dict(layer.linear1.state_dict())
    new.ffn.linear2.load_state_dict(layer.linear2.state_dict())
    for i in range(1, n_norms + 1):
        getattr(new, f"norm{i}").load_state_dict(getattr(layer, f"norm{i}").state_dict())
