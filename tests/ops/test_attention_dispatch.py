"""The attention dispatcher: every runnable backend against the math oracle, overrides, errors.

Backends are parametrised over all names; a backend that cannot run a case on this machine
is skipped with the dispatcher's own reason, so on a GPU machine the same tests cover more.
Tolerances: float32 1e-5 (rtol and atol); bf16/fp16 on CUDA 2e-2 against a float32 oracle.
"""

from __future__ import annotations

import logging

import pytest
import torch

from unihema.ops import (
    ATTENTION_BACKENDS,
    BackendUnavailableError,
    attention,
    check_attention_backends,
    choose_attention_backend,
    get_attention_backend,
    set_attention_backend,
)

FP32_TOL = dict(rtol=1e-5, atol=1e-5)
HALF_TOL = dict(rtol=2e-2, atol=2e-2)

# name -> (q_len, kv_len, padding, bias, causal, scale)
CASES = {
    "plain": (7, 9, False, False, False, None),
    "padding": (7, 9, True, False, False, None),
    "bias": (7, 9, False, True, False, None),
    "padding_bias_t5_scale": (6, 6, True, True, False, 1.0),
    "causal_square": (8, 8, False, False, True, None),
    "causal_padding": (8, 8, True, False, True, None),
    "causal_top_left_rect": (5, 9, False, True, True, None),
}


