"""minitransformer: the companion library of the attention & transformers book.

Everything the book runs lives here; the chapters import it. ``import
minitransformer`` needs only PyTorch and NumPy: the CuPy GPU kernels load
lazily on first use.
"""
from . import notebook
from .attention import causal_bias, causal_mask, padding_mask, scaled_dot_product_attention
from .flash import flash_attention, flash_decode
from .efficient import (favor_attention, global_token_mask, linear_attention, sliding_window_attention,
                        sliding_window_mask, sparse_attention, strided_mask)
from .configs import GPTConfig, TransformerConfig, count_block_params, count_gpt_params, count_transformer_params
from .gpt import GPT, sample_next_token, sampling_probs
from .char_lm import CharLMRecipe, load_char_lm, train_char_lm
from .kv_cache import KVCache, kv_cache_bytes, kv_cache_report
from .layers import DecoderLayer, EncoderLayer, FeedForward
from .multihead import MultiHeadAttention
from .data import (
    Example,
    Seq2SeqBatch,
    Tokenizer,
    batch_iterator,
    char_lm_splits,
    collate,
    get_batch,
    load_shakespeare,
    make_pairs,
    task_tokenizer,
    train_test_pairs,
)
from .positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
    sinusoidal_encoding_2d,
    transition_matrix,
)
from .relative import RelativePositionBias, alibi_bias, alibi_slopes, relative_position_bucket
from .rnn import Seq2Seq, Seq2SeqConfig, hidden_jacobian_norms
from .rnn_attention import AdditiveAttention, LuongAttention
from .rotary import RotaryEmbedding, half_to_interleaved, interleaved_to_half
from .train import (
    History,
    NoamSchedule,
    accuracy_by_length,
    fit,
    label_smoothing_loss,
    noam_lr,
    noam_scheduler,
    seq2seq_loss,
    set_seed,
    smoothed_targets,
    train_seq2seq,
    warmup_cosine_lr,
    warmup_cosine_scheduler,
)
from .transformer import Decoder, Encoder, Transformer

__version__ = "0.1.0"

__all__ = [
    # attention
    "scaled_dot_product_attention", "causal_mask", "causal_bias", "padding_mask", "MultiHeadAttention",
    "AdditiveAttention", "LuongAttention",
    # recurrent seq2seq (chapters 1-2)
    "Seq2Seq", "Seq2SeqConfig", "hidden_jacobian_norms",
    # positions
    "sinusoidal_encoding", "sinusoidal_encoding_2d", "transition_matrix", "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding", "RotaryEmbedding", "interleaved_to_half", "half_to_interleaved",
    "RelativePositionBias", "relative_position_bucket", "alibi_slopes", "alibi_bias",
    # blocks and models
    "FeedForward", "EncoderLayer", "DecoderLayer", "Encoder", "Decoder", "Transformer", "GPT",
    "TransformerConfig", "GPTConfig", "count_block_params", "count_transformer_params", "count_gpt_params",
    "sampling_probs", "sample_next_token",
    # decoding and efficient attention
    "KVCache", "kv_cache_bytes", "kv_cache_report", "flash_attention", "flash_decode",
    "sliding_window_mask", "strided_mask", "global_token_mask", "sparse_attention", "sliding_window_attention",
    "linear_attention", "favor_attention",
    # data
    "Tokenizer", "Example", "make_pairs", "train_test_pairs", "task_tokenizer", "collate", "batch_iterator",
    "Seq2SeqBatch", "load_shakespeare", "char_lm_splits", "get_batch",
    # the character language model of chapter 7
    "CharLMRecipe", "train_char_lm", "load_char_lm",
    # training
    "set_seed", "noam_lr", "NoamSchedule", "noam_scheduler", "warmup_cosine_lr", "warmup_cosine_scheduler",
    "smoothed_targets", "label_smoothing_loss", "fit", "History", "train_seq2seq", "seq2seq_loss",
    "accuracy_by_length",
    "notebook",
]
