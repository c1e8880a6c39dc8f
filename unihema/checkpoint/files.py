"""Where a checkpoint is and what kind it is: the one definition of the DeepSpeed layout the stack writes.

The trainer saves every checkpoint under the tag :data:`CHECKPOINT_TAG`; Ray Train wraps it
in a ``checkpoint_*`` folder of the run folder. Everything that reads a checkpoint (resume,
``python -m unihema.evaluate`` / ``predict`` / ``export``, ``model.init_from``, the export at
the end of a run) finds it through this module, so the layout is written down once.
"""

from __future__ import annotations

import json
from pathlib import Path

from unihema.config import StorageConfig
from unihema.errors import UserInputError
from unihema.model.pretrained import CONFIG_FILE, is_pretrained_folder

# The tag every training checkpoint is saved under (``engine.save_checkpoint(dir, tag=...)``).
CHECKPOINT_TAG = "checkpoint"
# Rank 0's model states under ZeRO 0-2; ZeRO-3 writes zero_pp_rank_<r>_mp_rank_00_model_states.pt.
MODEL_STATES = "mp_rank_00_model_states.pt"


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
    if has_model_states(folder / CHECKPOINT_TAG):
        return CHECKPOINT_TAG
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
        f"checkpoint folder (checkpoint/{MODEL_STATES}) or a run folder (checkpoint_*/)"
    )


def find_run_file(folder: Path, name: str, levels: int = 2) -> Path | None:
    """``name`` in ``folder`` or up to ``levels`` folders above it (the run folder)."""
    for candidate in [folder, *list(folder.parents)[:levels]]:
        if (candidate / name).is_file():
            return candidate / name
    return None


def run_status(folder: Path) -> dict:
    found = find_run_file(folder, "status.json")
    if found is None:
        return {}
    try:
        return json.loads(found.read_text())
    except (OSError, ValueError):
        return {}
