"""Greedy and beam-search decoding for the encoder-decoders: :class:`~minitransformer.rnn.Seq2Seq`
(GRU, with or without Bahdanau/Luong attention) and :class:`~minitransformer.transformer.Transformer`.

Both searches see a model through a small adapter with three operations:

* ``start(src, src_lengths, copies) -> state``: encode the source once and repeat every
  sentence's encoding ``copies`` times (one row per beam, the beams of sentence ``b`` in rows
  ``b * copies .. b * copies + copies - 1``);
* ``step(state, prev) -> (logits (N, V), state)``: one decoder step for the ``N`` rows;
* ``reorder(state, index) -> state``: row ``i`` continues from row ``index[i]`` (a beam that
  survives takes its parent's decoder state; ``index`` never leaves a sentence's block).

The Transformer's adapter decodes one token per step with its :class:`~minitransformer.kv_cache.KVCache`
s (as :meth:`Transformer.greedy_decode` does); the GRU's keeps the decoder state ``(s, h~)``.

Beam search (over a batch; each sentence has its own ``K = beam_size`` beams), at every step:
the ``2K`` best one-token extensions of the live beams by cumulative log-probability; those
ending in EOS among the first ``K`` are set aside as finished hypotheses, the first ``K`` that
do not end in EOS become the new beams (the rule of fairseq, which makes ``beam_size=1`` the
greedy search). A sentence's search stops when its best finished score cannot be beaten by any
continuation of its live beams (or after ``max_len`` tokens); with ``length_penalty=0`` a live
beam's log-probability only falls, so this is the moment its best is at least their best.

Scores use the length penalty of GNMT (Wu et al., 2016):
``score(y) = log P(y | x) / lp(|y|)``, ``lp(n) = ((5 + n) / 6) ** alpha``; ``|y|`` counts the
generated tokens with EOS; ``alpha = 0`` is the raw log-probability, larger ``alpha`` favours
longer outputs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from .rnn import Seq2Seq
from .transformer import Transformer
from .validation import check_bool, check_int_tensor, check_positive_int, check_real, describe

__all__ = ["DecodeOutput", "greedy_search", "beam_search", "length_penalty_factor"]


class DecodeOutput(NamedTuple):
    """What the searches return with ``return_scores=True`` (one entry per source sentence).

    Attributes:
        tokens: ``B`` lists of token ids, without BOS and EOS.
        log_probs: ``(B,)`` float, ``log P(y | x)`` of each output, its EOS included when it has one.
        scores: ``(B,)`` float, ``log_probs / lp(|y|)`` (equal to ``log_probs`` for greedy search).
        finished: ``(B,)`` bool, whether the output ended with EOS (False: cut at ``max_len``).

    The tensors are float64 (bool) on the CPU.
    """

    tokens: list[list[int]]
    log_probs: Tensor
    scores: Tensor
    finished: Tensor


def length_penalty_factor(length: int, alpha: float) -> float:
    """GNMT's length penalty ``lp(n) = ((5 + n) / 6) ** alpha``; a score is ``log P / lp(n)``.

    Args:
        length: ``n``, the number of generated tokens (EOS included).
        alpha: the strength; 0 gives ``lp = 1`` (raw log-probability).

    Returns:
        ``lp(n)`` as a float (1.0 for ``n = 1`` whatever ``alpha``).
    """
    return ((5.0 + length) / 6.0) ** alpha


# -- adapters: one per model kind ---------------------------------------------------------------------------


class _Seq2SeqAdapter:
    """``state = (s, h~)``: the GRU state and Luong's attentional hidden state, ``(N, H)`` each."""

    def __init__(self, model: Seq2Seq):
        self.model, self.memory = model, None

    def start(self, src: Tensor, src_lengths: Tensor | None, copies: int):
        memory, state = self.model._start(src, src_lengths)  # outputs (B, S, H), keys, mask (B, S), summary (B, H)
        rep = lambda t: None if t is None else t.repeat_interleave(copies, dim=0)  # noqa: E731  (B, ...) -> (B*K, ...)
        self.memory = tuple(rep(t) for t in memory)
        return tuple(rep(t) for t in state)  # (N, H) x 2

    def step(self, state, prev: Tensor):
        logits, state, _ = self.model._step(prev, state, self.memory)  # (N, V)
        return logits, state

    def reorder(self, state, index: Tensor):
        return tuple(t.index_select(0, index) for t in state)  # (N, H) x 2


