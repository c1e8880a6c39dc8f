"""Isolate the ops tests from each other and from the caller's shell.

The attention and deformable-attention dispatchers keep a process-wide backend setting and
read override env vars; a test that forces a backend must not leak it into the next one,
and a developer's exported UNIHEMA_*_BACKEND must not change what the tests check.
"""

import pytest

from unihema.ops import set_attention_backend, set_ms_deform_attn_backend


@pytest.fixture(autouse=True)
def _default_backends(monkeypatch):
    monkeypatch.delenv("UNIHEMA_ATTENTION_BACKEND", raising=False)
    monkeypatch.delenv("UNIHEMA_MSDA_BACKEND", raising=False)
    set_attention_backend(None)
    set_ms_deform_attn_backend(None)
    yield
    set_attention_backend(None)
    set_ms_deform_attn_backend(None)
