"""Evaluation metrics against hand-computed values on tiny cases (no model, no data)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from unihema import labels
from unihema.errors import MissingDependencyError, require
from unihema.evaluation import scores
from unihema.evaluation.evaluators import (
    ClassificationEvaluator,
    DetectionEvaluator,
    MorphologyEvaluator,
    SegmentationEvaluator,
)

N_DET = len(labels.DETECTION_CLASSES)


def test_classification_scores_hand_computed():
    """Accuracy 3/4, macro F1 (2/3+2/3+1)/3, weighted F1 3/4 and the confusion matrix of a 4-cell case."""
    out = scores.classification_scores([0, 0, 1, 2], [0, 1, 1, 2], labels.CELL_CLASSES)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["macro_f1"] == pytest.approx(7 / 9)
    assert out["weighted_f1"] == pytest.approx(0.75)
    assert out["chance_accuracy"] == pytest.approx(0.5)
    assert out["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert out["labels"] == list(labels.CELL_CLASSES[:3])


class _Fixed(torch.nn.Module):
    """A stand-in model that returns fixed outputs."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, batch):
        return self.out


def _box(cx, cy, w, h):
    return [cx, cy, w, h]


def test_detection_map_and_per_class_ap_hand_computed():
    """One exact box (AP 1) and one at IoU 0.68 (passes 4 of 10 COCO thresholds: AP 0.4): mAP 0.7, mAP50 1."""
    logits = torch.full((1, 2, N_DET), -10.0)
    logits[0, 0, 0] = 5.0
    logits[0, 1, 1] = 5.0
    # Ground truth in a 100 x 100 image: class 0 at (20,20)-(40,40), class 1 at (60,60)-(80,80).
    gt = torch.tensor([_box(0.3, 0.3, 0.2, 0.2), _box(0.7, 0.7, 0.2, 0.2)])
    pred = torch.tensor([[_box(0.3, 0.3, 0.2, 0.2), _box(0.72, 0.72, 0.2, 0.2)]])  # (62,62)-(82,82): IoU 324/476
    evaluator = DetectionEvaluator()
    evaluator.process(
        _Fixed({"pred_logits": logits, "pred_boxes": pred}),
        {"targets": [{"boxes": gt, "labels": torch.tensor([0, 1]), "size": torch.tensor([100, 100])}]},
    )
    values = evaluator.compute()
    assert values["map50"] == pytest.approx(1.0)
    assert values["map"] == pytest.approx(0.7, abs=1e-6)
    per = values["per_class"]
    assert set(per) == {labels.DETECTION_CLASSES[0], labels.DETECTION_CLASSES[1]}
    assert per[labels.DETECTION_CLASSES[0]]["ap"] == pytest.approx(1.0)
    assert per[labels.DETECTION_CLASSES[1]]["ap"] == pytest.approx(0.4)
    assert per[labels.DETECTION_CLASSES[1]]["ap50"] == pytest.approx(1.0)
    assert len(evaluator.artifacts()["pr_curves"]["recall"]) == 101


def _perfect_detections(metric, boxes, size):
    """Each image's ground truth predicted exactly, as class 0."""
    logits = torch.full((1, len(boxes), N_DET), -10.0)
    logits[0, :, 0] = 5.0
    gt = torch.tensor(boxes)
    metric.process(
        _Fixed({"pred_logits": logits, "pred_boxes": gt[None]}),
        {"targets": [{"boxes": gt, "labels": torch.zeros(len(boxes), dtype=torch.long), "size": torch.tensor(size)}]},
    )


def test_detection_chance_is_the_image_blind_pairing():
    """Detections scored against the next image's ground truth: a layout that differs between
    the images earns nothing, the same layout (at another image size) earns everything."""
    differing = DetectionEvaluator()
    _perfect_detections(differing, [_box(0.2, 0.2, 0.1, 0.1)], (100, 100))
    _perfect_detections(differing, [_box(0.8, 0.8, 0.1, 0.1)], (100, 100))
    values = differing.compute()
    assert values["map50"] == pytest.approx(1.0) and values["chance_map50"] == 0.0
    same = DetectionEvaluator()
    _perfect_detections(same, [_box(0.5, 0.5, 0.2, 0.2)], (100, 100))
    _perfect_detections(same, [_box(0.5, 0.5, 0.2, 0.2)], (60, 200))
    assert same.compute()["chance_map50"] == pytest.approx(1.0)
    single = DetectionEvaluator()
    _perfect_detections(single, [_box(0.5, 0.5, 0.2, 0.2)], (100, 100))
    assert single.compute()["chance_map50"] == 0.0  # nothing to pair with


