"""Per-task decode and augmentation, run in Ray Data CPU tasks rather than in the trainer.

The recipes follow the official Uni-Hema training code:

- detection: horizontal flip, then either a random multi-scale resize (short side from
  ``data.detection_scales``, long side at most ``data.detection_max_size``) or resize ->
  random crop (side in ``data.detection_crop``) -> multi-scale resize;
- classification / morphology of single cells: flip, square resize to ``data.classification_size``, photometric jitter;
- segmentation: flip, square resize to ``data.segmentation_size``, masks resized nearest;
- vqa / mlm on single cells: flip, square resize to ``data.text_image_size``, photometric jitter;
  fields of view (records with boxes and a semantic mask) keep the detection recipe in
  morphology and VQA too, so their many small cells are not squashed into a small square.

Every geometric step moves boxes and masks with the pixels. Images stay uint8 here (a
quarter of the bytes of float32 through the object store); ImageNet normalization happens
in the collate step on the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageEnhance

from unihema.config import DataConfig
from unihema.data.images import decode_mask, decode_rgb
from unihema.labels import (
    CELL_INDEX,
    DETECTION_INDEX,
    IGNORE_INDEX,
    MORPHOLOGY_NAMES,
    NOT_ANNOTATED,
    morphology_targets,
)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass
class Sample:
    """One augmented image with its targets; boxes are xyxy pixels until ``finish``."""

    image: Image.Image
    boxes: np.ndarray  # (n, 4) float32 xyxy pixels
    labels: np.ndarray  # (n,) int64 indices into DETECTION_CLASSES
    box_morphology: np.ndarray  # (n, 6) int64, 0/1 or MORPHOLOGY_NOT_ANNOTATED
    masks: list[Image.Image] = field(default_factory=list)  # per box, mode L
    semantic: Image.Image | None = None
    # A field of view (boxes over many cells, with a semantic mask) rather than one cell's crop.
    is_field_of_view: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def keep(self, index: np.ndarray) -> None:
        self.boxes, self.labels, self.box_morphology = self.boxes[index], self.labels[index], self.box_morphology[index]
        if self.masks:
            self.masks = (
                [self.masks[i] for i in np.flatnonzero(index)]
                if index.dtype == bool
                else [self.masks[i] for i in index]
            )


def load_sample(rec: dict, with_masks: bool = True) -> Sample:
    """Decode a record; ``with_masks=False`` skips the instance and semantic masks (only segmentation uses them)."""
    image = decode_rgb(rec["image"])
    boxes = np.asarray(rec.get("boxes") or np.zeros((0, 4)), dtype=np.float32).reshape(-1, 4)
    labels = np.asarray([DETECTION_INDEX[n] for n in rec.get("box_labels") or []], dtype=np.int64)
    box_attrs = rec.get("box_attributes") or [{} for _ in range(len(boxes))]
    box_morph = np.asarray([morphology_targets(a) for a in box_attrs], dtype=np.int64)
    box_morph = box_morph.reshape(-1, len(MORPHOLOGY_NAMES))
    masks = [decode_mask(m) for m in rec.get("masks") or []] if with_masks else []
    semantic = decode_mask(rec["semantic_mask"]) if with_masks and rec.get("semantic_mask") else None
    return Sample(image, boxes, labels, box_morph, masks, semantic, is_field_of_view=bool(rec.get("semantic_mask")))


# ---- geometric steps: each moves image, boxes and masks together ----


def hflip(s: Sample) -> None:
    w, _ = s.size
    s.image = s.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if len(s.boxes):
        s.boxes = s.boxes[:, [2, 1, 0, 3]] * np.array([-1, 1, -1, 1], np.float32) + np.array([w, 0, w, 0], np.float32)
    s.masks = [m.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for m in s.masks]
    if s.semantic is not None:
        s.semantic = s.semantic.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def resize(s: Sample, width: int, height: int) -> None:
    w, h = s.size
    if (w, h) == (width, height):
        return
    s.image = s.image.resize((width, height), Image.Resampling.BILINEAR)
    s.boxes = s.boxes * np.array([width / w, height / h, width / w, height / h], np.float32)
    s.masks = [m.resize((width, height), Image.Resampling.NEAREST) for m in s.masks]
    if s.semantic is not None:
        s.semantic = s.semantic.resize((width, height), Image.Resampling.NEAREST)


def crop(s: Sample, left: int, top: int, width: int, height: int) -> None:
    """Crop; boxes are clipped to the window and those left without area are removed."""
    box = (left, top, left + width, top + height)
    s.image = s.image.crop(box)
    s.masks = [m.crop(box) for m in s.masks]
    if s.semantic is not None:
        s.semantic = s.semantic.crop(box)
    if len(s.boxes):
        shifted = s.boxes - np.array([left, top, left, top], np.float32)
        shifted = np.clip(shifted, 0, np.array([width, height, width, height], np.float32))
        s.boxes = shifted
        s.keep((shifted[:, 2] > shifted[:, 0]) & (shifted[:, 3] > shifted[:, 1]))


def size_for_short_side(w: int, h: int, short: int, max_size: int | None) -> tuple[int, int]:
    """DETR's rule: short side to ``short`` unless the long side would pass ``max_size``."""
    if max_size is not None:
        lo, hi = min(w, h), max(w, h)
        if hi / lo * short > max_size:
            short = int(round(max_size * lo / hi))
    if w <= h:
        return short, int(round(short * h / w))
    return int(round(short * w / h)), short


