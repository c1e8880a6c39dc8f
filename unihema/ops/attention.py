"""Dense scaled-dot-product attention behind one dispatcher.

The model calls :func:`attention` (or :class:`unihema.ops.MultiheadAttention`) and never a
kernel library directly, so the same code runs on a CPU laptop (torch sdpa / the math
reference) and on H100s (flash-attn, xformers or one of torch's fused sdpa kernels).

Choosing a backend:

* ``backend=`` on the call wins (a model's attention modules pass their own, from
  ``model.attention_backend``); ``None`` defers to the process-wide setting.
* :func:`set_attention_backend` (benchmarks and tests; models do not touch it).
* ``UNIHEMA_ATTENTION_BACKEND`` when the setting is ``"auto"``.
* ``"auto"``: the first backend that can run the call, in the order
  flash, sdpa, xformers, math on CUDA and sdpa, math elsewhere. sdpa comes before xformers
  because torch's memory-efficient kernel is the same cutlass kernel without the extra
  dependency; the sdpa sub-backends (``sdpa_cudnn``, ``sdpa_flash``, ``sdpa_efficient``)
  are only used when forced, because plain sdpa already lets torch pick among them.

A forced backend that cannot run raises :class:`BackendUnavailableError` naming the reason
and the backends that would run. :func:`check_attention_backends` answers the same question
without running anything. The choice is logged (INFO, logger ``unihema.ops.attention``)
once per shape class: device, dtype, heads, head dim, mask kind, dropout.
"""

from __future__ import annotations

import logging
import math

import torch

from . import attention_backends as impl
from .attention_backends import BACKENDS, AttentionCall
from .dispatch import BackendCheck, BackendSetting, BackendUnavailableError, unavailable_error

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "attention",
    "check_attention_backends",
    "choose_attention_backend",
    "get_attention_backend",
    "set_attention_backend",
]

_SETTING = BackendSetting("attention", "UNIHEMA_ATTENTION_BACKEND", BACKENDS, logging.getLogger(__name__))
_checks_cache: dict[AttentionCall, tuple[BackendCheck, ...]] = {}


def set_attention_backend(name: str | None) -> None:
    """Set the process-wide attention backend (``"auto"`` or None: capability-based choice)."""
    _SETTING.set(name)


def get_attention_backend() -> str:
    """The process-wide setting (not the env var, not a per-call override)."""
    return _SETTING.get()


def _auto_order(call: AttentionCall) -> tuple[str, ...]:
    if call.device_type == "cuda":
        return ("flash", "sdpa", "xformers", "math")
    return ("sdpa", "math")


def _describe(q, k, v, key_padding_mask, attn_bias, causal, dropout_p) -> AttentionCall:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"attention expects (batch, seq, heads, head_dim) tensors, got q{tuple(q.shape)} "
            f"k{tuple(k.shape)} v{tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    batch, _, heads, dim = q.shape
    if k.shape[:3] != v.shape[:3] or k.shape[0] != batch or k.shape[2] != heads or k.shape[3] != dim:
        raise ValueError(f"incompatible shapes q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}")
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool or key_padding_mask.shape != (batch, k.shape[1]):
            raise ValueError(
                f"key_padding_mask must be bool (batch, kv_len) = ({batch}, {k.shape[1]}), True = padded; "
                f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )
    if attn_bias is not None and not attn_bias.is_floating_point():
        raise ValueError(f"attn_bias must be a float additive bias, got {attn_bias.dtype}")
    return AttentionCall(
        device_type=q.device.type,
        device_index=q.device.index,
        dtype=q.dtype,
        head_dim=dim,
        head_dim_v=v.shape[-1],
        num_heads=heads,
        same_len=q.shape[1] == k.shape[1],
        padding=key_padding_mask is not None,
        bias=attn_bias is not None,
        causal=bool(causal),
        dropout=dropout_p > 0.0,
    )


