"""The run folder on storage: config, status, metrics summary, TensorBoard events.

Ray Train owns ``<run>/checkpoint_*``; everything else a person looks for after a run is
written here, through the same storage layer as the data, so local folders and S3 behave
the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs

from unihema.config import StorageConfig
from unihema.storage import describe_failure, open_filesystem, parse_uri
from unihema.storage.verify import verify_upload


def write_bytes(run_uri: str, name: str, data: bytes, storage: StorageConfig) -> str:
    target = parse_uri(run_uri)
    fs, root = open_filesystem(target, storage)
    path = f"{root}/{name}"
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(data)
    except OSError as err:
        raise describe_failure(target, storage, err) from None
    return str(target.join(name))


def write_text(run_uri: str, name: str, text: str, storage: StorageConfig) -> str:
    return write_bytes(run_uri, name, text.encode(), storage)


def read_bytes(run_uri: str, name: str, storage: StorageConfig) -> bytes | None:
    """The run file's bytes, or None when it does not exist."""
    target = parse_uri(run_uri)
    fs, root = open_filesystem(target, storage)
    info = fs.get_file_info(f"{root}/{name}")
    if info.type != pafs.FileType.File:
        return None
    with fs.open_input_stream(f"{root}/{name}") as f:
        return f.read()


def write_json(run_uri: str, name: str, data: dict, storage: StorageConfig) -> str:
    return write_text(run_uri, name, json.dumps(data, indent=1, default=float), storage)


def read_text(run_uri: str, name: str, storage: StorageConfig) -> str | None:
    """The run file's text, or None when it does not exist."""
    data = read_bytes(run_uri, name, storage)
    return None if data is None else data.decode()


def read_json(run_uri: str, name: str, storage: StorageConfig) -> dict | None:
    text = read_text(run_uri, name, storage)
    return None if text is None else json.loads(text)


def has_checkpoints(run_uri: str, storage: StorageConfig) -> bool:
    """Whether Ray Train has left a ``checkpoint_*`` folder in the run (it resumes from the latest)."""
    target = parse_uri(run_uri)
    fs, root = open_filesystem(target, storage)
    entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return any(e.type == pafs.FileType.Directory and e.base_name.startswith("checkpoint_") for e in entries)


def upload_dir(local_dir: str | Path, run_uri: str, name: str, storage: StorageConfig, verify: bool = False) -> None:
    """Copy a local folder (TensorBoard events, an export) into the run folder.

    ``verify``: list what arrived and raise StorageIntegrityError unless every file is there
    with its local size (not for TensorBoard events, which grow while they are copied).
    """
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        return
    target = parse_uri(run_uri)
    fs, root = open_filesystem(target, storage)
    if isinstance(fs, pafs.LocalFileSystem):  # pyarrow's copy does not create local parent folders
        import shutil

        shutil.copytree(local_dir, f"{root}/{name}", dirs_exist_ok=True)
    else:
        try:
            pafs.copy_files(
                str(local_dir), f"{root}/{name}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
            )
        except OSError as err:
            raise describe_failure(target, storage, err) from None
    if verify:
        verify_upload(local_dir, fs, f"{root}/{name}", str(target.join(name)))
