"""Reading and decoding records: the Ray Data side of the training stream, and the in-process reader.

    read units of a rank's plan (``unihema.data.plan``) -> ``PlanReader`` in Ray Data CPU
    tasks: read the piece's row group (only the columns its task needs), decode, augment,
    tokenize (``TaskTransform``) -> rows tagged with their plan keys -> the worker's stream
    (``unihema.data.stream``) -> collate -> the model

Every augmentation depends only on (seed, epoch, record id), so a run is reproducible and
a resumed run sees the same data. Validation and evaluation decode in their own process
(``iter_local_batches``): a bounded number of batches does not pay for a Ray execution.

Execution is streaming: Ray Data never materializes a dataset, and its object store and
CPU budgets come from the config, so memory does not grow with the number of images.
A record that cannot be decoded or fails validation does not crash a task: it travels as a
row flagged with its reason and is counted by the collate step (metrics the trainer reports).
A shard that cannot be opened is retried, then reported by name and left out.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from unihema.config import DataConfig, ModelConfig, StorageConfig
from unihema.data.images import ImageDecodeError
from unihema.data.schema import from_arrow_row, reason_code, validate_record
from unihema.data.shards import list_shards
from unihema.data.text import prompt_and_target
from unihema.data.transforms import transform_record
from unihema.storage import open_filesystem, parse_uri

log = logging.getLogger(__name__)

# Columns the transforms read; the rest of a record never leaves the reading task.
READ_COLUMNS = [
    "id",
    "split",
    "tasks",
    "image",
    "image_format",
    "width",
    "height",
    "boxes",
    "box_labels",
    "box_attributes",
    "masks",
    "semantic_mask",
    "cell_class",
    "attributes",
    "qa",
    "mlm_text",
    "license",
    "source",
]
# Instance masks are most of a field of view's bytes; only segmentation reads them.
MASK_COLUMNS = ("masks", "semantic_mask")


def read_columns(task: str) -> list[str]:
    """The Parquet columns a task's stream reads."""
    return READ_COLUMNS if task == "segmentation" else [c for c in READ_COLUMNS if c not in MASK_COLUMNS]


def rows_for_task(batch: pa.Table, task: str) -> pa.Table:
    """The rows whose ``tasks`` list names ``task``, selected in Arrow before any Python conversion."""
    tasks = batch.column("tasks").combine_chunks()
    hits = pc.equal(pc.list_flatten(tasks), task)
    rows = np.unique(np.asarray(pc.list_parent_indices(tasks))[np.asarray(hits.fill_null(False))])
    return batch.take(pa.array(rows, pa.int64())) if len(rows) < batch.num_rows else batch


@dataclass
class ShardCheck:
    good: list[str]
    bad: dict[str, str]  # path -> reason


def check_shards(paths: list[str], fs, retries: int = 3, backoff_s: float = 0.5) -> ShardCheck:
    """Open every shard's footer, retrying transient errors; unreadable shards are reported by name."""
    good, bad = [], {}
    for path in paths:
        for attempt in range(retries):
            try:
                with fs.open_input_file(path) as f:
                    pq.ParquetFile(f).metadata  # noqa: B018 - reading the footer is the check
                good.append(path)
                break
            except (OSError, pa.ArrowInvalid) as err:
                if attempt == retries - 1:
                    bad[path] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                    log.error("shard %s unreadable after %d attempts: %s", path, retries, bad[path])
                else:
                    time.sleep(backoff_s * 2**attempt)
    return ShardCheck(good, bad)