class _TransformerAdapter:
    """``state = position``; the decoder's self-attention KV caches grow by one token per step, the
    static cross-attention caches hold the projected encoder output (the same for a sentence's beams)."""

    def __init__(self, model: Transformer, max_len: int):
        self.model, self.max_len = model, max_len
        self.memory = self.src_mask = None  # (N, S, d), (N, 1, 1, S): set by start
        self.self_caches, self.cross_caches = [], []

    def start(self, src: Tensor, src_lengths: Tensor | None, copies: int):
        m = self.model
        src_mask = _transformer_src_mask(m, src, src_lengths)  # (B, 1, 1, S) or None
        memory = m.encode(src, src_mask)  # (B, S, d)
        self.memory = memory.repeat_interleave(copies, dim=0)  # (N, S, d)
        self.src_mask = None if src_mask is None else src_mask.repeat_interleave(copies, dim=0)  # (N, 1, 1, S)
        N, S = self.memory.shape[:2]
        layers = m.decoder.layers
        self.self_caches = [m._new_cache(N, self.max_len, layer.self_attn) for layer in layers]
        self.cross_caches = [m._new_cache(N, S, layer.cross_attn, static=True) for layer in layers]
        return 0

    def step(self, state: int, prev: Tensor):
        logits = self.model.decode(
            prev[:, None],  # (N, 1)
            self.memory,
            self.src_mask,
            start=state,
            self_caches=self.self_caches,
            cross_caches=self.cross_caches,
        )  # (N, 1, V)
        return logits[:, -1], state + 1  # (N, V)

    def reorder(self, state: int, index: Tensor):
        for cache in self.self_caches:  # the cross caches are equal across a sentence's beams: untouched
            cache.k = cache.k.index_select(0, index)  # (N, H_kv, max_len, hd)
            cache.v = cache.v.index_select(0, index)
        return state


def _transformer_src_mask(model: Transformer, src: Tensor, src_lengths: Tensor | None) -> Tensor | None:
    """``src_lengths`` as the Transformer's ``src_mask (B, 1, 1, S)`` (True = real token)."""
    B, S = src.shape
    if src_lengths is None:
        return model._pad_mask(src, None)  # from pad_id, or None (no padding)
    if not isinstance(src_lengths, Tensor):
        raise TypeError(f"src_lengths must be a (B,) tensor, a bool (B, S) mask or None, got {describe(src_lengths)}")
    if src_lengths.dtype == torch.bool:
        if src_lengths.shape not in ((B, S), (B, 1, 1, S)):
            raise ValueError(
                f"a bool src_lengths mask must be (B, S) or (B, 1, 1, S) = ({B}, {S}), got {tuple(src_lengths.shape)}"
            )
        return src_lengths.reshape(B, 1, 1, S)
    check_int_tensor("src_lengths", src_lengths, dim=1, low=1, high=S + 1)
    if src_lengths.shape[0] != B:
        raise ValueError(f"src_lengths must be (B,) = ({B},), got {tuple(src_lengths.shape)}")
    return (torch.arange(S, device=src.device) < src_lengths.to(src.device)[:, None]).reshape(B, 1, 1, S)


def _prepare(model: Any, src: Any, max_len: Any, bos_id: Any, eos_id: Any, where: str):
    """Check the common arguments; return ``(adapter, max_len, bos_id, eos_id)``."""
    if not isinstance(model, (Seq2Seq, Transformer)):
        raise TypeError(f"{where}: model must be a minitransformer Seq2Seq or Transformer, got {describe(model)}")
    check_int_tensor("src", src, dim=2, low=0, where=where)
    if src.shape[0] == 0 or src.shape[1] == 0:
        raise ValueError(f"{where}: src must be a non-empty (B, S) tensor of token ids, got shape {tuple(src.shape)}")
    if isinstance(model, Seq2Seq):
        c = model.config
        vocab = c.vocab_size
        bos_id = c.bos_id if bos_id is None else bos_id
        eos_id = c.eos_id if eos_id is None else eos_id
        default_len, cap = 2 * src.shape[1] + 10, None
    else:
        if bos_id is None or eos_id is None:
            raise ValueError(f"{where}: a Transformer has no BOS/EOS ids of its own; pass bos_id=... and eos_id=...")
        vocab = model.generator.out_features
        check_int_tensor("src", src, low=0, high=model.src_embed.num_embeddings, where=where)
        default_len, cap = min(2 * src.shape[1] + 10, model.max_len), model.max_len
    bos_id = check_positive_int("bos_id", bos_id, minimum=0, where=where)
    eos_id = check_positive_int("eos_id", eos_id, minimum=0, where=where)
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
        if value >= vocab:
            raise ValueError(f"{where}: {name}={value} is outside the target vocabulary of {vocab} tokens")
    max_len = default_len if max_len is None else check_positive_int("max_len", max_len, where=where)
    if cap is not None and max_len > cap:
        raise ValueError(f"{where}: max_len={max_len} exceeds the Transformer's max_len={cap} positions")
    adapter = _Seq2SeqAdapter(model) if isinstance(model, Seq2Seq) else _TransformerAdapter(model, max_len)
    return adapter, max_len, bos_id, eos_id


