"""Multi-head attention, batch-first, with fused QKV, grouped-query heads and a KV cache.

``MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O`` with
``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)`` and ``d_head = d_model / h``.

Instead of ``h`` small projections per role we use one matrix per role and
split its output into heads by a reshape; the three are stacked into one fused
``(d_model + 2 * kv_dim) x d_model`` matrix, so self-attention computes Q, K
and V in a single matrix product (cross-attention applies the query rows to
the decoder states and the key/value rows to the memory). With
``num_kv_heads < num_heads`` (grouped-query attention; ``num_kv_heads == 1`` is
multi-query attention) each key/value head is shared by
``num_heads / num_kv_heads`` query heads, and ``kv_dim = num_kv_heads * d_head``.

:meth:`MultiHeadAttention.forward` has three steps: ``_qkv_heads`` (project,
split into heads, QK-norm, rotate, read or extend the KV cache), ``_attend`` (the
backend below) and the output projection of the concatenated heads.

Options of recent models: ``qk_norm=True`` applies an RMSNorm over ``d_head``
to every query and key head (one gain vector shared by the heads, as in Qwen3;
OLMo 2 normalises the whole projection instead) before RoPE, which bounds the
attention logits; ``qkv_bias`` and ``out_bias`` switch the biases of the two
projections separately (Qwen2 has QKV biases and no output bias); and
``forward(..., positions=...)`` gives RoPE the position of every token, per
sequence if need be: packed sequences restart at 0, right-padded prompts
continue from their own lengths, candidate tokens of speculative decoding can
share one position. (RoPE sees only position differences, so shifting every
position a query can see by the same amount changes nothing but rounding.)

The attention itself (``softmax(q k^T / sqrt(d)) v`` per head) is computed by
one of several backends, chosen by the ``backend`` attribute:

* ``"minitransformer"`` (default): our :func:`scaled_dot_product_attention`.
* ``"torch"``: ``torch.nn.functional.scaled_dot_product_attention`` (fused
  kernels), the same result up to rounding; benchmarks swap it in.
* ``"flash"``: :func:`minitransformer.flash.flash_attention` (the CuPy CUDA kernels
  for CUDA tensors with CuPy installed, else the tiled torch twin), and for
  decoding steps with a KV cache (fewer queries than keys)
  :func:`minitransformer.flash.flash_decode` (the split-KV decode kernel on a GPU,
  plain torch elsewhere).
  It handles grouped-query heads without repeating K/V, has no attention dropout,
  and takes no explicit mask (a call with a mask uses our implementation).

``need_weights=True`` always uses our implementation, which can return the weights.

``forward(..., attn_bias=...)`` adds a float bias to every head's scaled scores
before the softmax (ALiBi's ``-slope_h * distance``, a T5 bias); the ``"torch"``
backend passes it on as a float ``attn_mask``, the ``"flash"`` backend falls back
to our implementation, as it does for a mask.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .attention import _check_inputs, attend, causal_mask, check_attn_bias
from .kv_cache import KVCache
from .norms import RMSNorm
from .validation import check_choice, check_positive_int, check_probability, describe

__all__ = ["MultiHeadAttention", "ATTENTION_BACKENDS"]

ATTENTION_BACKENDS = ("minitransformer", "torch", "flash")


def _check_backend(backend: str) -> str:
    """Return ``backend`` if it names one of :data:`ATTENTION_BACKENDS`, else raise ``ValueError``."""
    return check_choice("backend", backend, ATTENTION_BACKENDS)


def _torch_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    is_causal: bool,
    dropout_p: float,
    attn_bias: Tensor | None = None,
) -> Tensor:
    """The same attention through ``F.scaled_dot_product_attention`` (True = may attend there too).

    torch's ``is_causal`` aligns the queries with the FIRST keys; ours with the LAST
    (queries after a KV cache), so when the lengths differ or a mask is given we
    build the causal mask ourselves.

    An ``attn_bias`` goes to torch as a float ``attn_mask`` (added to the scores), with the
    bool mask and the causal mask folded in as ``-inf``.

    Args: ``q (B, H, T, hd)``; ``k, v (B, H, S, hd)`` (as many heads as ``q``); the rest as
    :func:`scaled_dot_product_attention`. Returns: ``(B, H, T, hd)``.
    """
    _check_inputs(q, k, v, mask, dropout_p, finite=False)  # shapes only: forward checked the data
    T, S = q.shape[-2], k.shape[-2]
    if is_causal and (mask is not None or T != S or attn_bias is not None):
        causal = causal_mask(T, S, device=q.device)  # (T, S)
        mask = causal if mask is None else mask & causal
        is_causal = False
    if attn_bias is not None:
        bias = attn_bias.to(q.dtype)  # broadcastable to (B, H, T, S)
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))  # (B, H, T, S) after broadcast
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
    )  # (B, H, T, hd)


def _flash_attention(q: Tensor, k: Tensor, v: Tensor, is_causal: bool, dropout_p: float) -> Tensor:
    """Attention through :mod:`minitransformer.flash` (GQA-aware: k, v keep H_kv heads).

    Args: ``q (B, H, T, hd)``; ``k, v (B, H_kv, S, hd)``. Returns: ``(B, H, T, hd)``.
    """
    from .flash import flash_attention, flash_decode  # lazy: flash loads CuPy only when used

    if dropout_p > 0.0:
        raise ValueError(
            f"backend 'flash' has no attention dropout (dropout={dropout_p}); "
            "build the model with dropout=0.0 or use backend='minitransformer'"
        )
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
        rotary: optional callable ``rotary(x (B, H, T, d_head), positions) -> x``
            (e.g. :class:`~minitransformer.RotaryEmbedding`) applied to the queries and keys
            of self-attention (cross-attention is left unrotated); ``positions`` is ``(T,)``,
            or ``(B, T)`` when :meth:`forward` is given per-sequence positions.
        backend: ``"minitransformer"`` (default), ``"torch"`` or ``"flash"``, see the module docstring;
            it can be changed later through the ``backend`` attribute.
        qkv_bias: biases of the fused QKV projection (default: ``bias``).
        out_bias: bias of the output projection (default: ``bias``).
        qk_norm: RMSNorm over ``d_head`` of every query and key head, before RoPE
            (modules ``q_norm`` and ``k_norm``, ``d_head`` gains each).
        qk_norm_eps: the QK-norm's epsilon.

    Parameters: ``qkv`` (fused ``[W_Q; W_K; W_V]``, shape ``(d_model + 2·H_kv·d_head, d_model)``)
    and ``out`` (``W_O``, ``d_model x d_model``): ``4·d_model²`` weights (plus ``4·d_model`` biases)
    when ``H_kv == H``; plus ``2·d_head`` gains with ``qk_norm``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        rotary: Callable[[Tensor, Tensor], Tensor] | None = None,
        backend: str = "minitransformer",
        *,
        qkv_bias: bool | None = None,
        out_bias: bool | None = None,
        qk_norm: bool = False,
        qk_norm_eps: float = 1e-6,
    ):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        for name, value in (("d_model", d_model), ("num_heads", num_heads), ("num_kv_heads", num_kv_heads)):
            check_positive_int(name, value)
        if d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads={num_heads} is not divisible by num_kv_heads={num_kv_heads}")
        check_probability("dropout", dropout)
        self.d_model, self.num_heads, self.num_kv_heads = d_model, num_heads, num_kv_heads
        self.head_dim = d_model // num_heads
        self.kv_dim = num_kv_heads * self.head_dim
        self.dropout = dropout
        qkv_bias = bias if qkv_bias is None else qkv_bias
        out_bias = bias if out_bias is None else out_bias
        self.qkv = nn.Linear(d_model, d_model + 2 * self.kv_dim, bias=qkv_bias)  # fused [W_Q; W_K; W_V]
        self.out = nn.Linear(d_model, d_model, bias=out_bias)  # W_O
        self.q_norm = RMSNorm(self.head_dim, eps=qk_norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, eps=qk_norm_eps) if qk_norm else None
        self.rotary = rotary
        self.backend = backend

    @property
    def backend(self) -> str:
        """Which attention implementation runs: ``"minitransformer"``, ``"torch"`` or ``"flash"``."""
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        self._backend = _check_backend(name)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        need_weights: bool = False,
        kv_cache: KVCache | None = None,
        positions: Tensor | None = None,
        attn_bias: Tensor | None = None,
    ):
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: ``(B, T, d_model)``.
            key: ``(B, S, d_model)``; ``None`` means self-attention (``key = query``).
            value: ``(B, S, d_model)``; ``None`` means ``value = key``.
            mask: bool, broadcastable to ``(B, H, T, S_total)``, True = may attend
                (e.g. :func:`padding_mask` ``(B, 1, 1, S)`` or :func:`causal_mask`
                ``(T, S)``).
            is_causal: causal masking; with a cache the ``T`` queries are the last
                positions.
            need_weights: also return the weights ``(B, H, T, S_total)``.
            kv_cache: a :class:`KVCache` for this layer. Self-attention appends this
                call's keys/values and attends to everything stored. A ``static``
                cache (cross-attention) is filled on first use and reused afterwards
                (``key`` and ``value`` are then ignored).
            positions: integer RoPE positions of the ``T`` queries (and keys) of
                self-attention, ``(T,)`` or per sequence ``(B, T)``; needs ``rotary``.
                Default ``arange(T)``, or ``past .. past + T - 1`` after ``past`` cached
                positions. For packed sequences pass positions restarting at 0 with a
                block-diagonal mask.
            attn_bias: float, broadcastable to ``(B, H, T, S_total)`` (ALiBi's
                ``(H, T, S)``), added to every head's scaled scores before the
                softmax; ``-inf`` hides a key.

        Returns:
            ``out (B, T, d_model)`` [, ``weights (B, H, T, S_total)``].
        """
        self._check(query, key, value, positions)
        # (B, H, T, hd), (B, H_kv, S, hd) x2
        q, k, v = self._qkv_heads(query, key, value, kv_cache, positions)
        if attn_bias is not None:  # checked against the scores' shape (B, H, T, S_total)
            check_attn_bias(attn_bias, q, k)
        # (B, H, T, hd), (B, H, T, S)
        out, weights = self._attend(q, k, v, mask, is_causal, need_weights, attn_bias)
        B, H, T, hd = out.shape
        # (B, H, T, hd) -> (B, T, d): concatenate heads
        out = out.transpose(1, 2).reshape(B, T, H * hd)
        out = self.out(out)  # (B, T, d)
        return (out, weights) if need_weights else out

    # -- the steps of forward --------------------------------------------------
    def _qkv_heads(
        self,
        query: Tensor,
        key: Tensor | None,
        value: Tensor | None,
        kv_cache: KVCache | None,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Project to queries, keys and values, split them into heads, normalise, rotate,
        and use the cache.

        Args:
            query, key, value, kv_cache, positions: as in :meth:`forward`.

        Returns:
            ``q (B, H, T, hd)``, ``k`` and ``v (B, H_kv, S, hd)``; with a cache, ``S``
            counts every stored position (this call's included).
        """
        self_attention = key is None or (key is query and (value is None or value is query))
        if (
            kv_cache is not None
            and kv_cache.static
            and len(kv_cache) > 0  # the memory's keys/values are cached
            and not self_attention
        ):
            # (B, H, T, hd)
            q = self._split_heads(self._project(query, 0, self.d_model), self.num_heads)
            if self.q_norm is not None:
                q = self.q_norm(q)  # (B, H, T, hd)
            # memory projected (and normalised) at the first step: (B, H_kv, S, hd) each
            k, v = kv_cache.get()
            return q, k, v

        # (B, T, d), (B, S, kv) x2
        q, k, v = self._project_qkv(query, key, value, self_attention)
        q = self._split_heads(q, self.num_heads)  # (B, H, T, hd)
        k = self._split_heads(k, self.num_kv_heads)  # (B, H_kv, S, hd)
        v = self._split_heads(v, self.num_kv_heads)  # (B, H_kv, S, hd)
        # QK-norm: every head's query and key vector to RMS 1 (times a gain)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # (B, H, T, hd), (B, H_kv, S, hd)
        if self.rotary is not None and self_attention:
            # RoPE rotates queries and keys of the SAME sequence by their positions;
            # cross-attention (two sequences, no shared positions) is left unrotated.
            if positions is None:
                past = 0 if kv_cache is None or kv_cache.static else len(kv_cache)
                positions = torch.arange(past, past + q.shape[2], device=q.device)  # (T,)
            q = self.rotary(q, positions)  # (B, H, T, hd)
            k = self.rotary(k, positions)  # (B, H_kv, T, hd)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)  # (B, H_kv, S_total, hd) each
        return q, k, v

    def _project_qkv(
        self, query: Tensor, key: Tensor | None, value: Tensor | None, self_attention: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``q = query W_Q``, ``k = key W_K``, ``v = value W_V``, one matrix product for self-attention.

        Returns:
            ``q (B, T, d_model)``, ``k`` and ``v (B, S, H_kv * hd)``.
        """
        d, kv = self.d_model, self.kv_dim
        if self_attention:
            return self.qkv(query).split([d, kv, kv], dim=-1)  # (B, T, d + 2*kv) -> (B, T, d), (B, T, kv) x2
        value = key if value is None else value
        q = self._project(query, 0, d)  # (B, T, d)
        if key is value:
            k, v = self._project(key, d, d + 2 * kv).split([kv, kv], dim=-1)  # (B, S, 2*kv) -> (B, S, kv) x2
        else:
            k = self._project(key, d, d + kv)  # (B, S, kv)
            v = self._project(value, d + kv, d + 2 * kv)  # (B, S, kv)
        return q, k, v

    def _project(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Apply rows ``start:stop`` of the fused projection (one role): ``(B, L, d) -> (B, L, stop - start)``."""
        b = None if self.qkv.bias is None else self.qkv.bias[start:stop]
        return F.linear(x, self.qkv.weight[start:stop], b)

    def _split_heads(self, x: Tensor, heads: int) -> Tensor:
        """``(B, T, heads * hd) -> (B, heads, T, hd)`` (a view)."""
        B, T, _ = x.shape
        # (B, T, h*hd) -> (B, h, T, hd)
        return x.view(B, T, heads, self.head_dim).transpose(1, 2)

    def _attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        is_causal: bool,
        need_weights: bool,
        attn_bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``softmax(q k^T / sqrt(hd) + attn_bias) v`` per head, by the chosen backend.

        Args:
            q: ``(B, H, T, hd)``.
            k, v: ``(B, H_kv, S, hd)``.
            mask, is_causal, need_weights, attn_bias: as in :meth:`forward`.

        Returns:
            ``out (B, H, T, hd)`` and the weights ``(B, H, T, S)`` (``None`` from the
            ``"torch"`` and ``"flash"`` backends, which do not form them).
        """
        dropout_p = self.dropout if self.training else 0.0
        plain = mask is None and attn_bias is None  # the flash kernels take neither
        if self.backend == "flash" and plain and not need_weights:
            # (B, H, T, hd); K/V keep H_kv heads
            return _flash_attention(q, k, v, is_causal, dropout_p), None
        if self.backend == "torch" and not need_weights:
            if self.num_kv_heads != self.num_heads:  # one K/V head per query head for torch
                group = self.num_heads // self.num_kv_heads
                k = k.repeat_interleave(group, dim=1)  # (B, H_kv, S, hd) -> (B, H, S, hd)
                v = v.repeat_interleave(group, dim=1)  # (B, H_kv, S, hd) -> (B, H, S, hd)
            # (B, H, T, hd)
            return _torch_attention(q, k, v, mask, is_causal, dropout_p, attn_bias), None
        # Inputs were checked once in forward; attend() does not scan them for NaN again.
        return attend(
            q,
            k,
            v,
            mask,
            is_causal=is_causal,
            dropout_p=dropout_p,
            return_weights=True,
            enable_gqa=True,
            attn_bias=attn_bias,
        )  # (B, H, T, hd), (B, H, T, S)

    def _check(self, query: Tensor, key: Tensor | None, value: Tensor | None, positions: Tensor | None = None) -> None:
        """``ValueError`` unless query ``(B, T, d)``, key and value ``(B, S, d)`` and positions fit together."""
        if key is None and value is not None:
            raise ValueError("value was given without key; pass key too (key=None means self-attention)")
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t is None:
                continue
            if not isinstance(t, Tensor) or t.dim() != 3:
                raise ValueError(f"{name} must be batch-first (B, T, d_model={self.d_model}), got {describe(t)}")
            if t.shape[-1] != self.d_model:
                raise ValueError(
                    f"{name} has {t.shape[-1]} features but d_model={self.d_model} (shape {tuple(t.shape)})"
                )
        if key is not None and key.shape[0] != query.shape[0]:
            raise ValueError(f"query batch {query.shape[0]} != key batch {key.shape[0]}")
        if key is not None and value is not None and key.shape[:2] != value.shape[:2]:
            raise ValueError(f"key {tuple(key.shape)} and value {tuple(value.shape)} must have the same (B, S)")
        if positions is not None:
            self._check_positions(query, key, value, positions)

    def _check_positions(self, query: Tensor, key: Tensor | None, value: Tensor | None, positions: Tensor) -> None:
        """``ValueError``/``TypeError`` unless ``positions`` are integer ``(T,)`` or ``(B, T)`` for RoPE."""
        if self.rotary is None:
            raise ValueError("positions were given but this MultiHeadAttention has no rotary embedding (rotary=None)")
        if not (key is None or (key is query and (value is None or value is query))):
            raise ValueError("positions apply to self-attention only (key=None); cross-attention is not rotated")
        if not isinstance(positions, Tensor):
            raise TypeError(f"positions must be an integer tensor (T,) or (B, T), got {describe(positions)}")
        if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
            raise TypeError(f"positions must be an integer tensor, got {positions.dtype}")
        B, T = query.shape[:2]
        if positions.shape not in ((T,), (B, T)):
            raise ValueError(
                f"positions must have shape (T,) = ({T},) or (B, T) = ({B}, {T}) for query {tuple(query.shape)}, "
                f"got {tuple(positions.shape)}"
            )

    def num_parameters(self) -> int:
        """Number of weights and biases (``4 d^2 + 4 d`` without grouped-query heads)."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        s = f"d_model={self.d_model}, num_heads={self.num_heads}, head_dim={self.head_dim}"
        if self.num_kv_heads != self.num_heads:
            s += f", num_kv_heads={self.num_kv_heads}"
        if self.q_norm is not None:
            s += ", qk_norm=True"
        if self.backend != "minitransformer":
            s += f", backend={self.backend!r}"
        return s

    @classmethod
    def from_torch(cls, m: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy a ``torch.nn.MultiheadAttention`` into an equivalent module.

        The result is batch-first (``(B, T, d)``) whatever ``m.batch_first`` is, and
        takes boolean masks with OUR convention (True = may attend; torch's
        ``attn_mask``/``key_padding_mask`` use True = blocked, so pass ``~mask``).
        """
        if not isinstance(m, nn.MultiheadAttention):
            raise TypeError(
                f"from_torch expects torch.nn.MultiheadAttention, got {type(m).__name__}",
            )
        if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
            raise ValueError(
                "from_torch supports kdim == vdim == embed_dim, add_bias_kv=False, "
                "add_zero_attn=False"
            )  # fmt: skip
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
