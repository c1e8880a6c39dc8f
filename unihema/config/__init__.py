"""Configuration: typed nested dataclasses, named presets, YAML files and ``a.b=value`` overrides.

Every entry point (pretrain, tune, evaluate, predict, export, data_prep) resolves its
settings through :func:`load_config`, so the same file and override syntax works everywhere
and the resolved result can be saved beside a run with secrets redacted.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from unihema.config.core import (
    REDACTED,
    ConfigError,
    build,
    deep_merge,
    dump_yaml,
    get_path,
    parse_override,
    to_dict,
)
from unihema.config.data import DataConfig, TaskMix
from unihema.config.model import (
    BackboneConfig,
    DecoderConfig,
    EncoderConfig,
    HemaFormerConfig,
    LossConfig,
    ModelConfig,
    TextConfig,
)
from unihema.config.presets import PRESETS
from unihema.config.storage import StorageConfig
from unihema.config.train import TrainConfig
from unihema.config.tune import TuneConfig
from unihema.labels import TASKS

DEFAULT_PRESET = "demo"


@dataclass
class UniHemaConfig:
    preset: str = ""
    run_name: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def to_dict(self, redact: bool = False) -> dict:
        return to_dict(self, redact=redact)


def preset_dict(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; allowed: {', '.join(sorted(PRESETS))}")
    return deep_merge(PRESETS[name], {"preset": name})


def read_yaml(path: str | Path, what: str = "config file") -> dict:
    """A YAML mapping from ``path``; ``what`` names the kind of file in errors (config file, spec file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(path)!r} must hold a mapping at the top level")
    return data


def load_config(
    preset: str | None = None,
    files: Iterable[str | Path] = (),
    overrides: Iterable[str] = (),
    defaults: Iterable[str] = (),
) -> UniHemaConfig:
    """Resolve preset -> defaults -> files -> overrides (later wins) into a checked UniHemaConfig.

    A file may name its own base preset with a top-level ``preset:`` key; an explicit
    ``preset`` argument wins over it. ``defaults`` (``a.b=value``) are an entry point's own
    defaults: over the preset, under anything the user gives.
    """
    layers = [read_yaml(f) for f in files]
    base = preset or next((layer.get("preset") for layer in reversed(layers) if layer.get("preset")), None)
    merged = preset_dict(base or DEFAULT_PRESET)
    for text in defaults:
        merged = deep_merge(merged, parse_override(text))
    for layer in layers:
        merged = deep_merge(merged, layer)
    for text in overrides:
        merged = deep_merge(merged, parse_override(text))
    merged["preset"] = base or DEFAULT_PRESET
    return build(UniHemaConfig, merged)


def save_config(cfg: UniHemaConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML with every secret field redacted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(cfg, redact=True))
    return path


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help=f"named preset (default: the file's own, else {DEFAULT_PRESET})",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML config file(s), applied in order over the preset",
    )
    parser.add_argument("overrides", nargs="*", metavar="a.b=value", help="overrides, applied last")


def config_from_args(args: argparse.Namespace) -> UniHemaConfig:
    return load_config(args.preset, args.config, args.overrides)


__all__ = [
    "REDACTED",
    "TASKS",
    "BackboneConfig",
    "ConfigError",
    "DataConfig",
    "DecoderConfig",
    "EncoderConfig",
    "HemaFormerConfig",
    "LossConfig",
    "ModelConfig",
    "PRESETS",
    "StorageConfig",
    "TaskMix",
    "TextConfig",
    "TrainConfig",
    "TuneConfig",
    "UniHemaConfig",
    "add_config_arguments",
    "config_from_args",
    "get_path",
    "load_config",
    "save_config",
]
