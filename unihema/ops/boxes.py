"""Box geometry: the one definition of the box conversions and of (G)IoU.

The model predicts normalized (cx, cy, w, h) boxes; IoU and GIoU are defined on corners, and
COCO scoring takes (x, y, w, h). The denoising queries, the matcher, the detection losses and
evaluation all convert here, so a box means the same thing to each of them. The IoU
functions are written out (rather than calling ``torchvision.ops``) for two reasons: an
``eps`` keeps degenerate boxes (zero width after a sigmoid saturates) from producing NaN,
which would make ``linear_sum_assignment`` raise mid-run, and
:func:`paired_generalized_box_iou` scores matched pairs without building the N x N matrix
that DETR builds and then takes the diagonal of (N is every matched box of every image,
times the denoising groups). The tests check both against torchvision.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-7


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def box_cxcywh_to_xywh(boxes: Tensor) -> Tensor:
    """COCO's box format (corner, width, height), which pycocotools scores."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, w, h), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of xyxy boxes; inverted boxes count as empty instead of negative."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """Pairwise IoU (N, M) of xyxy boxes, and the union it was divided by."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area1[:, None] + area2[None, :] - inter
    return inter / (union + eps), union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = EPS) -> Tensor:
    """Pairwise generalized IoU (N, M) of xyxy boxes (Rezatofighi et al., 2019)."""
    iou, union = box_iou(boxes1, boxes2, eps)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    hull = (rb - lt).clamp(min=0).prod(-1)
    return iou - (hull - union) / (hull + eps)


def paired_generalized_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = EPS) -> Tensor:
    """Generalized IoU (N,) of the pairs boxes1[i], boxes2[i] (xyxy)."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area1 + area2 - inter
    iou = inter / (union + eps)
    lt = torch.min(boxes1[:, :2], boxes2[:, :2])
    rb = torch.max(boxes1[:, 2:], boxes2[:, 2:])
    hull = (rb - lt).clamp(min=0).prod(-1)
    return iou - (hull - union) / (hull + eps)
