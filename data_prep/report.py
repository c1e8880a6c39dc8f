"""The ledger of a conversion: every source record written or listed, with counts per reason.

It checks the promise "nothing lost" (source records = written + rejected), computes the
two error rates the run is judged by (rejected records / source records; dropped
annotations / source annotations) and finds identical images by content hash.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from data_prep.problems import ANNOTATION_DROPPED, RECORD_REJECTED, Outcome
from unihema.data.schema import reason_code


class Ledger:
    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.source_records = 0
        self.rejected = 0
        self.annotations = 0
        self.dropped = 0
        self.fixes: Counter = Counter()
        self.hashes: list[tuple[str, str, str]] = []  # (id, split, content hash) of written records
        self.classes: Counter = Counter()  # (source class name, label-space name | None | "?") -> lookups

    def add(self, outcome: Outcome) -> None:
        self.entries.extend(outcome.problems)
        self.source_records += outcome.is_source_record
        self.rejected += outcome.rejected
        self.annotations += outcome.annotations
        self.dropped += outcome.dropped
        self.fixes.update(outcome.fixes)
        self.classes.update(outcome.classes)

    def written(self, rec: dict, content_hash: str | None) -> None:
        self.hashes.append((rec["id"], rec["split"], content_hash or ""))

    def rejected_by_writer(self, entry: dict) -> None:
        """A record the converter built but the schema validation refused."""
        self.entries.append({**entry, "action": RECORD_REJECTED})
        self.rejected += 1

    @property
    def written_count(self) -> int:
        return self.source_records - self.rejected

    def record_error_rate(self) -> float:
        return self.rejected / self.source_records if self.source_records else 1.0

    def annotation_error_rate(self) -> float:
        return self.dropped / self.annotations if self.annotations else 0.0

    def rejected_codes(self) -> Counter:
        return Counter(
            reason_code(r)
            for e in self.entries
            if e.get("action") == RECORD_REJECTED
            for r in {reason_code(x) for x in e["reasons"]}
        )

    def failure(self, max_error_rate: float) -> str | None:
        """Why the run fails (either error rate above the threshold, or nothing written), or None."""
        if self.source_records == 0:
            return "no source records found: check --src against the dataset's layout"
        if self.record_error_rate() > max_error_rate:
            return (
                f"{self.rejected} of {self.source_records} source records were rejected "
                f"({self.record_error_rate():.1%} > max error rate {max_error_rate:.1%}); top reasons: "
                f"{self._top(RECORD_REJECTED)}"
            )
        if self.annotation_error_rate() > max_error_rate:
            return (
                f"{self.dropped} of {self.annotations} annotations were dropped "
                f"({self.annotation_error_rate():.1%} > max error rate {max_error_rate:.1%}); top reasons: "
                f"{self._top(ANNOTATION_DROPPED)}"
            )
        return None

    def _top(self, action: str, n: int = 5) -> str:
        counts = Counter(reason_code(r) for e in self.entries if e.get("action") == action for r in e["reasons"])
        return ", ".join(f"{code} x{k}" for code, k in counts.most_common(n))

    def duplicates(self, examples: int = 10) -> dict:
        """Groups of written records with identical pixels; cross-split groups would leak."""
        groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for rid, split, digest in self.hashes:
            if digest:
                groups[digest].append((rid, split))
        dup = [g for g in groups.values() if len(g) > 1]
        cross = [g for g in dup if len({s for _, s in g}) > 1]
        return {
            "groups": len(dup),
            "records": sum(len(g) for g in dup),
            "cross_split_groups": len(cross),
            "examples": [[f"{rid} ({split})" for rid, split in g] for g in (cross + dup)[:examples]],
        }

    def summary(self) -> dict:
        return {
            "source_records": self.source_records,
            "written": self.written_count,
            "rejected_records": self.rejected,
            "error_entries": len(self.entries),
            "record_error_rate": round(self.record_error_rate(), 6),
            "annotations": self.annotations,
            "dropped_annotations": self.dropped,
            "annotation_error_rate": round(self.annotation_error_rate(), 6),
            "problems": dict(sorted(Counter(reason_code(r) for e in self.entries for r in e["reasons"]).items())),
            "actions": dict(sorted(Counter(e.get("action") for e in self.entries).items())),
            "fixes": dict(sorted(self.fixes.items())),
            "duplicates": self.duplicates(),
            "source_classes": self.source_classes(),
        }

    def source_classes(self) -> list[dict]:
        """Each class name met in the source, where the label map sent it (None: left out, "?": unknown)."""
        return [
            {"name": name, "to": target, "count": n}
            for (name, target), n in sorted(self.classes.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
        ]


__all__ = ["Ledger"]
