"""Position encodings: 2-D sine maps for image tokens and sine embeddings of boxes.

The image encoder, the two-stage proposal generator and the decoder's query positions all
encode locations; keeping the three formulas side by side makes it easy to check that a
token and a query at the same place look alike, as DINO assumes.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """DINO's ``PositionEmbeddingSineHW``: normalised sine/cosine over (y, x), no parameters.

    Coordinates are cumulative sums over non-padded pixels, so each image in a padded batch
    gets positions in [0, 2*pi] over its own valid area, not the batch's padded size.
    The official run uses temperature 20 for both axes (``pe_temperatureH/W``).
    """

    def __init__(self, num_pos_feats: int, temperature: float = 20.0, normalize: bool = True) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi

    def forward(self, padding_mask: torch.Tensor) -> torch.Tensor:
        """``padding_mask`` (B, H, W) bool, True = padding -> (B, 2*num_pos_feats, H, W)."""
        not_mask = (~padding_mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            eps = 1e-6
            # No half-pixel offset: DINO's HW variant (unlike Deformable DETR's) has none.
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=padding_mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def sine_embed_boxes(boxes: torch.Tensor, hidden_dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """DINO's ``gen_sineembed_for_position``: (..., 2 or 4) in [0, 1] -> (..., hidden_dim/2 per coordinate).

    The order (y, x, w, h) matches DINO so an official ``ref_point_head`` loads unchanged.
    """
    half = hidden_dim // 2
    scale = 2 * math.pi
    dim_t = torch.arange(half, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)

    def embed(coord: torch.Tensor) -> torch.Tensor:
        pos = coord[..., None] * scale / dim_t
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    boxes = boxes.float()
    parts = [embed(boxes[..., 1]), embed(boxes[..., 0])]
    if boxes.shape[-1] == 4:
        parts += [embed(boxes[..., 2]), embed(boxes[..., 3])]
    elif boxes.shape[-1] != 2:
        raise ValueError(f"expected 2 or 4 coordinates, got {boxes.shape[-1]}")
    return torch.cat(parts, dim=-1)
