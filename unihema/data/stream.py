"""Worker-side stream: one Ray Data execution per worker, serving every task in the step's order.

``MultiTaskStream`` picks the task of each micro-step from the weights (weighted round-robin:
every task its exact share; a draw seeded by (seed, step); or all tasks every step), the
same on every rank. A :class:`~unihema.data.plan.RankPlan` turns that order into the
records of each batch, and one streaming Ray Data execution per window of steps reads and
decodes them in plan order (``unihema.data.pipeline.build_plan_dataset``). The worker keeps
decoded rows by plan key until their batch is due and collates it.

Its position is the micro-step count alone: a resumed stream replays the plan to that step
without reading, then reads only the rows that were still waiting in the shuffle windows,
those its first batch draws first.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from unihema.config import TASKS, UniHemaConfig
from unihema.data.collate import collate
from unihema.data.pipeline import build_plan_dataset, configure_data_context, iter_local_batches, task_files
from unihema.data.plan import RankPlan, ShardIndex, build_shard_index
from unihema.data.shards import list_shards
from unihema.storage import open_filesystem, parse_uri

log = logging.getLogger(__name__)


@dataclass
class DataStats:
    """Counters the trainer reports: rows dropped per reason, unreadable shards, time waiting."""

    errors: Counter = field(default_factory=Counter)
    bad_shards: dict = field(default_factory=dict)
    wait_s: float = 0.0
    images: int = 0
    task_images: Counter = field(default_factory=Counter)  # images this rank trained on, per task


def local_task_batches(
    task: str,
    split: str,
    cfg: UniHemaConfig,
    storage,
    *,
    rank: int = 0,
    world_size: int = 1,
    max_batches: int | None = None,
    stats: DataStats | None = None,
    shards: tuple | None = None,
):
    """One pass of collated batches decoded in this process (validation and evaluation).

    ``shards`` = (filesystem, readable paths) of the split from :func:`task_files`, when the
    caller checked them already; otherwise every shard's footer is read first.
    """
    stats = stats if stats is not None else DataStats()
    fs, files = shards if shards is not None else task_files(split, cfg.data, storage, stats.bad_shards)
    for raw in iter_local_batches(
        task,
        split,
        cfg.data,
        cfg.model,
        fs,
        files,
        batch_size=cfg.data.batch_size,
        seed=cfg.train.seed,
        rank=rank,
        world_size=world_size,
        max_batches=max_batches,
    ):
        batch = collate(raw, task, stats.errors)
        if batch is not None:
            yield batch


def task_weights(cfg: UniHemaConfig) -> dict[str, float]:
    return {t: float(getattr(cfg.data.mix, t)) for t in TASKS if getattr(cfg.data.mix, t) > 0}


class WeightedRoundRobin:
    """Smooth weighted round-robin over tasks: every window of steps gives each task its share.

    Drawing the task at random (schedule "sampled") leaves the share to luck: in 250 demo
    steps MLM drew 11 and VQA 42, and a run's results depended on what it happened to draw.
    Here each task's credit grows by its weight every step and the task with the most credit
    runs and pays the total back (nginx's smooth WRR), so after ``n`` steps each task has run
    ``n * weight / total`` times, off by less than one, interleaved rather than in blocks.
    """

    def __init__(self, weights: dict[str, float]):
        self.names = list(weights)
        self.weights = np.array([weights[t] for t in self.names], dtype=np.float64)
        self.total = float(self.weights.sum())
        self.credit = np.zeros(len(self.names))
        self.steps = 0

    def next(self) -> str:
        self.credit += self.weights
        pick = int(np.argmax(self.credit))  # ties: the task listed first
        self.credit[pick] -= self.total
        self.steps += 1
        return self.names[pick]


def build_train_index(data_cfg, storage) -> ShardIndex:
    """The shard index of the training split (read once per run; the driver hands it to the workers)."""
    fs, _ = open_filesystem(parse_uri(data_cfg.uri), storage)
    paths = list_shards(data_cfg.uri, "train", storage)
    if not paths:
        raise FileNotFoundError(f"no train shards under {data_cfg.uri}")
    index = build_shard_index(paths, fs)
    if not index.paths:
        raise FileNotFoundError(f"no readable train shards under {data_cfg.uri} (unreadable: {sorted(index.bad)})")
    return index


# Rows of a decoded block that travel to collate; text_labels only for the text tasks.
_COLUMNS = (
    "id",
    "error",
    "image",
    "boxes",
    "labels",
    "box_morphology",
    "packed_masks",
    "semantic",
    "cell_label",
    "morphology",
    "has_morphology",
    "prompt_ids",
    "prompt_mask",
)


def _owned(value):
    """A row's value that does not keep its whole decoded block alive.

    Rows wait in the shuffle windows for tens of steps, drawn at random; a view into a
    block's 4-D image array would pin all 16 images of the block until its last row is
    drawn (about 3.5x the window's own bytes at batch 8 and window 256, by the expected
    lifetime of a block's last row).
    """
    if isinstance(value, np.ndarray) and value.base is not None:
        return value.copy()
    return value


class MultiTaskStream:
    """Endless (task, batch) pairs for one rank, the task of each micro-step from ``train.task_schedule``.

    ``tasks`` (task -> weight) overrides the config's mix and ``epochs`` bounds each task's
    passes (a bounded stream stops when a task runs out): both for benchmarks and tests.
    """

    def __init__(
        self,
        cfg: UniHemaConfig,
        storage,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_step: int = 0,
        index: ShardIndex | None = None,
        tasks: dict[str, float] | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        window_steps: int = 1024,
    ):
        self.cfg, self.rank = cfg, rank
        self.weights = dict(tasks) if tasks is not None else task_weights(cfg)
        self.schedule = cfg.train.task_schedule if tasks is None else "round_robin"
        self.seed = seed
        self.window_steps = window_steps
        self.stats = DataStats()
        configure_data_context(cfg.data)
        self.index = index if index is not None else build_train_index(cfg.data, storage)
        self.stats.bad_shards.update(self.index.bad)
        self.fs, _ = open_filesystem(parse_uri(cfg.data.uri), storage)
        self.plan = RankPlan(
            self.index,
            list(self.weights),
            batch_size=batch_size or cfg.data.batch_size,
            window=cfg.data.shuffle_buffer,
            rank=rank,
            world_size=world_size,
            seed=seed,
            epochs=epochs,
        )
        names = list(self.weights)
        probs = np.array([self.weights[t] for t in names])
        self._names, self._probs = names, probs / probs.sum()
        self._round_robin = WeightedRoundRobin(self.weights)
        self._round_robin_order: list[str] = []
        self._planned: dict[str, deque] = {t: deque() for t in names}
        self._plan_step = 0  # micro-steps planned (ahead of those served)
        self._exhausted: set[str] = set()
        self._rows: dict[int, dict] = {}  # plan key -> decoded row, waiting for its batch
        self._blocks = None  # the current execution's block iterator
        self._unread: deque[list] = deque()  # read units not yet handed to an execution
        self.step = 0
        # Micro-steps each task has had since the run began; a resumed run replays the
        # schedule and the plan up to where it stopped (no data is read), so counts and order continue.
        self.task_steps: Counter = Counter()
        self.resume_reads: list = []  # read units a resume must read again (rows still in the windows)
        self.resume_first_reads: list = []  # read units a resume reads before its first batch
        if start_step:
            self._replay(start_step)

    # --- the order of tasks -------------------------------------------------------------
    def task_for_step(self, step: int) -> str:
        """The task of micro-step ``step``: identical on every rank, so all workers run the same heads.

        Schedule "round_robin" follows :class:`WeightedRoundRobin`; "sampled" draws it from
        the weights (seeded by step); "all" cycles through the tasks in a fixed order, one
        micro-batch of each per optimizer step.
        """
        if self.schedule == "all":
            return self._names[step % len(self._names)]
        if self.schedule == "round_robin":
            while len(self._round_robin_order) <= step:
                self._round_robin_order.append(self._round_robin.next())
            return self._round_robin_order[step]
        return self._names[int(np.random.default_rng([self.seed, step]).choice(len(self._names), p=self._probs))]

    # --- planning and reading -------------------------------------------------------------
    def _plan_steps(self, count: int) -> None:
        for _ in range(count):
            task = self.task_for_step(self._plan_step)
            self._plan_step += 1
            if task in self._exhausted:
                continue
            keys = self.plan.next_batch(task)
            if keys is None:
                self._exhausted.add(task)
            else:
                self._planned[task].append(keys)

    def _replay(self, start_step: int) -> None:
        """Replay the plan to ``start_step`` without reading, then queue the reads in the order they are needed.

        The rows still waiting in the windows come from a few hundred partly drawn pieces
        (the whole window is drawn only over the next few hundred steps). Read in plan order,
        the first batch waited for all of them; here the reads the first step needs form
        their own execution and the rest follow in the order their rows are drawn.
        """
        self._plan_steps(start_step)
        for task in self._names:
            self.task_steps[task] = len(self._planned[task])
            self._planned[task].clear()
        self.task_steps = Counter({t: n for t, n in self.task_steps.items() if n})
        self.step = start_step
        waiting = self.plan.waiting_rows(self.plan.take_pending())
        self.resume_reads = list(waiting)
        self._plan_steps(self.window_steps)
        units = waiting + self.plan.take_pending()
        first_use = self._first_use(start_step)
        never = self._plan_step
        units.sort(key=lambda u: min((first_use.get(int(k), never) for k in u.keys), default=never))
        needed_first = [u for u in units if any(first_use.get(int(k)) == start_step for k in u.keys)]
        self.resume_first_reads = needed_first
        for execution in (needed_first, units[len(needed_first) :]):
            if execution:
                self._unread.append(execution)
        log.info(
            "rank %d: data plan replayed to step %d; %d rows still in the shuffle windows are read again, "
            "%d rows before the first batch",
            self.rank,
            start_step,
            sum(len(u.rows) for u in waiting),
            sum(len(u.rows) for u in needed_first),
        )

    def _first_use(self, first_step: int) -> dict[int, int]:
        """Plan key -> the micro-step that draws it, over the steps planned from ``first_step`` on."""
        first_use: dict[int, int] = {}
        drawn = Counter()
        for step in range(first_step, self._plan_step):
            task = self.task_for_step(step)
            if drawn[task] < len(self._planned[task]):
                for key in self._planned[task][drawn[task]]:
                    first_use.setdefault(int(key), step)
                drawn[task] += 1
        return first_use

    def _next_execution(self) -> bool:
        """Start reading the next planned units (planning another window first if none wait)."""
        if not self._unread:
            self._plan_steps(self.window_steps)
            units = self.plan.take_pending()
            if units:
                self._unread.append(units)
        if not self._unread:
            return False
        units = self._unread.popleft()
        if self._blocks is not None:
            self._blocks.close()
        ds = build_plan_dataset(units, self.index.paths, self.fs, self.cfg.data, self.cfg.model, seed=self.seed)
        self._blocks = iter(
            ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=self.cfg.data.prefetch_batches)
        )
        return True

    def _gather(self, keys: list[int], task: str) -> dict:
        for key in keys:
            while key not in self._rows:
                block = next(self._blocks, None) if self._blocks is not None else None
                if block is None:
                    if not self._next_execution():
                        raise RuntimeError(f"rank {self.rank}: planned row {key} of {task!r} was never read")
                    continue
                for i, k in enumerate(block["plan_key"].tolist()):
                    self._rows[k] = {c: _owned(block[c][i]) for c in _COLUMNS + ("text_labels",)}
        picked = [self._rows.pop(k) for k in keys]
        columns = _COLUMNS + (("text_labels",) if task in ("vqa", "mlm") else ())
        return {c: [row[c] for row in picked] for c in columns}

    def next_batch(self, task: str) -> dict | None:
        """The next collated batch of ``task`` (None once a bounded stream has no rows of it left)."""
        while True:
            while not self._planned[task]:
                if task in self._exhausted:
                    return None
                self._plan_steps(self.window_steps)
            raw = self._gather(self._planned[task].popleft(), task)
            batch = collate(raw, task, self.stats.errors)
            if batch is not None:  # every row failed: the next planned batch of the task takes its place
                self.stats.images += len(batch["ids"])
                self.stats.task_images[task] += len(batch["ids"])
                return batch

    def __iter__(self):
        return self

    def __next__(self) -> tuple[str, dict]:
        task = self.task_for_step(self.step)
        self.step += 1
        start = time.perf_counter()
        batch = self.next_batch(task)
        self.stats.wait_s += time.perf_counter() - start
        if batch is None:
            raise StopIteration
        self.task_steps[task] += 1
        return task, batch

    def close(self) -> None:
        """Stop the Ray Data execution (also done when the stream is collected)."""
        blocks = getattr(self, "_blocks", None)  # None also when __init__ failed part-way
        if blocks is not None:
            self._blocks = None
            blocks.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def positions(self) -> dict:
        return {"micro_step": self.step}


class TaskStream(MultiTaskStream):
    """Batches of one task for one rank: endless, or ``endless=False`` for one pass over its share."""

    def __init__(self, task: str, cfg: UniHemaConfig, storage, *, endless: bool = True, **kwargs):
        super().__init__(cfg, storage, tasks={task: 1.0}, epochs=None if endless else 1, **kwargs)
        self.task = task

    def __next__(self) -> dict:
        return super().__next__()[1]
