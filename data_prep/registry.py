"""The dataset registry: what each public dataset is, where it comes from and how it converts.

One ``DatasetSpec`` per dataset (the table itself is in ``catalog.py``). A spec names a
converter by *format* and gives it options, so a new dataset in a known format is a new
entry and no new code. Users fetch datasets themselves: ``upstream`` says where from and
``layout`` what the ``--src`` folder must then contain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from unihema.data.schema import TASKS

from data_prep.splits import DEFAULT_RATIOS


@dataclass(frozen=True)
class DatasetSpec:
    name: str                        # CLI name; also the records' ``source`` and id prefix
    title: str
    tasks: tuple[str, ...]           # tasks its records serve (text is generated for vqa/mlm)
    diseases: tuple[str, ...]
    annotation: str                  # the upstream annotation format, in words
    license: str
    upstream: str                    # where to get it; "see upstream: ..." where no URL is certain
    layout: str                      # what the --src folder must contain
    converter: str                   # a key of data_prep.converters.CONVERTERS
    options: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)   # source class name -> label-space name (None: leave out)
    text: dict = field(default_factory=dict)     # complete_classes: classes whose counts/absence are reliable
    split: str = "hash of image content"         # how splits are made, in words
    split_ratios: tuple[float, float, float] = DEFAULT_RATIOS
    # Share of the upstream *train* records moved to test by content hash, for datasets whose
    # upstream split has no test list (WBCAtt's train/val): every class then reaches test.
    test_from_train: float = 0.0
    notes: str = ""
    verified: bool = False           # converted here from the real files (others: layout from the docs)

    def __post_init__(self):
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"dataset {self.name!r}: tasks {list(self.tasks)} must be non-empty, from {TASKS}")

    def default_src(self) -> Path:
        """Where ``convert`` looks when --src is not given: $UNIHEMA_RAW_DATA/<name> or data/raw/<name>."""
        return Path(os.environ.get("UNIHEMA_RAW_DATA", "data/raw")) / self.name

    def where_to_get(self, src: Path | None = None) -> str:
        src = src or self.default_src()
        return (f"{self.title} ({self.name}): get it from {self.upstream}\n"
                f"  license: {self.license}\n"
                f"  put it at {src} so that it contains:\n    {self.layout}")


def registry() -> dict[str, DatasetSpec]:
    from data_prep.catalog import DATASETS

    return {spec.name: spec for spec in DATASETS}


def get(name: str) -> DatasetSpec:
    specs = registry()
    if name not in specs:
        close = [n for n in specs if name.lower().replace("-", "_") in n]
        hint = f"; did you mean {', '.join(close)}?" if close else "; `python -m data_prep list` shows all"
        raise KeyError(f"unknown dataset {name!r}{hint}")
    return specs[name]


__all__ = ["DatasetSpec", "get", "registry"]
