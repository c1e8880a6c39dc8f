"""Attribute tables (CSV or JSON) joined to images by file name, and a converter driven by them.

WBCAtt ships one CSV row per image (``img_name,label,<11 attributes>,path``) whose ``path``
uses the upstream folder layout, so rows are matched on the bare file name. A table may
stand for a split (WBCAtt's train/val files): that split is then the record's upstream
split. Rows are also the source records of ``attribute_table`` datasets, where the table,
not the folder, says which images exist: a row with no image is reported, never dropped.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from data_prep import wbcatt
from data_prep.classmap import Ignored, normalize
from data_prep.context import Context
from data_prep.converters.base import Converter, Plan, by_split, key_of, rel
from data_prep.images import is_image, load_image
from data_prep.problems import ANNOTATION_IGNORED, ATTRIBUTES_DROPPED, ROW_IGNORED, Outcome, SourceProblem, rejection
from unihema.labels import MORPHOLOGY_ATTRIBUTES, NOT_ANNOTATED


def read_rows(path: Path) -> list[dict]:
    """The rows of a CSV, or of a JSON list of objects / ``{file name: {...}}`` mapping."""
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                data = (
                    [{"_key": k, **v} for k, v in data.items()]
                    if all(isinstance(v, dict) for v in data.values())
                    else data.get("images") or data.get("rows")
                )
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise SourceProblem("malformed_annotation", f"{path.name}: expected a list of objects")
            return data
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            if not reader.fieldnames:
                raise SourceProblem("empty_annotation", f"{path.name} has no header")
            for i, row in enumerate(rows, start=2):
                if None in row or any(v is None for v in row.values()):
                    raise SourceProblem("malformed_annotation", f"{path.name} line {i} has a wrong number of fields")
            return rows
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as err:
        raise SourceProblem("malformed_annotation", f"{path.name} does not parse ({err})") from None


def official_attributes(row: dict) -> dict[str, str]:
    """Official morphology columns: value names, or their index (0/1; 4 or empty = not annotated)."""
    out, bad = {}, []
    for name, values in MORPHOLOGY_ATTRIBUTES.items():
        if name not in row:
            continue
        raw = str(row[name]).strip().lower()
        if raw in ("", "4", "nan", NOT_ANNOTATED):
            out[name] = NOT_ANNOTATED
        elif raw in values:
            out[name] = raw
        elif raw in ("0", "1"):
            out[name] = values[int(raw)]
        else:
            bad.append(f"{name}={row[name]!r} (allowed: {', '.join(values)}, 0/1 or 4)")
    if bad:
        raise SourceProblem("bad_attribute_value", "; ".join(bad))
    return out


def parse_attributes(row: dict, vocabulary: str) -> dict[str, str]:
    if vocabulary == "wbcatt":
        return wbcatt.with_official(wbcatt.clean_wbcatt(row))
    if vocabulary == "official":
        return official_attributes(row)
    raise ValueError(f"unknown attribute vocabulary {vocabulary!r} (wbcatt or official)")


def load_tables(
    ctx: Context, tables: str | dict[str, str], key: str
) -> tuple[dict[str, tuple[dict, str | None, str]], list[Outcome]]:
    """{file name: (row, upstream split or None, origin)} from every table, and the problems met.

    ``tables`` maps a split name (or "" for none) to a path under --src, or is one path.
    """
    index: dict[str, tuple[dict, str | None, str]] = {}
    problems: list[Outcome] = []
    for split, path in by_split(tables).items():
        path = ctx.src / path
        origin = rel(path, ctx)
        if not path.is_file():
            raise FileNotFoundError(f"attribute table {path} is missing")
        try:
            rows = read_rows(path)
        except SourceProblem as problem:
            problems.append(rejection(ctx.record_id(origin), origin, problem.reason))
            continue
        for i, row in enumerate(rows):
            name = Path(str(row.get(key) or row.get("_key") or "")).name
            where = f"{origin}#{i + 1}"
            if not name:
                problems.append(rejection(ctx.record_id(where), where, f"malformed_annotation: row has no {key!r}"))
            elif name in index:
                out = Outcome()
                out.note(
                    ctx.record_id(name),
                    where,
                    f"duplicate_row: {name} already given in {index[name][2]}; the first row is kept",
                    ROW_IGNORED,
                )
                problems.append(out)
            else:
                index[name] = (row, split or None, where)
    return index, problems


def apply_row(
    out: Outcome, rid: str, cell_class: str | None, row: dict | None, row_origin: str | None, ctx: Context
) -> dict[str, str] | None:
    """The attributes of a joined row, after checking its class agrees; raises on a label conflict."""
    if row is None:
        return None
    label_col = ctx.options.get("table_label")
    if label_col and cell_class and row.get(label_col):
        try:
            table_class = ctx.labels(row[label_col])
        except (SourceProblem, Ignored):
            table_class = normalize(row[label_col])
        if table_class != cell_class:
            raise SourceProblem(
                "label_conflict", f"the folder says {cell_class!r}, {row_origin} says {row[label_col]!r}"
            )
    try:
        return parse_attributes(row, ctx.options["vocabulary"])
    except SourceProblem as problem:
        out.note(rid, row_origin, problem.reason, ATTRIBUTES_DROPPED)
        return None


def cell_record(ctx: Context, unit: tuple, key: str) -> Outcome:
    """One single-cell record from (image path, raw class, upstream split, row, row origin)."""
    path, raw_class, upstream, row, row_origin = unit
    path = Path(path)
    origin = rel(path, ctx) if row_origin is None else f"{rel(path, ctx)} + {row_origin}"
    rid, out = ctx.record_id(key), Outcome()
    try:
        cell_class = ctx.labels(raw_class)
        image, _ = load_image(path)
        attrs = apply_row(out, rid, cell_class, row, row_origin, ctx)
    except Ignored:
        out.note(rid, origin, f"ignored_class: class {raw_class!r} is left out by the registry", ANNOTATION_IGNORED)
        return out
    except SourceProblem as problem:
        return out.reject(rid, origin, [problem.reason])
    return ctx.finish(
        out,
        key=key,
        origin=origin,
        image=image,
        primary="classification",
        upstream_split=upstream,
        cell_class=cell_class,
        attributes=attrs or {},
    )


class AttributeTableConverter(Converter):
    """Records driven by table rows: each row names an image, its class and its attributes."""

    name = "attribute_table"
    space = "cell"
    primary = "classification"
    OPTIONS = {
        "images": "images",
        "tables": {"": "attributes.csv"},
        "table_key": "image",
        "class_column": "label",
        "table_label": None,
        "vocabulary": "official",
    }

    def plan(self, ctx: Context) -> Plan:
        img_root = ctx.path("images")
        if not img_root.is_dir():
            raise FileNotFoundError(f"no image folder {img_root}")
        by_name: dict[str, Path] = {}
        for p in sorted(img_root.rglob("*")):
            if is_image(p):
                by_name.setdefault(p.name, p)
        index, problems = load_tables(ctx, ctx.options["tables"], ctx.options["table_key"])
        plan = Plan([], problems)
        for name, (row, split, where) in sorted(index.items()):
            if name not in by_name:
                plan.problems.append(
                    rejection(
                        ctx.record_id(name), where, f"missing_image: no image named {name} under {rel(img_root, ctx)}"
                    )
                )
                continue
            plan.units.append((str(by_name[name]), row.get(ctx.options["class_column"]), split, row, where))
        return plan

    def convert(self, unit, ctx: Context) -> list[Outcome]:
        return [cell_record(ctx, unit, key_of(Path(unit[0]), ctx.path("images")))]


__all__ = [
    "AttributeTableConverter",
    "apply_row",
    "cell_record",
    "load_tables",
    "official_attributes",
    "parse_attributes",
    "read_rows",
]
