"""The attention backend is a property of a model's modules, not of the process.

``model.attention_backend`` / ``model.msda_backend`` pin the dense (Hema-Former, decoder
self-attention, T5) and deformable attention modules of the model built from that config;
another model in the same process keeps its own choice, and the process-wide setters of
``unihema.ops`` are left alone.
"""

from __future__ import annotations

import pytest
import torch
from transformers.models.t5.modeling_t5 import T5Attention

from unihema.model import build_model
from unihema.ops import (
    BackendUnavailableError,
    MSDeformAttn,
    MultiheadAttention,
    get_attention_backend,
    get_ms_deform_attn_backend,
)

from .conftest import make_batch, tiny_config


def backends(model) -> dict[str, set]:
    found = {"dense": set(), "t5": set(), "msda": set()}
    for m in model.modules():
        if isinstance(m, MultiheadAttention):
            found["dense"].add(m.backend)
        elif isinstance(m, MSDeformAttn):
            found["msda"].add(m.backend)
        elif isinstance(m, T5Attention):
            found["t5"].add(getattr(m, "unihema_attention_backend", "unset"))
    return found


def test_each_model_keeps_its_own_backends():
    pinned = build_model(tiny_config("model.attention_backend=math", "model.msda_backend=reference"))
    default = build_model(tiny_config())
    assert backends(pinned) == {"dense": {"math"}, "t5": {"math"}, "msda": {"reference"}}
    assert backends(default) == {"dense": {None}, "t5": {None}, "msda": {None}}
    assert get_attention_backend() == "auto" and get_ms_deform_attn_backend() == "auto"
    pinned.set_attention_backend("sdpa", "auto")
    assert backends(pinned) == {"dense": {"sdpa"}, "t5": {"sdpa"}, "msda": {None}}
    with pytest.raises(ValueError, match="unknown attention backend 'fash'"):
        pinned.set_attention_backend("fash")


def test_a_pinned_backend_is_used_by_that_model_only(tokenizer):
    """flash cannot run on CPU: the model pinned to it fails, the default one beside it runs."""
    torch.manual_seed(0)
    flash = build_model(tiny_config("model.attention_backend=flash")).eval()
    default = build_model(tiny_config()).eval()
    batch = make_batch(tokenizer, ["detection"], batch_size=1)
    with torch.no_grad():
        assert default(batch)["pred_logits"].isfinite().all()
        if torch.cuda.is_available():
            pytest.skip("flash may run here; the failure is the CPU signal")
        with pytest.raises(BackendUnavailableError, match="flash"):
            flash(batch)
