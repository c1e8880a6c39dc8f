"""One record schema for all six tasks, and its validation.

A record is one image with whatever annotations it carries: boxes for detection, instance
and semantic masks for segmentation, attributes for morphology, a cell class, question/answer
pairs for VQA and a sentence for MLM. Data prep, the synthetic generator and the pipeline
all speak this one shape (Python dicts in memory, Arrow/Parquet on storage), documented in
docs/DATA.md. Validation returns reasons rather than raising, so a writer can report a bad
record and carry on: nothing is dropped silently.
"""

from __future__ import annotations

import io
import math
from typing import Any, Iterable

import pyarrow as pa
from PIL import Image

from unihema.labels import (
    ATTRIBUTE_VALUES,
    CELL_CLASSES,
    DETECTION_CLASSES,
    MORPHOLOGY_NAMES,
    NOT_ANNOTATED,
    SEGMENTATION_CLASSES,
    TASKS,
)

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
IMAGE_FORMATS = ("png", "jpeg")

_ATTRIBUTE = pa.struct([("name", pa.string()), ("value", pa.string())])
_QA = pa.struct([("question", pa.string()), ("answer", pa.string())])

RECORD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("tasks", pa.list_(pa.string()), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("image_format", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        # Detection: xyxy in pixels, with class names from unihema.labels.DETECTION_CLASSES.
        pa.field("boxes", pa.list_(pa.list_(pa.float32(), 4))),
        pa.field("box_labels", pa.list_(pa.string())),
        # Per-box morphology attributes, aligned with boxes (empty list when not annotated).
        pa.field("box_attributes", pa.list_(pa.list_(_ATTRIBUTE))),
        # Segmentation: one PNG per box (0 = outside, 255 = inside), and a PNG of class indices.
        pa.field("masks", pa.list_(pa.binary())),
        pa.field("semantic_mask", pa.binary()),
        # Single cell: its class and attributes.
        pa.field("cell_class", pa.string()),
        pa.field("attributes", pa.list_(_ATTRIBUTE)),
        pa.field("qa", pa.list_(_QA)),
        pa.field("mlm_text", pa.string()),
        pa.field("license", pa.string(), nullable=False),
        # Where the record came from (source file, generator seed): for error reports and audits.
        pa.field("origin", pa.string()),
    ],
    metadata={b"unihema_schema_version": str(SCHEMA_VERSION).encode()},
)


class RecordError(ValueError):
    """A record that breaks the schema; ``reasons`` lists every problem found."""

    def __init__(self, record_id: str, reasons: list[str]):
        super().__init__(f"record {record_id!r} rejected: " + "; ".join(reasons))
        self.record_id = record_id
        self.reasons = reasons


def reason_code(reason: str) -> str:
    """The stable code of a reason ("box_out_of_bounds: ..." -> "box_out_of_bounds") for counting."""
    return reason.split(":", 1)[0]


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return None


def _check_attributes(attrs: Any, where: str, problems: list[str]) -> None:
    if not isinstance(attrs, dict):
        problems.append(f"bad_attributes: {where} must map attribute names to values")
        return
    for name, value in attrs.items():
        if name not in ATTRIBUTE_VALUES:
            problems.append(f"unknown_attribute: {where} has unknown attribute {name!r}")
        elif value != NOT_ANNOTATED and value not in ATTRIBUTE_VALUES[name]:
            problems.append(
                f"bad_attribute_value: {where} {name}={value!r}; allowed: "
                f"{', '.join(ATTRIBUTE_VALUES[name])} or {NOT_ANNOTATED}"
            )


def _has_official_morphology(attrs: dict) -> bool:
    return any(attrs.get(name, NOT_ANNOTATED) != NOT_ANNOTATED for name in MORPHOLOGY_NAMES)


