"""Source class names into the label spaces of unihema.labels.

Upstream names are messy ("Platelets", " RBC ", "NEUTROPHIL", folder abbreviations like
"NGS"): names are compared after collapsing whitespace and case. A registry entry maps each
source name to a label-space name, or to None to leave that class out on purpose (counted
and listed, never silently). A name equal to a label-space name needs no entry. Anything
else is an unknown class: a problem the converter reports, with the closest label-space
names (a user's "Platlets" is answered with "closest: 'platelet'", not only "unknown").
Every name looked up is counted (``seen``), so a dry run can show which classes a dataset
holds and where each one went.
"""

from __future__ import annotations

from collections import Counter

from data_prep.problems import SourceProblem
from unihema.config.core import closest
from unihema.labels import CELL_CLASSES, DETECTION_CLASSES, SEGMENTATION_CLASSES

UNKNOWN = "?"  # the target ``seen`` records for a name that maps nowhere
SPACES = {"detection": DETECTION_CLASSES, "cell": CELL_CLASSES, "segmentation": SEGMENTATION_CLASSES}


def normalize(name: object) -> str:
    return " ".join(str(name).split()).casefold()


class Ignored(Exception):
    """The registry maps this class to None: leave the annotation out, and list it."""


class LabelMap:
    """Map raw class names of one dataset into one label space."""

    def __init__(self, mapping: dict[str, str | None] | None, space: str):
        if space not in SPACES:
            raise ValueError(f"unknown label space {space!r}; known: {', '.join(SPACES)}")
        self.space = space
        names = SPACES[space]
        self._known = {normalize(n): n for n in names}
        self._map: dict[str, str | None] = {}
        for raw, target in (mapping or {}).items():
            if target is not None and target not in names:
                raise ValueError(f"label map sends {raw!r} to {target!r}, which is not a {space} class")
            self._map[normalize(raw)] = target
        # (source name as written, label-space name, None for left out, or UNKNOWN) -> lookups
        self.seen: Counter = Counter()

    def __call__(self, raw: object) -> str:
        """The label-space name of ``raw``; raises Ignored or SourceProblem(unknown_class)."""
        key = normalize(raw)
        shown = " ".join(str(raw).split())
        if key in self._map:
            target = self._map[key]
            self.seen[(shown, target)] += 1
            if target is None:
                raise Ignored(str(raw))
            return target
        if key in self._known:
            self.seen[(shown, self._known[key])] += 1
            return self._known[key]
        self.seen[(shown, UNKNOWN)] += 1
        raise SourceProblem(
            "unknown_class",
            f"{self.space} class {str(raw)!r} is not in the dataset's label map "
            f"or the {self.space} label space{self.suggest(raw)}",
        )

    def suggest(self, raw: object) -> str:
        """ "; closest: ..." with the nearest label-space names, or "" when nothing is near."""
        near = closest(raw, SPACES[self.space])
        return f"; closest: {', '.join(map(repr, near))} (add it under labels: in the spec)" if near else ""

    def drain(self) -> Counter:
        """The lookups counted since the last drain (a worker hands them back per unit)."""
        seen, self.seen = self.seen, Counter()
        return seen

    def targets(self) -> set[str]:
        return {t for t in self._map.values() if t is not None}


__all__ = ["Ignored", "LabelMap", "SPACES", "UNKNOWN", "normalize"]
