"""Load a trained Uni-Hema from an export folder by model name: ``load_pretrained``, ``from_pretrained``.

The folder format (weights, config, tokenizer, model card), ``save_pretrained`` and the
``UniHema.from_pretrained`` mixin live in :mod:`unihema.model.modeling`, below the model
registry. The loaders here build the model through the registry, so they sit above it and
the model module never imports this one: no import cycle. Everything the folder format
defines is re-exported, so ``unihema.model.pretrained`` stays the one place to import from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from unihema.config import UniHemaConfig
from unihema.model.modeling import (
    CARD_FILE,
    CONFIG_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    Pretrained,
    PretrainedError,
    is_pretrained_folder,
    load_folder_config,
    load_state_into,
    model_card,
    offline_model_config,
    read_folder,
    save_pretrained,
    scrub_secrets,
    state_for_saving,
    with_state,
)
from unihema.model.registry import build_model
from unihema.model.tokenizer import build_tokenizer


def build_from_state(
    cfg: UniHemaConfig,
    state: dict[str, torch.Tensor],
    source: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> torch.nn.Module:
    """The model ``cfg`` builds, with ``state`` loaded, in eval mode."""
    return with_state(build_model(cfg), state, source, device, dtype)


def load_pretrained(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    files: Iterable[str | Path] = (),
    overrides: Iterable[str] = (),
) -> Pretrained:
    """Model, config and tokenizer from an export folder (see the module docstring)."""
    path = Path(path)
    cfg, state = read_folder(path, files, overrides)
    model = build_from_state(cfg, state, str(path), device, dtype)
    return Pretrained(model, cfg, build_tokenizer(cfg.model), path)


def from_pretrained(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    overrides: Iterable[str] = (),
) -> torch.nn.Module:
    """The model of an export folder, in eval mode (``UniHema.from_pretrained`` builds UniHema itself)."""
    return load_pretrained(path, device=device, dtype=dtype, overrides=overrides).model


__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "TOKENIZER_DIR",
    "WEIGHTS_FILE",
    "Pretrained",
    "PretrainedError",
    "build_from_state",
    "from_pretrained",
    "is_pretrained_folder",
    "load_folder_config",
    "load_pretrained",
    "load_state_into",
    "model_card",
    "offline_model_config",
    "save_pretrained",
    "scrub_secrets",
    "state_for_saving",
]
