"""unihema.ops.MultiheadAttention against torch.nn.MultiheadAttention with copied weights.

torch's module is run in train mode with dropout 0: in eval mode it may take its "fast
path" (nested tensors), which fills padded query rows with zeros and would make the
comparison about torch's fast path rather than about attention.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unihema.ops import MultiheadAttention

TOL = dict(rtol=1e-5, atol=1e-5)

CONFIGS = {
    "default": dict(embed_dim=32, num_heads=4),
    "no_bias": dict(embed_dim=32, num_heads=4, bias=False),
    "kdim_vdim": dict(embed_dim=32, num_heads=4, kdim=16, vdim=24),
    "bias_kv_zero_attn": dict(embed_dim=32, num_heads=2, add_bias_kv=True, add_zero_attn=True),
}


def pair(config, batch_first=True, seed=0):
    """A torch MHA and ours with the torch weights loaded into ours (strict)."""
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(**config, batch_first=batch_first).train()
    ours = MultiheadAttention(**config, batch_first=batch_first).train()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


def inputs(config, batch=3, q_len=5, kv_len=7, batch_first=True, seed=1):
    gen = torch.Generator().manual_seed(seed)
    e = config["embed_dim"]
    query = torch.randn(batch, q_len, e, generator=gen)
    key = torch.randn(batch, kv_len, config.get("kdim") or e, generator=gen)
    value = torch.randn(batch, kv_len, config.get("vdim") or e, generator=gen)
    mask = torch.arange(kv_len)[None, :] >= torch.tensor([kv_len, kv_len - 2, 3])[:batch, None]
    if not batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    return query, key, value, mask


def _grads(module, out, extra=()):
    params = [p for _, p in sorted(module.named_parameters())]
    return torch.autograd.grad(out.square().sum(), params + list(extra))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_parameters_match_torch(config):
    """Same parameter names, shapes and order as torch, so checkpoints map 1:1."""
    theirs, ours = pair(CONFIGS[config])
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("backend", ["math", "sdpa", None])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_cross_attention_matches_torch(config, padded, backend):
    """Cross-attention output and all grads equal torch's, with and without key padding."""
    cfg = CONFIGS[config]
    theirs, ours = pair(cfg)
    ours.backend = backend
    query, key, value, mask = inputs(cfg)
    mask = mask if padded else None
    q1, k1, v1 = (t.clone().requires_grad_() for t in (query, key, value))
    q2, k2, v2 = (t.clone().requires_grad_() for t in (query, key, value))
    want, _ = theirs(q1, k1, v1, key_padding_mask=mask, need_weights=False)
    out, weights = ours(q2, k2, v2, key_padding_mask=mask)
    assert weights is None
    torch.testing.assert_close(out, want, **TOL)
    for g, w in zip(_grads(ours, out, (q2, k2, v2)), _grads(theirs, want, (q1, k1, v1))):
        torch.testing.assert_close(g, w, **TOL)


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")
@pytest.mark.parametrize("batch_first", [True, False])
def test_self_attention_with_masks_matches_torch(batch_first):
    """Self-attention (q is k is v) with padding plus bool and float attn_masks, both layouts."""
    cfg = CONFIGS["default"]
    theirs, ours = pair(cfg, batch_first=batch_first)
    x, _, _, mask = inputs(cfg, q_len=7, batch_first=batch_first)
    bool_mask = torch.ones(7, 7, dtype=torch.bool).triu(1)
    float_mask = torch.randn(3 * cfg["num_heads"], 7, 7)
    for attn_mask in (bool_mask, float_mask):
        want, _ = theirs(x, x, x, key_padding_mask=mask, attn_mask=attn_mask, need_weights=False)
        out, _ = ours(x, x, x, key_padding_mask=mask, attn_mask=attn_mask)
        torch.testing.assert_close(out, want, **TOL)


def test_need_weights_matches_torch():
    """need_weights=True returns torch's weights, averaged or per head."""
    cfg = CONFIGS["default"]
    theirs, ours = pair(cfg)
    query, key, value, mask = inputs(cfg)
    for average in (True, False):
        want, want_w = theirs(query, key, value, key_padding_mask=mask, average_attn_weights=average)
        out, w = ours(query, key, value, key_padding_mask=mask, need_weights=True, average_attn_weights=average)
        torch.testing.assert_close(out, want, **TOL)
        torch.testing.assert_close(w, want_w, **TOL)


def test_float_key_padding_and_unbatched_match_torch():
    """A float (additive) key_padding_mask and unbatched 2-D inputs behave as in torch."""
    cfg = CONFIGS["default"]
    theirs, ours = pair(cfg)
    query, key, value, mask = inputs(cfg)
    additive = torch.zeros(mask.shape).masked_fill(mask, -1e4)
    want, _ = theirs(query, key, value, key_padding_mask=additive, need_weights=False)
    out, _ = ours(query, key, value, key_padding_mask=additive)
    torch.testing.assert_close(out, want, **TOL)
    want, _ = theirs(query[0], key[0], value[0], need_weights=False)
    out, _ = ours(query[0], key[0], value[0])
    torch.testing.assert_close(out, want, **TOL)


def test_causal_flag_without_mask_is_causal():
    """is_causal without attn_mask applies the causal mask (torch would demand the mask)."""
    cfg = CONFIGS["default"]
    theirs, ours = pair(cfg)
    x, _, _, _ = inputs(cfg, q_len=6)
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    want, _ = theirs(x, x, x, attn_mask=causal, need_weights=False)
    out, _ = ours(x, x, x, is_causal=True)
    torch.testing.assert_close(out, want, **TOL)


def test_fully_padded_entry_is_zero_not_nan():
    """Unlike torch (NaN), an entry with every key padded gets out_proj of zeros, i.e. its bias."""
    cfg = CONFIGS["default"]
    _, ours = pair(cfg)
    query, key, value, mask = inputs(cfg)
    mask[2] = True
    out, _ = ours(query, key, value, key_padding_mask=mask)
    torch.testing.assert_close(out[2], ours.out_proj.bias.expand_as(out[2]).detach())


def test_builds_on_meta_device():
    """The module can be built on the meta device (the model is, before loading weights)."""
    module = MultiheadAttention(256, 8, batch_first=True, device="meta")
    assert all(p.is_meta for p in module.parameters())
    assert module.in_proj_weight.shape == (768, 256) and module.out_proj.weight.shape == (256, 256)
