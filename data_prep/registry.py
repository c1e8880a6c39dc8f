"""The built-in datasets by name: the lookup over ``catalog.py``'s specs.

Kept apart from the spec schema (``spec.py``) so that the catalog, which is built from
specs, and the lookup, which reads the catalog, import in one direction only.
"""

from __future__ import annotations

from data_prep.catalog import DATASETS
from data_prep.spec import DatasetSpec
from unihema.config.core import closest


def registry() -> dict[str, DatasetSpec]:
    return {spec.name: spec for spec in DATASETS}


def get(name: str) -> DatasetSpec:
    specs = registry()
    if name not in specs:
        close = [n for n in specs if name.lower().replace("-", "_") in n] or closest(name, specs)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `python -m data_prep list` shows all"
        raise KeyError(f"unknown dataset {name!r}{hint}")
    return specs[name]


__all__ = ["get", "registry"]
