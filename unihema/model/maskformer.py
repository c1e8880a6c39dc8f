"""Query-guided mask former: instance masks per query and a semantic mask from all queries.

- Instance masks: each final decoder query gives a mask embedding; its dot product with
  the encoder's stride-8 pixel features is that query's mask logit map (MaskFormer).
- Semantic mask: every query votes for the segmentation classes with its class
  probabilities times its mask probabilities (Mask2Former's semantic inference), so the
  whole query set, not the first query (the official defect), shapes the result.
- A learnable upsampler (official ``upsampler``) refines each class map from stride 8 to
  stride 2 from fused image features, as a residual on the bilinearly upsampled votes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP, group_norm, inverse_sigmoid


class MaskUpsampler(nn.Module):
    """Fuse (pixel features, encoder level 0) then upsample one coarse map x4 with convolutions.

    Module indices match the official checkpoint (``fusion_conv.{0,1,3,4}``,
    ``upsample.{1,2,5,6,8}``), hence the parameter-free layers kept inside the Sequentials.
    """

    def __init__(self, d_model: int, groups: int, norm: str = "batch") -> None:
        super().__init__()
        mid, low = d_model // 2, d_model // 4

        def make_norm(channels: int) -> nn.Module:
            # Official: BatchNorm2d (its running statistics are part of a checkpoint).
            return nn.BatchNorm2d(channels) if norm == "batch" else group_norm(channels, groups)

        self.fusion_conv = nn.Sequential(
            nn.Conv2d(2 * d_model, d_model, 3, padding=1),
            make_norm(d_model),
            nn.ReLU(),
            nn.Conv2d(d_model, d_model, 3, padding=1),
            make_norm(d_model),
            nn.ReLU(),
        )
        self.upsample = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(d_model + 1, mid, 3, padding=1),
            make_norm(mid),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(mid, low, 3, padding=1),
            make_norm(low),
            nn.ReLU(),
            nn.Conv2d(low, 1, 3, padding=1),
        )
        # The refinement starts near a no-op (small, not zero, so every layer gets gradient
        # from the first step) and the upsampled votes are the initial answer.
        nn.init.normal_(self.upsample[8].weight, std=1e-3)
        nn.init.zeros_(self.upsample[8].bias)

    def forward(self, features: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """features (B, 2d, h, w), coarse (B, C, h, w) logits -> (B, C, 4h, 4w) logits."""
        b, c, h, w = coarse.shape
        fused = self.fusion_conv(features)
        # Class maps share the refiner: run them as a batch of B*C single-channel maps.
        fused = fused.repeat_interleave(c, dim=0)
        x = torch.cat([fused, coarse.reshape(b * c, 1, h, w)], dim=1)
        refined = self.upsample(x).view(b, c, 4 * h, 4 * w)
        base = F.interpolate(coarse, scale_factor=4, mode="bilinear", align_corners=False)
        return base + refined


class MaskFormer(nn.Module):
    def __init__(self, d_model: int, num_seg_classes: int, groups: int, upsampler_norm: str = "batch") -> None:
        super().__init__()
        self.num_seg_classes = num_seg_classes
        # The official mask heads read the decoder's (already normalised) queries through one
        # more LayerNorm (top-level ``decoder_norm``).
        self.norm = nn.LayerNorm(d_model)
        self.mask_embed = MLP(d_model, d_model, d_model, 3)
        # Segmentation classes + "no object" per query.
        self.class_embed = nn.Linear(d_model, num_seg_classes + 1)
        self.upsampler = MaskUpsampler(d_model, groups, upsampler_norm)

    def forward(self, hs: torch.Tensor, pixel_features: torch.Tensor, level0: torch.Tensor) -> dict:
        """hs (B, Q, d) final queries, pixel_features and level0 (B, d, h, w) at stride 8."""
        hs = self.norm(hs)
        masks = torch.einsum("bqd,bdhw->bqhw", self.mask_embed(hs), pixel_features)
        class_logits = self.class_embed(hs)
        probs = class_logits.softmax(-1)[..., : self.num_seg_classes]
        votes = torch.einsum("bqc,bqhw->bchw", probs, masks.sigmoid())
        # Logit of each class's vote share: read as per-class sigmoids (the losses' reading)
        # or as a softmax over classes, it gives back the shares.
        share = votes / votes.sum(1, keepdim=True).clamp(min=1e-6)
        coarse = inverse_sigmoid(share, eps=1e-4)
        semantic = self.upsampler(torch.cat([pixel_features, level0], dim=1), coarse)
        return {"pred_masks": masks, "semantic_logits": semantic, "mask_class_logits": class_logits}
