"""minitransformer: the companion library of the attention & transformers book.

The top level exports the public contract (see DESIGN.md) and the model
configs. Everything else is imported from its module, e.g.
``from minitransformer.data import collate`` or
``from minitransformer.train import fit``; the chapters' own code lives in
:mod:`minitransformer.book`, which the core library never imports.

``import minitransformer`` needs only PyTorch and NumPy: the CuPy GPU kernels
load lazily on first use.
"""

from importlib.metadata import PackageNotFoundError, version

from .attention import causal_mask, padding_mask, scaled_dot_product_attention
from .configs import GPTConfig, TransformerConfig
from .flash import flash_attention
from .gpt import GPT
from .kv_cache import KVCache
from .layers import DecoderLayer, EncoderLayer, FeedForward
from .multihead import MultiHeadAttention
from .positional import sinusoidal_encoding
from .rnn_attention import AdditiveAttention, LuongAttention
from .rotary import RotaryEmbedding
from .transformer import Decoder, Encoder, Transformer

try:
    __version__ = version("minitransformer")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    # attention
    "scaled_dot_product_attention",
    "causal_mask",
    "padding_mask",
    "AdditiveAttention",
    "LuongAttention",
    "MultiHeadAttention",
    # positions
    "sinusoidal_encoding",
    "RotaryEmbedding",
    # blocks and models
    "FeedForward",
    "EncoderLayer",
    "DecoderLayer",
    "Encoder",
    "Decoder",
    "Transformer",
    "GPT",
    "TransformerConfig",
    "GPTConfig",
    # decoding and kernels
    "KVCache",
    "flash_attention",
]
