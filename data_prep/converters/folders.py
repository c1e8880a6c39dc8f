"""One folder per class (``<root>/<class>/**/*.jpg``), optionally split folders above them and
attribute tables joined by file name.

Covers PBC/Acevedo, Matek's BMC and AML sets (abbreviation folders with numbered
subfolders), Raabin-WBC (``Train/<class>``, ``TestA/<class>``), C-NMC, LISC and more. The
class is the first folder under the root or the split folder (``class_level`` skips more,
e.g. C-NMC's ``fold_0/all``); deeper folders are just storage. PBC + WBCAtt: 800 images,
500 of which join a WBCAtt row that brings its upstream split and attributes; the others
are split by content hash.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.context import Context
from data_prep.converters.base import Converter, Plan, key_of, rel
from data_prep.converters.tables import cell_record, load_tables
from data_prep.images import is_image
from data_prep.problems import rejection
from data_prep.splits import split_name


class ClassFoldersConverter(Converter):
    name = "class_folders"
    space = "cell"
    primary = "classification"
    OPTIONS = {
        "root": "images",
        "split_folders": "auto",
        "class_level": 0,
        "tables": {},
        "table_key": "img_name",
        "table_label": "label",
        "vocabulary": "wbcatt",
    }

    def plan(self, ctx: Context) -> Plan:
        root = ctx.path("root")
        if not root.is_dir():
            raise FileNotFoundError(f"no image folder {root}")
        tops = sorted(p for p in root.iterdir() if p.is_dir())
        by_split = ctx.options["split_folders"]
        if by_split == "auto":
            by_split = bool(tops) and all(split_name(p.name) for p in tops)
        groups = [(split_name(p.name), p) for p in tops] if by_split else [(None, root)]
        index, problems = (
            load_tables(ctx, ctx.options["tables"], ctx.options["table_key"]) if ctx.options["tables"] else ({}, [])
        )
        plan = Plan([], problems)
        used: set[str] = set()
        for folder_split, base in groups:
            # class_level 1: <root>/<fold>/<class>/... (C-NMC); deeper folders are only storage.
            pattern = "/".join(["*"] * (ctx.options["class_level"] + 1))
            for class_dir in sorted(p for p in base.glob(pattern) if p.is_dir()):
                for path in sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image(p)):
                    row, split, where = index.get(path.name, (None, None, None))
                    if row is not None:
                        used.add(path.name)
                    plan.units.append((str(path), class_dir.name, folder_split or split, row, where))
            for stray in sorted(p for p in base.iterdir() if p.is_file() and is_image(p)):
                plan.problems.append(
                    rejection(
                        ctx.record_id(key_of(stray, root)),
                        rel(stray, ctx),
                        "missing_class: image is not inside a class folder",
                    )
                )
        for name, (_, _, where) in sorted(index.items()):
            if name not in used:
                plan.problems.append(
                    rejection(
                        ctx.record_id(name), where, f"missing_image: no image named {name} under {rel(root, ctx)}"
                    )
                )
        return plan

    def convert(self, unit, ctx: Context) -> list:
        return [cell_record(ctx, unit, key_of(Path(unit[0]), ctx.path("root")))]


__all__ = ["ClassFoldersConverter"]
