"""One-to-one assignment of predicted queries to ground-truth boxes (DETR's Hungarian matching).

Set prediction needs a matching before any per-box loss can be computed; every decoder
layer and the encoder proposals are matched on their own. The cost is DINO's: a focal-style
classification cost, the L1 distance of cxcywh boxes and the negative GIoU, weighted
2/5/2 by default (LossConfig.match_*).
"""

from __future__ import annotations

from typing import Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from unihema.ops.boxes import box_cxcywh_to_xyxy, generalized_box_iou

# A matched pair is (query indices, target indices), both int64 of the same length, on the
# device of the predictions; query indices come out sorted.
Indices = list[tuple[Tensor, Tensor]]

# Replaces non-finite costs so a diverging step still yields an assignment (and a NaN loss
# the training loop can act on) instead of scipy raising inside every rank at once.
_INVALID_COST = 1e8


class HungarianMatcher:
    """Matches ``pred_logits`` (B, Q, C) / ``pred_boxes`` (B, Q, 4) to per-image targets."""

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matcher costs are 0: the assignment would be arbitrary")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @classmethod
    def from_config(cls, cfg) -> HungarianMatcher:
        return cls(cfg.match_cls, cfg.match_bbox, cfg.match_giou, cfg.focal_alpha, cfg.focal_gamma)

    @torch.no_grad()
    def cost_matrix(self, logits: Tensor, boxes: Tensor, tgt_labels: Tensor, tgt_boxes: Tensor) -> Tensor:
        """Cost (Q, n) of assigning each of one image's Q queries to each of its n targets."""
        prob = logits.float().sigmoid()[:, tgt_labels]
        alpha, gamma = self.focal_alpha, self.focal_gamma
        # Focal loss of calling the query class c minus that of calling it background: the
        # same trade-off the sigmoid focal classification loss will score after matching.
        neg = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
        pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
        boxes, tgt_boxes = boxes.float(), tgt_boxes.float()
        cost = self.cost_class * (pos - neg)
        cost = cost + self.cost_bbox * torch.cdist(boxes, tgt_boxes, p=1)
        giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt_boxes))
        return cost - self.cost_giou * giou

    @torch.no_grad()
    def __call__(self, outputs: dict, targets: Sequence[dict]) -> Indices:
        return self.match_many([outputs], targets)[0]

    @torch.no_grad()
    def match_many(self, levels: Sequence[dict], targets: Sequence[dict]) -> list[Indices]:
        """The matching of each output level, with one device-to-host copy for all of them.

        The Hungarian solve runs on the host; copying each level's costs separately made
        every decoder layer a host sync of its own.
        """
        sizes = [len(t["labels"]) for t in targets]
        costs, shapes = [], []
        for outputs in levels:
            logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
            if logits.shape[0] != len(targets):
                raise ValueError(f"matcher: {logits.shape[0]} images of predictions for {len(targets)} targets")
            device = logits.device
            costs += [
                self.cost_matrix(logits[b], boxes[b], t["labels"].to(device), t["boxes"].to(device)).flatten()
                for b, t in enumerate(targets)
                if sizes[b]
            ]
            shapes.append((device, logits.shape[1]))
        flat = torch.cat(costs).cpu() if costs else torch.empty(0)
        flat = torch.nan_to_num(flat, nan=_INVALID_COST, posinf=_INVALID_COST, neginf=-_INVALID_COST)
        chunks = iter(flat.split([q * n for _, q in shapes for n in sizes if n]))
        out = []
        for device, num_queries in shapes:
            indices: Indices = []
            for n in sizes:
                if n == 0:
                    empty = torch.empty(0, dtype=torch.int64, device=device)
                    indices.append((empty, empty.clone()))
                    continue
                rows, cols = linear_sum_assignment(next(chunks).view(num_queries, n).numpy())
                indices.append(
                    (
                        torch.as_tensor(rows, dtype=torch.int64, device=device),
                        torch.as_tensor(cols, dtype=torch.int64, device=device),
                    )
                )
            out.append(indices)
        return out


def query_index(indices: Indices) -> tuple[Tensor, Tensor]:
    """(image index, query index) of every matched pair, for advanced indexing of (B, Q, ...)."""
    batch = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
    return batch, torch.cat([src for src, _ in indices])


def matched_targets(targets: Sequence[dict], indices: Indices, key: str) -> Tensor:
    """``targets[b][key][j]`` for every matched pair, in the order of :func:`query_index`."""
    device = indices[0][0].device if indices else None
    return torch.cat([t[key].to(device)[tgt] for t, (_, tgt) in zip(targets, indices)])


class MatchCache:
    """Matches each output level once per step, however many losses read the assignment.

    Detection (every term of every decoder layer), the per-query morphology loss and the
    instance mask loss all use the same assignment of a layer; matching again per loss would
    repeat the device-to-host copy and the Hungarian solve.
    """

    def __init__(self, matcher: HungarianMatcher, targets: Sequence[dict]) -> None:
        self.matcher = matcher
        self.targets = targets
        self._cache: dict[str, Indices] = {}

    def __call__(self, level: str, outputs: dict) -> Indices:
        if level not in self._cache:
            self._cache[level] = self.matcher(outputs, self.targets)
        return self._cache[level]

    def prefetch(self, levels: Sequence[tuple[str, dict]]) -> None:
        """Match every level not cached yet in one go (one host sync instead of one per level)."""
        todo = [(name, out) for name, out in levels if name not in self._cache]
        if not todo:
            return
        # A matcher with its own __call__ (another kind, or a wrapper) is asked level by level.
        if type(self.matcher).__call__ is not HungarianMatcher.__call__:
            for name, out in todo:
                self(name, out)
            return
        for (name, _), indices in zip(todo, self.matcher.match_many([out for _, out in todo], self.targets)):
            self._cache[name] = indices
