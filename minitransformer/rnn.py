"""GRU encoder-decoders of chapters 1 and 2, with and without attention.

One class, :class:`Seq2Seq`, four decoders chosen by ``attention``:

* ``None`` -- the RNN encoder-decoder of Cho et al. (2014): the decoder sees
  only the fixed summary ``c`` (the encoder's final states), at every step.
* ``"bahdanau"`` -- Bahdanau et al. (2015): before step ``t`` the PREVIOUS
  state ``s_{t-1}`` scores the encoder states; the context ``c_t`` is fed
  into the GRU together with the previous token.
* ``"luong-dot" | "luong-general" | "luong-concat"`` -- Luong et al. (2015):
  the GRU runs first, the CURRENT state ``s_t`` scores the encoder states,
  and the output comes from the attentional hidden state
  ``h~_t = tanh(W_c [c_t; s_t])``, which is also fed to the next step
  ("input feeding").

The encoder is a GRU, bidirectional by default (as in Bahdanau et al.), each
direction of size ``hidden_size // 2`` so that encoder states and decoder
states both have ``hidden_size`` features (which Luong's dot score needs).
The decoder's first state is ``s_0 = tanh(W_s [h_T^fwd; h_1^bwd])`` (the
"bridge"). Shapes: ``B`` batch, ``S`` source length, ``T`` target length,
``H`` hidden size, ``E`` embedding size, ``V`` vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .rnn_attention import AdditiveAttention, LuongAttention
from .validation import check_bool, check_int_tensor, check_positive_int, describe

__all__ = ["Seq2SeqConfig", "Seq2Seq", "ATTENTION_KINDS", "hidden_jacobian_norms"]

ATTENTION_KINDS = (None, "bahdanau", "luong-dot", "luong-general", "luong-concat")


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Sizes of a :class:`Seq2Seq` model. ``PRESETS`` holds named ones."""

    vocab_size: int
    emb_dim: int = 32
    hidden_size: int = 64
    attention: str | None = None
    bidirectional: bool = True
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self):
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        for name in ("vocab_size", "emb_dim", "hidden_size"):
            check_positive_int(name, getattr(self, name))
        if self.bidirectional and self.hidden_size % 2:
            raise ValueError(f"a bidirectional encoder needs an even hidden_size, got {self.hidden_size}")

    @classmethod
    def preset(cls, name: str, vocab_size: int, attention: str | None = None) -> Seq2SeqConfig:
        """``"tiny"`` (tests, seconds) or ``"small"`` (chapters 1-2: reversal of
        5-30 digits in 600 steps of batch 128: about 30 s of CPU time without attention,
        45-50 s with it, measured on a 2-core machine)."""
        sizes = {"tiny": dict(emb_dim=16, hidden_size=48), "small": dict(emb_dim=32, hidden_size=64)}
        if name not in sizes:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(sizes)}")
        return cls(vocab_size=vocab_size, attention=attention, **sizes[name])


