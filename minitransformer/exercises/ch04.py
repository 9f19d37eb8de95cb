"""Chapter 4 exercises: splitting and merging heads, counting parameters, sizing a KV cache, and a
change to the ablation experiment (mean-ablation)."""

from __future__ import annotations

import torch

from .core import Case, Exercise, Forbidden, Mistake, register


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- 1. split the heads ----------------------------------------------------------------------


def split_heads_solution(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, d) -> (B, h, T, d/h): head i gets features i*d_k .. (i+1)*d_k - 1 of every position."""
    B, T, d = x.shape
    d_k = d // num_heads
    return x.view(B, T, num_heads, d_k).transpose(1, 2)  # (B, T, h, d_k) -> (B, h, T, d_k)


def _split_cases() -> list[Case]:
    g = _gen(40)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return [
        Case("x = arange(24).view(1, 3, 8), 2 heads: B=1, T=3, d=8", (torch.arange(24.0).view(1, 3, 8), 2)),
        Case("x (2, 5, 12), 3 heads", (r(2, 5, 12), 3)),
        Case("x (2, 4, 16), 4 heads", (r(2, 4, 16), 4)),
        Case("x (1, 1, 6), 1 head (length 1)", (r(1, 1, 6), 1)),
    ]


register(
    Exercise(
        "ch04.split_heads",
        "split (B, T, d) into heads (B, h, T, d/h)",
        split_heads_solution,
        _split_cases,
        hint="view the last axis as (h, d_k) first: x.view(B, T, h, d_k), THEN move the head axis "
        "in front of the time axis with .transpose(1, 2).",
        mistakes=[
            Mistake(
                lambda x, h: x.reshape(x.shape[0], h, x.shape[1], x.shape[2] // h),
                "the shape is right but the numbers are not: reshaping (B, T, d) straight to "
                "(B, h, T, d_k) cuts the flat memory in the wrong places and mixes positions "
                "into heads. View as (B, T, h, d_k), then transpose(1, 2).",
            ),
            Mistake(
                lambda x, h: x.view(x.shape[0], x.shape[1], x.shape[2] // h, h).permute(0, 3, 1, 2),
                "you split the features as (d_k, h), so head i got every h-th feature: a head owns a "
                "CONTIGUOUS block of d_k features, so view the last axis as (h, d_k).",
            ),
            Mistake(
                lambda x, h: x.view(x.shape[0], x.shape[1], h, x.shape[2] // h),
                "you split the features but did not move the head axis: the result must be "
                "(B, h, T, d_k), so add .transpose(1, 2).",
            ),
        ],
        forbidden=[
            Forbidden(
                "the exercise is to split the heads yourself with .view and .transpose; "
                "MultiHeadAttention._split_heads is what it is checked against.",
                functions=("minitransformer.multihead:MultiHeadAttention._split_heads",),
            )
        ],
    )
)


# -- 2. merge the heads ----------------------------------------------------------------------


def merge_heads_solution(x: torch.Tensor) -> torch.Tensor:
    """(B, h, T, d_k) -> (B, T, h*d_k): Concat(head_1, ..., head_h) at every position."""
    B, h, T, d_k = x.shape
    return x.transpose(1, 2).reshape(B, T, h * d_k)  # (B, T, h, d_k) -> (B, T, d)


def _merge_cases() -> list[Case]:
    g = _gen(41)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return [
        Case("x = arange(24).view(1, 2, 3, 4): 2 heads, T=3, d_k=4", (torch.arange(24.0).view(1, 2, 3, 4),)),
        Case("x (2, 3, 5, 4): 3 heads, T=5", (r(2, 3, 5, 4),)),
        Case("x (1, 4, 2, 8): 4 heads, T=2", (r(1, 4, 2, 8),)),
    ]


register(
    Exercise(
        "ch04.merge_heads",
        "concatenate the heads back: (B, h, T, d_k) -> (B, T, h*d_k)",
        merge_heads_solution,
        _merge_cases,
        hint="undo the split in reverse order: .transpose(1, 2) to (B, T, h, d_k), then "
        ".reshape(B, T, h * d_k) (reshape, not view: the transposed tensor is not contiguous).",
        mistakes=[
            Mistake(
                lambda x: x.reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3]),
                "the shape is right but you reshaped without transposing, which mixes the time "
                "steps of one head into one position: transpose(1, 2) first.",
            ),
            Mistake(
                lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1),
                "you put d_k before h, which interleaves the heads feature by feature; "
                "Concat(head_1, ..., head_h) puts head 1's d_k features first: use (B, T, h, d_k).",
            ),
            Mistake(
                lambda x: x.sum(dim=1),
                "you summed the heads; multi-head attention CONCATENATES them (W^O mixes them afterwards).",
            ),
        ],
    )
)


# -- 3. count the parameters -------------------------------------------------------------------


def attention_params_solution(d_model: int, num_heads: int, num_kv_heads: int, bias: bool) -> int:
    """Weights (and biases) of W_Q, W_K, W_V, W_O in (grouped-query) multi-head attention."""
    d_head = d_model // num_heads
    kv_dim = num_kv_heads * d_head  # the width of K and of V
    weights = d_model * d_model + 2 * d_model * kv_dim + d_model * d_model  # W_Q, W_K and W_V, W_O
    biases = (d_model + 2 * kv_dim + d_model) if bias else 0  # one per output feature
    return weights + biases


def _params_cases() -> list[Case]:
    return [
        Case("d_model=512, 8 heads, 8 kv heads, with biases", (512, 8, 8, True)),
        Case("d_model=768, 12 heads, 12 kv heads, no biases", (768, 12, 12, False)),
        Case("d_model=64, 8 heads, 2 kv heads (grouped-query), with biases", (64, 8, 2, True)),
        Case("d_model=8192, 64 heads, 8 kv heads, no biases (Llama-3 70B's attention)", (8192, 64, 8, False)),
    ]


register(
    Exercise(
        "ch04.attention_params",
        "count the parameters of a multi-head attention layer",
        attention_params_solution,
        _params_cases,
        hint="W_Q and W_O are d_model x d_model; W_K and W_V are d_model x (num_kv_heads * d_head); "
        "with bias=True each matrix adds one bias per OUTPUT feature.",
        mistakes=[
            Mistake(
                lambda d, h, kv, bias: 4 * d * d,
                "you left out the biases (with bias=True every projection adds one per output "
                "feature), and/or K and V are narrower under grouped-query attention.",
            ),
            Mistake(
                lambda d, h, kv, bias: 4 * d * d + (4 * d if bias else 0),
                "that is right for ordinary multi-head attention, but with num_kv_heads < num_heads "
                "W_K and W_V only produce num_kv_heads * d_head features each.",
            ),
            Mistake(
                lambda d, h, kv, bias: 3 * d * d + (3 * d if bias else 0),
                "you left out the output projection W^O (d_model x d_model, plus d_model biases).",
            ),
            Mistake(
                lambda d, h, kv, bias: 4 * d * d // h + (4 * d // h if bias else 0),
                "you counted ONE head; the h heads together are as wide as d_model.",
            ),
            Mistake(
                lambda d, h, kv, bias: 5 * d * d + (5 * d if bias else 0),
                "you counted W^O twice: there is one output projection for all heads together.",
            ),
        ],
        forbidden=[
            Forbidden(
                "count the parameters from the shapes of W_Q, W_K, W_V and W_O (and their biases) instead of "
                "building a layer and counting its tensors: the formula is the point, and at d_model = 8192 "
                "building the layer costs seconds and hundreds of megabytes.",
                functions=(
                    "minitransformer.multihead:MultiHeadAttention.__init__",
                    "minitransformer.multihead:MultiHeadAttention.num_parameters",
                    "torch.nn.modules.activation:MultiheadAttention.__init__",
                    "minitransformer.configs:count_attention_params",
                ),
            )
        ],
        rtol=0.0,
        atol=0.5,
    )
)


# -- 4. the KV cache of a grouped-query model ------------------------------------------------


def kv_cache_bytes_solution(
    n_layers: int, n_heads: int, n_kv_heads: int, head_dim: int, tokens: int, batch_size: int, bytes_per_element: int
) -> int:
    """Bytes of a whole model's KV cache: keys AND values, for every layer and KV head."""
    per_token_per_layer = 2 * n_kv_heads * head_dim  # one key and one value vector per kv head
    return n_layers * per_token_per_layer * tokens * batch_size * bytes_per_element


