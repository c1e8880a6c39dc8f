"""Checking that files put into object storage (or fetched from it) are the files that were written.

An S3 upload that ends early, a multipart upload that lost a part, a download cut short:
each leaves a checkpoint that fails later, on resume or export, with a DeepSpeed or pickle
error far from its cause. Two checks close that gap:

- after an upload, the destination is listed and every file must be there with its local
  size (one LIST request per folder; no read-back);
- a checkpoint folder carries, per rank, a manifest of its files (size and sha256), written
  before Ray Train uploads it; the driver checks sizes against it before it reports the
  checkpoint, and every download (resume, export, evaluate) checks the sha256 of its copy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.fs as pafs

from unihema.storage.uri import StorageAccessError

MANIFEST_PREFIX = "checkpoint_files_rank"  # + "<rank>.json", one per rank in a checkpoint folder


class StorageIntegrityError(StorageAccessError):
    """Files in storage (or a local copy of them) differ from what was written: missing, short or changed."""


def sha256_of(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _is_manifest(name: str) -> bool:
    return Path(name).name.startswith(MANIFEST_PREFIX) and name.endswith(".json")


def describe_files(local_dir: str | Path, checksums: bool = True) -> dict[str, dict]:
    """{relative path: {"size", "sha256"}} of every file under ``local_dir`` (manifests left out)."""
    local_dir = Path(local_dir)
    found = {}
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(local_dir).as_posix()
        if _is_manifest(rel):
            continue
        found[rel] = {"size": path.stat().st_size, **({"sha256": sha256_of(path)} if checksums else {})}
    return found


def write_file_manifest(local_dir: str | Path, rank: int) -> Path:
    """Write this rank's manifest into a checkpoint folder about to be reported."""
    path = Path(local_dir, f"{MANIFEST_PREFIX}{rank}.json")
    path.write_text(json.dumps({"files": describe_files(local_dir)}, indent=0))
    return path


def _remote_sizes(fs: pafs.FileSystem, root: str) -> dict[str, int]:
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    prefix = root.rstrip("/") + "/"
    return {
        i.path[len(prefix) :] if i.path.startswith(prefix) else i.path: i.size
        for i in infos
        if i.type == pafs.FileType.File
    }


def _raise_differences(expected: dict[str, set[int]], found: dict[str, int], where: str) -> None:
    missing = sorted(name for name in expected if name not in found)
    wrong = sorted(
        f"{name} ({found[name]} bytes, expected {' or '.join(map(str, sorted(sizes)))})"
        for name, sizes in expected.items()
        if name in found and found[name] not in sizes
    )
    if missing or wrong:
        parts = (
            [f"missing {', '.join(missing[:5])}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")]
            if missing
            else []
        ) + ([f"wrong size: {', '.join(wrong[:5])}"] if wrong else [])
        raise StorageIntegrityError(f"{where}: the stored files differ from those written: {'; '.join(parts)}")


def verify_upload(local_dir: str | Path, fs: pafs.FileSystem, root: str, where: str) -> int:
    """Every file under ``local_dir`` is under ``root`` on ``fs`` with the same size; returns how many."""
    expected = {name: {info["size"]} for name, info in describe_files(local_dir, checksums=False).items()}
    try:
        found = _remote_sizes(fs, root)
    except OSError as err:
        raise StorageIntegrityError(f"{where}: cannot list what was uploaded: {err}") from None
    _raise_differences(expected, found, where)
    return len(expected)


def _merged_manifests(texts: list[str]) -> dict[str, list[dict]]:
    """{relative path: [descriptions]}: ranks may each list a file the others wrote too."""
    merged: dict[str, list[dict]] = {}
    for text in texts:
        for name, info in json.loads(text)["files"].items():
            merged.setdefault(name, []).append(info)
    return merged


def verify_stored_checkpoint(fs: pafs.FileSystem, root: str, where: str) -> int:
    """Sizes of a stored checkpoint folder against its manifests; returns files checked (0: no manifest)."""
    try:
        found = _remote_sizes(fs, root)
        texts = []
        for name in found:
            if _is_manifest(name) and "/" not in name:
                with fs.open_input_stream(f"{root.rstrip('/')}/{name}") as f:
                    texts.append(f.read().decode())
    except OSError as err:
        raise StorageIntegrityError(f"{where}: cannot read the checkpoint's file list: {err}") from None
    if not texts:  # a checkpoint from before manifests: nothing to check against
        return 0
    merged = _merged_manifests(texts)
    _raise_differences({name: {i["size"] for i in infos} for name, infos in merged.items()}, found, where)
    return len(merged)


def verify_local_checkpoint(local_dir: str | Path, where: str | None = None) -> int:
    """Sizes and sha256 of a downloaded checkpoint folder against its manifests; returns files checked."""
    local_dir = Path(local_dir)
    texts = [p.read_text() for p in sorted(local_dir.glob(f"{MANIFEST_PREFIX}*.json"))]
    if not texts:
        return 0
    where = where or str(local_dir)
    merged = _merged_manifests(texts)
    _raise_differences(
        {name: {i["size"] for i in infos} for name, infos in merged.items()},
        {name: info["size"] for name, info in describe_files(local_dir, checksums=False).items()},
        where,
    )
    changed = sorted(
        name for name, infos in merged.items() if sha256_of(local_dir / name) not in {i["sha256"] for i in infos}
    )
    if changed:
        raise StorageIntegrityError(
            f"{where}: checksum mismatch (the file changed after it was written, or the "
            f"copy is damaged): {', '.join(changed[:5])}"
        )
    return len(merged)


__all__ = [
    "MANIFEST_PREFIX",
    "StorageIntegrityError",
    "describe_files",
    "sha256_of",
    "verify_local_checkpoint",
    "verify_stored_checkpoint",
    "verify_upload",
    "write_file_manifest",
]
