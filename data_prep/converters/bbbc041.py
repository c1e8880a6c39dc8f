"""The Broad Bioimage Benchmark Collection's box JSON (BBBC041, P. vivax malaria).

A list of ``{"image": {"pathname": "/images/x.png", "shape": {"r", "c"}}, "objects":
[{"bounding_box": {"minimum": {"r", "c"}, "maximum": {"r", "c"}}, "category": ...}]}`` with
rows (r) and columns (c) instead of x and y; one file per split (training.json, test.json).
"""

from __future__ import annotations

import json
from pathlib import Path

from data_prep.context import Context
from data_prep.converters.base import Converter, Plan, rel
from data_prep.geometry import Annotations
from data_prep.images import load_image
from data_prep.problems import Outcome, SourceProblem, rejection


class Bbbc041Converter(Converter):
    name = "bbbc041_json"
    OPTIONS = {"annotations": {"train": "training.json", "test": "test.json"}, "images": "."}

    def plan(self, ctx: Context) -> Plan:
        plan = Plan([])
        for split, path in ctx.options["annotations"].items():
            path = ctx.src / path
            origin = rel(path, ctx)
            if not path.is_file():
                raise FileNotFoundError(f"BBBC041 annotation file {path} is missing")
            try:
                entries = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(entries, list):
                    raise TypeError("top level is not a list")
            except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
                plan.problems.append(rejection(ctx.record_id(origin), origin, f"malformed_annotation: {err}"))
                continue
            for i, entry in enumerate(entries):
                plan.units.append((split or None, entry, f"{origin}#{i}"))
        return plan

    def convert(self, unit, ctx: Context) -> list[Outcome]:
        split, entry, origin = unit
        out = Outcome()
        try:
            pathname = str(entry["image"]["pathname"]).lstrip("/")
            objects = entry.get("objects") or []
        except (KeyError, TypeError, AttributeError):
            return [out.reject(ctx.record_id(origin), origin, ["malformed_annotation: entry has no image.pathname"])]
        key = Path(pathname).with_suffix("").as_posix()
        rid = ctx.record_id(key)
        try:
            image, _ = load_image(ctx.path("images") / pathname)
            if not objects:
                raise SourceProblem("empty_annotation", "entry has no objects")
        except SourceProblem as problem:
            return [out.reject(rid, origin, [problem.reason])]
        boxes = Annotations(rid, origin, image.width, image.height, ctx.labels, out)
        for i, obj in enumerate(objects):
            try:
                lo, hi = obj["bounding_box"]["minimum"], obj["bounding_box"]["maximum"]
                box = [lo["c"], lo["r"], hi["c"], hi["r"]]
            except (KeyError, TypeError):
                box = None
            boxes.add(box, obj.get("category", "") if isinstance(obj, dict) else "", f"object {i}")
        return [
            ctx.finish(
                out, key=key, origin=origin, image=image, primary="detection", upstream_split=split, **boxes.fields()
            )
        ]


__all__ = ["Bbbc041Converter"]
