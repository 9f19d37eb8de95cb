"""Model configurations as frozen dataclasses with named presets, and closed-form parameter counts.

Presets::

    TransformerConfig.BASE   d_model 512,  6+6 layers, 8 heads,  d_ff 2048, dropout 0.1  (the paper's base)
    TransformerConfig.BIG    d_model 1024, 6+6 layers, 16 heads, d_ff 4096, dropout 0.3  (the paper's big)
    GPTConfig.CHAR_CPU       4 layers, 4 heads, d_model 128, context 64,  dropout 0    (char LM on a CPU)
    GPTConfig.CHAR_GPU       6 layers, 6 heads, d_model 384, context 256, dropout 0.2  (char LM on a GPU)
    GPTConfig.GPT2_SMALL     12 layers, 12 heads, d_model 768, context 1024, vocab 50257 (124M)

Change a field with ``dataclasses.replace(GPTConfig.CHAR_CPU, vocab_size=...)``.

What the counts count: every weight and bias, LayerNorm gains and biases,
embeddings; a matrix shared by several roles (weight tying) counts once; the
fixed sinusoidal table is not a parameter. For the paper's base model with a
shared 37 000-token vocabulary and all three embedding matrices tied this
gives 63.1M for base and 214.3M for big (the paper's Table 3 says 65M and
213M; it does not spell out its vocabulary or bookkeeping).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "TransformerConfig",
    "GPTConfig",
    "count_linear_params",
    "count_layernorm_params",
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


def count_attention_params(d_model: int, num_heads: int = 1, num_kv_heads: int | None = None, bias: bool = True) -> int:
    """Multi-head attention: ``W_Q, W_O`` are ``d x d``; ``W_K, W_V`` are ``d x (H_kv d_head)``.

    With ``H_kv == H`` this is ``4 d^2 + 4 d`` (with biases), whatever the number of heads.
    """
    num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    kv_dim = num_kv_heads * (d_model // num_heads)
    return count_linear_params(d_model, d_model + 2 * kv_dim, bias) + count_linear_params(d_model, d_model, bias)


def count_ffn_params(d_model: int, d_ff: int | None = None, bias: bool = True) -> int:
    """``2 d d_ff + d_ff + d`` (with biases); ``d_ff = 4 d`` by default."""
    d_ff = 4 * d_model if d_ff is None else d_ff
    return count_linear_params(d_model, d_ff, bias) + count_linear_params(d_ff, d_model, bias)


def count_block_params(
    d_model: int,
    d_ff: int | None = None,
    *,
    num_heads: int = 1,
    num_kv_heads: int | None = None,
    cross_attention: bool = False,
    bias: bool = True,
) -> int:
    """One layer: an encoder layer (attention, FFN, 2 LayerNorms), or with
    ``cross_attention`` a decoder layer (2 attentions, FFN, 3 LayerNorms).

    For ``d_model = 512, d_ff = 2048``: 3 152 384 (encoder layer), 4 204 032 (decoder layer).
    """
    n_attn = 2 if cross_attention else 1
    return (
        n_attn * count_attention_params(d_model, num_heads, num_kv_heads, bias)
        + count_ffn_params(d_model, d_ff, bias)
        + (n_attn + 1) * count_layernorm_params(d_model, bias)
    )


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

    def num_parameters(self) -> int:
        """Closed-form count, equal to ``Transformer.from_config(self).num_parameters()``."""
        return count_transformer_params(self)


TransformerConfig.BASE = TransformerConfig()
TransformerConfig.BIG = TransformerConfig(d_model=1024, num_heads=16, d_ff=4096, dropout=0.3)


@dataclass(frozen=True)
class GPTConfig:
    """The decoder-only :class:`~minitransformer.GPT`: each field is its argument of the same name,
    and ``GPT.from_config(config)`` builds the model."""

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

    CHAR_CPU: ClassVar[GPTConfig]
    CHAR_GPU: ClassVar[GPTConfig]
    GPT2_SMALL: ClassVar[GPTConfig]

    def num_parameters(self) -> int:
        """Closed-form count, equal to ``GPT.from_config(self).num_parameters()``."""
        return count_gpt_params(self)


GPTConfig.CHAR_CPU = GPTConfig()
GPTConfig.CHAR_GPU = GPTConfig(block_size=256, n_layer=6, n_head=6, d_model=384, dropout=0.2)
GPTConfig.GPT2_SMALL = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, d_model=768)


def count_transformer_params(config: TransformerConfig) -> int:
    """Embeddings + encoder + decoder + output layer of the encoder-decoder model.

    Post-LN stacks have no final LayerNorm, Pre-LN stacks one each. The output
    layer has a bias even when its matrix is tied to the target embedding.
    """
    c = config
    d = c.d_model
    enc = c.num_encoder_layers * count_block_params(d, c.d_ff, num_heads=c.num_heads, num_kv_heads=c.num_kv_heads)
    dec = c.num_decoder_layers * count_block_params(
        d, c.d_ff, num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, cross_attention=True
    )
    final_norms = 2 * count_layernorm_params(d) if c.norm_first else 0
    embeddings = c.src_vocab_size * d + (0 if c.share_embeddings else c.tgt_vocab_size * d)
    output = c.tgt_vocab_size * (0 if c.tie_output else d) + c.tgt_vocab_size  # weights (unless tied) + bias
    return embeddings + enc + dec + final_norms + output


def count_gpt_params(config: GPTConfig) -> int:
    """Token (and learned position) embeddings + blocks + final LayerNorm + output matrix (unless tied).

    GPT-2 small (vocab 50257, context 1024, 12 x 768): 124 439 808.
    """
    c = config
    d = c.d_model
    blocks = c.n_layer * count_block_params(d, c.d_ff, num_heads=c.n_head, num_kv_heads=c.num_kv_heads, bias=c.bias)
    embeddings = c.vocab_size * d + (c.block_size * d if c.positional == "learned" else 0)
    output = 0 if c.tie_weights else c.vocab_size * d  # lm_head has no bias
    return embeddings + blocks + count_layernorm_params(d, c.bias) + output