class Seq2Seq(nn.Module):
    """GRU encoder-decoder, with Bahdanau, Luong or no attention.

    Args:
        config: a :class:`Seq2SeqConfig`.
    """

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"config must be a Seq2SeqConfig, got {type(config).__name__}")
        self.config = c = config
        H, E, V = c.hidden_size, c.emb_dim, c.vocab_size
        self.embed = nn.Embedding(V, E, padding_idx=c.pad_id)
        self.encoder = nn.GRU(E, H // 2 if c.bidirectional else H, batch_first=True, bidirectional=c.bidirectional)
        self.bridge = nn.Linear(H, H)  # s_0 = tanh(W_s h_final)
        self.cell = nn.GRUCell(E + H, H)  # input: [y_{t-1}; c_t] or [y_{t-1}; h~_{t-1}]
        if c.attention is None or c.attention == "bahdanau":
            self.out = nn.Linear(H + H + E, V)  # logits from [s_t; c_t; y_{t-1}]
        else:
            self.W_c = nn.Linear(H + H, H, bias=False)  # h~_t = tanh(W_c [c_t; s_t])
            self.out = nn.Linear(H, V)  # logits from h~_t
        if c.attention == "bahdanau":
            self.attn = AdditiveAttention(H, H, H)
        elif c.attention is not None:
            self.attn = LuongAttention(H, H, score=c.attention.split("-")[1])

    # ------------------------------------------------------------------ encoder
    def _src_mask(self, src: Tensor, src_lengths: Tensor | None) -> Tensor:
        check_int_tensor("src", src, where="Seq2Seq")
        if src.dim() != 2:
            raise ValueError(f"src must be a (B, S) tensor of token ids, got {describe(src)}")
        check_int_tensor("src", src, low=0, high=self.config.vocab_size, where="Seq2Seq")
        B, S = src.shape
        if src_lengths is None:
            return src != self.config.pad_id  # (B, S)
        if not isinstance(src_lengths, Tensor):
            raise TypeError(
                f"src_lengths must be a (B,) tensor, a (B, S) bool mask or None, got {type(src_lengths).__name__}"
            )
        if src_lengths.dtype == torch.bool:
            if src_lengths.shape != (B, S) or not torch.equal(
                torch.arange(S, device=src.device) < src_lengths.sum(1, keepdim=True), src_lengths
            ):
                raise ValueError(
                    f"a mask for src must be (B, S) = ({B}, {S}) and True on a prefix "
                    f"(padding at the end), got shape {tuple(src_lengths.shape)}"
                )
            return src_lengths
        if src_lengths.shape != (B,) or src_lengths.min() < 1 or src_lengths.max() > S:
            raise ValueError(
                f"src_lengths must be (B,) = ({B},) with values in [1, {S}], "
                f"got shape {tuple(src_lengths.shape)}, values {src_lengths.tolist()}"
            )
        return torch.arange(S, device=src.device) < src_lengths.to(src.device)[:, None]  # (B, S)

    def encode(self, src: Tensor, src_lengths: Tensor | None = None):
        """Run the encoder.

        Args:
            src: ``(B, S)`` token ids, padded at the end.
            src_lengths: ``(B,)`` true lengths, or a bool mask ``(B, S)`` (True =
                real), or None to use ``src != pad_id``.

        Returns:
            ``(outputs (B, S, H), mask (B, S), s_0 (B, H), summary (B, H))``;
            ``summary`` is the final state(s) ``c = [h_T^fwd; h_1^bwd]``.
        """
        mask = self._src_mask(src, src_lengths)  # (B, S)
        lengths = mask.sum(dim=1).cpu()  # (B,)
        if lengths.min() < 1:
            raise ValueError("every source sequence needs at least one real token")
        packed = pack_padded_sequence(
            self.embed(src),  # (B, S, E)
            lengths,
            batch_first=True,
            enforce_sorted=False,
        )
        outputs, h_n = self.encoder(packed)  # h_n: (dirs, B, H / dirs)
        S = src.shape[1]
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=S)
        # outputs: (B, S, H)
        summary = torch.cat(list(h_n), dim=-1)  # (B, H)
        s0 = torch.tanh(self.bridge(summary))  # (B, H)
        return outputs, mask, s0, summary

    # ------------------------------------------------------------------ decoder
    def _step(self, y_prev: Tensor, state: tuple[Tensor, Tensor], memory: tuple):
        """One decoder step. ``state = (s_{t-1}, extra)`` where ``extra`` is the
        previous attentional hidden ``h~_{t-1}`` for Luong (unused otherwise).
        Returns ``logits (B, V), new state, weights (B, S) or None``."""
        outputs, keys_proj, mask, summary = memory
        s_prev, feed = state
        emb = self.embed(y_prev)  # (B, E)
        kind = self.config.attention
        if kind is None:  # Cho et al.: the fixed summary c
            s = self.cell(torch.cat([emb, summary], -1), s_prev)  # (B, H)
            return self.out(torch.cat([s, summary, emb], -1)), (s, feed), None  # (B, V)
        if kind == "bahdanau":  # score with the PREVIOUS state
            # (B, H), (B, S)
            context, w = self.attn(s_prev, outputs, mask=mask, projected_keys=keys_proj)
            s = self.cell(torch.cat([emb, context], -1), s_prev)  # (B, H)
            return self.out(torch.cat([s, context, emb], -1)), (s, feed), w  # (B, V)
        s = self.cell(torch.cat([emb, feed], -1), s_prev)  # Luong: GRU first, input feeding
        # score with the CURRENT s_t
        context, w = self.attn(s, outputs, mask=mask, projected_keys=keys_proj)
        h_tilde = torch.tanh(self.W_c(torch.cat([context, s], -1)))  # (B, H)
        return self.out(h_tilde), (s, h_tilde), w  # (B, V)

    def _start(self, src: Tensor, src_lengths: Tensor | None):
        outputs, mask, s0, summary = self.encode(src, src_lengths)
        keys_proj = self.attn.precompute_keys(outputs) if self.config.attention else None  # once per sequence
        return (outputs, keys_proj, mask, summary), (s0, torch.zeros_like(s0))

    def forward(self, src: Tensor, src_lengths: Tensor | None, tgt_in: Tensor, return_weights: bool = False):
        """Teacher-forced logits.

        Args:
            src: ``(B, S)`` source ids.
            src_lengths: ``(B,)`` lengths, a bool ``(B, S)`` mask, or None.
            tgt_in: ``(B, T)`` decoder inputs ``<bos> y_1 ... y_{T-1}``.
            return_weights: also return the attention weights.

        Returns:
            logits ``(B, T, V)``; with ``return_weights`` also weights
            ``(B, T, S)`` (None without attention). Step ``t`` only sees
            ``tgt_in[:, :t+1]``.
        """
        check_int_tensor("tgt_in", tgt_in, where="Seq2Seq")
        if tgt_in.dim() != 2 or tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"tgt_in must be (B, T) with B = {src.shape[0]}, got {describe(tgt_in)}")
        check_int_tensor("tgt_in", tgt_in, low=0, high=self.config.vocab_size, where="Seq2Seq")
        check_bool("return_weights", return_weights, where="Seq2Seq")
        memory, state = self._start(src, src_lengths)
        logits, weights = [], []
        for t in range(tgt_in.shape[1]):
            step_logits, state, w = self._step(tgt_in[:, t], state, memory)
            logits.append(step_logits)
            weights.append(w)
        logits = torch.stack(logits, dim=1)  # (B, T, V)
        if not return_weights:
            return logits
        return logits, (torch.stack(weights, dim=1) if self.config.attention else None)  # (B, T, S)

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, max_len: int, src_lengths: Tensor | None = None):
        """Decode by always taking the most likely next token.

        Args:
            src: ``(B, S)`` source ids.
            max_len: maximum number of generated tokens (eos included).
            src_lengths: as in :meth:`forward`.

        Returns:
            tokens ``(B, T_out)`` (``T_out <= max_len``; after a sequence's eos
            comes pad) and attention weights ``(B, T_out, S)`` for alignment
            heatmaps (None for the model without attention).
        """
        check_positive_int("max_len", max_len)
        c = self.config
        memory, state = self._start(src, src_lengths)
        y = torch.full((src.shape[0],), c.bos_id, dtype=torch.long, device=src.device)  # (B,)
        done = torch.zeros_like(y, dtype=torch.bool)  # (B,)
        tokens, weights = [], []
        for _ in range(max_len):
            logits, state, w = self._step(y, state, memory)
            y = logits.argmax(dim=-1).masked_fill(done, c.pad_id)  # (B,)
            tokens.append(y)
            weights.append(w)
            done |= y == c.eos_id
            if done.all():
                break
        tokens = torch.stack(tokens, dim=1)  # (B, T_out)
        return tokens, (torch.stack(weights, dim=1) if c.attention else None)  # (B, T_out, S)


