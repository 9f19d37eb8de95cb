"""Multi-head attention, batch-first, with fused QKV, grouped-query heads and a KV cache.

``MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O`` with
``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)`` and ``d_head = d_model / h``.

Instead of ``h`` small projections we use one ``d_model x d_model`` matrix per
role and split its output into heads by a reshape, and for self-attention one
fused ``(d_model + 2 * kv_dim) x d_model`` matrix that computes Q, K and V in a
single matrix product. With ``num_kv_heads < num_heads`` (grouped-query
attention; ``num_kv_heads == 1`` is multi-query attention) each key/value head
is shared by ``num_heads / num_kv_heads`` query heads.

The attention itself (``softmax(q k^T / sqrt(d)) v`` per head) is computed by
one of several backends, chosen by the ``backend`` attribute:

* ``"minitransformer"`` (default): our :func:`scaled_dot_product_attention`.
* ``"torch"``: ``torch.nn.functional.scaled_dot_product_attention`` (fused
  kernels), the same result up to rounding; benchmarks swap it in.
* ``"flash"``: :func:`minitransformer.flash.flash_attention` (the CuPy CUDA kernels
  for CUDA tensors with CuPy installed, else the tiled torch twin), and for
  decoding steps with a KV cache (fewer queries than keys)
  :func:`minitransformer.flash.flash_decode`, the split-KV decode kernel on a GPU.
  It handles grouped-query heads without repeating K/V, has no attention dropout,
  and takes no explicit mask (a call with a mask uses our implementation).

``need_weights=True`` always uses our implementation, which can return the weights.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .attention import _check_inputs, causal_mask, scaled_dot_product_attention
from .kv_cache import KVCache

__all__ = ["MultiHeadAttention", "ATTENTION_BACKENDS"]

ATTENTION_BACKENDS = ("minitransformer", "torch", "flash")


def _check_backend(backend: str) -> str:
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {ATTENTION_BACKENDS}")
    return backend


def _torch_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool,
                     dropout_p: float) -> Tensor:
    """The same attention through ``F.scaled_dot_product_attention`` (True = may attend there too).

    torch's ``is_causal`` aligns the queries with the FIRST keys; ours with the LAST
    (queries after a KV cache), so when the lengths differ or a mask is given we
    build the causal mask ourselves.
    """
    _check_inputs(q, k, v, mask, dropout_p)
    T, S = q.shape[-2], k.shape[-2]
    if is_causal and (mask is not None or T != S):
        causal = causal_mask(T, S, device=q.device)  # (T, S)
        mask = causal if mask is None else mask & causal
        is_causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                          is_causal=is_causal)  # (B, H, T, hd)


def _flash_attention(q: Tensor, k: Tensor, v: Tensor, is_causal: bool, dropout_p: float) -> Tensor:
    """Attention through :mod:`minitransformer.flash` (GQA-aware: k, v keep H_kv heads)."""
    from .flash import flash_attention, flash_decode  # lazy: flash loads CuPy only when used

    if dropout_p > 0.0:
        raise ValueError(f"backend 'flash' has no attention dropout (dropout={dropout_p}); "
                         "build the model with dropout=0.0 or use backend='minitransformer'")
    T, S = q.shape[2], k.shape[2]
    if is_causal and T < S:  # new tokens against a KV cache: the split-KV decode kernel
        return flash_decode(q, k, v, is_causal=True)  # (B, H, T, hd)
    return flash_attention(q, k, v, is_causal=is_causal)  # (B, H, T, hd)


class MultiHeadAttention(nn.Module):
    """Multi-head (and grouped-query) attention.

    Args:
        d_model: model width; must be divisible by ``num_heads``.
        num_heads: number of query heads ``H``.
        num_kv_heads: number of key/value heads ``H_kv`` (default ``H``); must divide ``H``.
        dropout: dropout on the attention weights while training.
        bias: whether the projections have biases.
        rotary: optional callable ``rotary(x (B, H, T, d_head), positions (T,)) -> x``
            (e.g. :class:`~minitransformer.RotaryEmbedding`) applied to queries and keys.
        backend: ``"minitransformer"`` (default), ``"torch"`` or ``"flash"``, see the module docstring;
            it can be changed later through the ``backend`` attribute.

    Parameters: ``qkv`` (fused ``[W_Q; W_K; W_V]``, shape ``(d_model + 2·H_kv·d_head, d_model)``)
    and ``out`` (``W_O``, ``d_model x d_model``): ``4·d_model²`` weights (plus ``4·d_model`` biases)
    when ``H_kv == H``.
    """

    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int | None = None,
                 dropout: float = 0.0, bias: bool = True,
                 rotary: Callable[[Tensor, Tensor], Tensor] | None = None,
                 backend: str = "minitransformer"):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads <= 0 or d_model <= 0:
            raise ValueError(f"d_model and num_heads must be positive, got d_model={d_model}, num_heads={num_heads}")
        if d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        if num_kv_heads <= 0 or num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads={num_heads} is not divisible by num_kv_heads={num_kv_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_model, self.num_heads, self.num_kv_heads = d_model, num_heads, num_kv_heads
        self.head_dim = d_model // num_heads
        self.kv_dim = num_kv_heads * self.head_dim
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, d_model + 2 * self.kv_dim, bias=bias)  # fused [W_Q; W_K; W_V]
        self.out = nn.Linear(d_model, d_model, bias=bias)  # W_O
        self.rotary = rotary
        self.backend = backend

    @property
    def backend(self) -> str:
        """Which attention implementation runs: ``"minitransformer"`` or ``"torch"``."""
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        self._backend = _check_backend(name)

    # -- projections ---------------------------------------------------------
    def _project(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Apply rows ``start:stop`` of the fused projection (one role) to ``x``."""
        b = None if self.qkv.bias is None else self.qkv.bias[start:stop]
        return F.linear(x, self.qkv.weight[start:stop], b)

    def _split_heads(self, x: Tensor, heads: int) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, heads, self.head_dim).transpose(1, 2)  # (B, T, h*hd) -> (B, h, T, hd)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                mask: Tensor | None = None, *, is_causal: bool = False, need_weights: bool = False,
                kv_cache: KVCache | None = None):
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: ``(B, T, d_model)``.
            key: ``(B, S, d_model)``; ``None`` means self-attention (``key = query``).
            value: ``(B, S, d_model)``; ``None`` means ``value = key``.
            mask: bool, broadcastable to ``(B, H, T, S_total)``, True = may attend
                (e.g. :func:`padding_mask` ``(B, 1, 1, S)`` or :func:`causal_mask` ``(T, S)``).
            is_causal: causal masking; with a cache the ``T`` queries are the last positions.
            need_weights: also return the weights ``(B, H, T, S_total)``.
            kv_cache: a :class:`KVCache` for this layer. Self-attention appends this
                call's keys/values and attends to everything stored. A ``static``
                cache (cross-attention) is filled on first use and reused afterwards.

        Returns:
            ``out (B, T, d_model)`` [, ``weights (B, H, T, S_total)``].
        """
        self._check(query, key, value)
        d, kv = self.d_model, self.kv_dim
        self_attention = key is None or (key is query and (value is None or value is query))
        key = query if key is None else key
        value = key if value is None else value

        reuse_static = kv_cache is not None and kv_cache.static and len(kv_cache) > 0
        if self_attention:
            qkv = self.qkv(query)  # (B, T, d + 2*kv)
            q, k, v = qkv.split([d, kv, kv], dim=-1)  # (B, T, d), (B, T, kv), (B, T, kv)
        else:
            q = self._project(query, 0, d)  # (B, T, d)
            if not reuse_static:
                if key is value:
                    k, v = self._project(key, d, d + 2 * kv).split([kv, kv], dim=-1)  # (B, S, kv) x2
                else:
                    k = self._project(key, d, d + kv)  # (B, S, kv)
                    v = self._project(value, d + kv, d + 2 * kv)  # (B, S, kv)

        q = self._split_heads(q, self.num_heads)  # (B, H, T, hd)
        past = len(kv_cache) if (kv_cache is not None and not kv_cache.static) else 0
        if reuse_static:
            k, v = kv_cache.get()  # (B, H_kv, S, hd) each
        else:
            k = self._split_heads(k, self.num_kv_heads)  # (B, H_kv, S, hd)
            v = self._split_heads(v, self.num_kv_heads)  # (B, H_kv, S, hd)
        if self.rotary is not None and self_attention:
            # RoPE rotates queries and keys of the SAME sequence by their positions;
            # cross-attention (two sequences, no shared positions) is left unrotated.
            T = q.shape[2]
            positions = torch.arange(past, past + T, device=q.device)  # (T,)
            q = self.rotary(q, positions)  # (B, H, T, hd)
            k = self.rotary(k, positions)  # (B, H_kv, T, hd)
        if kv_cache is not None and not reuse_static:
            k, v = kv_cache.append(k, v)  # (B, H_kv, S_total, hd) each

        dropout_p = self.dropout if self.training else 0.0
        if self.backend == "flash" and mask is None and not need_weights:
            out = _flash_attention(q, k, v, is_causal, dropout_p)  # (B, H, T, hd)
            return self.out(out.transpose(1, 2).reshape(q.shape[0], q.shape[2], self.d_model))

        if self.num_kv_heads != self.num_heads:
            group = self.num_heads // self.num_kv_heads
            k = k.repeat_interleave(group, dim=1)  # (B, H_kv, S, hd) -> (B, H, S, hd)
            v = v.repeat_interleave(group, dim=1)  # (B, H_kv, S, hd) -> (B, H, S, hd)

        if need_weights or self.backend != "torch":
            out, weights = scaled_dot_product_attention(
                q, k, v, mask, is_causal=is_causal, dropout_p=dropout_p, return_weights=True,
            )  # (B, H, T, hd), (B, H, T, S)
        else:
            out, weights = _torch_attention(q, k, v, mask, is_causal, dropout_p), None  # (B, H, T, hd)
        B, H, T, hd = out.shape
        out = out.transpose(1, 2).reshape(B, T, H * hd)  # (B, H, T, hd) -> (B, T, d)
        out = self.out(out)  # (B, T, d)
        return (out, weights) if need_weights else out

    def _check(self, query: Tensor, key: Tensor | None, value: Tensor | None) -> None:
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t is None:
                continue
            if not isinstance(t, Tensor) or t.dim() != 3:
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{name} must be batch-first (B, T, d_model={self.d_model}), got {shape}")
            if t.shape[-1] != self.d_model:
                raise ValueError(f"{name} has {t.shape[-1]} features but d_model={self.d_model} (shape {tuple(t.shape)})")
        if key is not None and key.shape[0] != query.shape[0]:
            raise ValueError(f"query batch {query.shape[0]} != key batch {key.shape[0]}")
        if key is not None and value is not None and key.shape[:2] != value.shape[:2]:
            raise ValueError(f"key {tuple(key.shape)} and value {tuple(value.shape)} must have the same (B, S)")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        s = f"d_model={self.d_model}, num_heads={self.num_heads}, head_dim={self.head_dim}"
        if self.num_kv_heads != self.num_heads:
            s += f", num_kv_heads={self.num_kv_heads}"
        if self.backend != "minitransformer":
            s += f", backend={self.backend!r}"
        return s

    @classmethod
    def from_torch(cls, m: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Copy a ``torch.nn.MultiheadAttention`` into an equivalent module.

        The result is batch-first (``(B, T, d)``) whatever ``m.batch_first`` is, and
        takes boolean masks with OUR convention (True = may attend; torch's
        ``attn_mask``/``key_padding_mask`` use True = blocked, so pass ``~mask``).
        """
        if not isinstance(m, nn.MultiheadAttention):
            raise TypeError(f"from_torch expects torch.nn.MultiheadAttention, got {type(m).__name__}")
        if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
            raise ValueError("from_torch supports kdim == vdim == embed_dim, add_bias_kv=False, add_zero_attn=False")
        has_bias = m.in_proj_bias is not None
        new = cls(m.embed_dim, m.num_heads, dropout=m.dropout, bias=has_bias)
        new = new.to(device=m.in_proj_weight.device, dtype=m.in_proj_weight.dtype)
        with torch.no_grad():
            new.qkv.weight.copy_(m.in_proj_weight)
            new.out.weight.copy_(m.out_proj.weight)
            if has_bias:
                new.qkv.bias.copy_(m.in_proj_bias)
                new.out.bias.copy_(m.out_proj.bias)
        new.train(m.training)
        return new
