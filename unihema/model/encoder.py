"""Image encoder: multi-scale deformable self-attention over the four feature levels.

Besides the refined tokens (``memory``) it produces the two image summaries the other
tasks need, so that each is computed once from the same tokens:

- the single-cell feature (class token + mean pooling, :class:`CellFeatureExtractor`);
- stride-8 pixel features for the query-guided mask former (context from every level,
  upsampled and summed, plus the un-encoded stride-8 projection for fine detail).

Layer layout and names follow DINO (``layers.{i}.self_attn/norm1/linear1/linear2/norm2``),
so official weights load one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from unihema.ops import MSDeformAttn

from .hemaformer import CellFeatureExtractor
from .layers import activation


class DeformableEncoderLayer(nn.Module):
    def __init__(
        self,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        n_levels: int,
        n_heads: int,
        n_points: int,
        act: str = "relu",
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.act = activation(act)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask):
        out = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(out))
        out = self.linear2(self.dropout2(self.act(self.linear1(src))))
        return self.norm2(src + self.dropout3(out))


def encoder_reference_points(spatial_shapes: torch.Tensor, valid_ratios: torch.Tensor) -> torch.Tensor:
    """Centre of every token, normalised by each image's valid area -> (B, S, L, 2)."""
    refs = []
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=valid_ratios.device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=valid_ratios.device),
            indexing="ij",
        )
        ys = ys.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
        xs = xs.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
        refs.append(torch.stack((xs, ys), -1))
    ref = torch.cat(refs, 1)
    return ref[:, :, None] * valid_ratios[:, None]


class ImageEncoder(nn.Module):
    def __init__(
        self,
        d_model: int,
        nheads: int,
        num_layers: int,
        dim_feedforward: int,
        n_levels: int,
        n_points: int,
        dropout: float = 0.0,
        cell_feature_norm: str | bool = "none",
        cell_backbone_channels: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(d_model, dim_feedforward, dropout, n_levels, nheads, n_points)
            for _ in range(num_layers)
        )
        self.cell = CellFeatureExtractor(
            d_model,
            nheads,
            dim_feedforward,
            dropout,
            normalize=cell_feature_norm,
            backbone_channels=cell_backbone_channels,
        )
        self.mask_features = nn.Linear(d_model, d_model)
        self.mask_feature_proj = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU())
        self.checkpointing = False

    def forward(self, src, pos, padding_mask, spatial_shapes, level_start_index, valid_ratios):
        """Flattened tokens (B, S, d) -> memory (B, S, d)."""
        reference_points = encoder_reference_points(spatial_shapes, valid_ratios)
        out = src
        for layer in self.layers:
            args = (out, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
            if self.checkpointing and self.training and torch.is_grad_enabled():
                # Recompute in backward: the 22K-token activations dominate memory at paper size.
                out = checkpoint(layer, *args, use_reentrant=False)
            else:
                out = layer(*args)
        return out

    def cell_feature(self, memory, pos, padding_mask, backbone_pool=None):
        return self.cell(memory, pos, padding_mask, backbone_pool)

    def pixel_features(self, memory, spatial_shapes, level_start_index, src_fine):
        """Stride-8 features (B, d, h0, w0): every encoded level upsampled and summed, plus detail.

        ``src_fine`` is the stride-8 projection before the encoder (B, d, h0, w0).
        """
        b, _, d = memory.shape
        shapes = spatial_shapes.tolist()
        starts = level_start_index.tolist()
        h0, w0 = shapes[0]
        ctx = None
        for (h, w), start in zip(shapes, starts):
            level = memory[:, start : start + h * w].transpose(1, 2).reshape(b, d, h, w)
            if (h, w) != (h0, w0):
                level = F.interpolate(level, size=(h0, w0), mode="bilinear", align_corners=False)
            ctx = level if ctx is None else ctx + level
        # As in the official encoder: ``mask_feature_proj`` (Linear + activation) reads the
        # encoded tokens, ``mask_features`` (a 1x1 conv there) the un-encoded stride-8 map.
        ctx = self.mask_feature_proj(ctx.flatten(2).transpose(1, 2))
        fine = self.mask_features(src_fine.flatten(2).transpose(1, 2))
        return (ctx + fine).transpose(1, 2).reshape(b, d, h0, w0)