def validate_record(rec: dict, check_image: bool = True) -> list[str]:
    """Every reason ``rec`` cannot be written, as ``code: detail`` strings; empty when valid."""
    problems: list[str] = []
    for key in ("id", "source", "license"):
        if not isinstance(rec.get(key), str) or not rec.get(key):
            problems.append(f"missing_field: {key} must be a non-empty string")
    if rec.get("split") not in SPLITS:
        problems.append(f"bad_split: {rec.get('split')!r}; allowed: {', '.join(SPLITS)}")
    tasks = rec.get("tasks") or []
    if not tasks:
        problems.append("no_task: a record must serve at least one task")
    bad_tasks = [t for t in tasks if t not in TASKS]
    if bad_tasks:
        problems.append(f"unknown_task: {bad_tasks}; allowed: {', '.join(TASKS)}")
    if len(set(tasks)) != len(tasks):
        problems.append("duplicate_task: tasks must be unique")
    image = rec.get("image")
    width, height = rec.get("width"), rec.get("height")
    if not isinstance(image, (bytes, bytearray)) or not image:
        problems.append("missing_image: no image bytes")
    if rec.get("image_format") not in IMAGE_FORMATS:
        problems.append(f"bad_image_format: {rec.get('image_format')!r}; allowed: {', '.join(IMAGE_FORMATS)}")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        problems.append(f"bad_image_size: width/height must be positive integers, got {width!r}x{height!r}")
        width = height = None
    if check_image and isinstance(image, (bytes, bytearray)) and image:
        size = _image_size(bytes(image))
        if size is None:
            problems.append("undecodable_image: the image bytes are not a readable image")
        elif width and size != (width, height):
            problems.append(f"image_size_mismatch: header says {size[0]}x{size[1]}, record says {width}x{height}")

    boxes = rec.get("boxes") or []
    labels = rec.get("box_labels") or []
    if len(boxes) != len(labels):
        problems.append(f"box_label_mismatch: {len(boxes)} boxes but {len(labels)} labels")
    for i, box in enumerate(boxes):
        if len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
            problems.append(f"bad_box: box {i} must be 4 finite numbers, got {box!r}")
            continue
        x0, y0, x1, y1 = box
        if not (x1 > x0 and y1 > y0):
            problems.append(f"empty_box: box {i} {list(box)} has zero or negative area")
        elif width and (x0 < 0 or y0 < 0 or x1 > width or y1 > height):
            problems.append(f"box_out_of_bounds: box {i} {list(box)} outside the {width}x{height} image")
    for name in labels:
        if name not in DETECTION_CLASSES:
            problems.append(f"unknown_class: detection class {name!r} is not in the label space")
    box_attrs = rec.get("box_attributes") or []
    if box_attrs and len(box_attrs) != len(boxes):
        problems.append(f"box_attribute_mismatch: {len(box_attrs)} attribute sets for {len(boxes)} boxes")
    for i, attrs in enumerate(box_attrs):
        _check_attributes(attrs, f"box {i}", problems)
    masks = rec.get("masks") or []
    if masks and len(masks) != len(boxes):
        problems.append(f"mask_mismatch: {len(masks)} instance masks for {len(boxes)} boxes")
    for i, mask in enumerate(masks):
        size = _image_size(mask) if check_image else (width, height)
        if size is None:
            problems.append(f"undecodable_mask: instance mask {i} is not a readable PNG")
        elif width and size != (width, height):
            problems.append(f"mask_size_mismatch: instance mask {i} is {size[0]}x{size[1]}, image {width}x{height}")
    semantic = rec.get("semantic_mask")
    if semantic is not None:
        size = _image_size(semantic) if check_image else (width, height)
        if size is None:
            problems.append("undecodable_mask: the semantic mask is not a readable PNG")
        elif width and size != (width, height):
            problems.append(f"mask_size_mismatch: semantic mask is {size[0]}x{size[1]}, image {width}x{height}")
    cell_class = rec.get("cell_class")
    if cell_class is not None and cell_class not in CELL_CLASSES:
        problems.append(f"unknown_class: cell class {cell_class!r} is not in the label space")
    attrs = rec.get("attributes") or {}
    _check_attributes(attrs, "attributes", problems)
    qa = rec.get("qa") or []
    for i, pair in enumerate(qa):
        if not (isinstance(pair, dict) and pair.get("question") and pair.get("answer")):
            problems.append(f"bad_qa: pair {i} needs a non-empty question and answer")

    if "detection" in tasks and not boxes:
        problems.append("no_boxes: a detection record needs at least one box")
    if "classification" in tasks and cell_class is None:
        problems.append("no_cell_class: a classification record needs a cell_class")
    if "segmentation" in tasks and semantic is None and not masks:
        problems.append("no_masks: a segmentation record needs a semantic mask or instance masks")
    if (
        "morphology" in tasks
        and isinstance(attrs, dict)
        and not _has_official_morphology(attrs)
        and not any(isinstance(a, dict) and _has_official_morphology(a) for a in box_attrs)
    ):
        problems.append("no_morphology: a morphology record needs at least one of " + ", ".join(MORPHOLOGY_NAMES))
    if "vqa" in tasks and not qa:
        problems.append("no_qa: a vqa record needs at least one question/answer pair")
    if "mlm" in tasks and not rec.get("mlm_text"):
        problems.append("no_mlm_text: an mlm record needs mlm_text")
    return problems


