"""One synthetic record, as a schema dict, from nothing but (seed, index).

Record ``i`` draws from generators seeded by ``(seed, i)`` (one for the image, one for its
text), and its split comes from a hash of the same pair, so any worker can make any record
and the dataset is the same however it is divided among processes.
"""

from __future__ import annotations

import hashlib

import numpy as np

from unihema.data.synthetic.png import encode_png, encode_sparse_mask_png
from unihema.data.synthetic.scenes import FOV_WIDTH_UM, compose_crop, compose_fov
from unihema.data.synthetic.text import crop_qa, fov_qa, mlm_sentence

KINDS = ("fov", "crop")
SOURCE = "synthetic"
LICENSE = "CC0-1.0"
FOV_TASKS = ("detection", "segmentation", "morphology", "vqa")
CROP_TASKS = ("classification", "morphology", "vqa", "mlm")
_IMAGE_STREAM, _TEXT_STREAM = 0, 1


def record_id(seed: int, index: int) -> str:
    return f"syn-{seed}-{index:07d}"


def split_of(seed: int, index: int, val_fraction: float = 0.1, test_fraction: float = 0.0) -> str:
    """train / val / test from a hash of (seed, index): stable, and each record in exactly one split."""
    digest = hashlib.blake2b(f"unihema-synthetic/{seed}/{index}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    if u < val_fraction:
        return "val"
    if u < val_fraction + test_fraction:
        return "test"
    return "train"


def _check(index: int, seed: int, image_size: int, fov_width_um: float = FOV_WIDTH_UM) -> None:
    if not 10 <= fov_width_um <= 1000:
        raise ValueError(
            f"fov_width_um must be between 10 and 1000 micrometres (a few red cells to a "
            f"whole low-power field), got {fov_width_um}"
        )
    if index < 0 or seed < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed} index={index}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")


def generate_record(
    index: int,
    seed: int,
    image_size: int = 256,
    kind: str | None = None,
    *,
    fov_fraction: float = 0.5,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    fov_width_um: float = FOV_WIDTH_UM,
) -> dict:
    """Record ``index`` of the dataset ``seed``: a field of view (``kind="fov"``) or a cell crop ("crop").

    ``kind`` None picks one at random with probability ``fov_fraction`` for a field of view;
    ``fov_width_um`` is how much of the smear a field of view shows (less: fewer, larger cells).
    """
    _check(index, seed, image_size, fov_width_um)
    rng = np.random.default_rng([seed, index, _IMAGE_STREAM])
    text_rng = np.random.default_rng([seed, index, _TEXT_STREAM])
    drawn = "fov" if rng.random() < fov_fraction else "crop"  # always drawn, so forcing kind keeps the rest
    kind = kind or drawn
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; allowed: {', '.join(KINDS)}")
    rec = {
        "id": record_id(seed, index),
        "source": SOURCE,
        "split": split_of(seed, index, val_fraction, test_fraction),
        "image_format": "png",
        "width": image_size,
        "height": image_size,
        "boxes": [],
        "box_labels": [],
        "box_attributes": [],
        "masks": [],
        "semantic_mask": None,
        "cell_class": None,
        "attributes": {},
        "qa": [],
        "mlm_text": None,
        "license": LICENSE,
        "origin": f"synthetic seed={seed} index={index}",
    }
    if kind == "fov":
        image, instances, truth = compose_fov(rng, image_size, width_um=fov_width_um)
        semantic = np.zeros((image_size, image_size), np.uint8)
        for inst in instances:
            p = inst.patch
            semantic[p.y0 : p.y1, p.x0 : p.x1] |= inst.mask
            rec["boxes"].append(inst.box())
            rec["box_labels"].append(inst.label)
            rec["box_attributes"].append(dict(inst.attributes))
            rec["masks"].append(
                encode_sparse_mask_png(image_size, image_size, p.y0, p.x0, inst.mask.view(np.uint8) * np.uint8(255))
            )
        has_morphology = any(inst.attributes for inst in instances)
        rec["tasks"] = [t for t in FOV_TASKS if t != "morphology" or has_morphology]
        rec["semantic_mask"] = encode_png(semantic)
        rec["qa"] = fov_qa(text_rng, truth)
    else:
        image, wbc, _ = compose_crop(rng, image_size)
        rec["tasks"] = list(CROP_TASKS)
        rec["cell_class"] = wbc.cell_class
        rec["attributes"] = dict(wbc.attributes)
        rec["qa"] = crop_qa(text_rng, wbc.cell_class, wbc.attributes)
        rec["mlm_text"] = mlm_sentence(text_rng, wbc.cell_class, wbc.attributes)
    rec["image"] = encode_png(image)
    return rec
