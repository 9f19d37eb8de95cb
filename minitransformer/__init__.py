"""minitransformer: the companion library of the attention & transformers book.

Everything the book runs lives here; the chapters import it. ``import
minitransformer`` needs only PyTorch and NumPy: the CuPy GPU kernels load
lazily on first use.
"""
from .attention import causal_mask, padding_mask, scaled_dot_product_attention
from .kv_cache import KVCache, kv_cache_bytes, kv_cache_report
from .multihead import MultiHeadAttention
from .positional import sinusoidal_encoding
from . import notebook

__version__ = "0.1.0"

__all__ = [
    "scaled_dot_product_attention", "causal_mask", "padding_mask",
    "MultiHeadAttention", "sinusoidal_encoding", "KVCache", "kv_cache_bytes", "kv_cache_report",
]
