"""Losses of the six Uni-Hema tasks, plain PyTorch + scipy (no Ray/DeepSpeed here).

``UniHemaCriterion(cfg.loss)`` is the entry point; the submodules hold one task or one
building block each (box geometry, the Hungarian matcher, element-wise loss formulas).
"""

from unihema.losses.criterion import CountReducer, UniHemaCriterion, build_criterion
from unihema.losses.detection import DetectionCriterion, box_losses, focal_classification_loss
from unihema.losses.functional import (
    asymmetric_loss,
    connected_zero,
    cross_entropy,
    dice_loss,
    sigmoid_focal_loss,
)
from unihema.losses.matcher import HungarianMatcher, Indices, MatchCache, matched_targets, query_index
from unihema.losses.morphology import image_morphology_loss, query_morphology_loss
from unihema.losses.segmentation import instance_mask_losses, semantic_losses
from unihema.losses.text import text_losses
from unihema.ops.boxes import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    paired_generalized_box_iou,
)

__all__ = [
    "CountReducer",
    "DetectionCriterion",
    "HungarianMatcher",
    "Indices",
    "MatchCache",
    "UniHemaCriterion",
    "asymmetric_loss",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_losses",
    "box_xyxy_to_cxcywh",
    "build_criterion",
    "connected_zero",
    "cross_entropy",
    "dice_loss",
    "focal_classification_loss",
    "generalized_box_iou",
    "image_morphology_loss",
    "instance_mask_losses",
    "matched_targets",
    "paired_generalized_box_iou",
    "query_index",
    "query_morphology_loss",
    "semantic_losses",
    "sigmoid_focal_loss",
    "text_losses",
]
