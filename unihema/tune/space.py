"""The search space: which config paths a sweep varies, over which ranges, and how a sample becomes a config.

Hyperparameters are addressed by their config paths (``loss.detection``, ``data.mix.vqa``,
``train.lr``), so a trial's parameters are plain ``{path: value}`` overrides on the sweep's
base config, the same overrides a person would type on the command line. Ranges:

- weights (``loss.*`` and ``data.mix.*``) take values in [tune.weight_min, tune.weight_max];
- any other numeric path (``train.lr``) is its configured value times a factor in that range,
  since an absolute [0.25, 4] would be meaningless for a learning rate.

Sampling is log-uniform (weights act multiplicatively), uniform when the range starts at 0.
"""

from __future__ import annotations

import math

from unihema.config import ConfigError, UniHemaConfig, get_path
from unihema.config.core import build, deep_merge

WEIGHT_PREFIXES = ("loss.", "data.mix.")


def is_weight(path: str) -> bool:
    return path.startswith(WEIGHT_PREFIXES)


def check_search(cfg: UniHemaConfig) -> tuple[str, ...]:
    """The searched paths, after checking each names a numeric setting; raises ConfigError otherwise."""
    paths = cfg.tune.search
    if not paths:
        raise ConfigError("tune.search: name at least one config path to search (e.g. loss.detection)")
    if len(set(paths)) != len(paths):
        raise ConfigError(f"tune.search: a path is listed twice: {list(paths)}")
    for path in paths:
        if path.startswith("tune.") or path == "tune":
            raise ConfigError(f"tune.search: {path!r} is a sweep setting, not a training hyperparameter")
        value = get_path(cfg, path)  # raises ConfigError naming an unknown path
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"tune.search: {path!r} is {value!r}, not a number; only numeric settings can be searched"
            )
        if not is_weight(path) and value <= 0:
            raise ConfigError(f"tune.search: {path!r} is {value!r}; a scaled setting needs a positive configured value")
    return paths


def bounds(cfg: UniHemaConfig, path: str) -> tuple[float, float]:
    lo, hi = cfg.tune.weight_min, cfg.tune.weight_max
    if is_weight(path):
        return lo, hi
    base = float(get_path(cfg, path))
    return base * lo, base * hi


def grid_size(num_samples: int, dims: int) -> int:
    """Points per path so that the full grid stays within num_samples where it can (at least 2)."""
    k = 2
    while (k + 1) ** dims <= num_samples:
        k += 1
    return k


def grid_values(lo: float, hi: float, k: int) -> list[float]:
    """``k`` points from lo to hi: geometric like the random sampling, linear when lo is 0."""
    if lo == hi:
        return [lo]
    if lo <= 0:
        return [lo + (hi - lo) * i / (k - 1) for i in range(k)]
    ratio = math.log(hi / lo)
    return [float(f"{lo * math.exp(ratio * i / (k - 1)):.6g}") for i in range(k)]


def param_space(cfg: UniHemaConfig) -> dict:
    """Tune's param_space: one Domain (or grid) per searched path, keyed by the path itself."""
    from ray import tune

    paths = check_search(cfg)
    space = {}
    k = grid_size(cfg.tune.num_samples, len(paths))
    for path in paths:
        lo, hi = bounds(cfg, path)
        if cfg.tune.searcher == "grid":
            space[path] = tune.grid_search(grid_values(lo, hi, k))
        elif lo == hi:
            space[path] = lo
        else:
            space[path] = tune.loguniform(lo, hi) if lo > 0 else tune.uniform(lo, hi)
    return space


def nest(path: str, value) -> dict:
    out: dict = {}
    cursor = out
    parts = path.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return out


def apply_params(base: dict, params: dict) -> dict:
    """``base`` (a config dict) with every ``{path: value}`` of a trial applied."""
    merged = base
    for path, value in params.items():
        merged = deep_merge(merged, nest(path, value))
    return merged


def trial_config(base: dict, params: dict) -> UniHemaConfig:
    return build(UniHemaConfig, apply_params(base, params))


def searched_values(params: dict) -> dict[str, float]:
    """Only the ``{path: value}`` entries of a trial's config (Tune may add its own keys)."""
    return {k: float(v) for k, v in params.items() if "." in k and isinstance(v, (int, float))}
