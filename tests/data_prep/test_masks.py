"""Mask fixtures: binary, multi-value 0/128/255 beside BMP images, label images, instance folders, bad masks."""

import io

import numpy as np
from PIL import Image

from .helpers import image, mask, reasons, run, spec


def _values(png: bytes) -> set[int]:
    return set(np.unique(np.asarray(Image.open(io.BytesIO(png)))).tolist())


def test_binary_masks_give_semantic_mask_boxes_and_problems(tmp_path):
    """Two blobs become two boxes with instance masks; wrong-size and missing masks are rejected."""
    src = tmp_path / "seg"
    m = np.zeros((48, 64), np.uint8)
    m[5:15, 5:15] = 255
    m[30:40, 40:60] = 250
    image(src / "images/a.png", seed=1)
    mask(src / "masks/a.png", m)
    image(src / "images/b.png", seed=2)
    mask(src / "masks/b.png", np.zeros((10, 10)))
    image(src / "images/c.png", seed=3)
    ds = spec("masks", tasks=("segmentation", "detection"), options={"instance_label": "RBC"})
    _, records, errors = run(ds, src, tmp_path / "out", max_error_rate=1.0)
    a = records["fx/images/a"]
    assert a["boxes"] == [[5.0, 5.0, 15.0, 15.0], [40.0, 30.0, 60.0, 40.0]] and a["box_labels"] == ["RBC", "RBC"]
    assert _values(a["semantic_mask"]) == {0, 1} and all(_values(x) == {0, 255} for x in a["masks"])
    assert a["tasks"] == ["segmentation", "detection"]
    assert reasons(errors) == {"fx/images/b": "mask_size_mismatch", "fx/images/c": "missing_mask"}


def test_multi_value_masks_beside_bmp_images(tmp_path):
    """0/128/255 masks next to BMP images map to background/cell; stray values are refused unless snapped."""
    src = tmp_path / "Dataset 1"
    m = np.zeros((48, 64), np.uint8)
    m[10:30, 10:30] = 128
    m[15:25, 15:25] = 255
    image(src / "001.bmp", seed=1)
    mask(src / "001.png", m)
    noisy = m.copy()
    noisy[0, 0] = 3
    image(src / "002.bmp", seed=2)
    mask(src / "002.png", noisy)
    options = {
        "images": "Dataset *",
        "masks": "Dataset *",
        "image_pattern": "*.bmp",
        "mode": "values",
        "values": {0: "background", 128: "cell", 255: "cell"},
    }
    ds = spec("masks", tasks=("segmentation",), options=options)
    _, records, errors = run(ds, tmp_path, tmp_path / "out", max_error_rate=1.0)
    rec = records["fx/Dataset 1/001"]
    assert rec["image_format"] == "png" and _values(rec["semantic_mask"]) == {0, 1}
    assert reasons(errors) == {"fx/Dataset 1/002": "unknown_mask_value"}
    ds = spec("masks", tasks=("segmentation",), options={**options, "snap": True})
    _, records, errors = run(ds, tmp_path, tmp_path / "out2")
    assert len(records) == 2 and errors == []


def test_instance_label_images_and_instance_folders(tmp_path):
    """A label image (one value per instance) and a folder of per-instance files both give instance masks."""
    src = tmp_path / "inst"
    labels = np.zeros((48, 64), np.uint8)
    labels[2:10, 2:10] = 1
    labels[8:20, 8:20] = 2  # touching instances stay apart: they have different values
    image(src / "images/a.png", seed=1)
    mask(src / "masks/a.png", labels)
    ds = spec("masks", tasks=("segmentation", "detection"), options={"mode": "instances", "instance_label": "WBC"})
    _, records, _ = run(ds, src, tmp_path / "out")
    assert len(records["fx/images/a"]["masks"]) == 2
    one, two = np.zeros((48, 64), np.uint8), np.zeros((48, 64), np.uint8)
    one[0:5, 0:5], two[40:48, 60:64] = 255, 255
    mask(src / "inst_masks/a/0.png", one)
    mask(src / "inst_masks/a/1.png", two)
    ds = spec(
        "masks",
        tasks=("segmentation", "detection"),
        options={"mode": "instance_files", "masks": "inst_masks", "mask_name": "{stem}", "instance_label": "WBC"},
    )
    _, records, errors = run(ds, src, tmp_path / "out2")
    assert records["fx/images/a"]["boxes"] == [[0.0, 0.0, 5.0, 5.0], [60.0, 40.0, 64.0, 48.0]] and errors == []
