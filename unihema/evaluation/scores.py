"""Metrics over gathered predictions, computed with the standard libraries.

- classification, morphology, linear probe: scikit-learn (accuracy, weighted / macro F1,
  confusion matrix, precision-recall curves);
- detection: pycocotools (in :class:`unihema.evaluation.evaluators.DetectionEvaluator`);
- VQA: exact match, sacrebleu corpus BLEU-1..4, rouge-score ROUGE-L;
- segmentation: Dice and IoU from the pixel confusion matrix (per class and foreground).

Every function takes plain arrays / lists and returns a JSON-ready dict, so it is tested on
hand-computed cases without a model.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from unihema.errors import require


def classification_scores(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> dict:
    """Accuracy, weighted and macro F1 over the classes present in targets or predictions, and the
    confusion matrix (rows = truth, columns = prediction) over those classes."""
    metrics = require("sklearn.metrics", "classification metrics")
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.size == 0:
        return {}
    present = np.union1d(y_true, y_pred)
    cm = metrics.confusion_matrix(y_true, y_pred, labels=present)
    majority = np.bincount(y_true).max()
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": expected, and handled
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(metrics.balanced_accuracy_score(y_true, y_pred))
    return {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "weighted_f1": float(metrics.f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)),
        "macro_f1": float(metrics.f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "balanced_accuracy": balanced,
        "chance_accuracy": float(majority / y_true.size),
        "count": int(y_true.size),
        "labels": [class_names[i] for i in present],
        "confusion_matrix": cm.tolist(),
    }


def precision_recall_curves(
    y_true: Sequence[int], probs: np.ndarray, class_names: Sequence[str], max_classes: int = 8
) -> dict:
    """One-vs-rest precision-recall curves (scikit-learn) of the most frequent true classes,
    and the micro-average over all classes; each with its average precision."""
    metrics = require("sklearn.metrics", "precision-recall curves")
    y_true = np.asarray(y_true, np.int64)
    probs = np.asarray(probs, np.float64)
    if y_true.size == 0:
        return {}
    onehot = np.zeros_like(probs, dtype=bool)
    onehot[np.arange(y_true.size), y_true] = True
    curves = {}
    p, r, _ = metrics.precision_recall_curve(onehot.ravel(), probs.ravel())
    curves["micro-average"] = {
        "precision": p.tolist(),
        "recall": r.tolist(),
        "ap": float(metrics.average_precision_score(onehot.ravel(), probs.ravel())),
    }
    for c in np.argsort(-np.bincount(y_true, minlength=probs.shape[1]))[:max_classes]:
        if not onehot[:, c].any():
            break
        p, r, _ = metrics.precision_recall_curve(onehot[:, c], probs[:, c])
        curves[class_names[c]] = {
            "precision": p.tolist(),
            "recall": r.tolist(),
            "ap": float(metrics.average_precision_score(onehot[:, c], probs[:, c])),
        }
    return curves


def binary_attribute_scores(y_true: Sequence[int], y_pred: Sequence[int], names: Sequence[str]) -> dict:
    """Per attribute (targets 0/1, anything else = not annotated and left out): F1 of the positive value,
    macro F1 over both values, accuracy and count; overall macro F1 = mean of the attributes' macro F1."""
    metrics = require("sklearn.metrics", "morphology metrics")
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.size == 0:
        return {}
    y_true = y_true.reshape(-1, len(names))
    y_pred = y_pred.reshape(-1, len(names))
    per = {}
    for a, name in enumerate(names):
        keep = (y_true[:, a] == 0) | (y_true[:, a] == 1)
        if not keep.any():
            continue
        t, p = y_true[keep, a], y_pred[keep, a]
        positives = int(t.sum())
        per[name] = {
            "f1": float(metrics.f1_score(t, p, pos_label=1, average="binary", zero_division=0)),
            "macro_f1": float(metrics.f1_score(t, p, labels=[0, 1], average="macro", zero_division=0)),
            "accuracy": float(metrics.accuracy_score(t, p)),
            # Constant majority guess: its macro F1 is half the F1 of always answering the majority value.
            "chance_macro_f1": float(
                metrics.f1_score(
                    t, np.full_like(t, int(positives * 2 >= t.size)), labels=[0, 1], average="macro", zero_division=0
                )
            ),
            "count": int(t.size),
            "positives": positives,
        }
    if not per:
        return {}
    return {
        "macro_f1": float(np.mean([v["macro_f1"] for v in per.values()])),
        "mean_f1": float(np.mean([v["f1"] for v in per.values()])),
        "accuracy": float(np.mean([v["accuracy"] for v in per.values()])),
        "chance_macro_f1": float(np.mean([v["chance_macro_f1"] for v in per.values()])),
        "count": int(sum(v["count"] for v in per.values())),
        "per_attribute": per,
    }


def normalize_answer(text: str) -> str:
    """The exact-match normalisation of training validation: trimmed, lower case."""
    return text.strip().lower()


def text_scores(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Exact match, corpus BLEU-1..4 (sacrebleu, 13a tokenisation, lower-cased) and mean ROUGE-L F1 (rouge-score)."""
    if not references:
        return {}
    sacrebleu = require("sacrebleu.metrics", "VQA BLEU")
    rouge = require("rouge_score.rouge_scorer", "VQA ROUGE-L")
    preds = [normalize_answer(p) for p in predictions]
    refs = [normalize_answer(r) for r in references]
    out = {"exact_match": float(np.mean([p == r for p, r in zip(preds, refs)]))}
    for n in range(1, 5):
        bleu = sacrebleu.BLEU(max_ngram_order=n, lowercase=True)
        out[f"bleu{n}"] = float(bleu.corpus_score(preds, [refs]).score / 100.0)
    scorer = rouge.RougeScorer(["rougeL"], use_stemmer=False)
    out["rouge_l"] = float(np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)]))
    counts = np.unique(refs, return_counts=True)[1]
    out["chance_exact_match"] = float(counts.max() / len(refs))
    out["count"] = len(refs)
    return out


def segmentation_scores(confusion: np.ndarray, class_names: Sequence[str]) -> dict:
    """Dice and IoU per class and of the foreground (every class but the first) from a pixel
    confusion matrix (rows = truth, columns = prediction)."""
    cm = np.asarray(confusion, np.float64)
    total = cm.sum()
    if total == 0:
        return {}

    def dice_iou(tp, fp, fn):
        dice = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
        iou = tp / (tp + fp + fn) if (tp + fp + fn) else 1.0
        return float(dice), float(iou)

    per = {}
    for c, name in enumerate(class_names):
        tp = cm[c, c]
        d, i = dice_iou(tp, cm[:, c].sum() - tp, cm[c, :].sum() - tp)
        per[name] = {"dice": d, "iou": i, "pixels": int(cm[c, :].sum())}
    fg_tp = cm[1:, 1:].sum()
    dice, iou = dice_iou(fg_tp, cm[0, 1:].sum(), cm[1:, 0].sum())
    fg = cm[1:, :].sum()
    return {
        "dice": dice,
        "iou": iou,
        "miou": float(np.mean([v["iou"] for v in per.values()])),
        "pixel_accuracy": float(np.trace(cm) / total),
        "chance_dice": float(2 * fg / (total + fg)),
        "pixels": int(total),
        "per_class": per,
    }
