"""The offline tokenizer: T5 conventions, round trip, sentinels, determinism, save/load, size limits."""

from __future__ import annotations

import pytest
import torch

from unihema.model.tokenizer import NUM_SENTINELS, HemaTokenizer, _train_builtin, build_tokenizer

from .conftest import tiny_config


def test_special_ids_follow_t5(tokenizer):
    """<pad>=0, </s>=1, <unk>=2, 100 distinct <extra_id_N> sentinels, all inside the vocabulary."""
    assert (tokenizer.pad_id, tokenizer.eos_id, tokenizer.unk_id) == (0, 1, 2)
    assert len(set(tokenizer.sentinel_ids)) == NUM_SENTINELS
    assert tokenizer.vocab_size <= tiny_config().model.text.vocab_size
    assert max(tokenizer.sentinel_ids) < tokenizer.vocab_size


def test_round_trip_with_sentinels_and_padding(tokenizer):
    """encode -> decode gives the text back, keeps sentinels, ends with </s>, pads with 0."""
    texts = [
        "Is the nucleolus prominent or inconspicuous?",
        "a <extra_id_0> with <extra_id_1> chromatin",
        "Sickle Cells and RBC: 42 (TBbacillus)",
    ]
    ids, mask = tokenizer.encode(texts, 64)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == mask.shape
    lengths = mask.sum(1)
    for row, n in zip(ids, lengths):
        assert row[n - 1] == tokenizer.eos_id and (row[n:] == tokenizer.pad_id).all()
    assert tokenizer.decode(ids) == texts
    assert tokenizer.sentinel_ids[0] in ids[1] and tokenizer.sentinel_ids[1] in ids[1]
    assert tokenizer.unk_id not in ids


def test_truncation_keeps_the_end_marker(tokenizer):
    """Sequences longer than max_length are cut but still end with </s>."""
    ids, mask = tokenizer.encode(["describe the morphology of this blood cell " * 10], 8)
    assert ids.shape == (1, 8) and ids[0, -1] == tokenizer.eos_id and mask.all()


def test_training_is_deterministic():
    """The built-in vocabulary is the same on every run."""
    assert _train_builtin(512).to_str() == _train_builtin(512).to_str()


def test_save_and_load(tokenizer, tmp_path):
    """A saved tokenizer reloads identically, also through cfg.model.text.tokenizer."""
    folder = tokenizer.save(tmp_path / "tok")
    again = HemaTokenizer.load(folder)
    ids, _ = tokenizer.encode(["classify this blood cell."], 16)
    assert torch.equal(again.encode(["classify this blood cell."], 16)[0], ids)
    assert build_tokenizer(tiny_config(f"model.text.tokenizer={folder}")).vocab_size == tokenizer.vocab_size


def test_vocabulary_must_fit_the_model():
    """A T5 vocabulary too small for the tokenizer is refused with both sizes named."""
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(tiny_config("model.text.vocab_size=150"))