def make(q_len, kv_len, padding, bias, *, batch=3, heads=2, dim=16, dtype=torch.float32, device="cpu", seed=0):
    """Random (B, L, H, D) q, k, v plus optional padding mask and per-head bias."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, q_len, heads, dim, generator=gen)
    k = torch.randn(batch, kv_len, heads, dim, generator=gen)
    v = torch.randn(batch, kv_len, heads, dim, generator=gen)
    mask = None
    if padding:
        lengths = torch.tensor([kv_len, kv_len - 3, 2])[:batch]
        mask = torch.arange(kv_len)[None, :] >= lengths[:, None]
    attn_bias = torch.randn(1, heads, q_len, kv_len, generator=gen) if bias else None
    to = dict(dtype=dtype, device=device)
    return (
        q.to(**to),
        k.to(**to),
        v.to(**to),
        None if mask is None else mask.to(device),
        None if attn_bias is None else attn_bias.to(**to),
    )


def _skip_unless_runnable(name, q, k, v, **kw):
    check = next(c for c in check_attention_backends(q, k, v, **kw) if c.name == name)
    if not check.ok:
        pytest.skip(f"{name} cannot run here: {check.reason}")


def _leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
def test_backend_matches_math_fp32(backend, case):
    """Each runnable backend equals the math reference in fp32: outputs and q/k/v/bias grads."""
    q_len, kv_len, padding, bias, causal, scale = CASES[case]
    q, k, v, mask, attn_bias = make(q_len, kv_len, padding, bias)
    kw = dict(key_padding_mask=mask, causal=causal, scale=scale)
    _skip_unless_runnable(backend, q, k, v, attn_bias=attn_bias, **kw)
    results = []
    for name in (backend, "math"):
        leaves = _leaves(q, k, v, attn_bias)
        out = attention(*leaves[:3], attn_bias=leaves[3], backend=name, **kw)
        grads = torch.autograd.grad(out, [t for t in leaves if t is not None], torch.ones_like(out))
        results.append((out, grads))
    (out, grads), (want, want_grads) = results
    torch.testing.assert_close(out, want, **FP32_TOL)
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g, w, **FP32_TOL)


def test_math_matches_explicit_formula():
    """The oracle itself: softmax(q k^T * scale + bias, padded keys removed) v, written out."""
    q, k, v, mask, attn_bias = make(4, 6, True, True, dtype=torch.float64)
    out = attention(q, k, v, key_padding_mask=mask, attn_bias=attn_bias, scale=0.3, backend="math")
    for b in range(q.shape[0]):
        keep = ~mask[b]
        for h in range(q.shape[2]):
            scores = q[b, :, h] @ k[b, keep, h].T * 0.3 + attn_bias[0, h][:, keep]
            want = scores.softmax(-1) @ v[b, keep, h]
            torch.testing.assert_close(out[b, :, h], want)


@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
def test_fully_padded_entry_gives_zeros(backend):
    """A batch entry with every key padded yields zeros and finite grads, not NaN."""
    q, k, v, mask, _ = make(4, 5, True, False)
    mask[1] = True
    _skip_unless_runnable(backend, q, k, v, key_padding_mask=mask)
    leaves = _leaves(q, k, v)
    out = attention(*leaves, key_padding_mask=mask, backend=backend)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    grads = torch.autograd.grad(out.sum(), leaves)
    assert all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(out[0], attention(q[:1], k[:1], v[:1], key_padding_mask=mask[:1], backend="math")[0])


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_dropout_is_unbiased(backend):
    """Averaged over many draws, attention with dropout approaches attention without it."""
    q, k, v, mask, _ = make(3, 5, True, False, batch=2, dim=4)
    draws = 4000  # as batch replicas: one call instead of thousands keeps this fast on a busy CPU
    torch.manual_seed(0)
    out = attention(
        *(t.repeat(draws, 1, 1, 1) for t in (q, k, v)),
        key_padding_mask=mask.repeat(draws, 1),
        dropout_p=0.3,
        backend=backend,
    ).view(draws, *q.shape)
    want = attention(q, k, v, key_padding_mask=mask, backend="math")
    assert not torch.equal(out[0], want)
    torch.testing.assert_close(out.mean(0), want, rtol=0.1, atol=0.1)


def test_bf16_sdpa_on_cpu_close_to_fp32_math():
    """bf16 on CPU through auto (sdpa) stays within bf16 resolution of the fp32 oracle."""
    q, k, v, mask, attn_bias = make(7, 9, True, True)
    want = attention(q, k, v, key_padding_mask=mask, attn_bias=attn_bias, backend="math")
    out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), key_padding_mask=mask, attn_bias=attn_bias)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want, **HALF_TOL)


def test_auto_picks_sdpa_on_cpu():
    """On CPU "auto" runs torch sdpa for every mask kind (the benchmark checks it is not slower)."""
    for q_len, kv_len, padding, bias, causal, _ in CASES.values():
        q, k, v, mask, attn_bias = make(q_len, kv_len, padding, bias)
        assert choose_attention_backend(q, k, v, key_padding_mask=mask, attn_bias=attn_bias, causal=causal) == "sdpa"


@pytest.mark.parametrize("backend", ["flash", "xformers", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn"])
def test_forced_unavailable_backend_raises_clear_error(backend):
    """Forcing a CUDA-only backend on CPU raises, naming the reason and the runnable backends."""
    q, k, v, mask, _ = make(4, 5, True, False)
    with pytest.raises(BackendUnavailableError) as info:
        attention(q, k, v, key_padding_mask=mask, backend=backend)
    message = str(info.value)
    assert repr(backend) in message and "argument" in message
    assert "cpu" in message or "CUDA" in message or "not importable" in message
    assert "would run it: sdpa, math" in message


def test_check_lists_every_backend_with_reasons():
    """check_attention_backends reports all backends; runnable ones have no reason."""
    q, k, v, _, _ = make(4, 5, False, False)
    checks = check_attention_backends(q, k, v)
    assert [c.name for c in checks] == list(ATTENTION_BACKENDS)
    by_name = {c.name: c for c in checks}
    assert by_name["math"].ok and by_name["sdpa"].ok and not by_name["math"].reason
    assert not by_name["flash"].ok and by_name["flash"].reason


def test_override_precedence(monkeypatch):
    """argument > set_attention_backend > UNIHEMA_ATTENTION_BACKEND > auto."""
    q, k, v, _, _ = make(4, 5, False, False)
    assert choose_attention_backend(q, k, v) == "sdpa"
    monkeypatch.setenv("UNIHEMA_ATTENTION_BACKEND", "math")
    assert choose_attention_backend(q, k, v) == "math"
    set_attention_backend("sdpa")
    assert get_attention_backend() == "sdpa"
    assert choose_attention_backend(q, k, v) == "sdpa"
    assert choose_attention_backend(q, k, v, backend="math") == "math"
    set_attention_backend("auto")
    assert choose_attention_backend(q, k, v) == "math"
    assert choose_attention_backend(q, k, v, backend="auto") == "sdpa"


def test_forced_by_env_var_names_its_source(monkeypatch):
    """An impossible backend from the env var fails and the error says it came from there."""
    q, k, v, _, _ = make(4, 5, False, False)
    monkeypatch.setenv("UNIHEMA_ATTENTION_BACKEND", "flash")
    with pytest.raises(BackendUnavailableError, match="UNIHEMA_ATTENTION_BACKEND"):
        attention(q, k, v)


def test_unknown_backend_name_rejected(monkeypatch):
    """A misspelt backend name is a ValueError listing the valid names, wherever it comes from."""
    q, k, v, _, _ = make(4, 5, False, False)
    with pytest.raises(ValueError, match="sdpa_efficient"):
        set_attention_backend("fash")
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention(q, k, v, backend="fash")
    monkeypatch.setenv("UNIHEMA_ATTENTION_BACKEND", "fash")
    with pytest.raises(ValueError, match="UNIHEMA_ATTENTION_BACKEND"):
        attention(q, k, v)


def test_invalid_inputs_rejected():
    """Wrong layouts and mask dtypes fail with a ValueError, not deep inside a kernel."""
    q, k, v, mask, _ = make(4, 5, True, False)
    with pytest.raises(ValueError, match="key_padding_mask"):
        attention(q, k, v, key_padding_mask=mask.float())
    with pytest.raises(ValueError, match="batch, seq, heads, head_dim"):
        attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="dtype"):
        attention(q, k.double(), v)


def test_choice_logged_once_per_shape_class(caplog):
    """The choice is logged once per shape class, not per call or per sequence length."""
    caplog.set_level(logging.INFO, logger="unihema.ops.attention")
    for kv_len in (5, 6, 7):  # unique heads/dim so no earlier test has logged this class
        q, k, v, _, _ = make(3, kv_len, False, False, heads=5, dim=6)
        attention(q, k, v)
    q, k, v, mask, _ = make(3, 7, True, False, heads=5, dim=6)
    attention(q, k, v, key_padding_mask=mask)
    lines = [r.getMessage() for r in caplog.records if r.name == "unihema.ops.attention"]
    assert len(lines) == 2, lines
    assert "'sdpa'" in lines[0] and "mask=none" in lines[0] and "mask=padding" in lines[1]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
def test_cuda_backend_matches_math(backend, case):
    """On CUDA in bf16 each runnable backend (flash, xformers, sdpa, sub-backends) matches fp32 math."""
    q_len, kv_len, padding, bias, causal, scale = CASES[case]
    q, k, v, mask, attn_bias = make(q_len, kv_len, padding, bias, dim=64, dtype=torch.bfloat16, device="cuda")
    kw = dict(key_padding_mask=mask, causal=causal, scale=scale)
    _skip_unless_runnable(backend, q, k, v, attn_bias=attn_bias, **kw)
    leaves = _leaves(q, k, v, attn_bias)
    out = attention(*leaves[:3], attn_bias=leaves[3], backend=backend, **kw)
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], torch.ones_like(out))
    ref = _leaves(*(None if t is None else t.float() for t in (q, k, v, attn_bias)))
    want = attention(*ref[:3], attn_bias=ref[3], backend="math", **kw)
    want_grads = torch.autograd.grad(want, [t for t in ref if t is not None], torch.ones_like(want))
    torch.testing.assert_close(out.float(), want, **HALF_TOL)
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g.float(), w, **HALF_TOL)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_prefers_fused_backend():
    """On CUDA in bf16, auto never falls back to math for the model's mask kinds."""
    q, k, v, mask, attn_bias = make(64, 300, True, True, dim=32, dtype=torch.bfloat16, device="cuda")
    assert choose_attention_backend(q, k, v, key_padding_mask=mask) != "math"
    assert choose_attention_backend(q, k, v, attn_bias=attn_bias) != "math"
