"""Decode and per-task augmentation: boxes and masks follow every geometric step."""

import io

import numpy as np
import pytest
from PIL import Image

from unihema.config import load_config
from unihema.data.images import ImageDecodeError, decode_rgb
from unihema.data.transforms import (
    IGNORE_INDEX,
    Sample,
    crop,
    hflip,
    load_sample,
    random_size_crop,
    resize,
    size_for_short_side,
    transform_record,
)


def _png(arr: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(arr.astype(np.int32), "I").convert("I;16") if mode == "I;16" else Image.fromarray(arr, mode)
    img.save(buf, "PNG")
    return buf.getvalue()


def _record(width=120, height=90, boxes=((10, 20, 50, 60), (70, 5, 110, 40))) -> dict:
    """An image whose boxes are exactly the extents of solid rectangles in their masks."""
    image = np.full((height, width, 3), 230, np.uint8)
    masks = []
    for x0, y0, x1, y1 in boxes:
        image[y0:y1, x0:x1] = (120, 40, 160)
        m = np.zeros((height, width), np.uint8)
        m[y0:y1, x0:x1] = 255
        masks.append(_png(m, "L"))
    return {
        "id": "geo",
        "image": _png(image, "RGB"),
        "width": width,
        "height": height,
        "boxes": [list(map(float, b)) for b in boxes],
        "box_labels": ["neutrophil", "RBC"],
        "box_attributes": [{"nuclear_shape": "irregular"}, {}],
        "masks": masks,
        "semantic_mask": None,
        "cell_class": None,
        "attributes": {},
    }


def _mask_extent(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def _assert_boxes_match_masks(sample: Sample, tol: float) -> None:
    assert len(sample.boxes) == len(sample.masks)
    for box, mask in zip(sample.boxes, sample.masks):
        np.testing.assert_allclose(box, _mask_extent(np.asarray(mask) > 127), atol=tol)


def test_hflip_moves_boxes_with_pixels():
    """A horizontal flip mirrors boxes exactly like the masks."""
    s = load_sample(_record())
    hflip(s)
    _assert_boxes_match_masks(s, tol=0)


def test_resize_scales_boxes_and_masks():
    """Resizing scales boxes by the same factors as the (nearest-resized) masks."""
    s = load_sample(_record())
    resize(s, 60, 180)
    _assert_boxes_match_masks(s, tol=2)


def test_crop_clips_and_drops_boxes():
    """A crop clips boxes to the window and drops those left outside it."""
    s = load_sample(_record())
    crop(s, 0, 0, 60, 90)
    assert s.labels.tolist() == [2]  # only the neutrophil (index 2) survives
    crop(s, 20, 30, 40, 40)
    np.testing.assert_allclose(s.boxes, [[0, 0, 30, 30]])
    _assert_boxes_match_masks(s, tol=0)


@pytest.mark.parametrize("seed", range(8))
def test_detection_recipe_keeps_geometry(seed):
    """The full random detection recipe keeps every box equal to its mask's extent."""
    cfg = load_config("tiny").data
    rng = np.random.default_rng(seed)
    s = load_sample(_record())
    from unihema.data.transforms import augment

    augment(s, "detection", cfg, rng, train=True)
    _assert_boxes_match_masks(s, tol=2)
    assert min(s.size) <= max(cfg.detection_scales)


def test_random_size_crop_within_limits():
    """Random crops have sides within the configured range (or the image, when smaller)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = load_sample(_record())
        random_size_crop(s, 40, 70, rng)
        assert 40 <= s.size[0] <= 70 and 40 <= s.size[1] <= 70


def test_short_side_rule():
    """DETR's resize rule: short side to the scale unless the long side passes max_size."""
    assert size_for_short_side(640, 480, 800, 1333) == (1067, 800)
    assert size_for_short_side(480, 640, 800, 1000) == (750, 1000)
    assert size_for_short_side(100, 100, 50, None) == (50, 50)


@pytest.mark.parametrize("task, side", [("classification", 64), ("segmentation", 64), ("vqa", 64)])
def test_square_tasks_output(task, side):
    """Single-cell and text tasks give square images and normalized cxcywh boxes; segmentation also aligned masks."""
    cfg = load_config("tiny").data
    row = transform_record(_record(), task, cfg, np.random.default_rng(1), train=True)
    assert row["image"].shape == (side, side, 3) and row["image"].dtype == np.uint8
    assert (row["boxes"] >= 0).all() and (row["boxes"] <= 1).all()
    assert row["box_morphology"][0, 1] == 1 and row["box_morphology"][1, 1] == 4
    if task == "segmentation":
        masks = np.unpackbits(row["packed_masks"], axis=-1, count=side)
        assert row["packed_masks"].shape == (2, side, side // 8) and masks.any(axis=(1, 2)).all()
        assert ((masks.max(axis=0) > 0) == (row["semantic"] > 0)).all()
        assert row["semantic"].shape == (side, side) and set(np.unique(row["semantic"])) <= {0, 1}
    else:  # masks are neither decoded nor shipped for tasks that do not read them
        assert row["packed_masks"].shape[0] == 0
        assert row["semantic"].shape == (1, 1) and row["semantic"][0, 0] == IGNORE_INDEX


def test_semantic_mask_absent_is_ignored():
    """Without any mask the semantic target is all IGNORE_INDEX."""
    rec = _record()
    rec.update(masks=[], boxes=[], box_labels=[], box_attributes=[])
    row = transform_record(rec, "classification", load_config("tiny").data, np.random.default_rng(0))
    assert (row["semantic"] == IGNORE_INDEX).all() and row["boxes"].shape == (0, 4)


@pytest.mark.parametrize(
    "arr, mode",
    [
        (np.full((8, 8), 100, np.uint8), "L"),
        (np.full((8, 8, 4), 100, np.uint8), "RGBA"),
        (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000, "I;16"),
    ],
)
def test_any_image_mode_becomes_rgb(arr, mode):
    """Grayscale, RGBA and 16-bit images decode to 8-bit RGB."""
    img = decode_rgb(_png(arr, mode))
    assert img.mode == "RGB" and img.size == (8, 8)


def test_corrupt_bytes_raise_named_reason():
    """Bytes that are not an image raise ImageDecodeError with a countable reason."""
    with pytest.raises(ImageDecodeError) as info:
        decode_rgb(b"\x89PNG\r\n\x1a\n truncated")
    assert info.value.reason == "undecodable_image"


def test_collate_unpacks_masks_of_any_width():
    """Masks travel bit-packed; collate gives back the transform's masks, also for widths not a multiple of 8."""
    from dataclasses import replace

    from unihema.data.collate import collate
    from unihema.data.pipeline import TaskTransform
    from unihema.data.schema import to_table

    config = load_config("tiny")
    data_cfg = replace(config.data, segmentation_size=61)
    rec = {**_record(), "split": "train", "tasks": ["segmentation"], "source": "geo", "origin": "geo.png"}
    rec.update(image_format="png", license="CC0", qa=[], mlm_text=None)
    row = transform_record(rec, "segmentation", data_cfg, np.random.default_rng(3), train=False)
    assert row["packed_masks"].shape == (2, 61, 8)
    decoded = TaskTransform("segmentation", data_cfg, config.model, False, 0, 0)(to_table([rec]))
    batch = collate(decoded, "segmentation")
    masks = batch["targets"][0]["masks"].numpy()
    assert masks.shape == (2, 61, 61) and masks.dtype == bool and masks.any(axis=(1, 2)).all()
    assert (masks == np.unpackbits(row["packed_masks"], axis=-1, count=61).astype(bool)).all()
