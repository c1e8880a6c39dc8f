"""Contrastive denoising (DN) queries of DINO, which the official release configured but never built.

In training, each ground-truth box is copied into ``num_groups`` groups of two queries:
a *positive* (box jittered by less than half its size, label flipped with probability
``label_noise_ratio / 2``) that must reconstruct the target, and a *negative* (jittered by
between one and two half-sizes) that must predict "no object". The groups are prepended
to the matching queries; the self-attention mask keeps the matching queries from seeing
any DN query (they would otherwise read the answers) and each group from seeing the others.

The decoder outputs for these queries come back as ``dn_outputs``; ``dn_meta`` tells the
losses which DN query reconstructs which target.
"""

from __future__ import annotations

import torch
from torch import nn

from unihema.ops.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh

from .layers import inverse_sigmoid


class DenoisingQueries(nn.Module):
    def __init__(
        self, num_classes: int, d_model: int, dn_number: int, label_noise_ratio: float, box_noise_scale: float
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dn_number = dn_number
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        # One row per class plus one that pads images with fewer targets than the largest.
        self.label_enc = nn.Embedding(num_classes + 1, d_model)

    def forward(self, targets: list[dict], num_queries: int):
        """Build the DN queries for a batch, or return None when there is nothing to denoise.

        Returns (content (B, P, d), reference boxes in logit space (B, P, 4),
        self-attention mask (P + Q, P + Q) bool True = blocked, dn_meta).
        """
        counts = [int(t["labels"].numel()) for t in targets]
        max_n = max(counts, default=0)
        if self.dn_number <= 0 or max_n == 0:
            return None
        # DINO: the query budget is split over groups by the largest image's target count.
        groups = max(1, self.dn_number // max_n)
        single = max_n
        pad = 2 * single * groups
        device = self.label_enc.weight.device
        b = len(targets)

        labels = torch.full((b, pad), self.num_classes, dtype=torch.long, device=device)
        boxes = torch.zeros(b, pad, 4, device=device)
        boxes[..., :2] = 0.5
        boxes[..., 2:] = 0.05
        positive_idx, target_idx = [], []
        for i, t in enumerate(targets):
            n = counts[i]
            if n == 0:
                positive_idx.append(torch.zeros(0, dtype=torch.long, device=device))
                target_idx.append(torch.zeros(0, dtype=torch.long, device=device))
                continue
            tl = t["labels"].to(device).long()
            tb = t["boxes"].to(device).to(torch.float32)
            # Slots: group g, positive j -> 2*single*g + j; negative j -> 2*single*g + single + j.
            g = torch.arange(groups, device=device)[:, None]
            j = torch.arange(n, device=device)[None]
            pos = (2 * single * g + j).reshape(-1)
            neg = pos + single
            labels[i, pos] = self._flip_labels(tl.repeat(groups))
            labels[i, neg] = self._flip_labels(tl.repeat(groups))
            boxes[i, pos] = self._jitter(tb.repeat(groups, 1), negative=False)
            boxes[i, neg] = self._jitter(tb.repeat(groups, 1), negative=True)
            positive_idx.append(pos)
            target_idx.append(torch.arange(n, device=device).repeat(groups))

        content = self.label_enc(labels)
        # DINO gives padding slots a zero content vector: they carry no label information.
        content = content.masked_fill((labels == self.num_classes)[..., None], 0.0)
        refs = inverse_sigmoid(boxes)

        size = pad + num_queries
        attn_mask = torch.zeros(size, size, dtype=torch.bool, device=device)
        attn_mask[pad:, :pad] = True
        for g in range(groups):
            lo, hi = 2 * single * g, 2 * single * (g + 1)
            attn_mask[lo:hi, :lo] = True
            attn_mask[lo:hi, hi:pad] = True
        meta = {
            "positive_idx": positive_idx,
            "target_idx": target_idx,
            "num_groups": groups,
            "pad_size": pad,
            "single_pad": single,
        }
        return content, refs, attn_mask, meta

    def _flip_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Replace each label by a random class with probability label_noise_ratio / 2 (DINO)."""
        if self.label_noise_ratio <= 0:
            return labels
        flip = torch.rand(labels.shape, device=labels.device) < self.label_noise_ratio * 0.5
        return torch.where(flip, torch.randint_like(labels, 0, self.num_classes), labels)

    def _jitter(self, boxes: torch.Tensor, negative: bool) -> torch.Tensor:
        """Move each corner by up to half the box size (positives) or by 1-2 half sizes (negatives)."""
        if self.box_noise_scale <= 0:
            return boxes
        xyxy = box_cxcywh_to_xyxy(boxes)
        half = boxes[:, 2:].repeat(1, 2) / 2
        sign = torch.randint_like(boxes, 0, 2) * 2.0 - 1.0
        part = torch.rand_like(boxes) + (1.0 if negative else 0.0)
        xyxy = (xyxy + sign * part * half * self.box_noise_scale).clamp(0.0, 1.0)
        out = box_xyxy_to_cxcywh(xyxy)
        # A corner pair can cross after clamping; keep a minimum size so logits stay finite.
        out[:, 2:] = out[:, 2:].clamp(min=1e-4)
        return out
