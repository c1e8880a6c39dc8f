"""Validated Parquet shards on a local folder or S3, with a manifest and an error report.

Layout under a dataset URI::

    <uri>/split=<train|val|test>/<tag>-<n>.parquet
    <uri>/manifest.json     counts per split/task/class/source, files with sha256, schema version
    <uri>/errors.jsonl      one line per record not written: id, origin, reasons

A *corpus* is a folder of converted datasets, one per subfolder (``data_prep convert
bccd --out corpus/bccd``, ``... pbc_wbcatt --out corpus/pbc``): its shards are every
dataset's, and its manifest is theirs merged (:func:`read_manifest`). Training on several
sources is pointing ``data.uri`` at the corpus; each dataset keeps its own manifest, error
report and content hashes, so one can be re-converted without touching the others.

Writers stream: memory holds at most one shard per split. Several writers (one per
worker process, each with its own ``tag``) can fill one URI; ``write_manifest`` merges
their statistics. Readers check the schema of every shard and every record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from unihema.config import StorageConfig
from unihema.data.plan import PIECE_ROWS
from unihema.data.schema import (
    RECORD_SCHEMA,
    SCHEMA_VERSION,
    check_table_schema,
    from_arrow_row,
    reason_code,
    to_table,
    validate_record,
)
from unihema.storage import StorageURI, describe_failure, open_filesystem, parse_uri

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"


@dataclass
class ShardStats:
    """What one or more writers wrote and rejected; mergeable across workers."""

    files: list[dict] = field(default_factory=list)
    counts: dict[str, Counter] = field(
        default_factory=lambda: {
            k: Counter() for k in ("split", "task", "source", "detection_class", "cell_class", "split_task")
        }
    )
    records: int = 0
    rejected: Counter = field(default_factory=Counter)
    errors: list[dict] = field(default_factory=list)

    def add_record(self, rec: dict) -> None:
        self.records += 1
        c = self.counts
        c["split"][rec["split"]] += 1
        c["source"][rec["source"]] += 1
        for task in rec["tasks"]:
            c["task"][task] += 1
            c["split_task"][f"{rec['split']}/{task}"] += 1
        c["detection_class"].update(rec.get("box_labels") or [])
        if rec.get("cell_class"):
            c["cell_class"][rec["cell_class"]] += 1

    def add_error(self, record_id: str, origin: str | None, reasons: list[str]) -> None:
        self.rejected.update({reason_code(r) for r in reasons})
        self.errors.append({"id": record_id, "origin": origin, "reasons": reasons})

    def merge(self, other: ShardStats) -> ShardStats:
        self.files.extend(other.files)
        for key, counter in other.counts.items():
            self.counts.setdefault(key, Counter()).update(counter)
        self.records += other.records
        self.rejected.update(other.rejected)
        self.errors.extend(other.errors)
        return self

    def to_json(self) -> dict:
        return {
            "files": self.files,
            "counts": {k: dict(sorted(v.items())) for k, v in self.counts.items()},
            "records": self.records,
            "rejected": dict(sorted(self.rejected.items())),
            "errors": self.errors,
        }

    @classmethod
    def from_json(cls, data: dict) -> ShardStats:
        stats = cls(
            files=list(data["files"]),
            records=data["records"],
            rejected=Counter(data["rejected"]),
            errors=list(data["errors"]),
        )
        for key, counter in data["counts"].items():
            stats.counts[key] = Counter(counter)
        return stats


def _write_bytes(fs: pafs.FileSystem, path: str, payload: bytes, target: StorageURI, cfg: StorageConfig) -> None:
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(payload)
    except OSError as err:
        raise describe_failure(target, cfg, err) from None


class ShardWriter:
    """Validate records and stream them into Parquet shards, one buffer per split.

    ``uploader(name, payload)``, when given, stores each finished shard instead of the pyarrow
    write (``name`` is relative to the URI): data prep uses it for multipart uploads with
    checksums and to skip shards already present.
    """

    def __init__(
        self,
        uri: str,
        storage: StorageConfig | None = None,
        *,
        tag: str = "part",
        target_shard_bytes: int = 64 << 20,
        max_records_per_shard: int = 10_000,
        check_images: bool = True,
        uploader: Callable[[str, bytes], None] | None = None,
    ):
        self.uri = parse_uri(uri)
        self.storage = storage or StorageConfig()
        self.fs, self.root = open_filesystem(self.uri, self.storage)
        self.tag = tag
        self.target_shard_bytes = target_shard_bytes
        self.max_records_per_shard = max_records_per_shard
        self.check_images = check_images
        self.uploader = uploader
        self.stats = ShardStats()
        self._buffers: dict[str, list[dict]] = {}
        self._buffer_bytes: Counter = Counter()
        self._shard_index: Counter = Counter()
        self._closed = False

    def write(self, rec: dict) -> bool:
        """Buffer a valid record (True) or list it in the error report with its reasons (False)."""
        problems = validate_record(rec, check_image=self.check_images)
        if problems:
            self.stats.add_error(str(rec.get("id")), rec.get("origin"), problems)
            return False
        split = rec["split"]
        self._buffers.setdefault(split, []).append(rec)
        self._buffer_bytes[split] += (
            len(rec["image"]) + sum(len(m) for m in rec.get("masks") or []) + len(rec.get("semantic_mask") or b"")
        )
        self.stats.add_record(rec)
        if (
            self._buffer_bytes[split] >= self.target_shard_bytes
            or len(self._buffers[split]) >= self.max_records_per_shard
        ):
            self._flush(split)
        return True

    def reject(self, record_id: str, origin: str | None, reasons: list[str]) -> None:
        """Report a source record that never became a record (unreadable file, bad annotation)."""
        self.stats.add_error(record_id, origin, reasons)

    def _flush(self, split: str) -> None:
        records = self._buffers.pop(split, [])
        self._buffer_bytes[split] = 0
        if not records:
            return
        table = to_table(records)
        sink = pa.BufferOutputStream()
        # Row groups of one plan piece: the training stream reads a piece as one row group.
        pq.write_table(table, sink, compression="zstd", row_group_size=PIECE_ROWS)
        payload = sink.getvalue().to_pybytes()
        name = f"split={split}/{self.tag}-{self._shard_index[split]:05d}.parquet"
        self._shard_index[split] += 1
        if self.uploader is not None:
            self.uploader(name, payload)
        else:
            _write_bytes(self.fs, f"{self.root}/{name}", payload, self.uri, self.storage)
        self.stats.files.append(
            {
                "path": name,
                "split": split,
                "records": len(records),
                "bytes": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(),
            }
        )

    def close(self) -> ShardStats:
        if not self._closed:
            for split in list(self._buffers):
                self._flush(split)
            self._closed = True
        return self.stats

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()


def write_manifest(uri: str, stats: ShardStats, storage: StorageConfig | None = None, **extra) -> dict:
    """Write manifest.json and errors.jsonl beside the shards; returns the manifest."""
    target = parse_uri(uri)
    cfg = storage or StorageConfig()
    fs, root = open_filesystem(target, cfg)
    data = stats.to_json()
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "records": data["records"],
        "counts": data["counts"],
        "rejected": data["rejected"],
        "files": sorted(data["files"], key=lambda f: f["path"]),
        **extra,
    }
    _write_bytes(fs, f"{root}/{MANIFEST}", json.dumps(manifest, indent=1).encode(), target, cfg)
    errors = "".join(json.dumps(e) + "\n" for e in data["errors"])
    _write_bytes(fs, f"{root}/{ERRORS}", errors.encode(), target, cfg)
    return manifest


def read_manifest(uri: str, storage: StorageConfig | None = None) -> dict | None:
    """The manifest at ``uri`` (a corpus: its datasets' merged), or None when there is none yet."""
    target = parse_uri(uri)
    cfg = storage or StorageConfig()
    fs, root = open_filesystem(target, cfg)
    try:
        info = fs.get_file_info(f"{root}/{MANIFEST}")
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(f"{root}/{MANIFEST}") as f:
                return json.loads(f.read())
        parts = _corpus_parts(fs, root)
    except OSError as err:
        raise describe_failure(target, cfg, err) from None
    return _merge_corpus(parts, uri)


class UnfinishedDatasetError(FileNotFoundError):
    """A corpus holds a dataset whose conversion did not finish (shards without a manifest)."""


def _corpus_parts(fs, root: str) -> tuple[dict[str, dict], list[str]]:
    """(subfolder -> its manifest, subfolders with shards but no manifest) under ``root``."""
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    manifests, with_shards = {}, set()
    for item in found:
        parts = item.path[len(root) :].strip("/").split("/")
        if len(parts) == 2 and parts[1] == MANIFEST and item.type == pafs.FileType.File:
            manifests[parts[0]] = item.path
        elif len(parts) >= 3 and parts[1].startswith("split=") and item.path.endswith(".parquet"):
            with_shards.add(parts[0])
    loaded = {}
    for name, path in sorted(manifests.items()):
        with fs.open_input_stream(path) as f:
            loaded[name] = json.loads(f.read())
    return loaded, sorted(with_shards - set(manifests))


def _merge_corpus(found: tuple[dict[str, dict], list[str]], uri: str) -> dict | None:
    """The datasets of a corpus as one manifest; None when it holds none."""
    parts, unfinished = found
    if not parts:
        return None
    if unfinished:
        raise UnfinishedDatasetError(
            f"corpus {uri}: {', '.join(unfinished)} has shards but no {MANIFEST} (a conversion that did not "
            "finish): convert it again, or remove that folder"
        )
    stats = ShardStats()
    for name, part in parts.items():
        files = [{**f, "path": f"{name}/{f['path']}"} for f in part.get("files", [])]
        stats.merge(ShardStats.from_json({**part, "files": files, "errors": []}))
    versions = sorted({p.get("schema_version") for p in parts.values()}, key=str)
    data = stats.to_json()
    return {
        "schema_version": versions[0] if len(versions) == 1 else versions,
        "records": data["records"],
        "counts": data["counts"],
        "rejected": data["rejected"],
        "files": sorted(data["files"], key=lambda f: f["path"]),
        "corpus": {name: part.get("dataset") or {"records": part.get("records")} for name, part in parts.items()},
    }


def list_shards(uri: str, split: str | None = None, storage: StorageConfig | None = None) -> list[str]:
    """Filesystem paths of the Parquet shards under ``uri`` (one split or all), sorted.

    ``uri`` may be a dataset (``uri/split=train/...``) or a corpus of datasets
    (``uri/<dataset>/split=train/...``).
    """
    target = parse_uri(uri)
    cfg = storage or StorageConfig()
    fs, root = open_filesystem(target, cfg)
    try:
        if split:
            infos = fs.get_file_info(pafs.FileSelector(f"{root}/split={split}", recursive=True, allow_not_found=True))
            if not infos:  # a corpus: the split's folder in each dataset
                infos = [
                    i
                    for i in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
                    if i.path[len(root) :].strip("/").split("/")[1:2] == [f"split={split}"]
                ]
        else:
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as err:
        raise describe_failure(target, cfg, err) from None
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))


