"""Question/answer pairs from JSON or CSV, joined to images by file name: VQA records.

Rows are ``{image, question, answer}`` (CSV columns or JSON objects), or JSON objects with a
``qa`` list of pairs. All pairs of one image form one record; a row may also carry the
image's split and its cell class. Empty questions or answers are dropped and listed; an
image with no usable pair, or a row naming no existing image, is reported.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from data_prep.classmap import Ignored
from data_prep.context import Context
from data_prep.converters.base import Converter, Plan, key_of, rel
from data_prep.converters.tables import read_rows
from data_prep.images import is_image, load_image
from data_prep.problems import Outcome, SourceProblem, rejection


class QaConverter(Converter):
    name = "qa"
    space = "cell"
    primary = "vqa"
    OPTIONS = {
        "images": "images",
        "qa": "qa.json",
        "image_key": "image",
        "question_key": "question",
        "answer_key": "answer",
        "split_key": "split",
        "class_key": None,
    }

    def plan(self, ctx: Context) -> Plan:
        img_dir, qa_path = ctx.path("images"), ctx.path("qa")
        if not img_dir.is_dir() or not qa_path.is_file():
            raise FileNotFoundError(f"need an image folder {img_dir} and a QA file {qa_path}")
        origin = rel(qa_path, ctx)
        try:
            rows = read_rows(qa_path)
        except SourceProblem as problem:
            return Plan([], [rejection(ctx.record_id(origin), origin, problem.reason)])
        opt = ctx.options
        by_name = {}
        for p in sorted(img_dir.rglob("*")):
            if is_image(p):
                by_name.setdefault(p.relative_to(img_dir).as_posix(), p)
                by_name.setdefault(p.name, p)
        groups: dict[str, dict] = defaultdict(lambda: {"pairs": [], "split": None, "class": None, "lines": []})
        for i, row in enumerate(rows, start=1):
            name = str(row.get(opt["image_key"]) or "").strip()
            nested = isinstance(row.get("qa"), list)
            pairs = row["qa"] if nested else [row]
            group = groups[name]
            group["lines"].append(i)
            group["split"] = group["split"] or row.get(opt["split_key"]) or None
            group["class"] = group["class"] or (row.get(opt["class_key"]) if opt["class_key"] else None)
            for j, pair in enumerate(pairs):
                pair = pair if isinstance(pair, dict) else {}
                group["pairs"].append(
                    (
                        f"row {i}" + (f" pair {j}" if nested else ""),
                        pair.get(opt["question_key"]),
                        pair.get(opt["answer_key"]),
                    )
                )
        plan = Plan([])
        for name, group in sorted(groups.items()):
            where = f"{origin} rows {group['lines'][:5]}"
            path = by_name.get(name) or by_name.get(Path(name).name)
            if path is None:
                plan.problems.append(
                    rejection(
                        ctx.record_id(name or "?"), where, f"missing_image: no image {name!r} in {rel(img_dir, ctx)}"
                    )
                )
                continue
            plan.units.append((str(path), group["pairs"], group["split"], group["class"], where))
        return plan

    def convert(self, unit, ctx: Context) -> list[Outcome]:
        path, pairs, split, raw_class, origin = unit
        key = key_of(Path(path), ctx.path("images"))
        rid, out = ctx.record_id(key), Outcome()
        qa = []
        for where, question, answer in pairs:
            out.annotations += 1
            if isinstance(question, str) and question.strip() and answer is not None and str(answer).strip():
                qa.append({"question": question.strip(), "answer": str(answer).strip()})
            else:
                out.drop_annotation(rid, origin, f"bad_qa: {where} needs a non-empty question and answer")
        fields: dict = {"qa": qa}
        try:
            image, _ = load_image(Path(path))
            if raw_class:
                fields["cell_class"] = ctx.labels(raw_class)
        except Ignored:
            pass
        except SourceProblem as problem:
            return [out.reject(rid, origin, [problem.reason])]
        return [ctx.finish(out, key=key, origin=origin, image=image, primary="vqa", upstream_split=split, **fields)]


__all__ = ["QaConverter"]