def _pairs(attrs: dict | None) -> list[dict]:
    return [{"name": k, "value": v} for k, v in (attrs or {}).items()]


def to_arrow_row(rec: dict) -> dict:
    """A validated record as the column values of RECORD_SCHEMA."""
    return {
        "id": rec["id"],
        "source": rec["source"],
        "split": rec["split"],
        "tasks": list(rec["tasks"]),
        "image": bytes(rec["image"]),
        "image_format": rec["image_format"],
        "width": int(rec["width"]),
        "height": int(rec["height"]),
        "boxes": [[float(v) for v in b] for b in rec.get("boxes") or []],
        "box_labels": list(rec.get("box_labels") or []),
        "box_attributes": [_pairs(a) for a in rec.get("box_attributes") or []],
        "masks": [bytes(m) for m in rec.get("masks") or []],
        "semantic_mask": rec.get("semantic_mask"),
        "cell_class": rec.get("cell_class"),
        "attributes": _pairs(rec.get("attributes")),
        "qa": [{"question": p["question"], "answer": p["answer"]} for p in rec.get("qa") or []],
        "mlm_text": rec.get("mlm_text"),
        "license": rec["license"],
        "origin": rec.get("origin"),
    }


def from_arrow_row(row: dict) -> dict:
    """Inverse of to_arrow_row: attribute lists back into dicts."""
    rec = dict(row)
    rec["attributes"] = {p["name"]: p["value"] for p in row.get("attributes") or []}
    rec["box_attributes"] = [{p["name"]: p["value"] for p in a} for a in row.get("box_attributes") or []]
    rec["boxes"] = [list(b) for b in row.get("boxes") or []]
    for key in ("tasks", "box_labels", "masks", "qa"):
        rec[key] = list(row.get(key) or [])
    return rec


def to_table(records: Iterable[dict]) -> pa.Table:
    return pa.Table.from_pylist([to_arrow_row(r) for r in records], schema=RECORD_SCHEMA)


def check_table_schema(schema: pa.Schema, where: str) -> None:
    """Raise RecordError-like ValueError when a shard's columns differ from RECORD_SCHEMA."""
    expected = {f.name: f.type for f in RECORD_SCHEMA}
    found = {f.name: f.type for f in schema}
    missing = sorted(set(expected) - set(found))
    wrong = sorted(n for n in set(expected) & set(found) if not found[n].equals(expected[n]))
    if missing or wrong:
        raise ValueError(
            f"shard {where} does not match record schema v{SCHEMA_VERSION}: "
            f"missing columns {missing}, wrong types {wrong}"
        )


__all__ = [
    "IMAGE_FORMATS",
    "RECORD_SCHEMA",
    "RecordError",
    "SCHEMA_VERSION",
    "SEGMENTATION_CLASSES",
    "SPLITS",
    "TASKS",
    "check_table_schema",
    "from_arrow_row",
    "reason_code",
    "to_arrow_row",
    "to_table",
    "validate_record",
]
