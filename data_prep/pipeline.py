"""Run one dataset through its converter into shards: in parallel, streaming, nothing lost.

Units are converted in worker processes (``imap``, so results come back in plan order and
the shards are the same for any number of workers); the main process validates and writes
records as they arrive, so memory holds one shard per split plus a bounded number of units
in flight. At the end: an error report listing every source record not written and every
annotation dropped, a content-hash index for duplicate checks, and the manifest. If either
error rate passes ``max_error_rate`` the run fails with the top reasons, and writes the
error report but no manifest (a URI without a manifest is not a finished dataset).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import multiprocessing as mp
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs
from tqdm import tqdm

from data_prep.context import Context
from data_prep.converters import CONVERTERS, Converter
from data_prep.problems import Outcome, rejection
from data_prep.report import Ledger
from data_prep.spec import DatasetSpec, check_options
from data_prep.upload import make_uploader
from unihema.config import StorageConfig
from unihema.data.schema import validate_record
from unihema.data.shards import ERRORS, MANIFEST, ShardStats, ShardWriter, list_shards, write_manifest
from unihema.storage import check_access, describe_failure, open_filesystem, parse_uri

log = logging.getLogger(__name__)

HASHES = "content_hashes.csv.gz"


class DatasetNotFound(FileNotFoundError):
    """--src does not hold the dataset; the message says where to get it and how to lay it out."""


class ConversionFailed(RuntimeError):
    """Too many source records or annotations could not be converted."""


@dataclass
class ConvertSettings:
    workers: int = 0  # 0: one per CPU core; 1: no worker processes
    target_shard_bytes: int = 64 << 20
    max_records_per_shard: int = 10_000
    max_error_rate: float = 0.05  # of source records rejected, or of annotations dropped
    seed: int = 0  # template text phrasing
    split_ratios: tuple[float, float, float] | None = None
    split_salt: str = ""
    skip_existing: bool = True
    progress: bool = True
    start_method: str = "forkserver"  # no fork of a process that holds S3 client threads
    options: dict = field(default_factory=dict)  # overrides of the registry's converter options
    # Read and convert everything, validate every record, report; write nothing at all (not
    # even a folder): the way to check a new spec against its data before a real run.
    dry_run: bool = False


@dataclass
class ConvertResult:
    manifest: dict
    ledger: Ledger
    elapsed_s: float
    uploaded: list[str]
    skipped: list[str]
    pruned: list[str]
    dry_run: bool = False
    failure: str | None = None  # why a real run would fail (a dry run reports it instead of raising)


def _build(spec: DatasetSpec, src: str, settings: ConvertSettings) -> tuple[Converter, Context]:
    converter = CONVERTERS[spec.converter]()
    check_options(spec.converter, converter.OPTIONS, settings.options, "--option")  # the spec's own are checked
    options = {**converter.OPTIONS, **spec.options, **settings.options}
    if settings.options:
        try:
            converter.check(options)
        except ValueError as err:
            raise ValueError(f"--option {err}") from None
    ctx = Context(
        spec,
        Path(src),
        options,
        converter.label_space(options),
        settings.seed,
        settings.split_ratios,
        settings.split_salt,
    )
    return converter, ctx


class _Worker:
    """What a worker process runs: one unit in, its outcomes out; a crash becomes a rejection."""

    def __init__(self, spec: DatasetSpec, src: str, settings: ConvertSettings):
        self.converter, self.ctx = _build(spec, src, settings)

    def __call__(self, unit):
        try:
            outcomes = self.converter.convert(unit, self.ctx)
        except Exception as err:  # a converter bug must not lose the record or the run
            log.exception("converter %s failed on %r", self.converter.name, unit)
            source = unit[0] if isinstance(unit, tuple) and isinstance(unit[0], str) else repr(unit)
            outcomes = [
                rejection(
                    self.ctx.record_id(Path(source).name[:200]),
                    source[:300],
                    f"converter_error: {type(err).__name__}: {err}",
                )
            ]
        # The label map counts in this process; the counts travel back with the unit's outcomes.
        seen = self.ctx.labels.drain()
        if seen:
            if not outcomes:
                outcomes = [Outcome()]
            outcomes[0].classes.update(seen)
        return outcomes


class _Checker:
    """Stands in for the ShardWriter on a dry run: validates and counts records, writes nothing."""

    def __init__(self):
        self.stats = ShardStats()

    def write(self, rec: dict) -> bool:
        problems = validate_record(rec)
        if problems:
            self.stats.add_error(str(rec.get("id")), rec.get("origin"), problems)
            return False
        self.stats.add_record(rec)
        return True

    def close(self) -> ShardStats:
        return self.stats


_WORKER: _Worker | None = None


def _init_worker(spec: DatasetSpec, src: str, settings: ConvertSettings) -> None:
    global _WORKER
    _WORKER = _Worker(spec, src, settings)


def _run_unit(unit):
    return _WORKER(unit)


def _outcomes(units: list, spec: DatasetSpec, src: str, settings: ConvertSettings, workers: int):
    """Outcome lists in plan order, from worker processes with a bounded number of units in flight."""
    if workers <= 1 or len(units) < 2:
        worker = _Worker(spec, src, settings)
        for unit in units:
            yield worker(unit)
        return
    chunk = max(1, min(16, len(units) // (workers * 8)))
    slots = threading.Semaphore(chunk * workers * 4)
    stop = threading.Event()

    def feed():
        for unit in units:
            while not slots.acquire(timeout=0.2):
                if stop.is_set():
                    return
            yield unit

    ctx = mp.get_context(settings.start_method)
    if settings.start_method == "forkserver":  # import once in the server, not in every worker
        ctx.set_forkserver_preload(["data_prep.pipeline"])
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(spec, src, settings))
    try:
        for result in pool.imap(_run_unit, feed(), chunksize=chunk):
            slots.release()
            yield result
        pool.close()
    finally:
        stop.set()
        pool.terminate()
        pool.join()


def _write_file(uri: str, storage: StorageConfig, name: str, payload: bytes) -> None:
    target = parse_uri(uri)
    fs, root = open_filesystem(target, storage)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(root, recursive=True)
        with fs.open_output_stream(f"{root}/{name}") as out:
            out.write(payload)
    except OSError as err:
        raise describe_failure(target, storage, err) from None


def _unpublish(uri: str, storage: StorageConfig) -> None:
    """Remove an earlier run's manifest: until this run writes its own, the URI is not a finished dataset."""
    target = parse_uri(uri)
    fs, root = open_filesystem(target, storage)
    try:
        if fs.get_file_info(f"{root}/{MANIFEST}").type == pafs.FileType.File:
            fs.delete_file(f"{root}/{MANIFEST}")
    except OSError as err:
        raise describe_failure(target, storage, err) from None