def test_segmentation_scores_from_confusion():
    """Foreground Dice 2*3/(6+2+1), IoU 3/6; background Dice 12/15; mean IoU over both classes."""
    out = scores.segmentation_scores(np.array([[6, 2], [1, 3]]), labels.SEGMENTATION_CLASSES)
    assert out["dice"] == pytest.approx(2 / 3)
    assert out["iou"] == pytest.approx(0.5)
    assert out["per_class"]["background"]["dice"] == pytest.approx(0.8)
    assert out["miou"] == pytest.approx((0.5 + 6 / 9) / 2)
    assert out["pixel_accuracy"] == pytest.approx(9 / 12)


def test_segmentation_evaluator_ignores_padding_and_merges_like_one_pass():
    """Ignore-index pixels are left out; two ranks' statistics merged score what one pass over both scores."""
    target = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1], [255, 255, 255, 255]]])
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 1] = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float) * 2 - 1
    model = _Fixed({"semantic_logits": logits})
    evaluator = SegmentationEvaluator()
    evaluator.process(model, {"semantic_masks": target})
    out = evaluator.compute()
    # Valid 12 pixels: truth fg {2,3,5,6,7,11} (6), pred fg {1,2,5,6,7} (5), overlap {2,5,6,7} (4).
    assert out["dice"] == pytest.approx(2 * 4 / (6 + 5))
    assert out["pixels"] == 12 and out["count"] == 1
    flipped = 1 - target.clamp(max=1) + (target == 255) * 255  # another rank's image: foreground inverted
    one_pass = SegmentationEvaluator()
    other = SegmentationEvaluator()
    for batch in ({"semantic_masks": target}, {"semantic_masks": flipped}):
        one_pass.process(model, batch)
    other.process(model, {"semantic_masks": flipped})
    evaluator.merge(other.state())
    assert evaluator.compute() == one_pass.compute() and evaluator.compute()["count"] == 2
    assert evaluator.compute()["dice"] != pytest.approx(out["dice"])


def test_classification_evaluator_merges_like_one_pass():
    """Unlabelled cells (-1) are left out; statistics of two ranks merged give one pass's accuracy and F1."""
    logits = torch.eye(4, len(labels.CELL_CLASSES)) * 5  # predicts classes 0, 1, 2, 3
    first, second = torch.tensor([0, 1, -1, 0]), torch.tensor([0, 2, 2, 3])
    one_pass, rank0, rank1 = ClassificationEvaluator(), ClassificationEvaluator(), ClassificationEvaluator()
    model = _Fixed({"cell_logits": logits})
    for evaluator, batches in ((one_pass, (first, second)), (rank0, (first,)), (rank1, (second,))):
        for cell_labels in batches:
            evaluator.process(model, {"cell_labels": cell_labels})
    rank0.merge(rank1.state())
    merged = rank0.compute()
    assert merged == one_pass.compute()
    # Right: rows 0 and 1 of the first batch (row 3 says 3, truth 0), rows 0, 2 and 3 of the second.
    assert merged["count"] == 7 and merged["accuracy"] == pytest.approx(5 / 7)


