"""Point annotations (x, y, class): boxes of a configured size, or single-cell crops.

Many malaria and leukocyte sets mark cells by their centre (NIH-NLM thick smears mark
parasites and white cells that way). ``mode: boxes`` makes detection records with a box of
``box_size`` pixels (per class: ``box_sizes``; or twice a radius column) around each point;
``mode: crops`` cuts a ``crop_size`` square around each point into its own classification
record, split by the *source* image's hash so the crops of one smear never straddle splits.
Points come from one table for all images (``table``) or one file per image
(``per_image: "annotations/{stem}.csv"``), with named columns or, without a header, indices.
``delimiter: whitespace`` reads files like ``x y class`` (any run of spaces or tabs), which
the csv module cannot: it turns two spaces into an empty field.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from data_prep.classmap import Ignored
from data_prep.context import Context
from data_prep.converters.base import Converter, Plan, key_of, rel
from data_prep.geometry import Annotations
from data_prep.images import from_pil, is_image, load_image
from data_prep.problems import ANNOTATION_IGNORED, Outcome, SourceProblem, rejection


def _rows(path: Path, ctx: Context) -> list[list[str] | dict]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            if ctx.options["delimiter"] == WHITESPACE:
                rows = [line.split() for line in f if line.strip()]
                if ctx.options["header"] and rows:
                    return [dict(zip(rows[0], r)) for r in rows[1:]]
                return rows
            if ctx.options["header"]:
                return list(csv.DictReader(f, delimiter=ctx.options["delimiter"]))
            return [r for r in csv.reader(f, delimiter=ctx.options["delimiter"]) if r]
    except (csv.Error, UnicodeDecodeError) as err:
        raise SourceProblem("malformed_annotation", f"{path.name} does not parse ({err})") from None


WHITESPACE = "whitespace"
_MODES = ("boxes", "crops")


def _field(row, column):
    if isinstance(row, dict):
        return row.get(column)
    return row[int(column)] if int(column) < len(row) else None


class PointsConverter(Converter):
    name = "points"
    OPTIONS = {
        "images": "images",
        "table": None,
        "per_image": None,
        "header": True,
        "delimiter": ",",
        "skip_rows": 0,
        "columns": {"image": "image", "x": "x", "y": "y", "class": "class"},
        "radius_column": None,
        "mode": "boxes",
        "box_size": 40,
        "box_sizes": {},
        "crop_size": 96,
    }

    def label_space(self, options: dict) -> str:
        return "cell" if options.get("mode") == "crops" else "detection"

    def check(self, options: dict) -> None:
        if options["mode"] not in _MODES:
            raise ValueError(f"mode: invalid value {options['mode']!r}; allowed: {', '.join(_MODES)}")
        if not options["table"] and not options["per_image"]:
            raise ValueError(
                "table or per_image: one is needed (one point table for all images, or a file per "
                "image such as per_image: 'labels/{stem}.txt')"
            )
        if not isinstance(options["delimiter"], str) or not options["delimiter"]:
            raise ValueError(
                f"delimiter: invalid value {options['delimiter']!r}; a character such as ',' or "
                f"'\\t', or {WHITESPACE!r} for columns separated by any run of spaces"
            )
        columns = options["columns"]
        needed = ("x", "y", "class") + (("image",) if options["table"] else ())
        missing = [c for c in needed if c not in columns]
        if missing:
            raise ValueError(
                f"columns: no entry for {', '.join(missing)}; columns names x, y, class"
                f"{' and image' if options['table'] else ''} (a header name, or a 0-based index "
                "when header is false)"
            )
        if not options["header"]:
            for col in needed + (("radius",) if options["radius_column"] is not None else ()):
                value = options["radius_column"] if col == "radius" else columns[col]
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    where = "radius_column" if col == "radius" else f"columns.{col}"
                    raise ValueError(
                        f"{where}: invalid value {value!r}; without a header a column is given by "
                        "its 0-based index (x: 0, y: 1, class: 2)"
                    )

    def plan(self, ctx: Context) -> Plan:
        img_dir = ctx.path("images")
        if not img_dir.is_dir():
            raise FileNotFoundError(f"no image folder {img_dir}")
        images = sorted(p for p in img_dir.rglob("*") if is_image(p))
        plan = Plan([])
        if ctx.options["table"]:
            table = ctx.path("table")
            if not table.is_file():
                raise FileNotFoundError(f"point table {table} is missing")
            try:
                rows = _rows(table, ctx)[ctx.options["skip_rows"] :]
            except SourceProblem as problem:
                return Plan([], [rejection(ctx.record_id(rel(table, ctx)), rel(table, ctx), problem.reason)])
            by_image = defaultdict(list)
            for i, row in enumerate(rows):
                name = Path(str(_field(row, ctx.options["columns"]["image"]) or "")).name
                by_image[name].append((i + 2 if ctx.options["header"] else i + 1, row))
            names = {p.name for p in images}
            for name in sorted(set(by_image) - names):
                plan.problems.append(
                    rejection(
                        ctx.record_id(name),
                        rel(table, ctx),
                        f"missing_image: {len(by_image[name])} points for {name}, which is not in the image folder",
                    )
                )
            for img in images:
                plan.units.append((str(img), rel(table, ctx), by_image.get(img.name, [])))
        elif ctx.options["per_image"]:
            for img in images:
                plan.units.append((str(img), ctx.options["per_image"].format(stem=img.stem, name=img.name), None))
        else:
            raise ValueError("points converter needs a 'table' or a 'per_image' option")  # check() said so first
        return plan

    def _points(self, unit, ctx: Context) -> tuple[str, list]:
        img_path, source, rows = unit
        if rows is not None:
            return source, rows
        path = ctx.src / source
        if not path.is_file():
            raise SourceProblem("missing_annotation", f"no point file {source}")
        rows = _rows(path, ctx)[ctx.options["skip_rows"] :]
        return source, [(i + 1, r) for i, r in enumerate(rows)]

    def convert(self, unit, ctx: Context) -> list[Outcome]:
        img_path = Path(unit[0])
        key = key_of(img_path, ctx.path("images"))
        rid, out = ctx.record_id(key), Outcome()
        try:
            image, pixels = load_image(img_path)
            origin, rows = self._points(unit, ctx)
            if not rows:
                raise SourceProblem("empty_annotation", "no points for this image")
        except SourceProblem as problem:
            return [out.reject(rid, rel(img_path, ctx), [problem.reason])]
        cols = ctx.options["columns"]
        points = []
        for line, row in rows:
            try:
                x, y = float(_field(row, cols["x"])), float(_field(row, cols["y"]))
                radius = float(_field(row, ctx.options["radius_column"])) if ctx.options["radius_column"] else None
            except (TypeError, ValueError):
                out.annotations += 1
                out.drop_annotation(rid, origin, f"bad_point: line {line} has no numeric x/y: {row!r}"[:300])
                continue
            cls = _field(row, cols["class"])
            if cls is None or not str(cls).strip():
                out.annotations += 1
                out.drop_annotation(
                    rid, origin, f"bad_point: line {line} has no class in column {cols['class']!r}: {row!r}"[:300]
                )
                continue
            points.append((line, x, y, radius, cls))
        if ctx.options["mode"] == "crops":
            return self._crops(ctx, key, origin, image, pixels, points, out)
        boxes = Annotations(rid, origin, image.width, image.height, ctx.labels, out)
        for line, x, y, radius, cls in points:
            size = 2 * radius if radius else ctx.options["box_sizes"].get(str(cls).strip(), ctx.options["box_size"])
            boxes.add([x - size / 2, y - size / 2, x + size / 2, y + size / 2], cls, f"line {line}")
        return [ctx.finish(out, key=key, origin=origin, image=image, primary="detection", **boxes.fields())]

    def _crops(self, ctx, key, origin, image, pixels, points, carrier: Outcome) -> list[Outcome]:
        """One classification record per point; the carrier keeps the image-level problems."""
        results = [carrier] if carrier.problems else []
        half = ctx.options["crop_size"] / 2
        for i, (line, x, y, _, cls) in enumerate(points):
            crop_key, out = f"{key}/point{i}", Outcome(annotations=1)
            rid = ctx.record_id(crop_key)
            try:
                cell_class = ctx.labels(cls)
                if not (0 <= x < image.width and 0 <= y < image.height):
                    raise SourceProblem(
                        "point_outside_image",
                        f"line {line} ({x:g}, {y:g}) is outside the {image.width}x{image.height} image",
                    )
            except Ignored:
                out.note(
                    rid,
                    origin,
                    f"ignored_class: line {line} class {cls!r} is left out by the registry",
                    ANNOTATION_IGNORED,
                )
                results.append(out)
                continue
            except SourceProblem as problem:
                results.append(out.reject(rid, origin, [f"{problem.code}: line {line} {problem.detail}"]))
                continue
            box = (
                max(0, round(x - half)),
                max(0, round(y - half)),
                min(image.width, round(x + half)),
                min(image.height, round(y + half)),
            )
            crop = from_pil(pixels.crop(box))
            results.append(
                ctx.finish(
                    out,
                    key=crop_key,
                    origin=f"{origin}:{line}",
                    image=crop,
                    primary="classification",
                    identity=image.content_hash,
                    cell_class=cell_class,
                )
            )
        return results


__all__ = ["PointsConverter"]