class ShardReader:
    """Iterate the records of a dataset URI, checking each shard's schema and each record."""

    def __init__(self, uri: str, split: str | None = None, storage: StorageConfig | None = None, validate: bool = True):
        self.uri = parse_uri(uri)
        self.storage = storage or StorageConfig()
        self.fs, _ = open_filesystem(self.uri, self.storage)
        self.split = split
        self.validate = validate
        self.stats = ShardStats()

    def __iter__(self) -> Iterator[dict]:
        for path in list_shards(str(self.uri), self.split, self.storage):
            try:
                table = pq.read_table(path, filesystem=self.fs)
            except OSError as err:
                raise describe_failure(self.uri, self.storage, err) from None
            check_table_schema(table.schema, path)
            for row in table.to_pylist():
                rec = from_arrow_row(row)
                problems = validate_record(rec) if self.validate else []
                if problems:
                    self.stats.add_error(str(rec.get("id")), path, problems)
                    continue
                self.stats.add_record(rec)
                yield rec


__all__ = [
    "ERRORS",
    "MANIFEST",
    "RECORD_SCHEMA",
    "ShardReader",
    "ShardStats",
    "ShardWriter",
    "list_shards",
    "UnfinishedDatasetError",
    "read_manifest",
    "write_manifest",
]
