"""Any checkpoint the stack writes, loaded into a model, its config and its tokenizer.

Accepted, locally or under ``s3://`` (downloaded first, through the embedded S3 server when
the config asks for it):

- an export folder (``model.safetensors`` + ``config.yaml`` + ``tokenizer/``);
- a DeepSpeed checkpoint folder of any ZeRO stage: the Ray Train ``checkpoint_*`` folder,
  which holds the tag folder ``checkpoint/`` (or the one its ``latest`` file names), or the
  tag folder itself;
- a run folder: its latest ``checkpoint_*``.

A DeepSpeed checkpoint has no config of its own: the run's ``config.yaml`` is found next to
it (the checkpoint folder, then the run folder), else ``--preset`` / ``--config`` must say.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from unihema.checkpoint.consolidate import consolidate_checkpoint
from unihema.checkpoint.files import download, find_run_file, locate, run_status
from unihema.checkpoint.safe_load import TRUST_FLAG, UntrustedCheckpointError
from unihema.config import ConfigError, StorageConfig, UniHemaConfig, load_config
from unihema.errors import UserInputError
from unihema.model.pretrained import (
    CONFIG_FILE,
    PretrainedError,
    build_from_state,
    load_pretrained,
    offline_model_config,
    scrub_secrets,
)

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    model: torch.nn.Module
    cfg: UniHemaConfig
    tokenizer: object
    source: str  # what the user named
    kind: str  # "export" or "deepspeed"
    local_dir: Path
    info: dict = field(default_factory=dict)  # step, status.json of the run when known
    _tmp: object = None  # keeps a download alive as long as the model


def checkpoint_config(
    folder: Path, preset: str | None, files: Iterable[str | Path], overrides: Iterable[str]
) -> UniHemaConfig:
    files = list(files)
    found = find_run_file(folder, CONFIG_FILE)
    if found is None and not preset and not files:
        raise UserInputError(
            f"{folder}: no {CONFIG_FILE} next to this DeepSpeed checkpoint or in its run folder; "
            "say which model it holds with --preset or --config"
        )
    try:
        cfg = load_config(preset, ([found] if found else []) + files, overrides)
    except ConfigError as err:
        raise UserInputError(f"config error: {err}") from None
    return scrub_secrets(offline_model_config(cfg))


def consolidated_state(
    folder: Path, tag: str, trust: bool = False, trust_hint: str = TRUST_FLAG
) -> dict[str, torch.Tensor]:
    try:
        return consolidate_checkpoint(folder, tag=tag, trusted=trust, trust_hint=trust_hint)
    except UntrustedCheckpointError as err:
        raise UserInputError(str(err)) from None
    except (OSError, RuntimeError, ValueError, KeyError, EOFError) as err:
        raise UserInputError(
            f"{folder / tag}: unreadable DeepSpeed checkpoint: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from None


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} asked for, but no CUDA device is available")
    return torch.device(device)


def load_local(
    path: Path,
    *,
    preset: str | None = None,
    files: Iterable[str | Path] = (),
    overrides: Iterable[str] = (),
    device="cpu",
    source: str | None = None,
    trust: bool = False,
    trust_hint: str = TRUST_FLAG,
) -> Loaded:
    from unihema.model.tokenizer import build_tokenizer

    kind, folder, tag = locate(path)
    files, overrides = list(files), list(overrides)
    try:
        if kind == "export":
            try:
                bundle = load_pretrained(folder, device=device, files=files, overrides=overrides)
            except ConfigError as err:
                raise UserInputError(f"config error: {err}") from None
            return Loaded(
                bundle.model,
                bundle.cfg,
                bundle.tokenizer,
                source or str(path),
                kind,
                folder,
                {"status": run_status(folder)},
            )
        cfg = checkpoint_config(folder, preset, files, overrides)
        state = consolidated_state(folder, tag, trust, trust_hint)
        model = build_from_state(cfg, state, f"{folder / tag}", device)
    except PretrainedError as err:
        raise UserInputError(str(err)) from None
    status = run_status(folder)
    info = {"status": status, "tag": tag, "step": status.get("step")}
    return Loaded(model, cfg, build_tokenizer(cfg.model), source or str(path), kind, folder, info)


def load_checkpoint(
    path: str,
    *,
    preset: str | None = None,
    files: Iterable[str | Path] = (),
    overrides: Iterable[str] = (),
    device="cpu",
    storage: StorageConfig | None = None,
    trust: bool = False,
    trust_hint: str = TRUST_FLAG,
) -> Loaded:
    """Model (eval mode), config and tokenizer from any checkpoint path or s3:// URI (see module doc).

    DeepSpeed files load weights only unless ``trust``; a file that needs more is refused with
    a UserInputError naming it and ``trust_hint`` (how the caller's user says they trust it).
    """
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    options = dict(preset=preset, files=files, overrides=overrides, device=device, trust=trust, trust_hint=trust_hint)
    if str(path).startswith("s3://"):
        tmp = tempfile.TemporaryDirectory(prefix="unihema-ckpt-")
        local = download(str(path), storage or StorageConfig(), Path(tmp.name))
        loaded = load_local(local, source=str(path), **options)
        loaded._tmp = tmp
        return loaded
    return load_local(Path(path), **options)
