"""Attention and deformable-attention kernels behind dispatchers (plain PyTorch + optional
Triton, flash-attn, xformers, all imported lazily). See ``attention.py`` and
``ms_deform_attn.py`` for how a backend is chosen and overridden."""

from .attention import (
    BACKENDS as ATTENTION_BACKENDS,
)
from .attention import (
    attention,
    check_attention_backends,
    choose_attention_backend,
    get_attention_backend,
    set_attention_backend,
)
from .dispatch import BackendCheck, BackendUnavailableError
from .ms_deform_attn import (
    MSDA_BACKENDS,
    check_ms_deform_attn_backends,
    choose_ms_deform_attn_backend,
    get_ms_deform_attn_backend,
    ms_deform_attn,
    ms_deform_attn_reference,
    set_ms_deform_attn_backend,
)
from .ms_deform_attn_module import MSDeformAttn
from .multihead_attention import MultiheadAttention

__all__ = [
    "ATTENTION_BACKENDS",
    "MSDA_BACKENDS",
    "BackendCheck",
    "BackendUnavailableError",
    "MSDeformAttn",
    "MultiheadAttention",
    "attention",
    "check_attention_backends",
    "check_ms_deform_attn_backends",
    "choose_attention_backend",
    "choose_ms_deform_attn_backend",
    "get_attention_backend",
    "get_ms_deform_attn_backend",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "set_attention_backend",
    "set_ms_deform_attn_backend",
]
