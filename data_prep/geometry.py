"""Boxes and masks: repair what can be repaired, report what cannot, in one place for every format.

A box partly outside the image is clipped to it and counted (annotators drag past the
border); a box of zero or negative area, or one wholly outside, cannot be repaired and is
dropped from its record and listed. ``Annotations`` collects one record's boxes with their
labels, masks and attributes, so every detection converter applies the same rules.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from data_prep.classmap import Ignored, LabelMap
from data_prep.problems import ANNOTATION_IGNORED, Outcome, SourceProblem


def sanitize_box(box, width: int, height: int) -> tuple[list[float], bool]:
    """(xyxy box inside the image, whether it was clipped); raises SourceProblem when unusable."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise SourceProblem("bad_box", f"{box!r} is not 4 numbers") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise SourceProblem("bad_box", f"{[x0, y0, x1, y1]} has non-finite coordinates")
    if x1 <= x0 or y1 <= y0:
        raise SourceProblem("empty_box", f"{_fmt([x0, y0, x1, y1])} has zero or negative area")
    clipped = [min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise SourceProblem("box_outside_image", f"{_fmt([x0, y0, x1, y1])} lies outside the {width}x{height} image")
    return clipped, clipped != [x0, y0, x1, y1]


def _fmt(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def mask_png(mask: np.ndarray) -> bytes:
    """A boolean instance mask as the schema's PNG (mode L, 0 outside / 255 inside)."""
    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


def semantic_png(classes: np.ndarray) -> bytes:
    """A class-index array as the schema's semantic mask PNG (values index SEGMENTATION_CLASSES)."""
    buf = io.BytesIO()
    Image.fromarray(classes.astype(np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


def mask_box(mask: np.ndarray) -> list[float] | None:
    """The tight xyxy box (pixel edges) of a boolean mask, None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def components(mask: np.ndarray, min_pixels: int = 1) -> list[np.ndarray]:
    """The 8-connected components of a boolean mask, each as a full-size boolean mask."""
    from scipy import ndimage  # only mask datasets need it; keeps worker start-up short

    labelled, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    out = []
    for i, region in enumerate(ndimage.find_objects(labelled), start=1):
        if region is None:
            continue
        comp = labelled == i
        if comp[region].sum() >= min_pixels:
            out.append(comp)
    return out


class Annotations:
    """One record's boxes (+ labels, masks, attributes), checked as they are added."""

    def __init__(self, record_id: str, origin: str, width: int, height: int, labels: LabelMap, outcome: Outcome):
        self.record_id, self.origin = record_id, origin
        self.width, self.height = width, height
        self.labels = labels
        self.outcome = outcome
        self.boxes: list[list[float]] = []
        self.box_labels: list[str] = []
        self.masks: list[np.ndarray | None] = []
        self.box_attributes: list[dict] = []

    def add(self, box, raw_label, where: str, mask: np.ndarray | None = None, attributes: dict | None = None) -> bool:
        """Add one source annotation; False (and a listed problem) when it cannot be kept."""
        self.outcome.annotations += 1
        try:
            label = self.labels(raw_label)
            clean, clipped = sanitize_box(box, self.width, self.height)
        except Ignored:
            self.outcome.note(
                self.record_id,
                self.origin,
                f"ignored_class: {where} class {str(raw_label)!r} is left out by the registry",
                ANNOTATION_IGNORED,
            )
            return False
        except SourceProblem as problem:
            self.outcome.drop_annotation(
                self.record_id, self.origin, f"{problem.code}: {where} ({str(raw_label).strip()!r}) {problem.detail}"
            )
            return False
        if clipped:
            self.outcome.fixes["box_clipped"] += 1
        self.boxes.append(clean)
        self.box_labels.append(label)
        self.masks.append(mask)
        self.box_attributes.append(attributes or {})
        return True

    def fields(self) -> dict:
        """The record fields for what was kept (masks only when every box has one)."""
        out: dict = {"boxes": self.boxes, "box_labels": self.box_labels}
        with_mask = sum(m is not None for m in self.masks)
        if self.boxes and with_mask == len(self.boxes):
            out["masks"] = [mask_png(m) for m in self.masks]
            union = np.zeros((self.height, self.width), np.uint8)
            for m in self.masks:
                union[m] = 1
            out["semantic_mask"] = semantic_png(union)
        elif with_mask:  # the schema aligns masks with boxes: all or none
            self.outcome.fixes["masks_left_out_some_boxes_have_none"] += 1
        if any(self.box_attributes):
            out["box_attributes"] = self.box_attributes
        return out


__all__ = ["Annotations", "components", "mask_box", "mask_png", "sanitize_box", "semantic_png"]
