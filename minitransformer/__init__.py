"""minitransformer: the companion library of the attention & transformers book.

Everything the book runs lives here; the chapters import it. ``import
minitransformer`` needs only PyTorch and NumPy: the CuPy GPU kernels load
lazily on first use.
"""
from . import notebook
from .attention import causal_mask, padding_mask, scaled_dot_product_attention
from .flash import flash_attention, flash_decode
from .configs import GPTConfig, TransformerConfig, count_block_params, count_gpt_params, count_transformer_params
from .gpt import GPT, sample_next_token, sampling_probs
from .kv_cache import KVCache, kv_cache_bytes, kv_cache_report
from .layers import DecoderLayer, EncoderLayer, FeedForward
from .multihead import MultiHeadAttention
from .positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
    sinusoidal_encoding_2d,
    transition_matrix,
)
from .relative import RelativePositionBias, alibi_bias, alibi_slopes, relative_position_bucket
from .rotary import RotaryEmbedding, half_to_interleaved, interleaved_to_half
from .transformer import Decoder, Encoder, Transformer

__version__ = "0.1.0"

__all__ = [
    # attention
    "scaled_dot_product_attention", "causal_mask", "padding_mask", "MultiHeadAttention",
    # positions
    "sinusoidal_encoding", "sinusoidal_encoding_2d", "transition_matrix", "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding", "RotaryEmbedding", "interleaved_to_half", "half_to_interleaved",
    "RelativePositionBias", "relative_position_bucket", "alibi_slopes", "alibi_bias",
    # blocks and models
    "FeedForward", "EncoderLayer", "DecoderLayer", "Encoder", "Decoder", "Transformer", "GPT",
    "TransformerConfig", "GPTConfig", "count_block_params", "count_transformer_params", "count_gpt_params",
    "sampling_probs", "sample_next_token",
    # decoding and efficient attention
    "KVCache", "kv_cache_bytes", "kv_cache_report", "flash_attention", "flash_decode",
    "notebook",
]
