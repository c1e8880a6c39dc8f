"""The dense-attention backends behind :func:`unihema.ops.attention.attention`.

One place per backend for two things: whether it can run a call (a reason string when it
cannot) and how to run it. Every backend takes the same inputs, laid out
(batch, seq, heads, head_dim) like flash-attn, and computes the same function:

    softmax(scale * q k^T + attn_bias + mask) v

where the mask hides padded keys (``key_padding_mask`` True) and, with ``causal``, keys
after the query position (top-left aligned like ``torch.nn.functional.
scaled_dot_product_attention``). The dispatcher in ``attention.py`` guarantees that no
batch entry is fully padded when a backend runs, so no backend has to agree with the
others on what an empty softmax means.

``math`` is the oracle: plain matmuls, softmax in float32. It must stay simple enough to be
obviously right. flash_attn and xformers are imported inside the functions that use them.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
import torch.nn.functional as F

from .dispatch import import_failure

# Order matters: it is the "auto" preference on CUDA (see attention.py). The sdpa
# sub-backends are only used when forced; plain "sdpa" already lets torch pick among them.
BACKENDS = ("flash", "xformers", "sdpa", "sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "math")
HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclasses.dataclass(frozen=True)
class AttentionCall:
    """Everything a capability check depends on; also the "shape class" for logging.

    Sequence lengths are deliberately left out (except whether q and k have the same
    length, which causal alignment depends on): image token counts change from batch to
    batch and must not cause a new decision or log line each time.
    """

    device_type: str
    device_index: int | None
    dtype: torch.dtype
    head_dim: int
    head_dim_v: int
    num_heads: int
    same_len: bool
    padding: bool
    bias: bool
    causal: bool
    dropout: bool

    @property
    def mask_kind(self) -> str:
        parts = [n for n, on in (("padding", self.padding), ("bias", self.bias), ("causal", self.causal)) if on]
        return "+".join(parts) or "none"

    def describe(self) -> str:
        return (
            f"{self.device_type} {str(self.dtype).removeprefix('torch.')} heads={self.num_heads} "
            f"head_dim={self.head_dim} mask={self.mask_kind} dropout={self.dropout}"
        )


# --------------------------------------------------------------------------- masks


def additive_mask(key_padding_mask, attn_bias, causal, q_len, kv_len, dtype, device):
    """Fold padding, bias and causality into one float mask broadcastable to (B, H, Lq, Lk)."""
    mask = None
    if attn_bias is not None:
        mask = attn_bias.to(dtype)
    if key_padding_mask is not None:
        pad = torch.zeros(key_padding_mask.shape, dtype=dtype, device=device)
        pad = pad.masked_fill(key_padding_mask, float("-inf"))[:, None, None, :]
        mask = pad if mask is None else mask + pad
    if causal:
        upper = torch.ones(q_len, kv_len, dtype=torch.bool, device=device).triu(1)
        tri = torch.zeros(q_len, kv_len, dtype=dtype, device=device).masked_fill(upper, float("-inf"))
        mask = tri if mask is None else mask + tri
    return mask


# --------------------------------------------------------------------------- math


def run_math(q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale, need_weights=False):
    """Reference attention; returns (out, weights) when ``need_weights`` else out.

    Scores are formed in the input dtype (as every fused kernel does) but the softmax is
    taken in float32, so low-precision inputs do not lose the small weights.
    """
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    mask = additive_mask(key_padding_mask, attn_bias, causal, q.shape[1], k.shape[1], torch.float32, q.device)
    scores = scores.float()
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    out = torch.matmul(weights.to(v.dtype), vh).transpose(1, 2)
    return (out, weights) if need_weights else out


def check_math(call: AttentionCall) -> str | None:
    return None


# --------------------------------------------------------------------------- sdpa


def _sdpa_args(q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale):
    if attn_bias is None and key_padding_mask is None:
        mask, is_causal = None, causal
    else:
        # A float mask rather than a boolean one: torch converts boolean masks to float
        # inside sdpa anyway, and on CPU that conversion made fwd+bwd ~15% slower.
        mask = additive_mask(key_padding_mask, attn_bias, causal, q.shape[1], k.shape[1], q.dtype, q.device)
        is_causal = False
    return (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)), dict(
        attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )


def run_sdpa(q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale):
    tensors, kwargs = _sdpa_args(q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale)
    return F.scaled_dot_product_attention(*tensors, **kwargs).transpose(1, 2)


def check_sdpa(call: AttentionCall) -> str | None:
    return None  # torch falls back to its own math kernel whenever a fused one cannot run


_SDPA_SUB = {"sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION"}
_SDPA_CAN_USE = {
    "sdpa_cudnn": "can_use_cudnn_attention",
    "sdpa_flash": "can_use_flash_attention",
    "sdpa_efficient": "can_use_efficient_attention",
}


def _sdpa_sub_backend(name):
    from torch.nn.attention import SDPBackend

    return getattr(SDPBackend, _SDPA_SUB[name], None)


def check_sdpa_sub(name: str, call: AttentionCall) -> str | None:
    """Coarse check by call features; the exact check runs on the tensors in ``probe_sdpa_sub``."""
    if call.device_type != "cuda":
        return f"{name} needs a CUDA device (got {call.device_type})"
    try:
        if _sdpa_sub_backend(name) is None:
            return f"this torch ({torch.__version__}) has no {_SDPA_SUB[name]} backend"
    except ImportError as exc:
        return f"torch.nn.attention.sdpa_kernel is unavailable ({exc})"
    if name in ("sdpa_cudnn", "sdpa_flash") and call.dtype not in HALF_DTYPES:
        return f"{name} needs float16/bfloat16 inputs (got {call.dtype})"
    if name == "sdpa_flash" and (call.padding or call.bias):
        return "sdpa_flash takes no attention mask (padding or bias); only causal"
    return None


def probe_sdpa_sub(name, q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale) -> str | None:
    """Ask torch itself whether the sub-backend accepts these exact tensors (reason or None)."""
    can_use = getattr(torch.backends.cuda, _SDPA_CAN_USE[name], None)
    params_cls = getattr(torch.backends.cuda, "SDPAParams", None)
    if can_use is None or params_cls is None:
        return None  # older torch: let sdpa_kernel raise its own error at call time
    tensors, kw = _sdpa_args(q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale)
    try:
        params = params_cls(*tensors, kw["attn_mask"], kw["dropout_p"], kw["is_causal"], False)
    except TypeError:  # torch < 2.5 has no enable_gqa argument
        params = params_cls(*tensors, kw["attn_mask"], kw["dropout_p"], kw["is_causal"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = can_use(params, True)  # debug=True makes torch warn with its reasons
    if ok:
        return None
    reasons = "; ".join(str(w.message).strip() for w in caught) or "torch reports it cannot run these inputs"
    return f"{name}: {reasons}"


def run_sdpa_sub(name, q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale):
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel([_sdpa_sub_backend(name)]):
        return run_sdpa(q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale)


# --------------------------------------------------------------------------- flash-attn


def check_flash(call: AttentionCall) -> str | None:
    if call.device_type != "cuda":
        return f"flash-attn needs a CUDA device (got {call.device_type})"
    failure = import_failure("flash_attn")
    if failure:
        return failure
    if call.dtype not in HALF_DTYPES:
        return f"flash-attn needs float16/bfloat16 inputs (got {call.dtype})"
    major, _ = torch.cuda.get_device_capability(call.device_index)
    if major < 8:
        return f"flash-attn 2 needs compute capability >= 8.0 (got {major}.x)"
    if call.head_dim != call.head_dim_v:
        return f"flash-attn needs equal q/k and v head dims (got {call.head_dim} and {call.head_dim_v})"
    if call.head_dim > 256:
        return f"flash-attn supports head_dim <= 256 (got {call.head_dim})"
    if call.bias:
        return "flash-attn takes no additive attn_bias"
    if call.causal and (call.padding or not call.same_len):
        # flash-attn aligns the causal mask bottom-right per sequence; ours is top-left.
        return "flash-attn's causal mask is bottom-right aligned; only equal-length, unpadded causal calls match"
    return None


def run_flash(q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale):
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    if key_padding_mask is None:
        return flash_attn_func(q, k, v, dropout_p=dropout_p, softmax_scale=scale, causal=causal)
    batch, q_len, heads, dim = q.shape
    kv_len = k.shape[1]
    keep = ~key_padding_mask
    seqlens_k = keep.sum(-1, dtype=torch.int32)
    cu_seqlens_k = F.pad(seqlens_k.cumsum(0, dtype=torch.int32), (1, 0))
    # flash-attn's own bert_padding helpers also sync here: varlen needs the max on the host.
    max_seqlen_k = int(seqlens_k.max())
    index = keep.flatten().nonzero().flatten()
    k_unpad = k.reshape(batch * kv_len, heads, -1).index_select(0, index)
    v_unpad = v.reshape(batch * kv_len, heads, -1).index_select(0, index)
    # Only keys are padded: queries stay dense, so the output needs no re-padding.
    q_flat = q.reshape(batch * q_len, heads, dim)
    cu_seqlens_q = torch.arange(0, (batch + 1) * q_len, q_len, dtype=torch.int32, device=q.device)
    out = flash_attn_varlen_func(
        q_flat,
        k_unpad,
        v_unpad,
        cu_seqlens_q,
        cu_seqlens_k,
        q_len,
        max_seqlen_k,
        dropout_p=dropout_p,
        softmax_scale=scale,
        causal=False,
    )
    return out.view(batch, q_len, heads, -1)


# --------------------------------------------------------------------------- xformers


def check_xformers(call: AttentionCall) -> str | None:
    if call.device_type != "cuda":
        return f"xformers has no kernels for {call.device_type} (needs CUDA)"
    failure = import_failure("xformers.ops")
    if failure:
        return failure
    if call.dtype not in HALF_DTYPES + (torch.float32,):
        return f"xformers needs float16/bfloat16/float32 inputs (got {call.dtype})"
    return None


def run_xformers(q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale):
    import xformers.ops as xops

    batch, q_len, heads, _ = q.shape
    kv_len = k.shape[1]
    if attn_bias is None and key_padding_mask is None:
        bias = xops.LowerTriangularMask() if causal else None
    else:
        dense = additive_mask(key_padding_mask, attn_bias, causal, q_len, kv_len, q.dtype, q.device)
        # xformers wants a materialised bias whose rows start 16-byte aligned: allocate with
        # a padded last dim and hand over a slice of it.
        padded = (kv_len + 7) // 8 * 8
        bias = torch.empty(batch, heads, q_len, padded, dtype=q.dtype, device=q.device)[..., :kv_len]
        bias.copy_(dense.expand(batch, heads, q_len, kv_len))
    return xops.memory_efficient_attention(q, k, v, attn_bias=bias, p=dropout_p, scale=scale)


# --------------------------------------------------------------------------- table


def check(name: str, call: AttentionCall) -> str | None:
    """Reason why backend ``name`` cannot run ``call``, or None when it can."""
    if name in _SDPA_SUB:
        return check_sdpa_sub(name, call)
    return {"flash": check_flash, "xformers": check_xformers, "sdpa": check_sdpa, "math": check_math}[name](call)


def run(name: str, q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale):
    if name in _SDPA_SUB:
        return run_sdpa_sub(name, q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale)
    fn = {"flash": run_flash, "xformers": run_xformers, "sdpa": run_sdpa, "math": run_math}[name]
    return fn(q, k, v, key_padding_mask, attn_bias, causal, dropout_p, scale)