def _checks(call: AttentionCall) -> tuple[BackendCheck, ...]:
    if call not in _checks_cache:
        found = []
        for name in BACKENDS:
            reason = impl.check(name, call)
            found.append(BackendCheck(name, reason is None, reason or ""))
        _checks_cache[call] = tuple(found)
    return _checks_cache[call]


def check_attention_backends(
    q, k, v, *, key_padding_mask=None, attn_bias=None, causal=False, dropout_p=0.0, scale=None
) -> list[BackendCheck]:
    """Which backends can run this call and, for the others, why not.

    Returns one :class:`BackendCheck` (``name``, ``ok``, ``reason``) per backend, in
    :data:`BACKENDS` order. For the sdpa sub-backends on CUDA, torch's own kernel checks run
    on the actual tensors, so their reasons are torch's.
    """
    call = _describe(q, k, v, key_padding_mask, attn_bias, causal, dropout_p)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    checks = []
    for c in _checks(call):
        if c.ok and c.name.startswith("sdpa_"):
            reason = impl.probe_sdpa_sub(c.name, q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale)
            c = BackendCheck(c.name, reason is None, reason or "")
        checks.append(c)
    return checks


def choose_attention_backend(
    q, k, v, *, key_padding_mask=None, attn_bias=None, causal=False, dropout_p=0.0, backend=None
) -> str:
    """The backend :func:`attention` would run for these arguments (raises like it would)."""
    call = _describe(q, k, v, key_padding_mask, attn_bias, causal, dropout_p)
    return _choose(call, backend)


def _auto_pick(call: AttentionCall):
    def pick(checks):
        ok = {c.name for c in checks if c.ok}
        return next(name for name in _auto_order(call) if name in ok)

    return pick


def _choose(call: AttentionCall, backend: str | None) -> str:
    return _SETTING.choose(backend, _checks(call), _auto_pick(call), call, call.describe())


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_padding_mask: torch.Tensor | None = None,
    attn_bias: torch.Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """softmax(scale * q k^T + attn_bias + masks) v, on the best backend that can run it.

    Args:
        q: (batch, q_len, heads, head_dim).
        k, v: (batch, kv_len, heads, head_dim); same dtype as q.
        key_padding_mask: bool (batch, kv_len), True marks a padded key that no query sees.
            A batch entry whose keys are all padded yields zeros (not NaN) on every backend.
        attn_bias: float additive bias broadcastable to (batch, heads, q_len, kv_len).
        causal: query i sees keys j <= i (top-left aligned, as in torch sdpa).
        dropout_p: dropout on the attention weights; applied whenever > 0, so pass 0 in eval.
        scale: score scale, default 1/sqrt(head_dim) (T5 passes 1.0).
        backend: one of :data:`BACKENDS` or ``"auto"``; None defers to
            :func:`set_attention_backend` / ``UNIHEMA_ATTENTION_BACKEND``.

    Returns:
        (batch, q_len, heads, head_dim_v).
    """
    call = _describe(q, k, v, key_padding_mask, attn_bias, causal, dropout_p)
    name = _choose(call, backend)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if name.startswith("sdpa_") and call.device_type == "cuda":
        reason = impl.probe_sdpa_sub(name, q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale)
        if reason:
            checks = [c if c.name != name else BackendCheck(name, False, reason) for c in _checks(call)]
            raise unavailable_error("attention", _SETTING.resolve(backend), checks)
    empty = None
    if key_padding_mask is not None:
        # An all-padded row makes softmax 0/0; backends disagree on NaN vs 0 and NaN would
        # poison the backward. Un-mask those rows for the kernel, then zero their output.
        empty = key_padding_mask.all(dim=-1)
        # Asking whether any row is empty costs nothing on CPU but a sync on GPU, where
        # zeroing unconditionally is the cheaper choice.
        if call.device_type == "cpu" and not bool(empty.any()):
            empty = None
        else:
            key_padding_mask = key_padding_mask & ~empty[:, None]
    out = impl.run(name, q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale)
    if empty is not None:
        out = out.masked_fill(empty[:, None, None, None], 0.0)
    return out