def record_seed(seed: int, epoch: int, record_id: str) -> int:
    """Per-record RNG seed: augmentations depend on (seed, epoch, id), not on how blocks were split."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{record_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


_TOKENIZERS: dict[str, object] = {}


def cached_tokenizer(model_cfg: ModelConfig):
    """One tokenizer per process and text config: Ray reuses worker processes across tasks."""
    key = repr(model_cfg.text)
    if key not in _TOKENIZERS:
        from unihema.model.tokenizer import build_tokenizer

        _TOKENIZERS[key] = build_tokenizer(model_cfg)
    return _TOKENIZERS[key]


def owner_rank(record_id: str, world_size: int) -> int:
    return int.from_bytes(hashlib.blake2b(record_id.encode(), digest_size=4).digest(), "little") % world_size


class TaskTransform:
    """Ray Data map_batches callable: records of one task -> augmented, tokenized rows.

    With ``row_split`` each worker keeps only the records whose id hashes to its rank.
    """

    def __init__(
        self,
        task: str,
        data_cfg: DataConfig,
        model_cfg: ModelConfig,
        train: bool,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        row_split: bool = False,
    ):
        self.task, self.data_cfg, self.model_cfg = task, data_cfg, model_cfg
        self.train, self.seed, self.epoch = train, seed, epoch
        self.rank, self.world_size, self.row_split = rank, world_size, row_split

    @property
    def tokenizer(self):
        return cached_tokenizer(self.model_cfg)

    def _one(self, rec: dict) -> dict:
        rng = np.random.default_rng(record_seed(self.seed, self.epoch, rec["id"]))
        # Checked for the task served only: the stream read just that task's columns.
        problems = validate_record({**rec, "tasks": [self.task]}, check_image=False)
        if problems:
            raise ImageDecodeError(reason_code(problems[0]), "; ".join(problems))
        row = transform_record(rec, self.task, self.data_cfg, rng, self.train)
        row["prompt"], row["target"] = prompt_and_target(rec, self.task, rng)
        return row

    def __call__(self, batch: pa.Table) -> dict:
        rows, errors, ids = [], [], []
        for raw in rows_for_task(batch, self.task).to_pylist():
            if self.row_split and owner_rank(str(raw.get("id")), self.world_size) != self.rank:
                continue
            rec = from_arrow_row(raw)
            try:
                rows.append(self._one(rec))
                errors.append("")
            except ImageDecodeError as err:
                rows.append(None)
                errors.append(f"{err.reason}: {err}")
            except (KeyError, ValueError, IndexError) as err:
                rows.append(None)
                errors.append(f"bad_record: {type(err).__name__}: {err}")
            ids.append(str(rec.get("id")))
        return self._columns(rows, errors, ids)

    def in_chunks(self, batch: pa.Table, rows: int = 16):
        """``self(batch)`` in slices of ``rows`` records: decoded output leaves as it is made.

        Ray Data gets this generator with ``batch_size=None`` so that the read and the decode
        fuse into one task (a ``batch_size`` stops Ray from fusing them: the raw records would
        make an extra trip through the object store) while memory stays at one slice.
        """
        for start in range(0, batch.num_rows, rows):
            yield self(batch.slice(start, rows))

    def _columns(self, rows: list, errors: list[str], ids: list[str]) -> dict:
        placeholder = {
            "image": np.zeros((1, 1, 3), np.uint8),
            "boxes": np.zeros((0, 4), np.float32),
            "labels": np.zeros(0, np.int64),
            "box_morphology": np.zeros((0, 6), np.int64),
            "packed_masks": np.zeros((0, 1, 1), np.uint8),
            "semantic": np.zeros((1, 1), np.uint8),
            "cell_label": np.int64(-100),
            "morphology": np.full(6, 4, np.int64),
            "has_morphology": False,
            "prompt": "",
            "target": "",
        }
        rows = [r if r is not None else placeholder for r in rows]
        out: dict = {"id": np.array(ids, dtype=object), "error": np.array(errors, dtype=object)}
        for key in ("image", "boxes", "labels", "box_morphology", "packed_masks", "semantic"):
            out[key] = [r[key] for r in rows]
        out["cell_label"] = np.array([r["cell_label"] for r in rows], np.int64)
        out["morphology"] = np.array([r["morphology"] for r in rows], np.int64).reshape(-1, 6)
        out["has_morphology"] = np.array([r["has_morphology"] for r in rows], bool)
        max_len = self.model_cfg.text.max_length
        prompts = [r["prompt"] for r in rows]
        pad = self.tokenizer.pad_id
        out["prompt_ids"], out["prompt_mask"] = _fixed_width(
            *self.tokenizer.encode_arrays(prompts, max_length=max_len), max_len, pad
        )
        if self.task in ("vqa", "mlm"):
            labels, target_mask = _fixed_width(
                *self.tokenizer.encode_arrays([r["target"] for r in rows], max_length=max_len), max_len, pad
            )
            labels[~target_mask] = -100
            out["text_labels"] = labels
        return out


def _fixed_width(ids, mask, width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad token rows to a fixed width so every Ray Data block has the same tensor shape."""
    ids, mask = np.asarray(ids, np.int64), np.asarray(mask, bool)
    out_ids = np.full((ids.shape[0], width), pad_id, np.int64)
    out_mask = np.zeros((ids.shape[0], width), bool)
    n = min(width, ids.shape[1]) if ids.ndim == 2 else 0
    out_ids[:, :n], out_mask[:, :n] = ids[:, :n], mask[:, :n]
    return out_ids, out_mask