def test_morphology_scores_skip_not_annotated():
    """Only annotated attributes count: 3 valid labels of the first attribute give F1 2/3 both ways."""
    na = labels.MORPHOLOGY_NOT_ANNOTATED
    y_true = [[1, na, na, na, na, na], [0, na, na, na, na, na], [1, na, na, na, na, na], [na] * 6]
    y_pred = [[1, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]]
    out = scores.binary_attribute_scores(y_true, y_pred, labels.MORPHOLOGY_NAMES)
    assert list(out["per_attribute"]) == [labels.MORPHOLOGY_NAMES[0]]
    first = out["per_attribute"][labels.MORPHOLOGY_NAMES[0]]
    assert first["f1"] == pytest.approx(2 / 3)
    assert first["macro_f1"] == pytest.approx(2 / 3)
    assert first["count"] == 3
    assert out["macro_f1"] == pytest.approx(2 / 3)


def test_morphology_evaluator_matches_boxes_one_to_one():
    """Annotated cells take the attributes of their best-overlapping query (IoU >= 0.5); unmatched ones are counted."""
    na = labels.MORPHOLOGY_NOT_ANNOTATED
    gt = torch.tensor([_box(0.3, 0.3, 0.2, 0.2), _box(0.7, 0.7, 0.2, 0.2), _box(0.1, 0.9, 0.05, 0.05)])
    morph = torch.tensor([[1, 0] + [na] * 4, [0, 0] + [na] * 4, [1, 1] + [na] * 4])
    pred_boxes = torch.tensor([[_box(0.72, 0.72, 0.2, 0.2), _box(0.9, 0.1, 0.1, 0.1), _box(0.3, 0.3, 0.2, 0.2)]])
    pred_morph = torch.full((1, 3, 6), -3.0)
    pred_morph[0, 2, :2] = 3.0  # the query on the first cell says (1, 1); the one on the second says (0, 0)
    model = _Fixed({"pred_boxes": pred_boxes, "pred_morphology": pred_morph})
    batch = {
        "morphology": torch.full((1, 6), na),
        "targets": [{"boxes": gt, "morphology": morph, "size": torch.tensor([100, 100])}],
    }
    evaluator = MorphologyEvaluator()
    evaluator.process(model, batch)
    out = evaluator.compute()
    boxes = out["sources"]["boxes"]
    assert (boxes["annotated"], boxes["matched"]) == (3, 2)
    per = out["per_attribute"]
    assert per[labels.MORPHOLOGY_NAMES[0]]["f1"] == pytest.approx(1.0)  # truth (1, 0), predicted (1, 0)
    assert per[labels.MORPHOLOGY_NAMES[1]]["f1"] == pytest.approx(0.0)  # truth (0, 0), predicted (1, 0)
    assert per[labels.MORPHOLOGY_NAMES[1]]["macro_f1"] == pytest.approx(1 / 3)


def test_text_scores_hand_computed():
    """Exact match 1/2, BLEU-1 3/4, BLEU-2 sqrt(3/4 * 1/2), ROUGE-L mean(2/3, 1) on two answers."""
    out = scores.text_scores(["a b c", " Yes"], ["a b d", "yes"])
    assert out["exact_match"] == pytest.approx(0.5)
    assert out["bleu1"] == pytest.approx(0.75, abs=1e-6)
    assert out["bleu2"] == pytest.approx(np.sqrt(0.75 * 0.5), abs=1e-6)
    assert 0.0 <= out["bleu4"] <= out["bleu3"] <= out["bleu2"]
    assert out["rouge_l"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["count"] == 2


def test_linear_probe_separable_features():
    """Logistic regression on linearly separable features scores 1.0; one train class is skipped, not fitted."""
    from unihema.evaluation.probe import linear_probe

    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    x = rng.normal(size=(40, 4)) * 0.1 + y[:, None] * 2.0
    out = linear_probe(x[:30], y[:30], x[30:], y[30:])
    assert out["accuracy"] == pytest.approx(1.0) and out["macro_f1"] == pytest.approx(1.0)
    assert out["train_count"] == 30 and out["feature_dim"] == 4
    assert "skipped" in linear_probe(x[:10], np.zeros(10, int), x[30:], y[30:])


def test_missing_package_is_named(monkeypatch):
    """A missing optional package fails with its pip name, not a bare ImportError."""
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    monkeypatch.setitem(sys.modules, "sacrebleu.metrics", None)
    with pytest.raises(MissingDependencyError, match="pip install sacrebleu"):
        require("sacrebleu.metrics")