def random_resize(s: Sample, scales, max_size, rng: np.random.Generator) -> None:
    short = int(rng.choice(scales))
    resize(s, *size_for_short_side(*s.size, short, max_size))


def random_size_crop(s: Sample, min_size: int, max_size: int, rng: np.random.Generator) -> None:
    w, h = s.size
    cw = int(rng.integers(min(min_size, w), min(w, max_size) + 1))
    ch = int(rng.integers(min(min_size, h), min(h, max_size) + 1))
    crop(s, int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch)


# ---- photometric ----


def jitter(s: Sample, rng: np.random.Generator, strength: float = 0.2) -> None:
    """Brightness, contrast and saturation jitter (stain and illumination vary between labs).

    PIL's enhancers run in C; applied before the final resize they also touch fewer pixels.
    """
    b, c, sat = 1 + rng.uniform(-strength, strength, size=3)
    img = ImageEnhance.Brightness(s.image).enhance(b)
    img = ImageEnhance.Contrast(img).enhance(c)
    s.image = ImageEnhance.Color(img).enhance(sat)


# ---- recipes ----


def augment(s: Sample, task: str, cfg: DataConfig, rng: np.random.Generator, train: bool) -> None:
    if train and rng.random() < 0.5:
        hflip(s)
    # Fields of view keep the detection geometry in every task that uses them (boxes stay legible).
    if task == "detection" or (task in ("morphology", "vqa") and len(s.boxes) and s.is_field_of_view):
        if not train:
            resize(s, *size_for_short_side(*s.size, max(cfg.detection_scales), cfg.detection_max_size))
        elif rng.random() < 0.5:
            random_resize(s, cfg.detection_scales, cfg.detection_max_size, rng)
        else:
            random_resize(s, cfg.detection_crop_resize, None, rng)
            random_size_crop(s, cfg.detection_crop[0], cfg.detection_crop[-1], rng)
            random_resize(s, cfg.detection_scales, cfg.detection_max_size, rng)
        return
    size = {
        "segmentation": cfg.segmentation_size,
        "classification": cfg.classification_size,
        "morphology": cfg.classification_size,
    }.get(task, cfg.text_image_size)
    if train and task != "segmentation":
        jitter(s, rng)
    resize(s, size, size)


def finish(s: Sample, rec: dict, with_masks: bool = True) -> dict:
    """Arrays for the object store: uint8 image, normalized cxcywh boxes, instance masks packed to bits.

    Instance masks are packed along the width (``np.packbits``, collate unpacks them): a
    field of view's 40-80 masks at 512 px are 10-20 MB as bytes and wait in the shuffle
    window until their batch is drawn, so one byte per pixel made the segmentation window
    most of a worker's memory.

    Without masks (every task but segmentation) the semantic target is a 1x1 IGNORE_INDEX
    placeholder that collate broadcasts: a full-size one would add a quarter to every
    image's bytes in the object store for a target nothing reads.
    """
    w, h = s.size
    image = np.asarray(s.image, dtype=np.uint8)
    boxes = s.boxes.reshape(-1, 4)
    cxcywh = np.stack(
        [
            (boxes[:, 0] + boxes[:, 2]) / 2 / w,
            (boxes[:, 1] + boxes[:, 3]) / 2 / h,
            (boxes[:, 2] - boxes[:, 0]) / w,
            (boxes[:, 3] - boxes[:, 1]) / h,
        ],
        axis=1,
    ).astype(np.float32)
    masks = np.stack([np.asarray(m) > 127 for m in s.masks]) if s.masks else np.zeros((0, h, w), bool)
    if s.semantic is not None:
        semantic = np.asarray(s.semantic, dtype=np.uint8)
    elif s.masks:
        semantic = masks.any(axis=0).astype(np.uint8)
    else:
        semantic = np.full((h, w) if with_masks else (1, 1), IGNORE_INDEX, np.uint8)
    cell = rec.get("cell_class")
    attrs = rec.get("attributes") or {}
    return {
        "image": image,
        "boxes": cxcywh,
        "labels": s.labels.astype(np.int64),
        "box_morphology": s.box_morphology.astype(np.int64),
        "packed_masks": np.packbits(masks, axis=-1),
        "semantic": semantic,
        "cell_label": np.int64(CELL_INDEX[cell]) if cell else np.int64(-100),
        "morphology": np.asarray(morphology_targets(attrs), dtype=np.int64),
        "has_morphology": any(attrs.get(n, NOT_ANNOTATED) != NOT_ANNOTATED for n in MORPHOLOGY_NAMES),
    }


def transform_record(rec: dict, task: str, cfg: DataConfig, rng: np.random.Generator, train: bool = True) -> dict:
    """Decode and augment one record for ``task``; raises ImageDecodeError on unusable bytes."""
    # Decoding an 80-cell field of view's masks costs more than its image: only segmentation reads them.
    with_masks = task == "segmentation"
    sample = load_sample(rec, with_masks=with_masks)
    augment(sample, task, cfg, rng, train)
    return finish(sample, rec, with_masks)
