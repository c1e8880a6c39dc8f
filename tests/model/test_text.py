"""The T5 side: its attention runs through unihema.ops and agrees with transformers' own."""

from __future__ import annotations

import torch

from unihema.model import text as text_module
from unihema.model.text import TextModel

from .conftest import tiny_config


def test_t5_attention_goes_through_the_dispatcher(monkeypatch):
    """Every T5 attention call is unihema.ops.attention, and the result equals transformers' eager path."""
    torch.manual_seed(0)
    model = TextModel(tiny_config().model.text).eval()
    calls = []
    real = text_module.attention
    monkeypatch.setattr(text_module, "attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    ids = torch.randint(3, 500, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    labels = torch.randint(3, 500, (2, 5))
    with torch.no_grad():
        states = model.encode(ids, mask)
        logits = model.decode(model.shift_right(labels), states, mask)
        assert len(calls) == 3  # encoder self, decoder self, decoder cross (one layer each)
        model.t5.set_attn_implementation("eager")
        ref_states = model.encode(ids, mask)
        ref_logits = model.decode(model.shift_right(labels), ref_states, mask)
    assert torch.allclose(states, ref_states, atol=1e-4)
    assert torch.allclose(logits, ref_logits, atol=1e-3)


def test_shift_right_is_t5s():
    """Decoder inputs: start token 0, labels shifted right, -100 replaced by pad."""
    model = TextModel(tiny_config().model.text)
    labels = torch.tensor([[5, 6, 1, -100]])
    assert model.shift_right(labels).tolist() == [[0, 5, 6, 1]]
    assert torch.equal(model.shift_right(labels), model.t5._shift_right(labels))
