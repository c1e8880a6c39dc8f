"""The dataset spec: one schema for built-in and user datasets.

A ``DatasetSpec`` says what a dataset is, where it comes from and how it converts. The
built-in table (``catalog.py``) and a user's YAML spec file (``convert --spec my.yaml``)
are the same thing: a YAML file loads through ``spec_from_dict`` into this dataclass, and
``info NAME --yaml`` prints a built-in entry in that form, so there is one format and one
validation path. Validation happens when a spec is built, with the config tree's
machinery (``unihema.config.core``), so a typo in a key, a task, a converter option or a
label-space name fails at once with the key's path and what is allowed.

A spec names a converter by *format* and gives it options, so a new dataset in a known
format is a new spec and no new code. Users fetch datasets themselves: ``upstream`` says
where from and ``layout`` what the ``--src`` folder must then contain.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_prep.classmap import SPACES
from data_prep.converters import CONVERTERS
from data_prep.splits import DEFAULT_RATIOS
from unihema.config import read_yaml
from unihema.config.core import ConfigError, build, closest, to_dict
from unihema.data.schema import TASKS

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TEXT_KEYS = ("complete_classes", "generate")
REQUIRED = ("name", "tasks", "converter")


def _hint(name: object, choices) -> str:
    near = closest(name, choices)
    return f"; closest: {', '.join(map(repr, near))}" if near else ""


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: a spec from YAML and one from Python compare equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # CLI name; also the records' ``source`` and id prefix
    tasks: tuple[str, ...]  # tasks its records serve (text is generated for vqa/mlm)
    converter: str  # a key of data_prep.converters.CONVERTERS
    title: str = ""
    license: str = "unspecified"
    diseases: tuple[str, ...] = ()
    annotation: str = ""  # the upstream annotation format, in words
    upstream: str = ""  # where to get it; "see upstream: ..." where no URL is certain
    layout: str = ""  # what the --src folder must contain
    options: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str | None] = field(default_factory=dict)  # source name -> label-space name (None: leave out)
    text: dict[str, Any] = field(default_factory=dict)  # complete_classes: classes whose counts/absence are reliable
    split: str = "hash of image content"  # how splits are made, in words
    split_ratios: tuple[float, float, float] = DEFAULT_RATIOS
    # Share of the upstream *train* records moved to test by content hash, for datasets whose
    # upstream split has no test list (WBCAtt's train/val): every class then reaches test.
    test_from_train: float = 0.0
    notes: str = ""
    verified: bool = False  # converted here from the real files (others: layout from the docs)

    def __post_init__(self):
        for name in ("tasks", "diseases", "split_ratios"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("options", "labels", "text"):
            object.__setattr__(self, name, _plain(dict(getattr(self, name))))
        self.validate()

    def validate(self) -> None:
        """Refuse what a conversion could not use, naming the key and what is allowed."""
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                f"name: invalid value {self.name!r}; a dataset name is letters, digits, '_', '-' "
                "or '.', starting with a letter or digit (it prefixes record ids and shard names)"
            )
        if not self.tasks:
            raise ConfigError(f"tasks: empty; allowed: {', '.join(TASKS)}")
        for i, task in enumerate(self.tasks):
            if task not in TASKS:
                raise ConfigError(
                    f"tasks[{i}]: invalid value {task!r}; allowed: {', '.join(TASKS)}{_hint(task, TASKS)}"
                )
        if self.converter not in CONVERTERS:
            raise ConfigError(
                f"converter: invalid value {self.converter!r}; allowed: {', '.join(sorted(CONVERTERS))}"
                f"{_hint(self.converter, CONVERTERS)}"
            )
        converter = CONVERTERS[self.converter]()
        check_options(self.converter, converter.OPTIONS, self.options, "options")
        try:
            converter.check({**converter.OPTIONS, **self.options})
        except ValueError as err:
            raise ConfigError(f"options.{err}") from None
        space = self.label_space()
        names = SPACES[space]
        for raw, target in self.labels.items():
            if target is not None and target not in names:
                raise ConfigError(
                    f"labels.{raw}: {target!r} is not a {space} class (converter {self.converter!r} "
                    f"maps into the {space} label space){_hint(target, names)}; "
                    "write null to leave the class out"
                )
        unknown = sorted(set(self.text) - set(TEXT_KEYS))
        if unknown:
            raise ConfigError(f"unknown key 'text.{unknown[0]}'; allowed keys: {', '.join(TEXT_KEYS)}")
        if not isinstance(self.text.get("generate", True), bool):
            raise ConfigError(f"text.generate: invalid value {self.text['generate']!r}; expected true or false")
        complete = self.text.get("complete_classes", [])
        if not isinstance(complete, list):
            raise ConfigError(f"text.complete_classes: expected a list of {space} class names, got {complete!r}")
        for i, cls in enumerate(complete):
            if cls not in names:
                raise ConfigError(f"text.complete_classes[{i}]: {cls!r} is not a {space} class{_hint(cls, names)}")
        if len(self.split_ratios) != 3 or any(r < 0 for r in self.split_ratios) or sum(self.split_ratios) <= 0:
            raise ConfigError(
                f"split_ratios: invalid value {list(self.split_ratios)}; expected three non-negative "
                "numbers train, val, test, not all zero"
            )
        if not 0 <= self.test_from_train < 1:
            raise ConfigError(f"test_from_train: invalid value {self.test_from_train!r}; must be >= 0 and < 1")

    def label_space(self) -> str:
        """The label space (detection, cell, segmentation) the converter maps this dataset's class names into."""
        converter = CONVERTERS[self.converter]()
        return converter.label_space({**converter.OPTIONS, **self.options})

    def default_src(self) -> Path:
        """Where ``convert`` looks when --src is not given: $UNIHEMA_RAW_DATA/<name> or data/raw/<name>."""
        return Path(os.environ.get("UNIHEMA_RAW_DATA", "data/raw")) / self.name

    def where_to_get(self, src: Path | None = None) -> str:
        src = src or self.default_src()
        return (
            f"{self.title or self.name} ({self.name}): get it from {self.upstream or 'its owner'}\n"
            f"  license: {self.license}\n"
            f"  put it at {src} so that it contains:\n    {self.layout or '(see the spec options)'}"
        )


