"""Model configurations as frozen dataclasses with named presets, and closed-form parameter counts.

Presets::

    TransformerConfig.BASE   d_model 512,  6+6 layers, 8 heads,  d_ff 2048, dropout 0.1  (the paper's base)
    TransformerConfig.BIG    d_model 1024, 6+6 layers, 16 heads, d_ff 4096, dropout 0.3  (the paper's big)
    GPTConfig.CHAR_CPU       4 layers, 4 heads, d_model 128, context 64,  dropout 0    (char LM on a CPU)
    GPTConfig.CHAR_GPU       6 layers, 6 heads, d_model 384, context 256, dropout 0.2  (char LM on a GPU)
    GPTConfig.GPT2_SMALL     12 layers, 12 heads, d_model 768, context 1024, vocab 50257 (124M)
    GPTConfig.LLAMA_CHAR_CPU CHAR_CPU's size, Llama-style: RMSNorm, SwiGLU, RoPE, 2 kv-heads, no biases

Change a field with ``dataclasses.replace(GPTConfig.CHAR_CPU, vocab_size=...)``. Every field is
checked when a config is made (or replaced): a bad value is a ``ValueError``/``TypeError``
naming the config and the field, e.g. ``GPTConfig: d_model=30 is not divisible by n_head=4``.

What the counts count: every weight and bias, LayerNorm gains and biases,
embeddings; RMSNorm gains (RMSNorm has no bias) and QK-norm gains; a matrix shared by
several roles (weight tying) counts once; the fixed sinusoidal table and RoPE's angles are
not parameters. For the paper's base model with a
shared 37 000-token vocabulary and all three embedding matrices tied this
gives 63.1M for base and 214.3M for big (the paper's Table 3 says 65M and
213M; it does not spell out its vocabulary or bookkeeping).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .layers import ACTIVATIONS, GATED_ACTIVATIONS, glu_d_ff
from .norms import NORMS
from .validation import check_bool, check_choice, check_positive_int, check_probability, check_real

__all__ = [
    "TransformerConfig",
    "GPTConfig",
    "GPT_POSITIONAL",
    "count_linear_params",
    "count_layernorm_params",
    "count_norm_params",
    "count_attention_params",
    "count_ffn_params",
    "count_block_params",
    "count_transformer_params",
    "count_gpt_params",
]


def count_linear_params(d_in: int, d_out: int, bias: bool = True) -> int:
    """``d_in * d_out`` weights plus ``d_out`` biases."""
    return d_in * d_out + (d_out if bias else 0)


def count_layernorm_params(d_model: int, bias: bool = True) -> int:
    """A gain per feature (and a bias per feature)."""
    return d_model * (2 if bias else 1)


def count_norm_params(d_model: int, norm: str = "layer", bias: bool = True) -> int:
    """A LayerNorm (:func:`count_layernorm_params`) or an RMSNorm (``norm="rms"``: a gain per feature, no bias)."""
    return d_model if norm == "rms" else count_layernorm_params(d_model, bias)


def count_attention_params(
    d_model: int,
    num_heads: int = 1,
    num_kv_heads: int | None = None,
    bias: bool = True,
    *,
    qkv_bias: bool | None = None,
    out_bias: bool | None = None,
    qk_norm: bool = False,
) -> int:
    """Multi-head attention: ``W_Q, W_O`` are ``d x d``; ``W_K, W_V`` are ``d x (H_kv d_head)``.

    With ``H_kv == H`` this is ``4 d^2 + 4 d`` (with biases), whatever the number of heads.
    ``qkv_bias`` / ``out_bias`` override ``bias`` for one projection; ``qk_norm`` adds
    two RMSNorm gains of ``d_head`` (queries and keys).
    """
    num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    head_dim = d_model // num_heads
    kv_dim = num_kv_heads * head_dim
    qkv_bias = bias if qkv_bias is None else qkv_bias
    out_bias = bias if out_bias is None else out_bias
    return (
        count_linear_params(d_model, d_model + 2 * kv_dim, qkv_bias)
        + count_linear_params(d_model, d_model, out_bias)
        + (2 * head_dim if qk_norm else 0)
    )


def count_ffn_params(d_model: int, d_ff: int | None = None, bias: bool = True, activation: str = "relu") -> int:
    """``2 d d_ff + d_ff + d`` (with biases); ``d_ff = 4 d`` by default.

    A gated activation (``"swiglu"``, ``"geglu"``) adds a third ``d x d_ff`` matrix (and bias).
    """
    d_ff = 4 * d_model if d_ff is None else d_ff
    gate = count_linear_params(d_model, d_ff, bias) if activation in GATED_ACTIVATIONS else 0
    return count_linear_params(d_model, d_ff, bias) + count_linear_params(d_ff, d_model, bias) + gate


def count_block_params(
    d_model: int,
    d_ff: int | None = None,
    *,
    num_heads: int = 1,
    num_kv_heads: int | None = None,
    cross_attention: bool = False,
    bias: bool = True,
    activation: str = "relu",
    norm: str = "layer",
    qkv_bias: bool | None = None,
    out_bias: bool | None = None,
    qk_norm: bool = False,
) -> int:
    """One layer: an encoder layer (attention, FFN, 2 LayerNorms), or with
    ``cross_attention`` a decoder layer (2 attentions, FFN, 3 LayerNorms).

    For ``d_model = 512, d_ff = 2048``: 3 152 384 (encoder layer), 4 204 032 (decoder layer).
    ``activation``, ``norm``, ``qkv_bias``, ``out_bias`` and ``qk_norm`` as in
    :class:`~minitransformer.layers.EncoderLayer`.
    """
    n_attn = 2 if cross_attention else 1
    attention = count_attention_params(
        d_model, num_heads, num_kv_heads, bias, qkv_bias=qkv_bias, out_bias=out_bias, qk_norm=qk_norm
    )
    return (
        n_attn * attention
        + count_ffn_params(d_model, d_ff, bias, activation)
        + (n_attn + 1) * count_norm_params(d_model, norm, bias)
    )


#: The position schemes of :class:`~minitransformer.GPT` (its ``positional`` argument).
GPT_POSITIONAL = ("learned", "sinusoidal", "rotary")


def _check_fields(config: Any, where: str, sizes: tuple[str, ...], flags: tuple[str, ...]) -> None:
    """The checks both configs share: positive sizes, flags that are bools, the heads, ``d_ff`` and dropout."""
    for name in sizes:
        check_positive_int(name, getattr(config, name), where=where)
    for name in flags:
        check_bool(name, getattr(config, name), where=where)
    heads = "num_heads" if hasattr(config, "num_heads") else "n_head"
    d_model, n_heads, n_kv = config.d_model, getattr(config, heads), config.num_kv_heads
    if d_model % n_heads:
        raise ValueError(f"{where}: d_model={d_model} is not divisible by {heads}={n_heads}")
    if n_kv is not None:
        check_positive_int("num_kv_heads", n_kv, where=where)
        if n_heads % n_kv:
            raise ValueError(f"{where}: {heads}={n_heads} is not divisible by num_kv_heads={n_kv}")
    if config.d_ff is not None:
        check_positive_int("d_ff", config.d_ff, where=where)
    check_probability("dropout", config.dropout, where=where)
    check_choice("activation", config.activation, ACTIVATIONS, where=where)


@dataclass(frozen=True)
class TransformerConfig:
    """The encoder-decoder :class:`~minitransformer.Transformer`: each field is its argument of the
    same name, and ``Transformer.from_config(config)`` builds the model."""

    src_vocab_size: int = 37000
    tgt_vocab_size: int = 37000
    d_model: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    norm_first: bool = False
    activation: str = "relu"
    num_kv_heads: int | None = None
    max_len: int = 512
    share_embeddings: bool = True
    tie_output: bool = True
    pad_id: int | None = None

    BASE: ClassVar[TransformerConfig]
    BIG: ClassVar[TransformerConfig]

    def __post_init__(self) -> None:
        """Check every field (``ValueError``/``TypeError`` naming it) when the config is made or replaced."""
        where = "TransformerConfig"
        sizes = ("src_vocab_size", "tgt_vocab_size", "d_model", "num_heads", "num_encoder_layers")
        sizes += ("num_decoder_layers", "max_len")
        _check_fields(self, where, sizes, ("norm_first", "share_embeddings", "tie_output"))
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                f"{where}: share_embeddings needs src_vocab_size == tgt_vocab_size, "
                f"got {self.src_vocab_size} and {self.tgt_vocab_size}"
            )
        if self.pad_id is not None:
            vocab = min(self.src_vocab_size, self.tgt_vocab_size)
            check_positive_int("pad_id", self.pad_id, minimum=0, where=where)
            if self.pad_id >= vocab:
                raise ValueError(f"{where}: pad_id={self.pad_id} is not an id of both vocabularies (< {vocab})")

    def num_parameters(self) -> int:
        """Closed-form count, equal to ``Transformer.from_config(self).num_parameters()``."""
        return count_transformer_params(self)


TransformerConfig.BASE = TransformerConfig()
TransformerConfig.BIG = TransformerConfig(d_model=1024, num_heads=16, d_ff=4096, dropout=0.3)


@dataclass(frozen=True)
class GPTConfig:
    """The decoder-only :class:`~minitransformer.GPT`: each field is its argument of the same name,
    and ``GPT.from_config(config)`` builds the model.

    The defaults are a GPT-2-style model (LayerNorm, GELU, learned positions, biases, tied
    embeddings); :attr:`LLAMA_CHAR_CPU` shows the Llama-style fields (``norm="rms"``,
    ``activation="swiglu"``, ``positional="rotary"``, ``num_kv_heads``, ``bias=False``,
    ``tie_weights=False``).
    """

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    d_ff: int | None = None
    num_kv_heads: int | None = None
    positional: str = "learned"
    tie_weights: bool = True
    bias: bool = True
    activation: str = "gelu"
    norm: str = "layer"
    norm_eps: float = 1e-5
    qk_norm: bool = False
    qkv_bias: bool | None = None
    out_bias: bool | None = None
    rope_base: float = 10000.0

    CHAR_CPU: ClassVar[GPTConfig]
    CHAR_GPU: ClassVar[GPTConfig]
    GPT2_SMALL: ClassVar[GPTConfig]
    LLAMA_CHAR_CPU: ClassVar[GPTConfig]

    def __post_init__(self) -> None:
        """Check every field (``ValueError``/``TypeError`` naming it) when the config is made or replaced."""
        where = "GPTConfig"
        sizes = ("vocab_size", "block_size", "n_layer", "n_head", "d_model")
        _check_fields(self, where, sizes, ("tie_weights", "bias", "qk_norm"))
        check_choice("positional", self.positional, GPT_POSITIONAL, where=where)
        check_choice("norm", self.norm, NORMS, where=where)
        for name in ("qkv_bias", "out_bias"):
            if getattr(self, name) is not None:
                check_bool(name, getattr(self, name), where=where)
        check_real("norm_eps", self.norm_eps, low=0.0, low_open=True, where=where)
        check_real("rope_base", self.rope_base, low=0.0, low_open=True, where=where)

    def num_parameters(self) -> int:
        """Closed-form count, equal to ``GPT.from_config(self).num_parameters()``."""
        return count_gpt_params(self)


GPTConfig.CHAR_CPU = GPTConfig()
GPTConfig.CHAR_GPU = GPTConfig(block_size=256, n_layer=6, n_head=6, d_model=384, dropout=0.2)
GPTConfig.GPT2_SMALL = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, d_model=768)
GPTConfig.LLAMA_CHAR_CPU = GPTConfig(
    d_ff=glu_d_ff(128, multiple_of=8),  # 344: the gated FFN keeps the parameters of a 4 x 128 = 512 GELU one
    num_kv_heads=2,  # grouped-query attention: 2 key/value heads for 4 query heads
    positional="rotary",
    tie_weights=False,
    bias=False,
    activation="swiglu",
    norm="rms",
)


def count_transformer_params(config: TransformerConfig) -> int:
    """Embeddings + encoder + decoder + output layer of the encoder-decoder model.

    Post-LN stacks have no final LayerNorm, Pre-LN stacks one each. The output
    layer has a bias even when its matrix is tied to the target embedding.
    """
    c = config
    d = c.d_model
    block = dict(num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, activation=c.activation)
    enc = c.num_encoder_layers * count_block_params(d, c.d_ff, **block)
    dec = c.num_decoder_layers * count_block_params(d, c.d_ff, cross_attention=True, **block)
    final_norms = 2 * count_layernorm_params(d) if c.norm_first else 0
    embeddings = c.src_vocab_size * d + (0 if c.share_embeddings else c.tgt_vocab_size * d)
    output = c.tgt_vocab_size * (0 if c.tie_output else d) + c.tgt_vocab_size  # weights (unless tied) + bias
    return embeddings + enc + dec + final_norms + output


def count_gpt_params(config: GPTConfig) -> int:
    """Token (and learned position) embeddings + blocks + final norm + output matrix (unless tied).

    GPT-2 small (vocab 50257, context 1024, 12 x 768): 124 439 808.
    """
    c = config
    d = c.d_model
    block = count_block_params(
        d,
        c.d_ff,
        num_heads=c.n_head,
        num_kv_heads=c.num_kv_heads,
        bias=c.bias,
        activation=c.activation,
        norm=c.norm,
        qkv_bias=c.qkv_bias,
        out_bias=c.out_bias,
        qk_norm=c.qk_norm,
    )
    embeddings = c.vocab_size * d + (c.block_size * d if c.positional == "learned" else 0)
    output = 0 if c.tie_weights else c.vocab_size * d  # lm_head has no bias
    return embeddings + c.n_layer * block + count_norm_params(d, c.norm, c.bias) + output
