"""COCO JSON: images, categories and annotations with boxes, polygons or RLE masks.

Used by LeukemiaAttri, M5 and most datasets exported from CVAT/Roboflow. One JSON per split
(``{"train": "annotations/train.json", ...}``) or one for all. Polygons and RLE (compressed
or not) become the schema's per-instance PNG masks through pycocotools; a box missing from
an annotation is taken from its mask. Per-box morphology attributes are read from
``attribute_key`` when given (official names, values or 0/1).
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from data_prep.context import Context
from data_prep.converters.base import Converter, Plan, by_split, rel
from data_prep.converters.tables import official_attributes
from data_prep.geometry import Annotations, mask_box
from data_prep.images import load_image
from data_prep.problems import ANNOTATION_IGNORED, Outcome, SourceProblem, rejection


def decode_segmentation(seg, height: int, width: int) -> np.ndarray:
    """A COCO polygon list or RLE (compressed or not) as a boolean mask of the image's size."""
    from pycocotools import mask as mask_utils

    try:
        if isinstance(seg, list):
            polys = [p for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
            if not polys:
                raise SourceProblem("bad_mask", "polygon needs at least 3 points")
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
            if list(seg["size"]) != [height, width]:
                raise SourceProblem(
                    "mask_size_mismatch", f"RLE is {seg['size'][1]}x{seg['size'][0]}, image {width}x{height}"
                )
            rle = (
                mask_utils.frPyObjects(seg, height, width)
                if isinstance(seg["counts"], list)
                else {
                    "size": seg["size"],
                    "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"],
                }
            )
        else:
            raise SourceProblem("bad_mask", "segmentation is neither polygons nor RLE")
        with warnings.catch_warnings():  # pycocotools' Cython trips numpy 2's copy-keyword deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(rle).astype(bool)
    except SourceProblem:
        raise
    except Exception as err:
        raise SourceProblem("bad_mask", f"cannot decode segmentation ({type(err).__name__}: {err})") from None


class CocoConverter(Converter):
    name = "coco"
    OPTIONS = {
        "annotations": {"": "annotations.json"},
        "images": "images",
        "masks": True,
        "skip_crowd": True,
        "attribute_key": None,
    }

    def plan(self, ctx: Context) -> Plan:
        plan = Plan([])
        for split, path in by_split(ctx.options["annotations"]).items():
            path = ctx.src / path
            origin = rel(path, ctx)
            if not path.is_file():
                raise FileNotFoundError(f"COCO annotation file {path} is missing")
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                images, anns, cats = data["images"], data.get("annotations", []), data.get("categories", [])
                names = {c["id"]: c["name"] for c in cats}
                by_image = defaultdict(list)
                known = {img["id"] for img in images}
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
                plan.problems.append(
                    rejection(
                        ctx.record_id(origin), origin, f"malformed_annotation: {path.name} is not COCO JSON ({err})"
                    )
                )
                continue
            for i, ann in enumerate(anns):
                if not isinstance(ann, dict) or ann.get("image_id") not in known:
                    out = Outcome(annotations=1)
                    out.drop_annotation(
                        ctx.record_id(origin),
                        origin,
                        f"missing_image: annotation {i} refers to "
                        f"image id {ann.get('image_id') if isinstance(ann, dict) else None!r}",
                    )
                    plan.problems.append(out)
                    continue
                by_image[ann["image_id"]].append({**ann, "_category": names.get(ann.get("category_id"))})
            for img in images:
                plan.units.append((split or None, img, by_image.get(img["id"], []), origin))
        plan.units.sort(key=lambda u: (u[3], str(u[1].get("file_name"))))
        return plan

    def _image_dir(self, ctx: Context, split: str | None) -> Path:
        images = ctx.options["images"]
        return ctx.src / (images.get(split or "", "") if isinstance(images, dict) else images)

    def convert(self, unit, ctx: Context) -> list[Outcome]:
        split, info, anns, ann_origin = unit
        name = str(info.get("file_name", ""))
        # Several annotation files may reuse a file name in different image folders: keep ids apart.
        one_file = len(by_split(ctx.options["annotations"])) == 1
        key = ("" if one_file else f"{split}/") + Path(name).with_suffix("").as_posix()
        rid, out = ctx.record_id(key), Outcome()
        path = self._image_dir(ctx, split) / name
        origin = f"{ann_origin}:{name}"
        try:
            image, _ = load_image(path)
            if not anns:
                raise SourceProblem("empty_annotation", "no annotations for this image")
        except SourceProblem as problem:
            return [out.reject(rid, origin, [problem.reason])]
        if (info.get("width"), info.get("height")) not in ((image.width, image.height), (None, None)):
            out.fixes["size_taken_from_image"] += 1
        boxes = Annotations(rid, origin, image.width, image.height, ctx.labels, out)
        want_masks = ctx.options["masks"]
        for i, ann in enumerate(anns):
            where = f"annotation {ann.get('id', i)}"
            if ctx.options["skip_crowd"] and ann.get("iscrowd"):
                out.annotations += 1
                out.note(rid, origin, f"ignored_crowd: {where} is a crowd region", ANNOTATION_IGNORED)
                continue
            mask, box = None, None
            try:
                if want_masks and ann.get("segmentation"):
                    mask = decode_segmentation(ann["segmentation"], image.height, image.width)
                if "bbox" in ann:
                    x, y, w, h = (float(v) for v in ann["bbox"])
                    box = [x, y, x + w, y + h]
                elif mask is not None:
                    box = mask_box(mask) or [0, 0, 0, 0]
                attrs = (
                    official_attributes(ann[ctx.options["attribute_key"]])
                    if ctx.options["attribute_key"] and isinstance(ann.get(ctx.options["attribute_key"]), dict)
                    else None
                )
            except SourceProblem as problem:
                out.annotations += 1
                out.drop_annotation(rid, origin, f"{problem.code}: {where} {problem.detail}")
                continue
            except (TypeError, ValueError):
                box = ann.get("bbox")
                attrs = None
            label = ann["_category"] if ann["_category"] is not None else f"category id {ann.get('category_id')}"
            boxes.add(box, label, where, mask=mask, attributes=attrs)
        return [
            ctx.finish(
                out, key=key, origin=origin, image=image, primary="detection", upstream_split=split, **boxes.fields()
            )
        ]


__all__ = ["CocoConverter", "decode_segmentation"]