def _kv_cases() -> list[Case]:
    return [
        Case("1 layer, 2 heads, 2 kv heads, head_dim 4, 3 tokens, batch 1, fp32 (4 bytes)", (1, 2, 2, 4, 3, 1, 4)),
        Case(
            "Llama-2 70B: 80 layers, 64 heads, 8 kv heads, head_dim 128, 4096 tokens, batch 1, fp16",
            (80, 64, 8, 128, 4096, 1, 2),
        ),
        Case(
            "multi-query: 24 layers, 16 heads, 1 kv head, head_dim 64, 2048 tokens, batch 8, bf16",
            (24, 16, 1, 64, 2048, 8, 2),
        ),
    ]


register(
    Exercise(
        "ch04.kv_cache_bytes",
        "the memory of a grouped-query model's KV cache",
        kv_cache_bytes_solution,
        _kv_cases,
        hint="2 (keys and values) x layers x KV heads x head_dim x tokens x batch x bytes per element; "
        "the number of QUERY heads does not appear.",
        mistakes=[
            Mistake(
                lambda L, h, kv, hd, n, b, by: L * kv * hd * n * b * by,
                "you counted the keys only: the cache holds keys AND values, a factor of 2.",
            ),
            Mistake(
                lambda L, h, kv, hd, n, b, by: 2 * L * h * hd * n * b * by,
                "you used the number of QUERY heads; only the KV heads are cached (that is the "
                "whole saving of grouped-query attention).",
            ),
            Mistake(
                lambda L, h, kv, hd, n, b, by: 2 * kv * hd * n * b * by,
                "every layer has its own cache: multiply by the number of layers.",
            ),
            Mistake(
                lambda L, h, kv, hd, n, b, by: 2 * L * kv * hd * n * b,
                "you counted elements, not bytes: multiply by bytes_per_element (2 for fp16).",
            ),
        ],
        forbidden=[
            Forbidden(
                "write the product yourself: 2 x layers x KV heads x head_dim x tokens x batch x bytes; "
                "the package's kv_cache_bytes is what it is checked against.",
                functions=("minitransformer.kv_cache:kv_cache_bytes", "minitransformer.kv_cache:kv_cache_report"),
            )
        ],
        rtol=0.0,
        atol=0.5,
    )
)


