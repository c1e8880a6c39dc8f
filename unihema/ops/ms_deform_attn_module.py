"""``MSDeformAttn``: the deformable-attention layer of Deformable DETR / DINO.

The encoder self-attention and the decoder cross-attention of Uni-Hema are this layer.
Parameter names (``sampling_offsets``, ``attention_weights``, ``value_proj``,
``output_proj``), shapes and initialisation follow Deformable DETR so the official
checkpoint (``transformer.encoder.layers.*.self_attn.*``,
``transformer.decoder.layers.*.cross_attn.*``) loads 1:1. The sampling itself goes through
:func:`unihema.ops.ms_deform_attn.ms_deform_attn`, so the fused kernel is used where it can run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ms_deform_attn import ms_deform_attn

__all__ = ["MSDeformAttn"]


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Zhu et al., 2021), batch-first."""

    def __init__(
        self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4, *, backend: str | None = None
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.backend = backend
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Deformable DETR's init: head h starts sampling along direction 2*pi*h/H, point p
        at distance p+1 (in pixels of each level), with uniform attention weights."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        device = self.sampling_offsets.bias.device
        thetas = torch.arange(self.n_heads, dtype=torch.float32, device=device) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32, device=device).view(1, 1, -1, 1)
        # copy_ instead of replacing the Parameter (as the original does) keeps optimiser
        # references and works for modules built on the meta device then materialised.
        self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def sampling(self, query, reference_points, input_spatial_shapes):
        """Sampling locations (N, Lq, H, L, P, 2) and softmaxed weights (N, Lq, H, L, P)."""
        n, lq, _ = query.shape
        # In the weights' dtype (fp32 under the training recipe) whatever autocast the forward
        # runs under: a location is a coordinate in [0, 1] plus a small offset, and bf16
        # (8-bit mantissa) resolves 1/256 near 1, several pixels of the stride-8 level of an
        # 800x1333 image. The submodules are called (not their weights read) so that ZeRO-3
        # gathers their partitioned parameters.
        with torch.autocast(query.device.type, enabled=False):
            query = query.to(self.sampling_offsets.weight.dtype)
            offsets = self.sampling_offsets(query).float()
            weights = self.attention_weights(query).float()
            return self._locations(offsets, weights, reference_points.float(), input_spatial_shapes)

    def _locations(self, offsets, weights, reference_points, input_spatial_shapes):
        n, lq = offsets.shape[:2]
        offsets = offsets.view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = weights.view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = F.softmax(weights, -1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level: normalise by (w, h).
            normalizer = torch.stack([input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]], -1)
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            # Boxes (cx, cy, w, h): offsets are fractions of half the box size per point.
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(f"reference_points must end in 2 or 4 coordinates, got {tuple(reference_points.shape)}")
        return locations, weights

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Deformable attention of ``query`` over the flattened multi-level ``input_flatten``.

        Args:
            query: (N, Lq, d_model).
            reference_points: (N, Lq, n_levels, 2) points in [0, 1] or (N, Lq, n_levels, 4)
                boxes (cx, cy, w, h).
            input_flatten: (N, S, d_model), the levels flattened and concatenated.
            input_spatial_shapes: (n_levels, 2) long, (h, w) per level.
            input_level_start_index: (n_levels,) long.
            input_padding_mask: (N, S) bool, True at padded positions (their value is zeroed).

        Returns:
            (N, Lq, d_model).
        """
        n, lq, _ = query.shape
        _, s, _ = input_flatten.shape
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)
        locations, weights = self.sampling(query, reference_points, input_spatial_shapes)
        out = ms_deform_attn(
            value, input_spatial_shapes, input_level_start_index, locations, weights, backend=self.backend
        )
        return self.output_proj(out)
