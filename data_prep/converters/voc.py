"""Pascal VOC: one XML per image with <object><name/><bndbox/></object>, splits in ImageSets.

Used by BCCD and the Makerere (AIR) phone-camera sets. The image size in the XML is only a
claim: boxes are checked against the decoded image. Coordinates are taken as pixel edges
(no 1-based shift), then clipped; zero-area boxes are dropped and listed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from data_prep.context import Context
from data_prep.converters.base import Converter, Plan, key_of, rel
from data_prep.geometry import Annotations
from data_prep.images import find_image, is_image, load_image
from data_prep.problems import ANNOTATION_IGNORED, ROW_IGNORED, Outcome, SourceProblem, rejection
from data_prep.splits import read_split_lists


def _text(node, tag: str) -> str | None:
    found = node.find(tag)
    return found.text.strip() if found is not None and found.text else None


class VocConverter(Converter):
    name = "voc"
    OPTIONS = {
        "annotations": "Annotations",
        "images": "JPEGImages",
        "split_lists": "ImageSets/Main",
        "keep_difficult": True,
    }

    def plan(self, ctx: Context) -> Plan:
        ann_dir, img_dir = ctx.path("annotations"), ctx.path("images")
        if not ann_dir.is_dir():
            raise FileNotFoundError(f"no annotation folder {ann_dir}")
        splits, conflicts = ({}, [])
        if ctx.path("split_lists").is_dir():
            splits, conflicts = read_split_lists(ctx.path("split_lists"))
        xmls = sorted(p for p in ann_dir.rglob("*") if p.suffix.lower() == ".xml")
        stems = {key_of(p, ann_dir) for p in xmls}
        plan = Plan([(str(p), splits.get(key_of(p, ann_dir)) or splits.get(p.stem)) for p in xmls])
        for text in conflicts:
            out = Outcome()
            out.note(
                ctx.record_id(text.split()[0]),
                rel(ctx.path("split_lists"), ctx),
                f"split_conflict: {text}; kept in the more held-out split",
                ROW_IGNORED,
            )
            plan.problems.append(out)
        if img_dir.is_dir():
            for img in sorted(p for p in img_dir.rglob("*") if is_image(p)):
                if key_of(img, img_dir) not in stems:
                    plan.problems.append(
                        rejection(
                            ctx.record_id(key_of(img, img_dir)),
                            rel(img, ctx),
                            "missing_annotation: no XML file for this image",
                        )
                    )
        return plan

    def convert(self, unit, ctx: Context) -> list[Outcome]:
        path, upstream = Path(unit[0]), unit[1]
        ann_dir = ctx.path("annotations")
        key, origin = key_of(path, ann_dir), rel(path, ctx)
        rid = ctx.record_id(key)
        out = Outcome()
        try:
            if path.stat().st_size == 0:
                raise SourceProblem("empty_annotation", "the XML file is empty")
            try:
                root = ET.parse(path).getroot()
            except ET.ParseError as err:
                raise SourceProblem("malformed_annotation", f"XML does not parse ({err})") from None
            image_path = self._image_path(root, path, ctx)
            image, _ = load_image(image_path)
            objects = root.findall("object")
            if not objects:
                raise SourceProblem("empty_annotation", "no <object> in the file")
        except SourceProblem as problem:
            return [out.reject(rid, origin, [problem.reason])]
        claimed = (_text(root, "size/width"), _text(root, "size/height"))
        if all(claimed) and claimed != (str(image.width), str(image.height)):
            out.fixes["size_taken_from_image"] += 1
        boxes = Annotations(rid, origin, image.width, image.height, ctx.labels, out)
        for i, obj in enumerate(objects):
            name = _text(obj, "name") or ""
            if not ctx.options["keep_difficult"] and _text(obj, "difficult") == "1":
                out.annotations += 1
                out.note(
                    rid, origin, f"ignored_difficult: object {i} ({name!r}) is marked difficult", ANNOTATION_IGNORED
                )
                continue
            bnd = obj.find("bndbox")
            coords = [_text(bnd, k) for k in ("xmin", "ymin", "xmax", "ymax")] if bnd is not None else None
            boxes.add(coords, name, f"object {i}")
        return [
            ctx.finish(
                out, key=key, origin=origin, image=image, primary="detection", upstream_split=upstream, **boxes.fields()
            )
        ]

    @staticmethod
    def _image_path(root, xml_path: Path, ctx: Context) -> Path:
        img_dir = ctx.path("images")
        named = _text(root, "filename")
        if named and (img_dir / named).is_file():
            return img_dir / named
        sub = xml_path.relative_to(ctx.path("annotations")).parent
        found = find_image(img_dir / sub, xml_path.stem)
        if found is None:
            raise SourceProblem("missing_image", f"{named or xml_path.stem} not found in {rel(img_dir, ctx)}")
        return found