# -- 5. change the experiment: mean-ablate a head ----------------------------------------------


def mean_ablation_loss_solution(model, idx: torch.Tensor, targets: torch.Tensor, layer: int, head: int) -> float:
    """Held-out loss with head ``(layer, head)``'s output replaced by its MEAN over the batch and positions.

    The chapter's ablation sets the head's ``d_k``-wide slice of the input of ``W^O`` to zero; here the
    slice becomes its average over every sequence and position of ``idx``, so the head still adds its
    typical output and only stops depending on the input."""
    from ..book.heads import attention_layers, evaluate

    attn = attention_layers(model)[layer]
    cols = slice(head * attn.head_dim, (head + 1) * attn.head_dim)  # the head's block of the concatenation

    def mean_ablate(module, inputs):
        concat = inputs[0].clone()  # (B, T, H * d_k): the heads side by side, before W^O
        concat[..., cols] = concat[..., cols].mean(dim=(0, 1))  # (d_k,) broadcast over (B, T)
        return (concat,)

    handle = attn.out.register_forward_pre_hook(mean_ablate)
    try:
        return evaluate(model, idx, targets)["loss"]
    finally:
        handle.remove()


def _mean_ablation_variant(model, idx, targets, layer, head, dims=(0, 1), offset=0, zero=False) -> float:
    """Known slips: zeroing instead of averaging, the mean over the wrong axes, the wrong head's columns."""
    from ..book.heads import attention_layers, evaluate

    attn = attention_layers(model)[layer]
    start = head * attn.head_dim + offset
    cols = slice(start, start + attn.head_dim)

    def hook(module, inputs):
        concat = inputs[0].clone()
        concat[..., cols] = 0.0 if zero else concat[..., cols].mean(dim=dims, keepdim=True)
        return (concat,)

    handle = attn.out.register_forward_pre_hook(hook)
    try:
        return evaluate(model, idx, targets)["loss"]
    finally:
        handle.remove()


def _mean_ablation_cases() -> list[Case]:
    from ..book.heads import AttentionOnlyTransformer, repeated_sequences

    cases = []
    for seed, (layer, head) in [(0, (0, 1)), (1, (1, 0)), (2, (1, 3))]:
        torch.manual_seed(seed)
        model = AttentionOnlyTransformer(vocab_size=12, block_size=16, n_layer=2, n_head=4, d_model=16).double()
        with torch.no_grad():  # a larger W^O, so that every head moves the loss visibly
            for attn in model.attns:
                attn.out.weight.mul_(4.0)
        idx, targets = repeated_sequences(
            8, seq_len=16, vocab_size=12, min_period=3, max_period=6, generator=_gen(seed)
        )
        cases.append(
            Case(
                f"an untrained 2-layer, 4-head model (seed {seed}), 8 sequences of 16 tokens, head ({layer}, {head})",
                (model, idx, targets, layer, head),
            )
        )
    return cases


register(
    Exercise(
        "ch04.mean_ablation_loss",
        "change the ablation: replace a head's output by its mean instead of zero",
        mean_ablation_loss_solution,
        _mean_ablation_cases,
        hint="register a forward PRE-hook on attention_layers(model)[layer].out (W^O); its input is (B, T, H * d_k); "
        "replace columns head*d_k .. (head+1)*d_k - 1 by their mean over dims (0, 1) (every sequence and "
        "position), return the modified input as a tuple, evaluate, and remove the hook.",
        mistakes=[
            Mistake(
                lambda m, i, t, layer, head: _mean_ablation_variant(m, i, t, layer, head, zero=True),
                "you zeroed the head, as section 7 does; this exercise replaces it by its MEAN output.",
            ),
            Mistake(
                lambda m, i, t, layer, head: _mean_ablation_variant(m, i, t, layer, head, dims=(1,)),
                "you averaged over the positions of each sequence only; average over every sequence AND "
                "position, dims (0, 1), so that the head no longer depends on its input at all.",
            ),
            Mistake(
                lambda m, i, t, layer, head: _mean_ablation_variant(m, i, t, layer, head, dims=(-1,)),
                "you averaged the head's d_k features with each other; average each feature over the batch "
                "and the positions (dims 0 and 1) instead.",
            ),
        ],
        rtol=1e-9,
        atol=1e-12,
    )
)