def _cannot_be_beaten(best: Tensor, beam_lp: Tensor, max_len: int, alpha: float) -> Tensor:
    """Whether each sentence's best finished score ``best (B,)`` is at least what any continuation of
    its live beams (log-probabilities ``beam_lp (B, K)``) can reach: ``log P`` only falls as tokens are
    added and ``lp`` grows with the length, so no continuation scores above ``max(log P) / lp(max_len)``.

    Returns:
        ``(B,)`` bool, True where the sentence's search can stop.
    """
    bound = beam_lp.max(dim=1).values.double() / length_penalty_factor(max_len, alpha)  # (B,)
    return best >= bound


class _eval_mode:
    """Run the model in eval mode (no dropout) and restore its mode afterwards."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


@torch.no_grad()
def greedy_search(
    model: Seq2Seq | Transformer,
    src: Tensor,
    src_lengths: Tensor | None = None,
    *,
    max_len: int | None = None,
    bos_id: int | None = None,
    eos_id: int | None = None,
    return_scores: bool = False,
) -> list[list[int]] | DecodeOutput:
    """Decode by taking the most likely next token at every step (the same tokens as the models'
    ``greedy_decode``; the model runs in eval mode and is restored after).

    Args:
        model: a :class:`~minitransformer.rnn.Seq2Seq` or :class:`~minitransformer.transformer.Transformer`.
        src: ``(B, S)`` source token ids, padded at the end.
        src_lengths: ``(B,)`` true lengths, a bool ``(B, S)`` mask (True = real token), or None:
            the model's own rule (``src != pad_id``; a Transformer without ``pad_id`` sees all tokens).
            A Transformer also takes its ``src_mask`` ``(B, 1, 1, S)``.
        max_len: most tokens generated per sentence, EOS included (default ``2 * S + 10``, at most
            a Transformer's ``max_len``).
        bos_id, eos_id: start and end tokens; a Seq2Seq's default to its config's, a Transformer needs them.
        return_scores: return a :class:`DecodeOutput` instead of the token lists.

    Returns:
        ``B`` lists of generated token ids without EOS, or a :class:`DecodeOutput`.
    """
    where = "greedy_search"
    adapter, max_len, bos_id, eos_id = _prepare(model, src, max_len, bos_id, eos_id, where)
    check_bool("return_scores", return_scores, where=where)
    B = src.shape[0]
    with _eval_mode(model):
        state = adapter.start(src, src_lengths, 1)
        y = torch.full((B,), bos_id, dtype=torch.long, device=src.device)  # (B,)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)  # (B,)
        log_probs = torch.zeros(B, dtype=torch.float64, device=src.device)  # (B,)
        steps = []
        for _ in range(max_len):
            logits, state = adapter.step(state, y)  # (B, V)
            y = logits.argmax(dim=-1)  # (B,): argmax of the logits, as greedy_decode takes it
            lp = logits.log_softmax(dim=-1).gather(1, y[:, None]).squeeze(1)  # (B,)
            log_probs += torch.where(done, 0.0, lp).double()  # (B,): nothing after a sentence's EOS
            steps.append(y.masked_fill(done, eos_id))
            done = done | (y == eos_id)
            if bool(done.all()):
                break
    rows = torch.stack(steps, dim=1).tolist()  # (B, T_out)
    tokens = [row[: row.index(eos_id)] if eos_id in row else row for row in rows]
    if not return_scores:
        return tokens
    return DecodeOutput(tokens, log_probs.cpu(), log_probs.cpu().clone(), done.cpu())


@torch.no_grad()
def beam_search(
    model: Seq2Seq | Transformer,
    src: Tensor,
    src_lengths: Tensor | None = None,
    *,
    beam_size: int = 4,
    length_penalty: float = 0.6,
    max_len: int | None = None,
    bos_id: int | None = None,
    eos_id: int | None = None,
    return_scores: bool = False,
) -> list[list[int]] | DecodeOutput:
    """Beam search: keep the ``beam_size`` most likely partial outputs of every sentence
    (see the module's docstring for the rules).

    Args:
        model, src, src_lengths, max_len, bos_id, eos_id, return_scores: as in :func:`greedy_search`.
        beam_size: ``K``, beams per sentence; 1 (with ``length_penalty=0``) is greedy search.
        length_penalty: GNMT's ``alpha >= 0`` in ``score = log P / ((5 + |y|) / 6) ** alpha``;
            0 ranks by raw log-probability. The default 0.6 is tensor2tensor's.

    Returns:
        ``B`` lists of token ids (the best finished hypothesis of each sentence, without BOS and
        EOS; the best ``max_len``-token one if none finished), or a :class:`DecodeOutput`.
    """
    where = "beam_search"
    adapter, max_len, bos_id, eos_id = _prepare(model, src, max_len, bos_id, eos_id, where)
    K = check_positive_int("beam_size", beam_size, where=where)
    alpha = check_real("length_penalty", length_penalty, low=0.0, where=where)
    check_bool("return_scores", return_scores, where=where)
    B, device = src.shape[0], src.device
    rows = torch.arange(B, device=device)[:, None] * K  # (B, 1): first row of each sentence's block
    rank = torch.arange(2 * K, device=device)  # (2K,)
    finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(B)]  # (score, log P, tokens)
    best = torch.full((B,), float("-inf"), dtype=torch.float64, device=device)  # (B,) best finished score
    done = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
    with _eval_mode(model):
        state = adapter.start(src, src_lengths, K)
        beam_lp = None  # (B, K) cumulative log-probabilities of the live beams
        history = torch.zeros(B, K, 0, dtype=torch.long, device=device)  # (B, K, t)
        prev = torch.full((B * K,), bos_id, dtype=torch.long, device=device)  # (N,)
        for t in range(1, max_len + 1):
            logits, state = adapter.step(state, prev)  # (N, V)
            lp = logits.log_softmax(dim=-1)  # (N, V)
            V = lp.shape[1]
            if beam_lp is None:  # the K beams start equal: expand only the first one
                beam_lp = torch.full((B, K), float("-inf"), dtype=lp.dtype, device=device)  # (B, K)
                beam_lp[:, 0] = 0.0
            cand = (beam_lp[:, :, None] + lp.view(B, K, V)).view(B, K * V)  # (B, K*V)
            top_lp, top_idx = cand.topk(min(2 * K, K * V), dim=1)  # (B, 2K), sorted best first
            top_beam, top_tok = top_idx // V, top_idx % V  # (B, 2K) each
            is_eos = top_tok == eos_id  # (B, 2K)
            lp_t = length_penalty_factor(t, alpha)
            fin = is_eos & (rank[: top_lp.shape[1]] < K) & top_lp.isfinite() & ~done[:, None]  # (B, 2K)
            for b, j in fin.nonzero().tolist():
                score = float(top_lp[b, j]) / lp_t
                finished[b].append((score, float(top_lp[b, j]), history[b, top_beam[b, j]].tolist()))
                best[b] = max(float(best[b]), score)
            # the first K candidates that do not end in EOS continue (at most K of the 2K end in EOS)
            keep = (rank[: top_lp.shape[1]] + 2 * K * is_eos).argsort(dim=1)[:, :K]  # (B, K)
            beam_lp = top_lp.gather(1, keep)  # (B, K)
            parent, token = top_beam.gather(1, keep), top_tok.gather(1, keep)  # (B, K) each
            history = torch.cat(
                [history.gather(1, parent[:, :, None].expand(-1, -1, t - 1)), token[:, :, None]], dim=2
            )  # (B, K, t)
            state = adapter.reorder(state, (rows + parent).view(-1))
            prev = token.view(-1)  # (N,)
            done |= _cannot_be_beaten(best, beam_lp, max_len, alpha)
            if bool(done.all()):
                break
    tokens, log_probs, scores, ended = [], [], [], []
    for b in range(B):
        if finished[b]:
            score, logp, seq = max(finished[b], key=lambda h: h[0])  # first of equal scores
            ended.append(True)
        else:  # nothing finished: the best beam, cut at max_len
            k = int(beam_lp[b].argmax())
            logp, seq = float(beam_lp[b, k]), history[b, k].tolist()
            score = logp / length_penalty_factor(len(seq), alpha)
            ended.append(False)
        tokens.append(seq)
        log_probs.append(logp)
        scores.append(score)
    if not return_scores:
        return tokens
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    return DecodeOutput(tokens, as_tensor(log_probs), as_tensor(scores), torch.tensor(ended))
