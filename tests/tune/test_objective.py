"""The sweep objective: chance normalization, task weights, the floor, and the report callback."""

import math
from types import SimpleNamespace

import pytest

from unihema.config import TASKS, TaskMix, load_config
from unihema.tune.objective import OBJECTIVE, normalize, score, score_report


def report(**values) -> dict:
    """Worker-style metrics: ``task=(metric, chance)`` becomes val_<task>_<headline> and its chance."""
    from unihema.tune.objective import chance_key, metric_key

    out = {"step": 3}
    for task, (metric, chance) in values.items():
        out[metric_key(task)] = metric
        out[chance_key(task)] = chance
    return out


def test_normalize_rescales_headroom_above_chance():
    """A metric maps to its share of the headroom above chance: chance -> 0, perfect -> 1."""
    assert normalize(0.5, 0.5) == 0.0
    assert normalize(1.0, 0.5) == 1.0
    assert normalize(0.75, 0.5) == pytest.approx(0.5)
    assert normalize(0.3, 0.0) == pytest.approx(0.3)


def test_normalize_clips_and_scores_missing_as_zero():
    """Below chance clips to 0; a missing, NaN or non-numeric metric scores 0; absent chance means 0."""
    assert normalize(0.2, 0.6) == 0.0
    assert normalize(None, 0.5) == 0.0
    assert normalize(float("nan"), 0.1) == 0.0
    assert normalize("0.9", 0.1) == 0.0
    assert normalize(0.4, None) == pytest.approx(0.4)


def test_normalize_when_chance_is_already_perfect():
    """With a chance level of 1 (one-class validation data) only matching it scores."""
    assert normalize(1.0, 1.0) == 1.0
    assert normalize(0.0, 1.0) == 0.0


def test_objective_is_the_weighted_mean_of_task_scores():
    """The objective weighs each task's normalized score by tune.objective and divides by the weight sum."""
    metrics = report(
        detection=(0.5, 0.0),
        classification=(0.75, 0.5),
        segmentation=(0.1, 0.4),
        morphology=(1.0, 0.5),
        vqa=(0.0, 0.25),
        mlm=(0.6, 0.2),
    )
    weights = {"detection": 2.0, "classification": 1.0, "morphology": 1.0}
    result = score(metrics, weights)
    assert result.objective == pytest.approx((2 * 0.5 + 0.5 + 1.0) / 4)
    assert set(result.tasks) == set(TASKS)  # unjudged tasks are still scored for the table
    assert result.tasks["mlm"] == pytest.approx(0.5) and result.tasks["segmentation"] == 0.0


def test_floor_zeroes_objective_and_names_collapsed_tasks():
    """A judged task below tune.task_floor zeroes the objective; unjudged tasks never trip it."""
    metrics = report(
        detection=(0.5, 0.0),
        classification=(0.52, 0.5),
        segmentation=(0.0, 0.5),
        morphology=(0.9, 0.5),
        vqa=(0.9, 0.5),
        mlm=(0.9, 0.5),
    )
    weights = TaskMix(segmentation=0.0)
    judged = score(metrics, weights, floor=0.1)
    assert judged.objective == 0.0 and judged.below_floor == ("classification",)
    fine = score(metrics, TaskMix(segmentation=0.0, classification=0.0), floor=0.1)
    assert fine.objective > 0 and fine.below_floor == ()


def test_missing_task_counts_as_collapsed():
    """A judged task absent from the report scores 0, so it cannot drop out of the objective unnoticed."""
    metrics = report(detection=(1.0, 0.0))
    assert score(metrics, {"detection": 1.0, "vqa": 1.0}).objective == pytest.approx(0.5)
    assert score(metrics, {"detection": 1.0, "vqa": 1.0}, floor=0.01).below_floor == ("vqa",)


def test_score_report_keeps_metrics_and_adds_flat_scalars():
    """The forwarded report keeps every worker metric and adds the objective, task scores and floor count."""
    cfg = load_config("tiny")
    metrics = report(**{t: (0.5, 0.0) for t in TASKS})
    out = score_report(metrics, cfg.tune)
    assert {k: out[k] for k in metrics} == metrics
    assert out[OBJECTIVE] == pytest.approx(0.5) and out["tasks_below_floor"] == 0
    assert all(isinstance(out[f"score_{t}"], float) for t in TASKS) and out["min_task_score"] == 0.5


def test_report_callback_forwards_scored_metrics_and_checkpoint_path():
    """Each Train report reaches Tune's queue with the objective added and the checkpoint path attached."""
    from unihema.tune.trial import ObjectiveReportCallback

    class Queue:
        def __init__(self):
            self.items = []

        def put(self, item):
            self.items.append(item)

    cfg = load_config("tiny")
    callback = ObjectiveReportCallback.__new__(ObjectiveReportCallback)  # no Tune session needed
    callback._training_actor_item_queue, callback._tune_cfg = Queue(), cfg.tune
    rank0 = report(**{t: (0.25, 0.0) for t in TASKS})
    callback.after_report(None, [rank0, {"step": 3}], SimpleNamespace(path="/runs/t/checkpoint_1"))
    (sent,) = callback._training_actor_item_queue.items
    assert sent[OBJECTIVE] == pytest.approx(0.25) and sent["checkpoint_path"] == "/runs/t/checkpoint_1"
    assert sent["step"] == 3 and math.isclose(sent["score_vqa"], 0.25)
