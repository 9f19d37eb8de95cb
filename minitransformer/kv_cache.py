"""The key/value cache of autoregressive decoding.

Without a cache, generating token ``t`` recomputes the keys and values of all
``t - 1`` earlier tokens in every layer. They never change (a causal model's
past does not see the future), so we compute each token's K and V once, keep
them, and let the new query attend to the stored ones.

One :class:`KVCache` serves one attention layer. It is preallocated for
``max_len`` positions and grows by appending; it holds ``num_kv_heads`` heads,
which is fewer than the query heads under grouped-query attention.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .validation import check_bool, check_positive_int, describe

__all__ = ["KVCache", "kv_cache_bytes", "kv_cache_report"]


class KVCache:
    """Preallocated per-layer cache of keys and values.

    Args:
        batch_size: B.
        num_kv_heads: number of key/value heads (H_kv).
        max_len: capacity in positions.
        head_dim: size of each head.
        device, dtype: where and how the tensors are stored (a floating dtype).
        static: a cache for cross-attention, filled once from the encoder output
            and then reused unchanged by every decoding step.

    Storage: ``k`` and ``v`` of shape ``(B, H_kv, max_len, head_dim)``, allocated
    once; :meth:`append` copies new positions into them in place (no ``torch.cat``,
    no reallocation) and the first :attr:`length` positions are valid.

    Raises:
        ValueError: a size that is not a positive int.
        TypeError: ``dtype`` not a floating ``torch.dtype``; ``static`` not a bool.
    """

    def __init__(
        self,
        batch_size: int,
        num_kv_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        static: bool = False,
    ):
        for name, value in (
            ("batch_size", batch_size),
            ("num_kv_heads", num_kv_heads),
            ("max_len", max_len),
            ("head_dim", head_dim),
        ):
            check_positive_int(name, value, where="KVCache")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"KVCache: dtype must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}")
        check_bool("static", static, where="KVCache")
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (B, H_kv, max_len, hd)
        self.v = torch.zeros(shape, device=device, dtype=dtype)  # (B, H_kv, max_len, hd)
        self.length = 0
        self.static = bool(static)

    @property
    def max_len(self) -> int:
        """Capacity in positions."""
        return self.k.shape[2]

    def __len__(self) -> int:
        """Number of valid (stored) positions."""
        return self.length

    def reset(self) -> None:
        """Forget every stored position (the memory stays allocated and is overwritten by the next appends)."""
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store new keys/values ``(B, H_kv, T_new, hd)`` in place; return all valid ones.

        Args:
            k, v: the new keys and values, ``(B, H_kv, T_new, hd)`` each, of the cache's
                dtype and on its device.

        Returns:
            ``(k, v)``, views of shape ``(B, H_kv, length, hd)`` including the new ones
            (views of the storage: the next :meth:`append` or :meth:`reset` changes them).

        Raises:
            TypeError: ``k`` or ``v`` is not a tensor, or not of the cache's dtype.
            ValueError: wrong shapes, or another device than the cache's.
            RuntimeError: the cache is full, or is static and already filled.
        """
        if not isinstance(k, Tensor) or not isinstance(v, Tensor):
            raise TypeError(f"KVCache.append expects tensors k and v, got {describe(k)} and {describe(v)}")
        B, H, D = self.k.shape[0], self.k.shape[1], self.k.shape[3]
        if k.shape != v.shape or k.dim() != 4 or k.shape[0] != B or k.shape[1] != H or k.shape[3] != D:
            raise ValueError(
                f"KVCache.append expects k and v of shape (B={B}, H_kv={H}, T_new, head_dim={D}), "
                f"got k {tuple(k.shape)} and v {tuple(v.shape)}"
            )
        if k.dtype != self.k.dtype or v.dtype != self.k.dtype:
            raise TypeError(
                f"KVCache.append: k has dtype {k.dtype} and v {v.dtype} but this cache stores {self.k.dtype}; "
                "allocate the cache with the model's dtype"
            )
        if k.device != self.k.device or v.device != self.k.device:
            raise ValueError(f"KVCache.append: k is on {k.device} and v on {v.device}, the cache on {self.k.device}")
        T = k.shape[2]
        if self.static and self.length > 0:
            raise RuntimeError("this KVCache is static (cross-attention): it is filled once; call reset() first")
        if self.length + T > self.max_len:
            raise RuntimeError(
                f"KVCache is full: {self.length} stored + {T} new > max_len={self.max_len}; "
                "allocate a larger cache or crop the context"
            )
        self.k.narrow(2, self.length, T).copy_(k)  # write positions length .. length + T - 1 in place
        self.v.narrow(2, self.length, T).copy_(v)
        self.length += T
        return self.get()  # (B, H_kv, length, hd) each

    def get(self) -> tuple[Tensor, Tensor]:
        """The valid keys and values, ``(B, H_kv, length, hd)`` each (views of the storage)."""
        return self.k.narrow(2, 0, self.length), self.v.narrow(2, 0, self.length)

    def nbytes(self) -> int:
        """Bytes allocated for K and V together (the whole capacity)."""
        return self.k.numel() * self.k.element_size() * 2

    def __repr__(self) -> str:
        B, H, L, D = self.k.shape
        kind = "static, " if self.static else ""
        return f"KVCache({kind}B={B}, H_kv={H}, length={self.length}/{L}, head_dim={D}, dtype={self.k.dtype})"


