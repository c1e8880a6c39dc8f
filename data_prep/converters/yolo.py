"""YOLO txt: one label file per image, ``class cx cy w h`` normalised, or ``class x1 y1 x2 y2 ...``
polygons (YOLO segmentation); class names from data.yaml (``names``) or classes.txt/obj.names.

Used by TXL-PBC, the Tushabe sickle-cell set and most Roboflow exports. Split folders are
found in either common layout: ``images/<split>/`` + ``labels/<split>/``, or
``<split>/images/`` + ``<split>/labels/`` (``images: "{split}/images"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from data_prep.context import Context
from data_prep.converters.base import Converter, Plan, key_of, rel
from data_prep.geometry import Annotations
from data_prep.images import is_image, load_image
from data_prep.problems import Outcome, SourceProblem, rejection
from data_prep.splits import split_name

_SPLIT_DIRS = ("train", "valid", "val", "test")


def read_names(path: Path) -> list[str]:
    """Class names by index from data.yaml (list or {index: name}) or a one-name-per-line file."""
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            names = (yaml.safe_load(path.read_text()) or {}).get("names")
            if isinstance(names, dict):
                names = [names[k] for k in sorted(names, key=int)]
            if not isinstance(names, list):
                raise SourceProblem("malformed_annotation", f"{path.name} has no 'names' list")
            return [str(n) for n in names]
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (yaml.YAMLError, ValueError, UnicodeDecodeError) as err:
        raise SourceProblem("malformed_annotation", f"{path.name} does not parse ({err})") from None


def _polygon_mask(points: list[float], width: int, height: int) -> np.ndarray:
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).polygon([(x * width, y * height) for x, y in zip(points[::2], points[1::2])], fill=1)
    return np.asarray(img, bool)


class YoloConverter(Converter):
    name = "yolo"
    OPTIONS = {"images": "images", "labels": "labels", "names": "auto", "masks": True}

    def _names(self, ctx: Context) -> list[str]:
        option = ctx.options["names"]
        candidates = (
            [option]
            if option != "auto"
            else ["data.yaml", "dataset.yaml", "classes.txt", "obj.names", "labels/classes.txt"]
        )
        for cand in candidates:
            if (ctx.src / cand).is_file():
                return read_names(ctx.src / cand)
        raise FileNotFoundError(f"no class names file ({', '.join(candidates)}) in {ctx.src}")

    def _folders(self, ctx: Context) -> list[tuple[str | None, Path, Path]]:
        images, labels = ctx.options["images"], ctx.options["labels"]
        if "{split}" in images:
            return [
                (split_name(s), ctx.src / images.format(split=s), ctx.src / labels.format(split=s))
                for s in _SPLIT_DIRS
                if (ctx.src / images.format(split=s)).is_dir()
            ]
        return [(None, ctx.src / images, ctx.src / labels)]

    def plan(self, ctx: Context) -> Plan:
        try:
            names = self._names(ctx)
        except SourceProblem as problem:
            return Plan([], [rejection(ctx.record_id("names"), ctx.options["names"], problem.reason)])
        plan = Plan([])
        folders = self._folders(ctx)
        if not folders or not all(img.is_dir() for _, img, _ in folders):
            raise FileNotFoundError(f"no image folder for {ctx.options['images']!r} under {ctx.src}")
        for split, img_dir, lbl_dir in folders:
            for img in sorted(p for p in img_dir.rglob("*") if is_image(p)):
                sub = img.relative_to(img_dir)
                # images/train/x.jpg <-> labels/train/x.txt: the first folder may name the split.
                folder_split = split_name(sub.parts[0]) if len(sub.parts) > 1 else None
                key = key_of(img, ctx.src)
                plan.units.append((str(img), str(lbl_dir / sub.with_suffix(".txt")), split or folder_split, names, key))
        return plan

    def convert(self, unit, ctx: Context) -> list[Outcome]:
        img_path, lbl_path, split, names, key = unit
        lbl_path = Path(lbl_path)
        rid, out, origin = ctx.record_id(key), Outcome(), rel(lbl_path, ctx)
        try:
            image, _ = load_image(Path(img_path))
            if not lbl_path.is_file():
                raise SourceProblem("missing_annotation", f"no label file {origin}")
            lines = [
                (n, line.split()) for n, line in enumerate(lbl_path.read_text().splitlines(), start=1) if line.strip()
            ]
            if not lines:
                raise SourceProblem("empty_annotation", "the label file has no boxes")
        except (SourceProblem, UnicodeDecodeError) as problem:
            reason = problem.reason if isinstance(problem, SourceProblem) else f"malformed_annotation: {problem}"
            return [out.reject(rid, origin, [reason])]
        w, h = image.width, image.height
        boxes = Annotations(rid, origin, w, h, ctx.labels, out)
        for n, parts in lines:
            where = f"line {n}"
            try:
                cls, values = int(parts[0]), [float(v) for v in parts[1:]]
            except ValueError:
                out.annotations += 1
                out.drop_annotation(rid, origin, f"bad_box: {where} is not numbers: {' '.join(parts)[:80]!r}")
                continue
            name = names[cls] if 0 <= cls < len(names) else f"class index {cls}"
            mask = None
            if len(values) == 4:
                cx, cy, bw, bh = values
                box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
            elif len(values) >= 6 and len(values) % 2 == 0:
                xs, ys = values[::2], values[1::2]
                box = [min(xs) * w, min(ys) * h, max(xs) * w, max(ys) * h]
                mask = _polygon_mask(values, w, h) if ctx.options["masks"] else None
            else:
                box = values  # wrong arity: reported as bad_box
            boxes.add(box, name, where, mask=mask)
        return [
            ctx.finish(
                out, key=key, origin=origin, image=image, primary="detection", upstream_split=split, **boxes.fields()
            )
        ]


__all__ = ["YoloConverter", "read_names"]
