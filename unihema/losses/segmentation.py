"""The segmentation task's losses: Dice + focal on semantic maps and on per-query instance masks.

Two kinds of supervision exist in the corpus. Semantic masks (B, H, W) with 255 = ignore
supervise ``semantic_logits``; instance masks carried by detection-style targets supervise
each matched query's ``pred_masks`` (the official code trained only the first query's mask,
a defect we do not keep). Predictions are upsampled bilinearly to the target resolution so
the loss is measured where the annotation lives. Weights: LossConfig.seg_dice / seg_focal for
the semantic terms, mask_dice / mask_focal for the instance terms.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from unihema.labels import IGNORE_INDEX
from unihema.losses.functional import connected_zero, dice_loss, sigmoid_focal_loss
from unihema.losses.matcher import Indices


def _resize(logits: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits.float()
    return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)


def semantic_losses(
    logits: Tensor,
    masks: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor]:
    """(Dice, focal) of (B, S, h, w) logits against (B, H, W) class-index masks.

    Each class is a sigmoid channel scored against its one-hot plane. Focal is the mean over
    valid pixels x classes; Dice is computed per image and class over valid pixels, then
    averaged over images that have any valid pixel, so one large image cannot drown the rest.
    """
    if masks.dim() != 3 or logits.dim() != 4 or logits.shape[0] != masks.shape[0]:
        raise ValueError(f"semantic_logits {tuple(logits.shape)} vs semantic_masks {tuple(masks.shape)}")
    num_classes = logits.shape[1]
    masks = masks.to(logits.device).long()
    valid = masks != ignore_index
    if not bool(valid.any()):
        zero = connected_zero(logits)
        return zero, zero.clone()
    labels = torch.where(valid, masks, torch.zeros_like(masks))
    low, high = torch.stack((labels.min(), labels.max())).tolist()
    if low < 0 or high >= num_classes:
        raise ValueError(f"semantic mask values must be in [0, {num_classes}) or {ignore_index}; got [{low}, {high}]")
    logits = _resize(logits, tuple(masks.shape[-2:]))
    onehot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()
    valid_f = valid[:, None].float()

    focal = sigmoid_focal_loss(logits, onehot, alpha, gamma) * valid_f
    focal = focal.sum() / (valid_f.sum() * num_classes)

    batch = logits.shape[0]
    per = dice_loss(
        logits.sigmoid().reshape(batch, num_classes, -1),
        onehot.reshape(batch, num_classes, -1),
        valid_f.reshape(batch, 1, -1).expand(batch, num_classes, -1),
    )
    has_pixels = valid.flatten(1).any(1).float()
    dice = (per * has_pixels[:, None]).sum() / (has_pixels.sum() * num_classes)
    return dice, focal


def instance_mask_losses(
    pred_masks: Tensor,
    targets: Sequence[dict],
    indices: Indices,
    num_masks: Tensor | float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """(Dice, focal) of matched queries' (B, Q, h, w) mask logits vs targets' (n, H, W) masks.

    Both are summed over masks and divided by ``num_masks`` (DETR's normalization); focal is
    first averaged over each mask's pixels. Images whose targets carry no ``masks`` are skipped.
    """
    dice = connected_zero(pred_masks)
    focal = dice.clone()
    for b, (src, tgt) in enumerate(indices):
        target_masks = targets[b].get("masks")
        if target_masks is None or src.numel() == 0:
            continue
        target_masks = target_masks.to(pred_masks.device)[tgt].float()
        # Upsample only the matched queries: all Q at full resolution would not fit.
        pred = _resize(pred_masks[b, src][:, None], tuple(target_masks.shape[-2:]))[:, 0].flatten(1)
        target_masks = target_masks.flatten(1)
        focal = focal + sigmoid_focal_loss(pred, target_masks, alpha, gamma).mean(1).sum()
        dice = dice + dice_loss(pred.sigmoid(), target_masks).sum()
    return dice / num_masks, focal / num_masks
