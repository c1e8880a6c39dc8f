"""The detection task's loss: DINO's set criterion over every place the model predicts boxes.

Sigmoid focal classification, L1 and GIoU box regression (weights LossConfig.det_cls /
det_bbox / det_giou, 1/5/2 officially), applied to the final decoder output, to every
intermediate decoder layer (``aux_outputs``, when LossConfig.aux), to the two-stage encoder
proposals (``interm_outputs``), each matched on its own, and to the denoising queries
(``dn_outputs``) with the fixed assignment the model made when it noised the targets.
Every term is divided by the number of target boxes (averaged over ranks by the caller);
the denoising terms by that times the number of denoising groups, as in DINO.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from unihema.losses.functional import sigmoid_focal_loss
from unihema.losses.matcher import Indices, MatchCache, matched_targets, query_index
from unihema.ops.boxes import box_cxcywh_to_xyxy, paired_generalized_box_iou


def focal_classification_loss(
    logits: Tensor,
    targets: Sequence[dict],
    indices: Indices,
    num_boxes: Tensor | float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> Tensor:
    """Sigmoid focal loss of (B, Q, C) logits; unmatched queries are trained towards all-zero."""
    onehot = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
    batch, query = query_index(indices)
    onehot[batch, query, matched_targets(targets, indices, "labels")] = 1.0
    # DINO writes this as mean over queries * Q / num_boxes; the sum is the same number.
    return sigmoid_focal_loss(logits, onehot, alpha, gamma).sum() / num_boxes


def box_losses(
    boxes: Tensor,
    targets: Sequence[dict],
    indices: Indices,
    num_boxes: Tensor | float,
) -> tuple[Tensor, Tensor]:
    """(L1, 1 - GIoU) of matched (B, Q, 4) cxcywh boxes, each summed and divided by num_boxes."""
    src = boxes[query_index(indices)].float()
    tgt = matched_targets(targets, indices, "boxes").float()
    l1 = (src - tgt).abs().sum() / num_boxes
    giou = 1 - paired_generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))
    return l1, giou.sum() / num_boxes


def decoder_levels(outputs: dict, aux: bool) -> list[tuple[str, dict]]:
    """(key suffix, output dict) of the final layer and, with ``aux``, every earlier layer."""
    levels = [("", outputs)]
    if aux:
        levels += [(f"_{i}", out) for i, out in enumerate(outputs.get("aux_outputs") or ())]
    return levels


def dn_indices(meta: dict, batch_size: int, device: torch.device) -> Indices:
    """The denoising branch's fixed (query, target) pairs from ``dn_meta``."""
    pos, tgt = meta["positive_idx"], meta["target_idx"]
    if len(pos) != batch_size or len(tgt) != batch_size:
        raise ValueError(f"dn_meta holds {len(pos)}/{len(tgt)} index lists for a batch of {batch_size}")
    pairs = []
    for p, t in zip(pos, tgt):
        if p.shape != t.shape:
            raise ValueError(f"dn_meta: {p.numel()} positive queries paired with {t.numel()} targets")
        pairs.append((p.to(device=device, dtype=torch.int64), t.to(device=device, dtype=torch.int64)))
    return pairs


class DetectionCriterion:
    """Computes the detection terms and their weighted sum (the ``loss_detection`` task loss)."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def _level(self, out: dict, targets, indices: Indices, num_boxes, suffix: str, terms: dict) -> Tensor:
        """Adds one output level's three terms to ``terms``; returns their weighted sum."""
        cfg = self.cfg
        ce = focal_classification_loss(
            out["pred_logits"],
            targets,
            indices,
            num_boxes,
            cfg.focal_alpha,
            cfg.focal_gamma,
        )
        l1, giou = box_losses(out["pred_boxes"], targets, indices, num_boxes)
        terms.update({f"loss_ce{suffix}": ce, f"loss_bbox{suffix}": l1, f"loss_giou{suffix}": giou})
        return cfg.det_cls * ce + cfg.det_bbox * l1 + cfg.det_giou * giou

    def __call__(
        self,
        outputs: dict,
        targets: Sequence[dict],
        num_boxes: Tensor,
        matches: MatchCache,
    ) -> tuple[dict[str, Tensor], Tensor]:
        check_labels(targets, outputs["pred_logits"].shape[-1])
        terms: dict[str, Tensor] = {}
        total = 0
        interm = outputs.get("interm_outputs")
        matches.prefetch(decoder_levels(outputs, self.cfg.aux) + ([("_interm", interm)] if interm is not None else []))
        for suffix, out in decoder_levels(outputs, self.cfg.aux):
            total = total + self._level(out, targets, matches(suffix, out), num_boxes, suffix, terms)
        if interm is not None:
            total = total + self._level(interm, targets, matches("_interm", interm), num_boxes, "_interm", terms)
        dn = outputs.get("dn_outputs")
        if dn is not None:
            meta = outputs.get("dn_meta")
            if meta is None:
                raise KeyError("outputs hold dn_outputs without dn_meta (the fixed denoising matches)")
            indices = dn_indices(meta, len(targets), dn["pred_logits"].device)
            num_dn = num_boxes * max(int(meta["num_groups"]), 1)
            levels = [("_dn", dn)] + (
                [(f"_dn_{i}", out) for i, out in enumerate(dn.get("aux_outputs") or ())] if self.cfg.aux else []
            )
            for suffix, out in levels:
                total = total + self._level(out, targets, indices, num_dn, suffix, terms)
        return terms, total


def check_labels(targets: Sequence[dict], num_classes: int) -> None:
    """Fail with the offending value instead of a CUDA device-side assert in the one-hot scatter."""
    labels = [t["labels"] for t in targets if len(t["labels"])]
    if not labels:
        return
    flat = torch.cat([lab.reshape(-1) for lab in labels])
    low, high = torch.stack((flat.min(), flat.max())).tolist()
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"detection labels must be 0-based indices below pred_logits' {num_classes} classes; "
            f"got values in [{low}, {high}]"
        )
