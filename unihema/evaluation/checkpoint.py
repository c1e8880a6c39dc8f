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

from unihema.config import ConfigError, StorageConfig, UniHemaConfig, load_config
from unihema.evaluation.errors import UserInputError
from unihema.model.pretrained import (
    CONFIG_FILE, PretrainedError, build_from_state, is_pretrained_folder, load_pretrained, offline_model_config,
    scrub_secrets,
)
from unihema.train.safe_load import TRUST_FLAG

log = logging.getLogger(__name__)
MODEL_STATES = "mp_rank_00_model_states.pt"  # ZeRO 0-2; ZeRO-3 writes zero_pp_rank_<r>_mp_rank_00_model_states.pt
DEFAULT_TAG = "checkpoint"


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


# ----------------------------------------------------------------------------- storage


class StorageSession:
    """The storage settings in force, starting the embedded S3 server when an s3:// URI needs it."""

    def __init__(self, storage: StorageConfig, uris: Iterable[str | None] = ()):
        self.storage = storage
        self.server = None
        self.ensure(uris)

    def ensure(self, uris: Iterable[str | None]) -> StorageConfig:
        """Start the embedded server if one of ``uris`` is s3:// and no endpoint is configured."""
        from unihema.storage import endpoint_of

        wants_s3 = any(str(u).startswith("s3://") for u in uris if u)
        if wants_s3 and self.server is None and self.storage.embedded and not endpoint_of(self.storage):
            from unihema.storage import EmbeddedS3

            try:
                self.server = EmbeddedS3(self.storage.embedded_dir).start()
            except (OSError, RuntimeError, TimeoutError) as err:
                raise UserInputError(f"cannot start the embedded S3 server in {self.storage.embedded_dir}: "
                                     f"{err}") from None
            self.storage = self.server.storage_config()
        return self.storage

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> "StorageSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def download(uri: str, storage: StorageConfig, dest: Path) -> Path:
    """Copy what a checkpoint URI needs into ``dest``; returns the local path standing for ``uri``."""
    import pyarrow.fs as pafs

    from unihema.storage import describe_failure, open_filesystem, parse_uri
    from unihema.storage.verify import verify_local_checkpoint

    parsed = parse_uri(uri)
    fs, root = open_filesystem(parsed, storage)

    def copy(src: str, dst: Path) -> None:
        try:
            pafs.copy_files(src, str(dst), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        except OSError as err:
            raise describe_failure(parsed, storage, err) from None

    def copy_sidecars(folder: str, into: Path) -> None:
        for name in (CONFIG_FILE, "status.json"):
            if fs.get_file_info(f"{folder}/{name}").type == pafs.FileType.File:
                copy(f"{folder}/{name}", into / name)

    try:
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError as err:
        raise describe_failure(parsed, storage, err) from None
    if not entries:
        raise UserInputError(f"{uri}: no checkpoint there (nothing under that prefix)")
    names = {Path(e.path).name: e for e in entries}
    dest.mkdir(parents=True, exist_ok=True)
    if "model.safetensors" in names:
        copy(root, dest / "export")
        return dest / "export"
    runs = sorted(n for n, e in names.items() if n.startswith("checkpoint_") and e.type == pafs.FileType.Directory)
    if runs:  # a run folder: its latest checkpoint and the run's config
        copy(f"{root}/{runs[-1]}", dest / runs[-1])
        copy_sidecars(root, dest)
        verify_local_checkpoint(dest / runs[-1], where=f"{uri}/{runs[-1]}")
        return dest / runs[-1]
    copy(root, dest / "ckpt")
    copy_sidecars(root.rsplit("/", 1)[0], dest)
    verify_local_checkpoint(dest / "ckpt", where=uri)  # sha256 against the ranks' manifests, when it has them
    return dest / "ckpt"


# ----------------------------------------------------------------------------- locating


def has_model_states(folder: Path) -> bool:
    """A DeepSpeed tag folder: rank 0's model states of any ZeRO stage."""
    return folder.is_dir() and any(folder.glob(f"*{MODEL_STATES}"))


def deepspeed_tag(folder: Path) -> str | None:
    """The tag of a DeepSpeed checkpoint folder: ``latest``'s, else ``checkpoint``, else the last one."""
    latest = folder / "latest"
    if latest.is_file():
        tag = latest.read_text().strip()
        if tag and has_model_states(folder / tag):
            return tag
    if has_model_states(folder / DEFAULT_TAG):
        return DEFAULT_TAG
    tags = sorted(p.name for p in folder.iterdir() if has_model_states(p)) if folder.is_dir() else []
    return tags[-1] if tags else None


def locate(path: str | Path) -> tuple[str, Path, str | None]:
    """("export" | "deepspeed", folder, tag) for a local path, or UserInputError saying what it is not."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such file or folder")
    if not path.is_dir():
        raise UserInputError(f"{path}: a checkpoint is a folder, not a file")
    if is_pretrained_folder(path):
        return "export", path, None
    tag = deepspeed_tag(path)
    if tag:
        return "deepspeed", path, tag
    if has_model_states(path):  # the tag folder itself
        return "deepspeed", path.parent, path.name
    runs = sorted(p for p in path.glob("checkpoint_*") if p.is_dir() and deepspeed_tag(p))
    if runs:
        return "deepspeed", runs[-1], deepspeed_tag(runs[-1])
    raise UserInputError(
        f"{path}: not a checkpoint: expected an export folder (model.safetensors + config.yaml), a DeepSpeed "
        f"checkpoint folder (checkpoint/{MODEL_STATES}) or a run folder (checkpoint_*/)")


def find_run_file(folder: Path, name: str, levels: int = 2) -> Path | None:
    """``name`` in ``folder`` or up to ``levels`` folders above it (the run folder)."""
    for candidate in [folder, *list(folder.parents)[:levels]]:
        if (candidate / name).is_file():
            return candidate / name
    return None


def checkpoint_config(folder: Path, preset: str | None, files: Iterable[str | Path], overrides: Iterable[str]
                      ) -> UniHemaConfig:
    files = list(files)
    found = find_run_file(folder, CONFIG_FILE)
    if found is None and not preset and not files:
        raise UserInputError(f"{folder}: no {CONFIG_FILE} next to this DeepSpeed checkpoint or in its run folder; "
                             "say which model it holds with --preset or --config")
    try:
        cfg = load_config(preset, ([found] if found else []) + files, overrides)
    except ConfigError as err:
        raise UserInputError(f"config error: {err}") from None
    return scrub_secrets(offline_model_config(cfg))


def run_status(folder: Path) -> dict:
    import json

    found = find_run_file(folder, "status.json")
    if found is None:
        return {}
    try:
        return json.loads(found.read_text())
    except (OSError, ValueError):
        return {}


def consolidated_state(folder: Path, tag: str, trust: bool = False, trust_hint: str = TRUST_FLAG
                       ) -> dict[str, torch.Tensor]:
    from unihema.train.export import consolidate_checkpoint
    from unihema.train.safe_load import UntrustedCheckpointError

    try:
        return consolidate_checkpoint(folder, tag=tag, trusted=trust, trust_hint=trust_hint)
    except UntrustedCheckpointError as err:
        raise UserInputError(str(err)) from None
    except (OSError, RuntimeError, ValueError, KeyError, EOFError) as err:
        raise UserInputError(f"{folder / tag}: unreadable DeepSpeed checkpoint: {type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''}") from None


# ----------------------------------------------------------------------------- loading


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} asked for, but no CUDA device is available")
    return torch.device(device)


def load_local(path: Path, *, preset: str | None = None, files: Iterable[str | Path] = (),
               overrides: Iterable[str] = (), device="cpu", source: str | None = None, trust: bool = False,
               trust_hint: str = TRUST_FLAG) -> Loaded:
    from unihema.model.tokenizer import build_tokenizer

    kind, folder, tag = locate(path)
    files, overrides = list(files), list(overrides)
    try:
        if kind == "export":
            try:
                bundle = load_pretrained(folder, device=device, files=files, overrides=overrides)
            except ConfigError as err:
                raise UserInputError(f"config error: {err}") from None
            return Loaded(bundle.model, bundle.cfg, bundle.tokenizer, source or str(path), kind, folder,
                          {"status": run_status(folder)})
        cfg = checkpoint_config(folder, preset, files, overrides)
        state = consolidated_state(folder, tag, trust, trust_hint)
        model = build_from_state(cfg, state, f"{folder / tag}", device)
    except PretrainedError as err:
        raise UserInputError(str(err)) from None
    status = run_status(folder)
    info = {"status": status, "tag": tag, "step": status.get("step")}
    return Loaded(model, cfg, build_tokenizer(cfg.model), source or str(path), kind, folder, info)


def load_checkpoint(path: str, *, preset: str | None = None, files: Iterable[str | Path] = (),
                    overrides: Iterable[str] = (), device="cpu", storage: StorageConfig | None = None,
                    trust: bool = False, trust_hint: str = TRUST_FLAG) -> Loaded:
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
