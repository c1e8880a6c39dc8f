"""COCO JSON fixtures: boxes, polygons, compressed and uncompressed RLE, and broken entries."""

import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .helpers import image, reasons, run, spec, write_json


def _rle(array, compressed=True):
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(array.astype(np.uint8)))
        return {"size": rle["size"], "counts": rle["counts"].decode()}
    flat = array.astype(np.uint8).flatten(order="F")
    counts, current, run_len = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run_len)
            current, run_len = v, 0
        run_len += 1
    counts.append(run_len)
    return {"size": list(array.shape), "counts": counts}


def make_coco(root):
    for i in (1, 2, 3, 4):
        image(root / "images" / f"im{i}.jpg", seed=i)
    blob = np.zeros((48, 64), bool)
    blob[10:20, 30:50] = True
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [5, 5, 20, 10],
            "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]],
        },
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]},  # unknown category
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 2]},  # malformed bbox
        {"id": 4, "image_id": 1, "category_id": 2, "bbox": [0, 0, 64, 48], "iscrowd": 1},
        {"id": 5, "image_id": 2, "category_id": 2, "segmentation": _rle(blob)},  # box from the mask
        {"id": 6, "image_id": 3, "category_id": 1, "bbox": [30, 10, 20, 10], "segmentation": _rle(blob, False)},
        {"id": 7, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]},  # no such image
    ]
    images = [{"id": i, "file_name": f"im{i}.jpg", "width": 64, "height": 48} for i in (1, 2, 3, 4, 5)]
    write_json(
        root / "annotations" / "train.json",
        {
            "images": images,
            "annotations": anns,
            "categories": [{"id": 1, "name": "WBC"}, {"id": 2, "name": "Platelets"}],
        },
    )
    (root / "annotations" / "val.json").write_text('{"images": [')
    return root


def test_coco_boxes_polygons_rle_and_problems(tmp_path):
    """Polygons and both RLE kinds become instance masks; bad entries are dropped or rejected and listed."""
    src = make_coco(tmp_path / "coco")
    ds = spec(
        "coco",
        tasks=("detection", "segmentation"),
        labels={"Platelets": "platelet"},
        options={"annotations": {"train": "annotations/train.json", "val": "annotations/val.json"}},
    )
    result, records, errors = run(ds, src, tmp_path / "out", max_error_rate=1.0)
    assert sorted(records) == ["fx/train/im1", "fx/train/im2", "fx/train/im3"]
    im1, im2, im3 = records["fx/train/im1"], records["fx/train/im2"], records["fx/train/im3"]
    assert im1["box_labels"] == ["WBC"] and im1["boxes"] == [[5.0, 5.0, 25.0, 15.0]]
    assert im2["boxes"] == [[30.0, 10.0, 50.0, 20.0]] and im2["box_labels"] == ["platelet"]
    for rec in (im1, im2, im3):
        assert set(rec["tasks"]) == {"detection", "segmentation"} and len(rec["masks"]) == 1
    area = (np.asarray(Image.open(io.BytesIO(im3["masks"][0]))) == 255).sum()
    assert area == 200
    assert np.asarray(Image.open(io.BytesIO(im3["semantic_mask"]))).max() == 1
    codes = [(e["reasons"][0].split(":")[0], e["action"]) for e in errors]
    for expected in [
        ("unknown_class", "annotation_dropped"),
        ("bad_box", "annotation_dropped"),
        ("ignored_crowd", "annotation_ignored"),
        ("missing_image", "annotation_dropped"),
    ]:
        assert expected in codes
    rejected = reasons([e for e in errors if e["action"] == "record_rejected"])
    assert rejected == {
        "fx/train/im4": "empty_annotation",
        "fx/train/im5": "missing_image",
        "fx/annotations/val.json": "malformed_annotation",
    }
    assert result.manifest["counts"]["split"] == {"train": 3}
