"""The sweep objective: per-task validation metrics normalized against chance, then weighted.

Raw headline metrics are not comparable across tasks: an untrained classifier already
scores the majority-class accuracy, detection starts at 0 mAP. Summing them would let a
sweep trade one task's collapse for another's easy gain without anyone noticing. Each
task's headline is therefore rescaled to "share of the headroom above chance"
(``(metric - chance) / (1 - chance)``, clipped to [0, 1]); the objective is their weighted
mean, and a floor on any judged task zeroes it. Plain functions of a metrics dict: the same
code scores each report in the Train controller (``trial.py``) and each row of the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from unihema.config import TASKS, TaskMix, TuneConfig
from unihema.evaluation.evaluators import CHANCE, HEADLINE

OBJECTIVE = "objective"


def metric_key(task: str) -> str:
    """The reported key of a task's headline validation metric (``val_detection_map50``)."""
    return f"val_{task}_{HEADLINE[task]}"


def chance_key(task: str) -> str:
    return f"val_{task}_{CHANCE[task]}"


def score_key(task: str) -> str:
    return f"score_{task}"


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def normalize(metric: float | None, chance: float | None) -> float:
    """Share of the headroom above chance a metric reaches, in [0, 1]; a missing metric scores 0."""
    metric = _number(metric)
    if metric is None:
        return 0.0
    chance = _number(chance) or 0.0
    headroom = 1.0 - chance
    if headroom <= 1e-9:
        # Guessing is already perfect on this validation data: there is nothing to measure
        # beyond matching it.
        return 1.0 if metric >= chance else 0.0
    return min(1.0, max(0.0, (metric - chance) / headroom))


@dataclass(frozen=True)
class Score:
    objective: float
    # Normalized score of every task, judged or not, so the table shows them all.
    tasks: dict[str, float]
    below_floor: tuple[str, ...]

    def as_metrics(self) -> dict:
        """Flat scalars for Tune: the objective, each task's score, and how many fell below the floor."""
        out = {
            OBJECTIVE: self.objective,
            "tasks_below_floor": len(self.below_floor),
            "min_task_score": min(self.tasks.values()) if self.tasks else 0.0,
        }
        out.update({score_key(t): v for t, v in self.tasks.items()})
        return out


def judged_weights(weights: TaskMix | dict) -> dict[str, float]:
    """Tasks with a positive objective weight: only they count, and only they face the floor."""
    values = vars(weights) if isinstance(weights, TaskMix) else dict(weights)
    return {t: float(values.get(t, 0.0)) for t in TASKS if float(values.get(t, 0.0)) > 0}


def score(metrics: dict, weights: TaskMix | dict, floor: float = 0.0) -> Score:
    """The objective of one report (keys ``val_<task>_<metric>`` as the workers send them)."""
    tasks = {t: normalize(metrics.get(metric_key(t)), metrics.get(chance_key(t))) for t in TASKS}
    judged = judged_weights(weights)
    if not judged:
        raise ValueError("the objective needs at least one task with a positive weight")
    below = tuple(t for t in judged if tasks[t] < floor) if floor > 0 else ()
    objective = 0.0 if below else sum(w * tasks[t] for t, w in judged.items()) / sum(judged.values())
    return Score(objective, tasks, below)


def score_report(metrics: dict, tune_cfg: TuneConfig) -> dict:
    """``metrics`` plus the objective fields, as sent on to Tune."""
    return {**metrics, **score(metrics, tune_cfg.objective, tune_cfg.task_floor).as_metrics()}
