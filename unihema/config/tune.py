"""Ray Tune sweep settings: which config paths to search and how trials are judged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from unihema.config.data import TaskMix
from unihema.config.model import NON_NEGATIVE, POSITIVE


@dataclass
class TuneConfig:
    num_samples: int = field(default=16, metadata=POSITIVE)
    scheduler: Literal["asha", "fifo"] = "asha"
    searcher: Literal["random", "grid", "optuna"] = "random"
    # Config paths searched, each sampled log-uniformly in [weight_min, weight_max].
    search: tuple[str, ...] = (
        "loss.detection",
        "loss.classification",
        "loss.segmentation",
        "loss.morphology",
        "loss.vqa",
        "loss.mlm",
    )
    weight_min: float = field(default=0.25, metadata={"min": 0.0})
    weight_max: float = field(default=4.0, metadata={"min": 0.0})
    # Weights of the normalized per-task validation metrics in the objective.
    objective: TaskMix = field(default_factory=TaskMix)
    # A trial whose metric for any task falls below this floor scores 0.
    task_floor: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    max_steps_per_trial: int = field(default=2000, metadata=POSITIVE)
    max_concurrent_trials: int = field(default=0, metadata=NON_NEGATIVE)
    seed: int = 0

    def validate(self) -> None:
        if self.weight_min > self.weight_max:
            raise ValueError("weight_min must not exceed weight_max")
