"""Per-task collate on the training worker: ragged rows from Ray Data -> the model's batch dict.

Images arrive as uint8 of different sizes; here they are padded into one tensor with a
pixel mask (True = padding) and ImageNet-normalized. Boxes stay normalized cxcywh relative
to each image's own (unpadded) size, as DETR-style models expect. Rows that carry an
error from the decode step are left out and counted by reason, so nothing disappears
without a trace.

The training worker collates inside :func:`uint8_images`: images then stay uint8 (a quarter
of the bytes), optionally in pinned memory so the copy to the GPU is asynchronous, and
:func:`normalize_images` finishes them on the device after ``move_to``. Everyone else gets
normalized float images, as before.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections import Counter

import numpy as np
import torch

from unihema.data.schema import reason_code
from unihema.data.transforms import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from unihema.labels import MORPHOLOGY_NOT_ANNOTATED

_MEAN_255 = torch.from_numpy(IMAGENET_MEAN * 255).view(1, 3, 1, 1)
_INV_STD_255 = torch.from_numpy(1 / (IMAGENET_STD * 255)).view(1, 3, 1, 1)
# None: collate normalizes on the host. A dict {"pin_memory": bool}: leave uint8 for the device.
# A context variable rather than a collate argument because the streams call collate for the
# worker; it is scoped to the thread (and block) that sets it.
_UINT8 = contextvars.ContextVar("unihema_uint8_images", default=None)


@contextlib.contextmanager
def uint8_images(pin_memory: bool = False):
    """Within the block (this thread), collate returns uint8 (B,3,H,W) images, pinned if asked."""
    token = _UINT8.set({"pin_memory": pin_memory})
    try:
        yield
    finally:
        _UINT8.reset(token)


def normalize_images(batch: dict) -> dict:
    """``batch`` with uint8 images ImageNet-normalized to float32 where they are (a no-op for float images)."""
    images = batch["images"]
    if images.dtype != torch.uint8:
        return batch
    mean = _MEAN_255.to(images.device, torch.float32, non_blocking=True)
    inv_std = _INV_STD_255.to(images.device, torch.float32, non_blocking=True)
    return {**batch, "images": images.float().sub_(mean).mul_(inv_std)}


def _rows(column) -> list[np.ndarray]:
    """Ray Data hands ragged columns as object arrays and uniform ones as stacked arrays."""
    return [np.asarray(x) for x in column]


def collate(batch: dict, task: str, errors: Counter | None = None, size_divisibility: int = 1) -> dict | None:
    """The model's batch for ``task`` from a numpy batch of TaskTransform rows (None if all failed)."""
    reasons = [str(e) for e in batch["error"]]
    keep = [i for i, e in enumerate(reasons) if not e]
    if errors is not None:
        errors.update(reason_code(e) for e in reasons if e)
    if not keep:
        return None
    images = [_rows(batch["image"])[i] for i in keep]
    n = len(images)
    max_h = max(im.shape[0] for im in images)
    max_w = max(im.shape[1] for im in images)
    if size_divisibility > 1:
        max_h = -(-max_h // size_divisibility) * size_divisibility
        max_w = -(-max_w // size_divisibility) * size_divisibility
    pixel_mask = np.ones((n, max_h, max_w), bool)
    if all(im.shape[:2] == (max_h, max_w) for im in images):  # square tasks: nothing to pad
        pixels = np.stack(images)
        pixel_mask[:] = False
    else:
        pixels = np.zeros((n, max_h, max_w, 3), np.uint8)
        for j, im in enumerate(images):
            pixels[j, : im.shape[0], : im.shape[1]] = im
            pixel_mask[j, : im.shape[0], : im.shape[1]] = False
    # Only segmentation reads a per-pixel target; other tasks skip building one.
    semantic = np.full((n, max_h, max_w), IGNORE_INDEX, np.int64) if task == "segmentation" else None
    sem_rows = _rows(batch["semantic"]) if semantic is not None else None
    mask_rows, box_rows = _rows(batch["packed_masks"]), _rows(batch["boxes"])
    label_rows, morph_rows = _rows(batch["labels"]), _rows(batch["box_morphology"])
    targets = []
    for j, i in enumerate(keep):
        h, w = images[j].shape[:2]
        if semantic is not None:
            semantic[j, :h, :w] = sem_rows[i]
        target = {
            "labels": torch.tensor(label_rows[i], dtype=torch.long).reshape(-1),
            "boxes": torch.tensor(box_rows[i], dtype=torch.float32).reshape(-1, 4),
            "morphology": torch.tensor(morph_rows[i], dtype=torch.long).reshape(-1, 6),
            "size": torch.tensor([h, w]),
        }
        if len(mask_rows[i]):
            masks = np.zeros((len(mask_rows[i]), max_h, max_w), bool)
            masks[:, :h, :w] = np.unpackbits(mask_rows[i], axis=-1, count=w).astype(bool)
            target["masks"] = torch.from_numpy(masks)
        targets.append(target)
    deferred = _UINT8.get()
    if deferred is not None:
        images_f = torch.from_numpy(pixels).permute(0, 3, 1, 2)
        if deferred["pin_memory"]:
            images_f = torch.empty(images_f.shape, dtype=torch.uint8, pin_memory=True).copy_(images_f)
        else:
            images_f = images_f.contiguous()
    else:
        # One conversion and two in-place passes: (x / 255 - mean) / std == (x - 255 mean) * 1 / (255 std).
        images_f = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous().float().sub_(_MEAN_255).mul_(_INV_STD_255)
    pixel_mask = torch.from_numpy(pixel_mask)
    morphology = torch.from_numpy(np.asarray(batch["morphology"])[keep].astype(np.int64))
    has_morph = torch.from_numpy(np.asarray(batch["has_morphology"])[keep].astype(bool))
    morphology[~has_morph] = MORPHOLOGY_NOT_ANNOTATED
    out = {
        "tasks": [task],
        "ids": [str(batch["id"][i]) for i in keep],
        "images": images_f,
        "pixel_mask": pixel_mask,
        "targets": targets,
        "cell_labels": torch.from_numpy(np.asarray(batch["cell_label"])[keep].astype(np.int64)),
        "morphology": morphology,
        "prompt_ids": torch.from_numpy(np.asarray(batch["prompt_ids"])[keep].astype(np.int64)),
        "prompt_mask": torch.from_numpy(np.asarray(batch["prompt_mask"])[keep].astype(bool)),
    }
    if semantic is not None:
        out["semantic_masks"] = torch.from_numpy(semantic)
    if "text_labels" in batch:
        out["text_labels"] = torch.from_numpy(np.asarray(batch["text_labels"])[keep].astype(np.int64))
        out["text_task"] = [task] * n
    return out


def move_to(batch: dict, device: torch.device) -> dict:
    """The batch with every tensor (also inside targets) on ``device``."""

    def move(x):
        if isinstance(x, torch.Tensor):
            return x.to(device, non_blocking=True)
        if isinstance(x, dict):
            return {k: move(v) for k, v in x.items()}
        if isinstance(x, list):
            return [move(v) for v in x]
        return x

    return move(batch)