def configure_data_context(cfg: DataConfig) -> None:
    """Bound Ray Data's memory and CPU use so peak memory does not grow with the dataset."""
    from ray.data import DataContext, ExecutionResources

    from unihema.data import executor_idle
    from unihema.train.console import quiet_ray_loggers

    executor_idle.install()
    quiet_ray_loggers()
    ctx = DataContext.get_current()
    limits = {}
    if cfg.object_store_memory_mb:
        limits["object_store_memory"] = cfg.object_store_memory_mb * 1024 * 1024
    if cfg.max_cpus:
        limits["cpu"] = cfg.max_cpus
    if limits:
        ctx.execution_options.resource_limits = ExecutionResources(**limits)
    ctx.enable_progress_bars = False
    # Same seed and epoch -> same batches: blocks leave the executor in input order.
    ctx.execution_options.preserve_order = True
    # Transient S3 errors while reading are retried by Ray Data itself.
    ctx.retried_io_errors = list(
        {
            *ctx.retried_io_errors,
            "AWS Error NETWORK_CONNECTION",
            "AWS Error SLOW_DOWN",
            "AWS Error INTERNAL_FAILURE",
            "AWS Error SERVICE_UNAVAILABLE",
        }
    )


def task_files(
    split: str, data_cfg: DataConfig, storage: StorageConfig, shard_report: dict | None = None
) -> tuple[object, list[str]]:
    """(filesystem, readable shard paths) of a split; unreadable shards go to ``shard_report``."""
    uri = parse_uri(data_cfg.uri)
    fs, _ = open_filesystem(uri, storage)
    paths = list_shards(data_cfg.uri, split, storage)
    check = check_shards(paths, fs)
    if shard_report is not None:
        shard_report.update(check.bad)
    if not check.good:
        raise FileNotFoundError(
            f"no readable shards for split {split!r} under {data_cfg.uri}"
            + (f" (unreadable: {sorted(check.bad)})" if check.bad else "")
        )
    return fs, check.good


_ROW_GROUPS: dict[tuple, pa.Table] = {}


def _row_group(fs, path: str, row_group: int, columns: list[str]) -> pa.Table:
    """One row group's columns, the last two kept per process: shards written before data_prep cut
    row groups to plan pieces hold one large row group, read piece by piece."""
    key = (path, row_group, tuple(columns))
    if key not in _ROW_GROUPS:
        with fs.open_input_file(path) as f:
            # pre_buffer coalesces the row group's column chunks into one ranged read (one S3 GET,
            # not one per column: tests/data/test_read_requests.py counts them).
            table = pq.ParquetFile(f, pre_buffer=True).read_row_group(row_group, columns=columns)
        while len(_ROW_GROUPS) >= 2:
            _ROW_GROUPS.pop(next(iter(_ROW_GROUPS)))
        _ROW_GROUPS[key] = table
    return _ROW_GROUPS[key]