def check_options(converter: str, accepted: dict, options: dict, where: str) -> None:
    """Option names the converter knows, with the type of its default where that type is certain."""
    for key, value in options.items():
        if key not in accepted:
            raise ConfigError(
                f"unknown key '{where}.{key}': converter {converter!r} accepts "
                f"{', '.join(sorted(accepted))}{_hint(key, accepted)}"
            )
        default = accepted[key]
        # Only bool and number defaults pin a type: path options accept a string or a {split: path} mapping.
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: invalid value {value!r}; expected true or false")
        if (
            isinstance(default, (int, float))
            and not isinstance(default, bool)
            and (isinstance(value, bool) or not isinstance(value, (int, float)))
        ):
            raise ConfigError(f"{where}.{key}: invalid value {value!r}; expected a number")


def spec_from_dict(data: dict, where: str = "spec") -> DatasetSpec:
    """A validated spec from a plain mapping (a parsed YAML file); errors name the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of spec keys at the top level")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ConfigError(
            f"missing key {missing[0]!r}; a spec needs {', '.join(REQUIRED)} "
            f"(converter: one of {', '.join(sorted(CONVERTERS))})"
        )
    return build(DatasetSpec, data, root=where)


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a YAML dataset spec file."""
    data = read_yaml(path, what="spec file")
    try:
        return spec_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"spec file {str(path)!r}: {err}") from None


def spec_to_dict(spec: DatasetSpec) -> dict:
    return to_dict(spec)


def spec_to_yaml(spec: DatasetSpec) -> str:
    """A spec as a YAML file that ``load_spec`` reads back to an equal spec."""
    head = (
        f"# Dataset spec for {spec.name}: edit, then\n"
        f"#   python -m data_prep convert --spec {spec.name}.yaml --src DIR --out URI [--dry-run]\n"
    )
    return head + yaml.safe_dump(
        spec_to_dict(spec), sort_keys=False, allow_unicode=True, width=100, default_flow_style=None
    )


__all__ = ["DatasetSpec", "check_options", "load_spec", "spec_from_dict", "spec_to_dict", "spec_to_yaml"]
