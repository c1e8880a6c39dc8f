"""Box conversions and (generalized) IoU (unihema.ops.boxes) against torchvision and hand-computed values."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tv

from unihema.ops.boxes import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    paired_generalized_box_iou,
)

from .loss_fakes import random_boxes


def test_conversions_round_trip():
    """cxcywh -> xyxy -> cxcywh is the identity and matches torchvision's convert."""
    boxes = random_boxes(20, torch.Generator().manual_seed(0))
    xyxy = box_cxcywh_to_xyxy(boxes)
    torch.testing.assert_close(xyxy, tv.box_convert(boxes, "cxcywh", "xyxy"))
    torch.testing.assert_close(box_xyxy_to_cxcywh(xyxy), boxes)


def test_iou_and_giou_match_torchvision():
    """Pairwise IoU/GIoU agree with torchvision on random valid boxes."""
    g = torch.Generator().manual_seed(1)
    a, b = box_cxcywh_to_xyxy(random_boxes(7, g)), box_cxcywh_to_xyxy(random_boxes(5, g))
    torch.testing.assert_close(box_iou(a, b)[0], tv.box_iou(a, b), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(generalized_box_iou(a, b), tv.generalized_box_iou(a, b), atol=1e-5, rtol=1e-5)


def test_paired_giou_is_the_diagonal():
    """paired_generalized_box_iou equals the diagonal of the pairwise matrix."""
    g = torch.Generator().manual_seed(2)
    a, b = box_cxcywh_to_xyxy(random_boxes(9, g)), box_cxcywh_to_xyxy(random_boxes(9, g))
    torch.testing.assert_close(paired_generalized_box_iou(a, b), generalized_box_iou(a, b).diag())


@pytest.mark.parametrize(
    "pred, target, expected",
    [
        ((0.5, 0.5, 0.2, 0.2), (0.5, 0.5, 0.4, 0.4), 0.25),  # nested: IoU .04/.16, hull = union
        ((0.2, 0.2, 0.2, 0.2), (0.8, 0.8, 0.2, 0.2), -0.875),  # disjoint: -(0.64 - 0.08) / 0.64
        ((0.3, 0.3, 0.2, 0.2), (0.3, 0.3, 0.2, 0.2), 1.0),
    ],
)
def test_giou_hand_values(pred, target, expected):
    """GIoU of hand-worked pairs."""
    a, b = box_cxcywh_to_xyxy(torch.tensor([pred])), box_cxcywh_to_xyxy(torch.tensor([target]))
    assert paired_generalized_box_iou(a, b).item() == pytest.approx(expected, abs=1e-5)


def test_degenerate_boxes_stay_finite():
    """Zero-size boxes give finite GIoU and finite gradients, not NaN."""
    a = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.1, 0.1, 0.0, 0.2]], requires_grad=True)
    b = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.6, 0.6, 0.1, 0.0]])
    giou = paired_generalized_box_iou(box_cxcywh_to_xyxy(a), box_cxcywh_to_xyxy(b))
    pairwise = generalized_box_iou(box_cxcywh_to_xyxy(a), box_cxcywh_to_xyxy(b))
    giou.sum().backward()
    assert torch.isfinite(giou).all() and torch.isfinite(pairwise).all() and torch.isfinite(a.grad).all()
