"""Models by name: ``build_model(cfg)`` is the one way the rest of the project makes a model.

Hyperparameters come from the config (presets tiny/demo/paper); the registry only maps an
architecture name to the class that reads them, so a variant can be added without touching
the training code.
"""

from __future__ import annotations

from typing import Callable

import torch

from .uni_hema import UniHema

MODELS: dict[str, Callable] = {"unihema": UniHema.from_config}


def register_model(name: str, factory: Callable) -> None:
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = factory


def list_models() -> list[str]:
    return sorted(MODELS)


def build_model(cfg, name: str = "unihema", device: str | torch.device | None = None) -> torch.nn.Module:
    """Build ``name`` from a UniHemaConfig or ModelConfig (on ``device``, e.g. "meta", if given)."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    if device is None:
        return MODELS[name](cfg)
    with torch.device(device):
        return MODELS[name](cfg)