def hidden_jacobian_norms(
    cell: nn.RNNCellBase,
    inputs: Tensor,
    h0: Tensor | None = None,
) -> Tensor:
    """``||dh_t / dh_0||`` (spectral norm) for t = 0..T, for chapter 1's
    vanishing-gradient plot, computed as the product of per-step Jacobians
    ``dh_t/dh_0 = (dh_t/dh_{t-1}) ... (dh_1/dh_0)``.

    Args:
        cell: an ``nn.GRUCell`` or ``nn.RNNCell``.
        inputs: ``(T, input_size)`` inputs of one sequence.
        h0: ``(hidden_size,)`` initial state (zeros by default).

    Returns:
        ``(T + 1,)`` float tensor; entry 0 is ``||I|| = 1``.
    """
    if not isinstance(cell, (nn.GRUCell, nn.RNNCell)):
        got = type(cell).__name__
        raise TypeError(f"cell must be an nn.GRUCell or nn.RNNCell, got {got}")
    if inputs.dim() != 2 or inputs.shape[1] != cell.input_size:
        got = tuple(inputs.shape)
        raise ValueError(f"inputs must be (T, {cell.input_size}), got {got}")
    H = cell.hidden_size
    h = inputs.new_zeros(H) if h0 is None else h0.detach()  # (H,)
    J = torch.eye(H, dtype=inputs.dtype, device=inputs.device)  # (H, H): dh_0/dh_0
    norms = [torch.linalg.matrix_norm(J, ord=2)]
    eye = torch.eye(H, dtype=inputs.dtype, device=inputs.device)
    for x in inputs:
        # H copies of the step, copy i back-propagating e_i: row i of the result
        # is dh_t[i]/dh_{t-1}, so the gradient IS the step Jacobian.
        h_copies = h.expand(H, H).clone().requires_grad_(True)  # (H, H)
        h_next = cell(x.expand(H, -1), h_copies)  # (H, H)
        (step_J,) = torch.autograd.grad(h_next, h_copies, grad_outputs=eye)  # (H, H)
        J = step_J @ J  # (H, H)
        h = h_next[0].detach()  # (H,)
        norms.append(torch.linalg.matrix_norm(J, ord=2))
    return torch.stack(norms)  # (T + 1,)
