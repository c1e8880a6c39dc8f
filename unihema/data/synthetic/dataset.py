"""Writing a whole synthetic dataset: index chunks across processes, shards streamed per chunk.

Each worker process takes contiguous chunks of record indices and writes them through its
own ShardWriter (a unique tag per chunk), so memory stays at about one chunk per worker
however many records are asked for, and nothing is passed between processes but the small
ShardStats. The parent merges those and writes the manifest. Because record ``i`` depends
only on ``(seed, i)``, the records are the same for any number of workers; only the
shard file names differ.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass

from unihema.config import StorageConfig
from unihema.data.schema import validate_record
from unihema.data.shards import ShardStats, ShardWriter, list_shards, write_manifest
from unihema.data.synthetic.record import generate_record
from unihema.data.synthetic.scenes import FOV_WIDTH_UM
from unihema.storage import ensure_bucket, open_filesystem, parse_uri

log = logging.getLogger(__name__)

GENERATOR = "unihema.data.synthetic"
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class ChunkJob:
    """Records [start, stop) of one dataset, written to ``uri`` with shard tag prefix ``chunk``."""

    uri: str
    storage: StorageConfig
    chunk: int
    start: int
    stop: int
    seed: int
    image_size: int
    fov_fraction: float
    fov_width_um: float
    val_fraction: float
    test_fraction: float
    check_images: bool


def write_chunk(job: ChunkJob) -> tuple[ShardStats, float]:
    """Generate and write one chunk; runs in a worker process (or inline). Returns its stats and CPU seconds."""
    cpu = time.process_time()
    # Named by chunk alone: a name with the worker that happened to take the chunk changed the
    # shards' order from one generation to the next, hence the read plan, hence a run's results.
    writer = ShardWriter(job.uri, job.storage, tag=f"c{job.chunk:05d}", check_images=job.check_images)
    for index in range(job.start, job.stop):
        rec = generate_record(
            index,
            job.seed,
            job.image_size,
            fov_fraction=job.fov_fraction,
            val_fraction=job.val_fraction,
            test_fraction=job.test_fraction,
            fov_width_um=job.fov_width_um,
        )
        if index == job.start and not job.check_images:
            # A canary: the first record of every chunk gets the full check, decoding every PNG.
            problems = validate_record(rec, check_image=True)
            if problems:
                raise RuntimeError(f"synthetic record {rec['id']} is invalid (generator bug): {problems}")
        writer.write(rec)
    stats = writer.close()
    return stats, time.process_time() - cpu


def _chunk_size(n: int, workers: int, requested: int | None) -> int:
    if requested:
        return requested
    # Several chunks per worker balance the load; 256 records keep a chunk's shards ~10-30 MB.
    return max(8, min(256, math.ceil(n / (4 * workers))))


def _clear_existing(uri: str, storage: StorageConfig, overwrite: bool) -> None:
    old = list_shards(uri, storage=storage)
    if not old:
        return
    if not overwrite:
        raise FileExistsError(
            f"{uri} already holds {len(old)} shards; pass overwrite=True (--overwrite) "
            f"to replace them, or choose another URI"
        )
    fs, _ = open_filesystem(parse_uri(uri), storage)
    for path in old:
        fs.delete_file(path)
    log.info("removed %d old shards under %s", len(old), uri)


def generate_dataset(
    n: int,
    uri: str,
    storage: StorageConfig | None = None,
    seed: int = 0,
    image_size: int = 256,
    workers: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    fov_fraction: float = 0.5,
    fov_width_um: float = FOV_WIDTH_UM,
    chunk_size: int | None = None,
    overwrite: bool = False,
    check_images: bool = False,
    progress: bool = True,
) -> dict:
    """Write ``n`` synthetic records as validated Parquet shards plus a manifest under ``uri``; returns the manifest.

    ``workers`` processes (default: all cores) share the work; ``storage`` defaults to
    ``StorageConfig()``, i.e. the AWS environment variables for s3:// URIs. Every record is
    validated by the writer; ``check_images`` also decodes each PNG header, which costs
    ~3 ms per field of view (80 masks) and is off by default because this package's own
    encoder wrote them (the first record of every chunk is still fully decoded as a canary,
    and the tests decode them all).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction <= 1):
        raise ValueError(
            f"split fractions must be in [0, 1] and sum to at most 1, got val={val_fraction} test={test_fraction}"
        )
    storage = storage or StorageConfig()
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    size = _chunk_size(n, workers, chunk_size)
    ensure_bucket(uri, storage)
    _clear_existing(uri, storage, overwrite)
    jobs = [
        ChunkJob(
            uri,
            storage,
            c,
            start,
            min(start + size, n),
            seed,
            image_size,
            fov_fraction,
            fov_width_um,
            val_fraction,
            test_fraction,
            check_images,
        )
        for c, start in enumerate(range(0, n, size))
    ]
    log.info(
        "generating %d synthetic records (seed %d, %d px) into %s: %d chunks on %d workers",
        n,
        seed,
        image_size,
        uri,
        len(jobs),
        workers,
    )

    stats = ShardStats()
    cpu = 0.0
    started = time.perf_counter()
    with _progress(n, progress) as bar:
        if workers == 1:
            for job in jobs:
                part, seconds = write_chunk(job)
                stats.merge(part)
                cpu += seconds
                bar.update(job.stop - job.start)
        else:
            # forkserver/spawn: workers never inherit the parent's threads, locks or S3 clients.
            ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(workers) as pool:
                for job, (part, seconds) in zip(jobs, pool.imap(write_chunk, jobs)):
                    stats.merge(part)
                    cpu += seconds
                    bar.update(job.stop - job.start)
    elapsed = time.perf_counter() - started
    rate = stats.records / elapsed if elapsed > 0 else float("inf")
    if stats.errors:
        log.error(
            "%d synthetic records failed validation (see errors.jsonl): %s", len(stats.errors), dict(stats.rejected)
        )
    # Per CPU-second as well as per wall-second: on a shared machine only the former is comparable.
    per_cpu = stats.records / cpu if cpu > 0 else float("inf")
    log.info(
        "wrote %d records in %.1f s: %.1f records/s on %d workers; %.1f records per CPU-second",
        stats.records,
        elapsed,
        rate,
        workers,
        per_cpu,
    )
    params = {
        "name": GENERATOR,
        "version": GENERATOR_VERSION,
        "n": n,
        "seed": seed,
        "image_size": image_size,
        "fov_fraction": fov_fraction,
        "fov_width_um": fov_width_um,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
    }
    throughput = {
        "seconds": round(elapsed, 3),
        "records_per_s": round(rate, 1),
        "workers": workers,
        "cpu_seconds": round(cpu, 3),
        "records_per_cpu_s": round(per_cpu, 1),
    }
    return write_manifest(uri, stats, storage, generator=params, throughput=throughput)


class _progress:
    """tqdm when asked for and installed, else a no-op with the same two methods."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="rec", desc="synthetic", smoothing=0.1)
            except ImportError:
                pass

    def update(self, k: int) -> None:
        if self.bar is not None:
            self.bar.update(k)

    def __enter__(self) -> _progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
