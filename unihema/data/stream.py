"""Worker-side streams: one endless iterator per task, and the weighted mix of them.

``TaskStream`` rebuilds its Ray Dataset each epoch with that epoch's file order and
augmentation seeds, iterates it with a bounded local shuffle and collates batches. It
knows its position (epoch, batches taken), so a resumed run continues in the same data
epoch. ``MultiTaskStream`` picks the task of each step from the weights: by weighted round-robin
(every task its exact share), by a draw seeded by (seed, step), or all tasks every step.
Each schedule is a function of the step count alone, so every rank runs the same task.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from unihema.config import TASKS, UniHemaConfig
from unihema.data.collate import collate
from unihema.data.pipeline import build_task_dataset, configure_data_context, iter_local_batches, task_files

log = logging.getLogger(__name__)


@dataclass
class StreamPosition:
    epoch: int = 0
    batches: int = 0


@dataclass
class DataStats:
    """Counters the trainer reports: rows dropped per reason, unreadable shards, time waiting."""

    errors: Counter = field(default_factory=Counter)
    bad_shards: dict = field(default_factory=dict)
    wait_s: float = 0.0
    images: int = 0


class TaskStream:
    """Batches of one task for one worker; endless for training, one pass otherwise."""

    def __init__(self, task: str, split: str, cfg: UniHemaConfig, storage, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, position: StreamPosition | None = None, stats: DataStats | None = None,
                 batch_size: int | None = None, endless: bool | None = None):
        self.task, self.split, self.cfg, self.storage = task, split, cfg, storage
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.position = position or StreamPosition()
        self.stats = stats or DataStats()
        self.batch_size = batch_size or cfg.data.batch_size
        self.endless = split == "train" if endless is None else endless
        configure_data_context(cfg.data)
        self.fs, self.files = task_files(split, cfg.data, storage, self.stats.bad_shards)
        self._iter = None

    def _epoch_batches(self, epoch: int):
        ds = build_task_dataset(self.task, self.split, self.cfg.data, self.cfg.model, self.fs, self.files,
                                seed=self.seed, epoch=epoch, rank=self.rank, world_size=self.world_size)
        shuffle = self.cfg.data.shuffle_buffer if self.split == "train" else None
        return ds.iter_batches(batch_size=self.batch_size, batch_format="numpy",
                               prefetch_batches=self.cfg.data.prefetch_batches,
                               local_shuffle_buffer_size=shuffle or None,
                               local_shuffle_seed=(self.seed * 7919 + epoch) * 131 + self.rank if shuffle else None)

    def _raw_batches(self):
        while True:
            skip = self.position.batches
            produced = 0
            for raw in self._epoch_batches(self.position.epoch):
                produced += 1
                if produced <= skip:  # resuming inside an epoch: replay up to where the run stopped
                    continue
                self.position.batches = produced
                yield raw
            if produced == 0:
                raise RuntimeError(f"task {self.task!r} has no {self.split} records for rank {self.rank} "
                                   f"under {self.cfg.data.uri}")
            self.position = StreamPosition(self.position.epoch + 1, 0)
            if not self.endless:
                return

    def __iter__(self):
        self.close()
        self._iter = self._raw_batches()
        return self

    def close(self) -> None:
        """Stop this stream's Ray Data execution (also done when the stream is collected)."""
        if self._iter is not None:
            self._iter.close()
            self._iter = None

    def __next__(self) -> dict:
        if self._iter is None:
            iter(self)
        while True:
            start = time.perf_counter()
            raw = next(self._iter)
            batch = collate(raw, self.task, self.stats.errors)
            self.stats.wait_s += time.perf_counter() - start
            if batch is not None:
                self.stats.images += len(batch["ids"])
                return batch


def local_task_batches(task: str, split: str, cfg: UniHemaConfig, storage, *, rank: int = 0, world_size: int = 1,
                       max_batches: int | None = None, stats: DataStats | None = None):
    """One pass of collated batches decoded in this process (validation and evaluation)."""
    stats = stats if stats is not None else DataStats()
    fs, files = task_files(split, cfg.data, storage, stats.bad_shards)
    for raw in iter_local_batches(task, split, cfg.data, cfg.model, fs, files, batch_size=cfg.data.batch_size,
                                  seed=cfg.train.seed, rank=rank, world_size=world_size, max_batches=max_batches):
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


class MultiTaskStream:
    """Endless (task, batch) pairs, the task of each micro-step chosen by ``train.task_schedule``."""

    def __init__(self, cfg: UniHemaConfig, storage, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 positions: dict[str, dict] | None = None, start_step: int = 0):
        self.weights = task_weights(cfg)
        self.schedule = cfg.train.task_schedule
        self.seed = seed
        self.step = 0
        self.stats = DataStats()
        positions = positions or {}
        self.streams = {
            t: TaskStream(t, "train", cfg, storage, rank=rank, world_size=world_size, seed=seed,
                          position=StreamPosition(**positions.get(t, {})), stats=self.stats)
            for t in self.weights
        }
        names = list(self.weights)
        probs = np.array([self.weights[t] for t in names])
        self._names, self._probs = names, probs / probs.sum()
        self._round_robin = WeightedRoundRobin(self.weights)
        # Micro-steps each task has had since the run began; a resumed run replays the
        # schedule up to where it stopped (no data is read), so counts and order continue.
        self.task_steps: Counter = Counter()
        for _ in range(start_step):
            self.task_steps[self._next_task()] += 1

    def _next_task(self) -> str:
        task = self.task_for_step(self.step)
        self.step += 1
        return task

    def task_for_step(self, step: int) -> str:
        """The task of micro-step ``step``: identical on every rank, so all workers run the same heads.

        Schedule "round_robin" follows :class:`WeightedRoundRobin` (steps must be asked in
        order); "sampled" draws it from the weights (seeded by step); "all" cycles through
        the tasks in a fixed order, one micro-batch of each per optimizer step.
        """
        if self.schedule == "all":
            return self._names[step % len(self._names)]
        if self.schedule == "round_robin":
            if step != self._round_robin.steps:
                raise ValueError(f"round-robin schedule asked for step {step} at step {self._round_robin.steps}")
            return self._round_robin.next()
        return self._names[int(np.random.default_rng([self.seed, step]).choice(len(self._names), p=self._probs))]

    def __iter__(self):
        return self

    def __next__(self) -> tuple[str, dict]:
        task = self._next_task()
        self.task_steps[task] += 1
        return task, next(self.streams[task])

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()

    def positions(self) -> dict[str, dict]:
        return {t: {"epoch": s.position.epoch, "batches": s.position.batches} for t, s in self.streams.items()}
