"""Which records each training rank reads, and when: the shard index and the per-rank read plan.

Why a plan rather than one Ray Data stream per task split by files: ``data_prep`` writes one
set of shards per source dataset, so on a real corpus a task may live in fewer shards than
there are workers; splitting files by rank then leaves ranks with no data for that task,
and they fail on its first step. It also took six Ray Data executions per worker (one per
task), each reading every shard's footer at every epoch, and a resume decoded every batch
it skipped.

Here the unit of reading is a *piece*: up to :data:`PIECE_ROWS` rows of one task in one
Parquet row group. The :class:`ShardIndex` lists every task's pieces; it is built once per
run from the shards' footers and their small ``tasks`` column. Each task's pieces are dealt
once per run, in an order drawn from (seed, task), each to the rank with the fewest rows so
far (pieces differ in size: a row group holds several tasks, a shard ends in a short one;
dealt round-robin, the ranks' shares of a task differed by up to 15% at 64 ranks in
``benchmarks/scale_sim.py``); a task with fewer pieces than ranks has its pieces cut smaller
first. So every rank gets a share of every task within one piece of the others', whatever
the shard layout, and the shares are disjoint. Each epoch a rank
reads its own pieces in a new order drawn from (seed, task, epoch, rank), each piece's rows
shuffled too. Keeping a piece on one rank for the whole run is what lets a node cache what
it reads, and the global batch is still a random draw: every step averages the gradients of
all ranks' batches. (A deal per epoch was tried first: ``make demo``'s classification accuracy
was 0.447 / 0.424 with it (train.seed 42 / 1) against 0.694 / 0.624 with a round-robin deal once
per run and 0.600 (seed 42) with this one, the other tasks alike; why is not understood.
benchmarks/README.md, "make demo before and after the read plan".)

A :class:`RankPlan` turns the step schedule (the same on every rank) into the records of
each batch: each task keeps a window of loaded rows (``data.shuffle_buffer``) and a batch
is a random draw from it, so a batch mixes rows of several pieces, shards and sources.
The plan is a pure function of (index, seed, rank, world size, step), so a resumed run
replays it to its step without reading anything, then reads only the rows still waiting
in the windows.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from unihema.config import TASKS

log = logging.getLogger(__name__)

# Rows of one task read together: small enough that a window holds several pieces (rows from
# several shards per batch) and that decoded pieces stay a few MB, large enough that a Ray
# task's overhead is spread over tens of images. data_prep writes row groups of this size.
PIECE_ROWS = 64
# A plan key is (piece number << KEY_BITS) | position in the piece: it names one row of one
# read, also when the same record is read twice (two epochs in one window).
KEY_BITS = 16


class NoRecordsForRankError(RuntimeError):
    """A task has fewer training records than there are ranks."""


@dataclass
class ShardIndex:
    """Every task's pieces in a split's shards, and the shards that could not be read."""

    paths: list[str]
    # task -> list of (file number, row group, row offsets in the row group), in file order
    pieces: dict[str, list[tuple[int, int, np.ndarray]]]
    bad: dict[str, str] = field(default_factory=dict)  # path -> reason
    row_group_rows: int = 0  # the largest row group seen (old shards: one row group per file)

    def records(self, task: str) -> int:
        return int(sum(len(rows) for _, _, rows in self.pieces.get(task, [])))

    def tasks(self) -> list[str]:
        return [t for t in TASKS if self.pieces.get(t)]


def _task_rows(path: str, fs, retries: int, backoff_s: float) -> tuple[list[dict[str, np.ndarray]], str | None]:
    """Per row group, the row offsets serving each task; or the reason the file cannot be read."""
    for attempt in range(retries):
        try:
            with fs.open_input_file(path) as f:
                parquet = pq.ParquetFile(f)
                groups = []
                for rg in range(parquet.metadata.num_row_groups):
                    tasks = parquet.read_row_group(rg, columns=["tasks"]).column("tasks").combine_chunks()
                    flat = pc.list_flatten(tasks)
                    parents = np.asarray(pc.list_parent_indices(tasks))
                    groups.append(
                        {
                            t: np.unique(parents[np.asarray(pc.equal(flat, t).fill_null(False))]).astype(np.int32)
                            for t in TASKS
                        }
                    )
                return groups, None
        except (OSError, pa.ArrowInvalid, KeyError) as err:
            if attempt == retries - 1:
                return [], f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            time.sleep(backoff_s * 2**attempt)
    return [], "unreachable"


def build_shard_index(
    paths: list[str], fs, *, retries: int = 3, backoff_s: float = 0.5, threads: int = 16
) -> ShardIndex:
    """Read every shard's footer and ``tasks`` column once (in parallel); cut row groups into pieces."""
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(paths)))) as pool:
        found = list(pool.map(lambda p: _task_rows(p, fs, retries, backoff_s), paths))
    good, bad = [], {}
    pieces: dict[str, list] = {t: [] for t in TASKS}
    largest = 0
    for path, (groups, reason) in zip(paths, found):
        if reason is not None:
            bad[path] = reason
            log.error("shard %s unreadable after %d attempts: %s", path, retries, reason)
            continue
        file_no = len(good)
        good.append(path)
        for rg, by_task in enumerate(groups):
            for task, rows in by_task.items():
                largest = max(largest, len(rows))
                for start in range(0, len(rows), PIECE_ROWS):
                    pieces[task].append((file_no, rg, rows[start : start + PIECE_ROWS]))
    if largest > 4 * PIECE_ROWS:
        log.warning(
            "shards have row groups of up to %d rows: each read of %d rows decompresses the whole "
            "row group (re-convert with this data_prep for row groups of %d)",
            largest,
            PIECE_ROWS,
            PIECE_ROWS,
        )
    return ShardIndex(good, {t: p for t, p in pieces.items() if p}, bad, largest)