def _hash_index(ledger: Ledger) -> bytes:
    # CSV, not Parquet: readers treat every .parquet under the URI as a shard.
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(("id", "split", "content_hash"))
    writer.writerows(ledger.hashes)
    return gzip.compress(text.getvalue().encode(), mtime=0)


def _prune(uri: str, storage: StorageConfig, tag: str, keep: set[str]) -> list[str]:
    """Delete this dataset's shards left from an earlier run that this run did not write."""
    fs, root = open_filesystem(parse_uri(uri), storage)
    stale = [
        p
        for p in list_shards(uri, storage=storage)
        if p.rsplit("/", 1)[-1].startswith(f"{tag}-") and p[len(root) + 1 :] not in keep
    ]
    for path in stale:
        fs.delete_file(path)
        log.warning("removed stale shard %s from an earlier run", path)
    return [p[len(root) + 1 :] for p in stale]


def _dataset_info(spec: DatasetSpec) -> dict:
    return {
        "name": spec.name,
        "title": spec.title,
        "license": spec.license,
        "upstream": spec.upstream,
        "converter": spec.converter,
        "split": spec.split,
    }


def convert(
    spec: DatasetSpec,
    src: str | Path,
    out: str | None,
    storage: StorageConfig | None = None,
    settings: ConvertSettings | None = None,
) -> ConvertResult:
    """Convert ``spec``'s dataset at ``src`` into validated shards at ``out`` (local folder or s3://).

    With ``settings.dry_run`` nothing is written (``out`` may be None): the result's manifest
    is the report of what a run would write, and ``failure`` says why it would fail.
    """
    settings = settings or ConvertSettings()
    storage = storage or StorageConfig()
    src = Path(src).expanduser().resolve()
    if not src.is_dir():
        raise DatasetNotFound(f"{src} does not exist.\n{spec.where_to_get(src)}")
    converter, ctx = _build(spec, str(src), settings)
    try:
        plan = converter.plan(ctx)
    except FileNotFoundError as err:
        raise DatasetNotFound(f"{err}.\n{spec.where_to_get(src)}") from None
    if settings.dry_run:
        writer = _Checker()
    else:
        target = parse_uri(out)
        if target.is_s3:
            check_access(out, storage)
        else:
            Path(target.key).mkdir(parents=True, exist_ok=True)
        _unpublish(out, storage)
        uploader = make_uploader(out, storage, skip_existing=settings.skip_existing)
        writer = ShardWriter(
            out,
            storage,
            tag=spec.name,
            target_shard_bytes=settings.target_shard_bytes,
            max_records_per_shard=settings.max_records_per_shard,
            uploader=uploader,
        )
    ledger = Ledger()
    for outcome in plan.problems:
        ledger.add(outcome)
    # Records reach the shards in a seeded random order, not the source's (class folders, one
    # class after another): training streams read shards sequentially with a bounded shuffle
    # buffer, and class-sorted shards gave batches of one class (PBC classification stayed at
    # chance on them). The order depends only on the seed and the dataset, not on the workers.
    random.Random(f"{settings.seed}:{spec.name}").shuffle(plan.units)
    workers = settings.workers or os.cpu_count() or 1
    start = time.perf_counter()
    bar = tqdm(total=len(plan.units), unit="unit", desc=f"convert {spec.name}", disable=not settings.progress)
    for outcomes in _outcomes(plan.units, spec, str(src), settings, workers):
        for outcome in outcomes:
            ledger.add(outcome)
            if outcome.record is None:
                continue
            if writer.write(outcome.record):
                ledger.written(outcome.record, outcome.content_hash)
            else:
                ledger.rejected_by_writer(writer.stats.errors[-1])
        bar.update(1)
    stats = writer.close()
    bar.close()
    elapsed = time.perf_counter() - start
    if stats.records != ledger.written_count:  # the "nothing lost" promise, checked
        raise AssertionError(f"ledger says {ledger.written_count} written, writer wrote {stats.records}")
    # errors.jsonl lists problems by origin, not in the shuffled processing order, so the
    # report reads like the source tree and is the same from run to run.
    ledger.entries.sort(key=lambda e: str(e.get("origin", "")))
    stats.errors = ledger.entries
    stats.rejected = ledger.rejected_codes()
    # Listed by origin, not in the shuffled processing order, so the report reads like the source tree.
    entries = sorted(ledger.entries, key=lambda e: str(e.get("origin", "")))
    errors = "".join(json.dumps(e) + "\n" for e in entries).encode()
    failure = ledger.failure(settings.max_error_rate)
    if settings.dry_run:
        prep = {**ledger.summary(), "units": len(plan.units), "options": ctx.options}
        report = {
            "dataset": _dataset_info(spec),
            "counts": stats.to_json()["counts"],
            "prep": prep,
            "errors": ledger.entries,
        }
        return ConvertResult(report, ledger, elapsed, [], [], [], dry_run=True, failure=failure)
    if failure:
        _write_file(out, storage, ERRORS, errors)
        raise ConversionFailed(
            f"{spec.name}: {failure}. Every problem is listed in {out}/{ERRORS}; no manifest was written."
        )
    _write_file(out, storage, HASHES, _hash_index(ledger))
    prep = ledger.summary()
    prep.update(
        elapsed_s=round(elapsed, 3),
        units=len(plan.units),
        workers=workers,
        units_per_s=round(len(plan.units) / elapsed, 1) if elapsed else None,
        images_per_s=round(ledger.source_records / elapsed, 1) if elapsed else None,
        seed=settings.seed,
        options=ctx.options,
        content_hashes=HASHES,
    )
    manifest = write_manifest(out, stats, storage, dataset=_dataset_info(spec), prep=prep)
    pruned = _prune(out, storage, spec.name, {f["path"] for f in stats.files})
    return ConvertResult(manifest, ledger, elapsed, uploader.uploaded, uploader.skipped, pruned)


__all__ = ["ConversionFailed", "ConvertResult", "ConvertSettings", "DatasetNotFound", "HASHES", "convert"]
