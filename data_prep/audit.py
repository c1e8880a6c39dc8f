"""Check and describe converted datasets: ``validate``, ``stats`` and the cross-dataset ``dedup``.

``validate`` trusts nothing it did not read back: every shard listed in the manifest is
fetched, its sha256 compared, its schema checked and every record validated; the counts
are recomputed and compared with the manifest; shards on storage that the manifest does
not list are flagged (a reader would pick them up). ``stats`` only reads the manifest.
``dedup`` joins the content-hash indexes of several converted datasets and reports
identical images that appear in more than one, and those sitting in different splits.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from data_prep.pipeline import HASHES
from unihema.config import StorageConfig
from unihema.data.schema import SCHEMA_VERSION, check_table_schema, from_arrow_row, validate_record
from unihema.data.shards import ERRORS, list_shards, read_manifest
from unihema.storage import describe_failure, open_filesystem, parse_uri


@dataclass
class Validation:
    uri: str
    problems: list[str] = field(default_factory=list)
    records: int = 0
    splits: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems


def _read(uri: str, storage: StorageConfig, name: str) -> bytes | None:
    target = parse_uri(uri)
    fs, root = open_filesystem(target, storage)
    try:
        with fs.open_input_stream(f"{root}/{name}") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        if "not found" in str(err).lower() or "NoSuchKey" in str(err):
            return None
        raise describe_failure(target, storage, err) from None


def validate(uri: str, storage: StorageConfig | None = None, progress: bool = False) -> Validation:
    storage = storage or StorageConfig()
    report = Validation(uri)
    manifest = read_manifest(uri, storage)
    if manifest is None:
        report.problems.append("no manifest.json: the conversion did not finish (see errors.jsonl if present)")
        return report
    if manifest.get("schema_version") != SCHEMA_VERSION:
        report.problems.append(f"schema version {manifest.get('schema_version')} != {SCHEMA_VERSION}")
    _, root = open_filesystem(parse_uri(uri), storage)
    listed = {f["path"] for f in manifest["files"]}
    for path in list_shards(uri, storage=storage):
        if path[len(root) + 1 :] not in listed:
            report.problems.append(f"stray shard {path[len(root) + 1 :]} is not in the manifest")
    ids: set[str] = set()
    for entry in tqdm(manifest["files"], desc="validate", unit="shard", disable=not progress):
        data = _read(uri, storage, entry["path"])
        if data is None:
            report.problems.append(f"{entry['path']}: listed in the manifest but missing")
            continue
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            report.problems.append(f"{entry['path']}: sha256 differs from the manifest")
            continue
        table = pq.read_table(pa.BufferReader(data))
        try:
            check_table_schema(table.schema, entry["path"])
        except ValueError as err:
            report.problems.append(str(err))
            continue
        if table.num_rows != entry["records"]:
            report.problems.append(f"{entry['path']}: {table.num_rows} records, manifest says {entry['records']}")
        for row in table.to_pylist():
            rec = from_arrow_row(row)
            for reason in validate_record(rec):
                report.problems.append(f"{entry['path']}: record {rec['id']}: {reason}")
            if rec["split"] != entry["split"]:
                report.problems.append(f"{entry['path']}: record {rec['id']} has split {rec['split']}")
            if rec["id"] in ids:
                report.problems.append(f"record id {rec['id']} appears twice")
            ids.add(rec["id"])
            report.records += 1
            report.splits[rec["split"]] += 1
    if report.records != manifest["records"]:
        report.problems.append(f"{report.records} records on storage, manifest says {manifest['records']}")
    if dict(report.splits) != manifest["counts"].get("split", {}):
        report.problems.append(f"records per split {dict(report.splits)} != manifest {manifest['counts']['split']}")
    errors = _read(uri, storage, ERRORS)
    if errors is None:
        report.problems.append("errors.jsonl is missing")
    else:
        try:
            lines = [json.loads(line) for line in errors.decode().splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            report.problems.append(f"errors.jsonl does not parse: {err}")
            lines = None
        expected = (manifest.get("prep") or {}).get("error_entries")
        if lines is not None and expected is not None and len(lines) != expected:
            report.problems.append(f"errors.jsonl has {len(lines)} entries, manifest says {expected}")
    return report


def _table(title: str, counts: dict, limit: int = 60) -> list[str]:
    if not counts:
        return []
    lines = [f"{title}:"]
    for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]:
        lines.append(f"  {name:<40} {n:>9}")
    if len(counts) > limit:
        lines.append(f"  ... {len(counts) - limit} more")
    return lines


def stats(uri: str, storage: StorageConfig | None = None) -> tuple[str, dict]:
    """A readable summary of the manifest at ``uri``, and the manifest itself."""
    manifest = read_manifest(uri, storage or StorageConfig())
    if manifest is None:
        raise FileNotFoundError(f"no manifest.json at {uri}")
    counts, prep, ds = manifest["counts"], manifest.get("prep") or {}, manifest.get("dataset") or {}
    lines = [
        f"{uri}: {manifest['records']} records, {len(manifest['files'])} shards "
        f"(schema v{manifest['schema_version']}, created {manifest['created']})"
    ]
    if ds:
        lines.append(f"dataset {ds.get('name')}: {ds.get('title')} | license {ds.get('license')}")
    if prep:
        lines.append(
            f"source records {prep['source_records']}: written {prep['written']}, rejected "
            f"{prep['rejected_records']} ({prep['record_error_rate']:.2%}); annotations "
            f"{prep['annotations']}, dropped {prep['dropped_annotations']} "
            f"({prep['annotation_error_rate']:.2%})"
        )
        if prep.get("images_per_s"):
            lines.append(
                f"converted at {prep['images_per_s']} images/s with {prep['workers']} workers ({prep['elapsed_s']} s)"
            )
        dup = prep.get("duplicates") or {}
        lines.append(
            f"identical images: {dup.get('groups', 0)} groups ({dup.get('cross_split_groups', 0)} across splits)"
        )
    for title, key in (
        ("split", "split"),
        ("task", "task"),
        ("detection classes", "detection_class"),
        ("cell classes", "cell_class"),
    ):
        lines += _table(title, counts.get(key, {}))
    lines += _table("rejected records by reason", manifest.get("rejected", {}))
    lines += _table("problems by reason", prep.get("problems", {}))
    lines += _table("fixes", prep.get("fixes", {}))
    return "\n".join(lines), manifest


def dedup(uris: list[str], storage: StorageConfig | None = None, examples: int = 20) -> dict:
    """Identical images (by pixel hash) across the converted datasets at ``uris``."""
    storage = storage or StorageConfig()
    where: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for uri in uris:
        data = _read(uri, storage, HASHES)
        if data is None:
            raise FileNotFoundError(f"no {HASHES} at {uri}: convert it with this version of data_prep")
        for row in csv.DictReader(io.StringIO(gzip.decompress(data).decode())):
            where[row["content_hash"]].append((uri, row["id"], row["split"]))
    across = [v for v in where.values() if len({u for u, _, _ in v}) > 1]
    leaks = [v for v in across if len({s for _, _, s in v}) > 1]
    return {
        "datasets": uris,
        "images": sum(len(v) for v in where.values()),
        "groups_across_datasets": len(across),
        "groups_across_splits": len(leaks),
        "examples": [[f"{i} ({s})" for _, i, s in v] for v in (leaks + across)[:examples]],
    }


__all__ = ["Validation", "dedup", "stats", "validate"]