@dataclass
class ReadUnit:
    """One read of the plan: rows of one row group, decoded for one task, with their plan keys."""

    task: str
    file: int
    row_group: int
    rows: np.ndarray  # offsets in the row group
    keys: np.ndarray  # plan key of each row
    epoch: int  # the task's epoch on this rank: augmentations depend on it

    def to_item(self) -> dict:
        return {
            "task": self.task,
            "file": self.file,
            "row_group": self.row_group,
            "rows": self.rows.tolist(),
            "keys": self.keys.tolist(),
            "epoch": self.epoch,
        }


class RankPlan:
    """The records of each of one rank's batches, for a given order of tasks.

    ``next_batch(task)`` returns the plan keys of the next batch of ``task``; the
    :class:`ReadUnit` s it needed are collected in ``pending`` (in the order they must be
    read) until the caller takes them with :meth:`take_pending`.
    """

    def __init__(
        self,
        index: ShardIndex,
        tasks: list[str],
        *,
        batch_size: int,
        window: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epochs: int | None = None,
    ):
        missing = [t for t in tasks if not index.pieces.get(t)]
        if missing:
            raise NoRecordsForRankError(
                f"no training records for {', '.join(missing)} in the shards ({len(index.paths)} readable)"
            )
        self.index, self.batch_size, self.window = index, batch_size, window
        self.rank, self.world_size, self.seed, self.epochs = rank, world_size, seed, epochs
        self._queue: dict[str, list] = {t: [] for t in tasks}  # this epoch's pieces still to read
        self._epoch = {t: -1 for t in tasks}
        self._share: dict[str, list] = {}  # task -> this rank's pieces, dealt once
        self._buffer: dict[str, list[int]] = {t: [] for t in tasks}
        self._rng = np.random.default_rng([seed, rank, 0x9E37])
        self.units_made = 0
        self.pending: list[ReadUnit] = []

    def epoch_of(self, task: str) -> int:
        return max(self._epoch[task], 0)

    def _deal(self, task: str) -> list[tuple[int, int, np.ndarray]]:
        """This rank's pieces of ``task`` for the whole run: each piece, in a seeded order, to the emptiest rank."""
        pieces = self.index.pieces[task]
        order = np.random.default_rng([self.seed, TASKS.index(task)]).permutation(len(pieces))
        dealt = [pieces[i] for i in order]
        if len(dealt) < self.world_size:  # too few pieces to give every rank one: cut them smaller
            parts = math.ceil(self.world_size / len(dealt))
            dealt = [(f, rg, part) for f, rg, rows in dealt for part in np.array_split(rows, parts) if len(part)]
        ranks = [(0, r) for r in range(self.world_size)]  # (rows so far, rank): ties go to the lower rank
        mine = []
        for piece in dealt:
            rows, rank = heapq.heappop(ranks)
            if rank == self.rank:
                mine.append(piece)
            heapq.heappush(ranks, (rows + len(piece[2]), rank))
        return mine

    def rank_pieces(self, task: str, epoch: int) -> list[tuple[int, int, np.ndarray]]:
        """This rank's share of a task's pieces (the same every epoch) in ``epoch``'s order, rows shuffled."""
        if task not in self._share:
            self._share[task] = self._deal(task)
        mine = self._share[task]
        if not mine:
            raise NoRecordsForRankError(
                f"task {task!r} has {self.index.records(task)} training records, fewer than the "
                f"{self.world_size} workers: rank {self.rank} would get none (lower train.num_workers or add data)"
            )
        rng = np.random.default_rng([self.seed, TASKS.index(task), epoch, self.rank])
        epoch_order = [mine[i] for i in rng.permutation(len(mine))]
        return [(f, rg, rows[rng.permutation(len(rows))]) for f, rg, rows in epoch_order]

    def _load(self, task: str) -> bool:
        """Queue the next piece of ``task`` for reading and put its keys in the window.

        False once a bounded plan's last epoch has no piece left.
        """
        if not self._queue[task]:
            if self.epochs is not None and self._epoch[task] + 1 >= self.epochs:
                return False
            self._epoch[task] += 1
            self._queue[task] = self.rank_pieces(task, self._epoch[task])[::-1]
        file_no, rg, rows = self._queue[task].pop()
        keys = (np.int64(self.units_made) << KEY_BITS) + np.arange(len(rows), dtype=np.int64)
        self.units_made += 1
        self.pending.append(ReadUnit(task, file_no, rg, rows, keys, self._epoch[task]))
        self._buffer[task].extend(keys.tolist())
        return True

    def next_batch(self, task: str) -> list[int] | None:
        """Plan keys of the next batch of ``task`` (None once a bounded plan has no rows left)."""
        buffer = self._buffer[task]
        while len(buffer) < self.batch_size + self.window and self._load(task):
            pass
        if not buffer:
            return None
        take = min(self.batch_size, len(buffer))
        picks = self._rng.choice(len(buffer), size=take, replace=False)
        keys = [buffer[i] for i in picks]
        for i in sorted(picks.tolist(), reverse=True):
            buffer[i] = buffer[-1]
            buffer.pop()
        return keys

    def take_pending(self) -> list[ReadUnit]:
        units, self.pending = self.pending, []
        return units

    def waiting_rows(self, units: list[ReadUnit]) -> list[ReadUnit]:
        """``units`` cut down to the rows still in the windows (a resumed run reads only those)."""
        waiting = {k for keys in self._buffer.values() for k in keys}
        kept = []
        for unit in units:
            mask = np.fromiter((int(k) in waiting for k in unit.keys), bool, len(unit.keys))
            if mask.any():
                kept.append(
                    ReadUnit(unit.task, unit.file, unit.row_group, unit.rows[mask], unit.keys[mask], unit.epoch)
                )
        return kept