class PlanReader:
    """Ray Data map_batches callable: read units of a rank's plan -> decoded rows with their plan keys."""

    def __init__(
        self, paths: list[str], fs, data_cfg: DataConfig, model_cfg: ModelConfig, seed: int, chunk_rows: int = 16
    ):
        self.paths, self.fs, self.data_cfg, self.model_cfg = paths, fs, data_cfg, model_cfg
        self.seed, self.chunk_rows = seed, chunk_rows

    def __call__(self, batch: dict):
        for i in range(len(batch["task"])):
            task, epoch = str(batch["task"][i]), int(batch["epoch"][i])
            rows = np.asarray(batch["rows"][i], np.int64)
            keys = np.asarray(batch["keys"][i], np.int64)
            path = self.paths[int(batch["file"][i])]
            try:
                table = _row_group(self.fs, path, int(batch["row_group"][i]), read_columns(task)).take(rows)
            except (OSError, pa.ArrowInvalid) as err:
                raise OSError(f"shard {path} row group {int(batch['row_group'][i])}: {err}") from err
            transform = TaskTransform(task, self.data_cfg, self.model_cfg, True, self.seed, epoch)
            for start in range(0, len(rows), self.chunk_rows):
                out = transform(table.slice(start, self.chunk_rows))
                out["plan_key"] = keys[start : start + self.chunk_rows]
                if "text_labels" not in out:  # one schema for every block of the stream
                    out["text_labels"] = np.full_like(out["prompt_ids"], -100)
                yield out


def build_plan_dataset(units: list, paths: list[str], fs, data_cfg: DataConfig, model_cfg: ModelConfig, seed: int = 0):
    """A streaming Ray Dataset of the decoded rows of ``units`` (one Ray task per unit), in order."""
    import ray.data

    ds = ray.data.from_items([u.to_item() for u in units], override_num_blocks=len(units))
    return ds.map_batches(
        PlanReader(paths, fs, data_cfg, model_cfg, seed),
        batch_size=None,
        batch_format="numpy",
        zero_copy_batch=True,
        **decode_task_args(data_cfg),
    )


def decode_task_args(data_cfg: DataConfig) -> dict:
    """Ray arguments of the stream's read-and-decode tasks: their CPUs and the resource that places them."""
    placement = {"resources": dict(data_cfg.task_resources)} if data_cfg.task_resources else {}
    return {"num_cpus": data_cfg.decode_cpus, **placement}


def iter_local_batches(
    task: str,
    split: str,
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    fs,
    files: list[str],
    *,
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    max_batches: int | None = None,
):
    """One pass over a split's records of ``task``, decoded in this process.

    Validation reads a bounded number of batches; starting a Ray Data execution per task
    and per validation would cost more than the decoding itself at that size.
    """
    row_split = world_size > 1 and len(files) < world_size
    mine = files if row_split or world_size == 1 else files[rank::world_size]
    transform = TaskTransform(task, data_cfg, model_cfg, split == "train", seed, 0, rank, world_size, row_split)
    produced = 0
    chunk: list[dict] = []
    for path in mine:
        with fs.open_input_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=256, columns=read_columns(task)):
                for row in rows_for_task(pa.Table.from_batches([batch]), task).to_pylist():
                    if row_split and owner_rank(str(row.get("id")), world_size) != rank:
                        continue
                    chunk.append(row)
                    if len(chunk) == batch_size:
                        yield transform(pa.Table.from_pylist(chunk, schema=batch.schema))
                        produced, chunk = produced + 1, []
                        if max_batches is not None and produced >= max_batches:
                            return
    if chunk:
        yield transform(pa.Table.from_pylist(chunk, schema=batch.schema))
