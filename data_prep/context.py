"""What every converter shares while it runs: options, label map, splits, and record assembly.

Converters only find images and annotations; ``Context.finish`` turns what they found into
a schema record in one way for all formats: the id (``<dataset>/<key>``), the split, the
tasks the record can serve, and the template text for VQA and MLM. A context is rebuilt in
each worker process from picklable parts, so it holds no open files or clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from data_prep import templates
from data_prep.classmap import LabelMap
from data_prep.images import LoadedImage
from data_prep.problems import Outcome
from data_prep.splits import SplitAssigner
from unihema.labels import MORPHOLOGY_NAMES, NOT_ANNOTATED

if TYPE_CHECKING:  # a type only: spec.py validates converters, whose base imports this module
    from data_prep.spec import DatasetSpec

_PRIMARY_REASON = {
    "detection": "no_boxes: no usable box is left in this record",
    "segmentation": "no_masks: no usable mask for this record",
    "classification": "no_cell_class: no class for this image",
    "vqa": "no_qa: no usable question/answer pair for this image",
}


def _has_morphology(attrs: dict) -> bool:
    return any(attrs.get(n, NOT_ANNOTATED) != NOT_ANNOTATED for n in MORPHOLOGY_NAMES)


@dataclass
class Context:
    spec: DatasetSpec
    src: Path
    options: dict
    space: str
    seed: int = 0
    split_ratios: tuple[float, float, float] | None = None
    split_salt: str = ""
    labels: LabelMap = field(init=False)
    splits: SplitAssigner = field(init=False)

    def __post_init__(self):
        self.labels = LabelMap(self.spec.labels, self.space)
        self.splits = SplitAssigner(
            self.split_ratios or self.spec.split_ratios, self.split_salt, self.spec.test_from_train
        )

    def path(self, option: str) -> Path:
        """An option naming a path, resolved under --src."""
        return self.src / str(self.options[option])

    def record_id(self, key: str) -> str:
        return f"{self.spec.name}/{key}"

    def tasks_of(self, rec: dict) -> list[str]:
        have = {
            "detection": bool(rec.get("boxes")),
            "segmentation": bool(rec.get("masks")) or rec.get("semantic_mask") is not None,
            "classification": rec.get("cell_class") is not None,
            "morphology": _has_morphology(rec.get("attributes") or {})
            or any(_has_morphology(a) for a in rec.get("box_attributes") or []),
            "vqa": bool(rec.get("qa")),
            "mlm": bool(rec.get("mlm_text")),
        }
        return [t for t in self.spec.tasks if have[t]]

    def _add_text(self, rec: dict) -> None:
        wanted = self.spec.text.get("generate", True)
        if not wanted or not ({"vqa", "mlm"} & set(self.spec.tasks)):
            return
        rng = templates.rng_for(self.seed, rec["id"])
        complete = tuple(self.spec.text.get("complete_classes", ()))
        if rec.get("cell_class"):
            qa = templates.cell_qa(
                rec["cell_class"], rec.get("attributes") or {}, rng, tuple(sorted(self.labels.targets()))
            )
            sentence = templates.cell_sentence(rec["cell_class"], rec.get("attributes") or {}, rng)
        elif rec.get("boxes"):
            qa = templates.field_qa(rec["box_labels"], rng, complete)
            sentence = templates.field_sentence(rec["box_labels"], rng, complete)
        else:
            return
        if "vqa" in self.spec.tasks:
            rec["qa"] = list(rec.get("qa") or []) + qa
        if "mlm" in self.spec.tasks and not rec.get("mlm_text"):
            rec["mlm_text"] = sentence

    def finish(
        self,
        outcome: Outcome,
        *,
        key: str,
        origin: str,
        image: LoadedImage,
        primary: str,
        identity: str | None = None,
        upstream_split: str | None = None,
        **fields,
    ) -> Outcome:
        """Complete ``outcome`` with the record built from ``fields``, or reject it when it serves nothing.

        ``identity`` is the content hash the split is drawn from (the source image's, for
        crops); ``primary`` is the task the converter exists for: without it, no record.
        """
        rid = self.record_id(key)
        split, rule = self.splits(identity or image.content_hash, upstream_split)
        rec = {
            "id": rid,
            "source": self.spec.name,
            "split": split,
            "image": image.data,
            "image_format": image.format,
            "width": image.width,
            "height": image.height,
            "license": self.spec.license,
            "origin": origin,
            **fields,
        }
        self._add_text(rec)
        rec["tasks"] = self.tasks_of(rec)
        if primary in self.spec.tasks and primary not in rec["tasks"]:
            return outcome.reject(rid, origin, [_PRIMARY_REASON[primary]])
        if not rec["tasks"]:
            return outcome.reject(rid, origin, [f"no_task: nothing in this record serves {list(self.spec.tasks)}"])
        outcome.record = rec
        outcome.fixes[f"split_by_{rule}"] += 1
        if image.reencoded:
            outcome.fixes["reencoded_png"] += 1
        outcome.content_hash = image.content_hash
        return outcome


__all__ = ["Context"]
