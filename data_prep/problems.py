"""What a converter hands back for each source record: a record, or why not, and what was fixed.

Nothing in a source may vanish silently: every source record becomes either a written
record or an entry of the error report, and every annotation dropped from a written record
(a zero-area box, an unknown class) is listed too. Reasons are ``code: detail`` strings
like the schema's, so the report can count them per code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# What happened to the thing an error-report entry names.
RECORD_REJECTED = "record_rejected"  # the source record was not written
ANNOTATION_DROPPED = "annotation_dropped"  # a box/point/mask left out of a written record
ANNOTATION_IGNORED = "annotation_ignored"  # left out on purpose (the registry maps its class to None)
ATTRIBUTES_DROPPED = "attributes_dropped"  # the record was written without its attribute row
ROW_IGNORED = "row_ignored"  # an annotation row that no record could use (duplicate)


class SourceProblem(Exception):
    """A problem with a source file or annotation; ``reason`` is its ``code: detail`` string."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass
class Outcome:
    """One source record's fate, plus the problems and fixes met on the way.

    ``record`` is set when it is to be written; ``rejected`` when it is not. An outcome with
    neither only carries problems (a duplicate annotation row) and is not a source record.
    """

    record: dict | None = None
    rejected: bool = False
    problems: list[dict] = field(default_factory=list)
    fixes: Counter = field(default_factory=Counter)
    annotations: int = 0  # source annotations seen (boxes, points, instances), for the annotation error rate
    dropped: int = 0  # of those, how many were dropped as errors
    content_hash: str | None = None  # of the record's image, for the duplicate report
    # (source class name, where the label map sent it) -> lookups, for the classes-found report
    classes: Counter = field(default_factory=Counter)

    def note(self, record_id: str, origin: str | None, reason: str, action: str) -> None:
        self.problems.append({"id": record_id, "origin": origin, "reasons": [reason], "action": action})

    def drop_annotation(self, record_id: str, origin: str | None, reason: str) -> None:
        self.dropped += 1
        self.note(record_id, origin, reason, ANNOTATION_DROPPED)

    def reject(self, record_id: str, origin: str | None, reasons: list[str]) -> Outcome:
        self.record = None
        self.rejected = True
        self.problems.append({"id": record_id, "origin": origin, "reasons": list(reasons), "action": RECORD_REJECTED})
        return self

    @property
    def is_source_record(self) -> bool:
        return self.record is not None or self.rejected


def rejection(record_id: str, origin: str | None, *reasons: str) -> Outcome:
    """An outcome for a source record that could not be converted."""
    return Outcome().reject(record_id, origin, list(reasons))


__all__ = [
    "ANNOTATION_DROPPED",
    "ANNOTATION_IGNORED",
    "ATTRIBUTES_DROPPED",
    "Outcome",
    "RECORD_REJECTED",
    "ROW_IGNORED",
    "SourceProblem",
    "rejection",
]
