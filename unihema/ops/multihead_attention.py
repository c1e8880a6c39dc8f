"""A drop-in ``torch.nn.MultiheadAttention`` that runs through the attention dispatcher.

The official Uni-Hema checkpoint stores the decoder self-attention, the class-token fusion,
the Q-Former ("xformer") and the gated cross-attention as ``nn.MultiheadAttention``
parameters (``in_proj_weight``, ``in_proj_bias``, ``out_proj.weight``, ``out_proj.bias``).
This module keeps exactly those names, shapes, registration order and initialisation, so
those checkpoints load 1:1, while the attention itself goes through
:func:`unihema.ops.attention.attention` and so can use flash-attn, xformers or torch sdpa.

Differences from torch, all deliberate:

* ``need_weights`` defaults to False: returning weights forces the math path, and the
  model never reads them. With ``need_weights=True`` the weights are computed like torch
  (after dropout, averaged over heads unless ``average_attn_weights=False``).
* ``is_causal`` without ``attn_mask`` applies a causal mask (torch raises).
* A batch entry whose keys are all padded gives zeros, not NaN (with ``need_weights=True``
  the math path follows torch exactly, NaN included).
* ``backend=`` (keyword) pins this module to one attention backend.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .attention_backends import run_math

__all__ = ["MultiheadAttention"]


class MultiheadAttention(nn.Module):
    """Multi-head attention with the parameters of ``torch.nn.MultiheadAttention``."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
        *,
        backend: str | None = None,
    ) -> None:
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be > 0, got {embed_dim} and {num_heads}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        self.backend = backend

        # Registration order mirrors torch so state_dict keys come out in the same order.
        if not self._qkv_same_embed_dim:
            self.q_proj_weight = nn.Parameter(torch.empty((embed_dim, embed_dim), **factory))
            self.k_proj_weight = nn.Parameter(torch.empty((embed_dim, self.kdim), **factory))
            self.v_proj_weight = nn.Parameter(torch.empty((embed_dim, self.vdim), **factory))
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = nn.Parameter(torch.empty((3 * embed_dim, embed_dim), **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty((1, 1, embed_dim), **factory))
            self.bias_v = nn.Parameter(torch.empty((1, 1, embed_dim), **factory))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """torch's initialisation: xavier on the input projections, zero biases."""
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            nn.init.xavier_uniform_(self.q_proj_weight)
            nn.init.xavier_uniform_(self.k_proj_weight)
            nn.init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.constant_(self.in_proj_bias, 0.0)
            nn.init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)

    reset_parameters = _reset_parameters

    def _project(self, query, key, value):
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.split(e)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.split(e)
        if self._qkv_same_embed_dim and query is key and key is value:
            # Self-attention: one GEMM for all three projections.
            return F.linear(query, self.in_proj_weight, self.in_proj_bias).split(e, dim=-1)
        if self._qkv_same_embed_dim and key is value:
            b_kv = None if self.in_proj_bias is None else self.in_proj_bias[e:]
            k, v = F.linear(key, self.in_proj_weight[e:], b_kv).split(e, dim=-1)
            return F.linear(query, w_q, b_q), k, v
        return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    def _bias_from_masks(self, attn_mask, key_padding_mask, batch, q_len, kv_len, dtype):
        """torch's attn_mask ((L, S) or (B*H, L, S); bool True = blocked) as an additive bias."""
        bias = None
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                attn_mask = torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device).masked_fill(
                    attn_mask, float("-inf")
                )
            if attn_mask.dim() == 2:
                bias = attn_mask.to(dtype).view(1, 1, q_len, kv_len)
            elif attn_mask.dim() == 3 and attn_mask.shape[0] == batch * self.num_heads:
                bias = attn_mask.to(dtype).view(batch, self.num_heads, q_len, kv_len)
            else:
                raise ValueError(
                    f"attn_mask must be ({q_len}, {kv_len}) or ({batch * self.num_heads}, {q_len}, {kv_len}), "
                    f"got {tuple(attn_mask.shape)}"
                )
        if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
            pad = key_padding_mask.to(dtype).view(batch, 1, 1, kv_len)
            bias = pad if bias is None else bias + pad
        return bias

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same arguments and return value as ``torch.nn.MultiheadAttention.forward``.

        Shapes (batch_first=True): query (B, L, E), key (B, S, kdim), value (B, S, vdim),
        key_padding_mask (B, S) bool (True = padded) or float (added), attn_mask (L, S) or
        (B*num_heads, L, S). Returns (output (B, L, E), weights or None).
        """
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            # Keep self-attention's "is" identity so _project still fuses the GEMM.
            same_kv = key is value
            same_qk = query is key
            query = query.transpose(0, 1)
            key = query if same_qk else key.transpose(0, 1)
            value = key if same_kv else value.transpose(0, 1)

        batch, q_len, _ = query.shape
        q, k, v = self._project(query, key, value)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(batch, 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(batch, 1, -1)], dim=1)
            key_padding_mask, attn_mask = _extend_masks(key_padding_mask, attn_mask)
        q = q.reshape(batch, q_len, self.num_heads, self.head_dim)
        k = k.reshape(batch, k.shape[1], self.num_heads, self.head_dim)
        v = v.reshape(batch, v.shape[1], self.num_heads, self.head_dim)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(batch, 1, self.num_heads, self.head_dim)], dim=1)
            v = torch.cat([v, v.new_zeros(batch, 1, self.num_heads, self.head_dim)], dim=1)
            key_padding_mask, attn_mask = _extend_masks(key_padding_mask, attn_mask)

        kv_len = k.shape[1]
        bias = self._bias_from_masks(attn_mask, key_padding_mask, batch, q_len, kv_len, q.dtype)
        pad = key_padding_mask if key_padding_mask is not None and key_padding_mask.dtype == torch.bool else None
        causal = is_causal and attn_mask is None
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            out, weights = run_math(q, k, v, pad, bias, causal, dropout_p, 1.0 / math.sqrt(self.head_dim), True)
            weights = weights.mean(dim=1) if average_attn_weights else weights
        else:
            out = attention(
                q, k, v, key_padding_mask=pad, attn_bias=bias, causal=causal, dropout_p=dropout_p, backend=self.backend
            )
        out = self.out_proj(out.reshape(batch, q_len, self.embed_dim))

        if unbatched:
            out = out.squeeze(0)
            weights = None if weights is None else weights.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


def _extend_masks(key_padding_mask, attn_mask):
    """Account for one extra key (bias_k or the zero key) that every query may see."""
    if key_padding_mask is not None:
        key_padding_mask = F.pad(key_padding_mask, (0, 1))
    if attn_mask is not None:
        attn_mask = F.pad(attn_mask, (0, 1))
    return key_padding_mask, attn_mask