def kv_cache_bytes(
    n_layers: int, n_kv_heads: int, head_dim: int, tokens: int, batch_size: int = 1, bytes_per_element: int = 2
) -> int:
    """Memory of a whole model's KV cache: ``2 · layers · kv_heads · d_head · tokens · batch · bytes``.

    The factor 2 counts keys and values. ``bytes_per_element`` is 2 for fp16/bf16, 4 for fp32.

    Raises:
        ValueError: an argument that is not a positive int (``tokens`` may be 0).
    """
    for name, value in (
        ("n_layers", n_layers),
        ("n_kv_heads", n_kv_heads),
        ("head_dim", head_dim),
        ("batch_size", batch_size),
        ("bytes_per_element", bytes_per_element),
    ):
        check_positive_int(name, value, where="kv_cache_bytes")
    check_positive_int("tokens", tokens, minimum=0, where="kv_cache_bytes")
    return 2 * n_layers * n_kv_heads * head_dim * tokens * batch_size * bytes_per_element


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError  # pragma: no cover


def kv_cache_report(
    name: str,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    tokens: int,
    batch_size: int = 1,
    bytes_per_element: int = 2,
) -> str:
    """One line the book prints: the formula filled in, and the saving of grouped-query attention.

    Args: as :func:`kv_cache_bytes`, with ``n_heads`` query heads (a multiple of ``n_kv_heads``).

    Returns:
        e.g. ``"Llama-2 70B: 2 x 80 layers x 8 kv-heads x 128 x 4096 tokens x 1 x 2 B = 1.2 GiB (8x smaller ...)"``.
    """
    check_positive_int("n_heads", n_heads, where="kv_cache_report")
    check_positive_int("n_kv_heads", n_kv_heads, where="kv_cache_report")
    if n_heads % n_kv_heads:
        raise ValueError(f"kv_cache_report: n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}")
    full = kv_cache_bytes(n_layers, n_heads, head_dim, tokens, batch_size, bytes_per_element)
    used = kv_cache_bytes(n_layers, n_kv_heads, head_dim, tokens, batch_size, bytes_per_element)
    line = (
        f"{name}: 2 x {n_layers} layers x {n_kv_heads} kv-heads x {head_dim} x {tokens} tokens"
        f" x {batch_size} x {bytes_per_element} B = {_human(used)}"
    )
    if n_kv_heads != n_heads:
        line += f" ({n_heads // n_kv_heads}x smaller than {_human(full)} with {n_heads} kv-heads)"
    return line
