"""Typed configuration machinery shared by every section.

Configs are plain nested dataclasses. This module turns dictionaries (from YAML files,
presets or ``a.b=value`` command-line overrides) into them with strict checking, so a
typo or an out-of-range value fails at start-up with the key's full path and what is
allowed, instead of deep inside a Ray worker an hour later.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import yaml

REDACTED = "***redacted***"

log = logging.getLogger(__name__)

# Keys that meant something once and mean nothing now: a saved run's config or a user's YAML
# that still sets one loads with a warning instead of failing. Full path -> why it is gone.
RETIRED_KEYS = {
    "data.read_cpus": "the stream reads inside its decode tasks since the read plan; data.decode_cpus sizes them",
}


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names the key."""


def closest(name: object, choices, n: int = 3) -> list[str]:
    """The names in ``choices`` nearest to ``name`` (case and spacing ignored), for "did you mean" hints."""
    folded = {str(c).casefold(): str(c) for c in choices}
    # 0.5, not difflib's 0.6: a swapped letter pair ("lisence") must still find its key.
    return [
        folded[m]
        for m in difflib.get_close_matches(" ".join(str(name).split()).casefold(), list(folded), n=n, cutoff=0.5)
    ]


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (tuple, list):
        args = get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        k, v = get_args(tp)
        return f"a mapping of {_type_name(k)} to {_type_name(v)}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Return ``value`` converted to the annotated type ``tp`` or raise ConfigError."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of fields of {tp.__name__}, got {value!r}")
        return build(tp, value, path)
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{path}: invalid value {value!r}; allowed: {', '.join(map(repr, choices))}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{path}: invalid value {value!r}; expected {_type_name(tp)}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        k_tp, v_tp = get_args(tp)
        return {_coerce(k, k_tp, f"{path}.{k}"): _coerce(v, v_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{path}: invalid value {value!r}; expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: invalid value {value!r}; expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{path}: invalid value {value!r}; expected an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: invalid value {value!r}; expected a number")
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise ConfigError(f"{path}: invalid value {value!r}; expected a finite number")
            return float(value)
        raise ConfigError(f"{path}: invalid value {value!r}; expected a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: invalid value {value!r}; expected a string")
    raise ConfigError(f"{path}: unsupported annotation {tp!r}")


def _check_range(value: Any, meta: typing.Mapping, path: str) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    if value is None:
        return
    vals = value if isinstance(value, (list, tuple)) else [value]
    vals = value.values() if isinstance(value, dict) else vals
    for v in vals:
        if lo is not None and v < lo:
            raise ConfigError(f"{path}: invalid value {value!r}; must be >= {lo}")
        if hi is not None and v > hi:
            raise ConfigError(f"{path}: invalid value {value!r}; must be <= {hi}")


def build(cls: type, data: dict | None = None, path: str = "", root: str = "config") -> Any:
    """Instantiate dataclass ``cls`` from ``data``, rejecting unknown keys and bad values.

    ``root`` names the whole tree in messages about its top-level keys ("config", "spec").
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in sorted(set(data) - set(fields)):
        full = f"{path}.{key}" if path else key
        if full in RETIRED_KEYS:
            log.warning("config key %s is ignored: %s", full, RETIRED_KEYS[full])
            del data[key]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = path or root
        raise ConfigError(
            f"unknown key {'.'.join(filter(None, [path, unknown[0]]))!r} in {where}; "
            f"allowed keys: {', '.join(sorted(fields))}"
            + (f"; did you mean {near[0]!r}?" if (near := closest(unknown[0], fields, n=1)) else "")
        )
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            value = _coerce(data[name], hints[name], sub)
        elif dataclasses.is_dataclass(hints[name]):
            value = build(hints[name], {}, sub)
        else:
            continue
        _check_range(value, f.metadata, sub)
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"{path or root}: {err}") from None
    return obj


def to_dict(obj: Any, redact: bool = False) -> Any:
    """Plain nested dict of a config; with ``redact`` every secret field is masked."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if redact and f.metadata.get("secret") and value:
                out[f.name] = REDACTED
            else:
                out[f.name] = to_dict(value, redact)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v, redact) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, redact) for k, v in obj.items()}
    return obj


def deep_merge(base: dict, update: dict) -> dict:
    """Recursively merge ``update`` into a copy of ``base`` (dicts merge, values replace)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    """Turn ``a.b.c=value`` into ``{"a": {"b": {"c": value}}}`` with YAML-typed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: dict = {}
    cursor = nested
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def get_path(obj: Any, path: str) -> Any:
    """Read a dotted path (``loss.detection``) from a config object."""
    for part in path.split("."):
        if not dataclasses.is_dataclass(obj) or not hasattr(obj, part):
            raise ConfigError(f"unknown key {path!r}")
        obj = getattr(obj, part)
    return obj


def dump_yaml(obj: Any, redact: bool = True) -> str:
    return yaml.safe_dump(to_dict(obj, redact=redact), sort_keys=False)
