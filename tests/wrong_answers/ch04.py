"""Plausible wrong answers to chapter 4's exercises (each must fail its checker)."""

from __future__ import annotations

from minitransformer import MultiHeadAttention
from minitransformer.configs import count_attention_params
from minitransformer.kv_cache import kv_cache_bytes
from minitransformer.multihead import MultiHeadAttention as _MHA

WRONG = {
    "ch04.split_heads": [
        lambda x, h: x.reshape(x.shape[0], h, x.shape[1], x.shape[2] // h),  # reshape, no transpose
        lambda x, h: x.view(x.shape[0], x.shape[1], x.shape[2] // h, h).permute(0, 3, 1, 2),  # (d_k, h) split
        lambda x, h: x.view(x.shape[0], x.shape[1], h, x.shape[2] // h),  # head axis not moved
        lambda x, h: x.view(x.shape[0], x.shape[1], h, -1).transpose(2, 3),  # transposed the wrong pair
        lambda x, h: _MHA._split_heads(_MHA(x.shape[-1], h), x, h),  # the package's own method
    ],
    "ch04.merge_heads": [
        lambda x: x.reshape(x.shape[0], x.shape[2], -1),  # reshape, no transpose
        lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1),  # heads interleaved
        lambda x: x.mean(dim=1),  # averaged the heads
        lambda x: x.transpose(1, 2),  # transpose without reshape
    ],
    "ch04.attention_params": [
        lambda d, h, kv, bias: 4 * d * d,  # forgot biases (and GQA)
        lambda d, h, kv, bias: 4 * d * d + 4 * d,  # biases always, no GQA
        lambda d, h, kv, bias: 3 * d * d + (3 * d if bias else 0),  # omitted W^O
        lambda d, h, kv, bias: 5 * d * d + (5 * d if bias else 0),  # W^O twice
        lambda d, h, kv, bias: 4 * d * (d // h) + (4 * d // h if bias else 0),  # one head only
        lambda d, h, kv, bias: sum(p.numel() for p in MultiHeadAttention(d, h, kv, bias=bias).parameters()),  # built
        lambda d, h, kv, bias: count_attention_params(d, h, kv, bias=bias),  # the package's own function
    ],
    "ch04.kv_cache_bytes": [
        lambda L, h, kv, hd, n, b, by: L * kv * hd * n * b * by,  # keys only
        lambda L, h, kv, hd, n, b, by: 2 * L * h * hd * n * b * by,  # query heads
        lambda L, h, kv, hd, n, b, by: 2 * L * kv * hd * n * b,  # elements, not bytes
        lambda L, h, kv, hd, n, b, by: 2 * L * kv * (hd * h) * n * b * by,  # d_model per kv head
        lambda L, h, kv, hd, n, b, by: kv_cache_bytes(L, kv, hd, n, b, by),  # the package's own function
    ],
}


def _ablated_loss(model, idx, targets, layer, head, fill):
    """The loss with head (layer, head)'s slice of W^O's input replaced by fill(slice)."""
    from minitransformer.book.heads import attention_layers, evaluate

    attn = attention_layers(model)[layer]
    cols = slice(head * attn.head_dim, (head + 1) * attn.head_dim)

    def hook(module, inputs):
        x = inputs[0].clone()
        x[..., cols] = fill(x[..., cols])
        return (x,)

    handle = attn.out.register_forward_pre_hook(hook)
    try:
        return evaluate(model, idx, targets)["loss"]
    finally:
        handle.remove()


def _intact_loss(model, idx, targets, layer, head):
    from minitransformer.book.heads import evaluate

    return evaluate(model, idx, targets)["loss"]


def _zero_ablation(model, idx, targets, layer, head):
    from minitransformer.book.heads import ablate_heads, evaluate

    with ablate_heads(model, [(layer, head)]):
        return evaluate(model, idx, targets)["loss"]


WRONG["ch04.mean_ablation_loss"] = [
    _zero_ablation,  # the chapter's zero-ablation
    _intact_loss,  # nothing ablated
    lambda m, i, t, layer, head: _ablated_loss(m, i, t, layer, head, lambda x: x.mean(dim=0)),  # mean over batch only
    lambda m, i, t, layer, head: _ablated_loss(m, i, t, layer, head, lambda x: x.mean()),  # one number for all
    lambda m, i, t, layer, head: _ablated_loss(m, i, t, layer - 1 if layer else 1, head, lambda x: x.mean(dim=(0, 1))),
]
