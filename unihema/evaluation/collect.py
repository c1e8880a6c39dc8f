"""Per-task collectors: run the model on collated batches and keep what the metrics need.

A collector's ``update(model, batch)`` sees one batch of its task (the batch contract of
``unihema.model``); ``result()`` returns the task's metrics (see ``scores``) and
``artifacts()`` what the report plots (curves, examples). Predictions are gathered, not
summarised, because F1, BLEU and AP are not sums over batches.
"""

from __future__ import annotations

import numpy as np
import torch

from unihema import labels
from unihema.eval.answer_ranking import RankingTally, rank_batches
from unihema.eval.metrics import DetectionMetric, TextMetric
from unihema.evaluation import scores
from unihema.ops.boxes import box_cxcywh_to_xyxy


class DetectionCollector:
    """COCO mAP / mAP50 / mAP75, per-class AP and PR curves (pycocotools)."""

    def __init__(self, max_detections: int = 100):
        self.metric = DetectionMetric(len(labels.DETECTION_CLASSES), max_detections)
        self._details: dict = {}

    @torch.no_grad()
    def update(self, model, batch: dict, tokenizer=None) -> None:
        self.metric.update(model(batch), batch["targets"])

    def result(self) -> dict:
        evaluator = self.metric.coco_eval()
        if evaluator is None:
            return {}
        details = self.metric.details(labels.DETECTION_CLASSES, evaluator)
        self._details = details
        return {"map": max(0.0, float(evaluator.stats[0])), "map50": max(0.0, float(evaluator.stats[1])),
                "chance_map50": self.metric.chance_map50(),
                "map75": details["map75"], "count": len(self.metric.images),
                "boxes": int(sum(len(im["gt_labels"]) for im in self.metric.images)),
                "per_class": details["per_class"]}

    def artifacts(self) -> dict:
        return {"pr_curves": self._details.get("pr_curves")} if self._details else {}


class ClassificationCollector:
    """Accuracy, weighted / macro F1, confusion matrix and PR curves of the single-cell classifier."""

    def __init__(self):
        self.y_true: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []

    @torch.no_grad()
    def update(self, model, batch: dict, tokenizer=None) -> None:
        labels_ = batch["cell_labels"]
        valid = labels_ >= 0
        if not valid.any():
            return
        probs = model(batch)["cell_logits"].float().softmax(-1)
        self.y_true.append(labels_[valid].cpu().numpy())
        self.probs.append(probs[valid].cpu().numpy())

    def _arrays(self):
        return np.concatenate(self.y_true), np.concatenate(self.probs)

    def result(self) -> dict:
        if not self.y_true:
            return {}
        y_true, probs = self._arrays()
        return scores.classification_scores(y_true, probs.argmax(1), labels.CELL_CLASSES)

    def artifacts(self) -> dict:
        if not self.y_true:
            return {}
        y_true, probs = self._arrays()
        return {"pr_curves": scores.precision_recall_curves(y_true, probs, labels.CELL_CLASSES)}


class SegmentationCollector:
    """Dice and IoU from the pixel confusion matrix at the target resolution (ignore index left out)."""

    def __init__(self, ignore_index: int = labels.IGNORE_INDEX):
        self.ignore = ignore_index
        n = len(labels.SEGMENTATION_CLASSES)
        self.confusion = np.zeros((n, n), np.int64)
        self.images = 0

    @torch.no_grad()
    def update(self, model, batch: dict, tokenizer=None) -> None:
        targets = batch["semantic_masks"]
        logits = model(batch)["semantic_logits"].float()
        logits = torch.nn.functional.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        pred = logits.argmax(1)
        valid = (targets != self.ignore) & (targets >= 0) & (targets < len(self.confusion))
        n = len(self.confusion)
        idx = (targets[valid] * n + pred[valid]).cpu().numpy()
        self.confusion += np.bincount(idx, minlength=n * n).reshape(n, n)
        self.images += len(targets)

    def result(self) -> dict:
        out = scores.segmentation_scores(self.confusion, labels.SEGMENTATION_CLASSES)
        return {**out, "count": self.images} if out else {}

    def artifacts(self) -> dict:
        return {}


class MorphologyCollector:
    """Per-attribute F1 of single cells (the cell head) and of annotated cells in fields of view
    (the per-query head of the detection that best overlaps each cell, one-to-one, IoU >= 0.5)."""

    def __init__(self, match_iou: float = 0.5):
        self.match_iou = match_iou
        self.cells: tuple[list, list] = ([], [])
        self.boxes: tuple[list, list] = ([], [])
        self.annotated_boxes = 0

    @torch.no_grad()
    def update(self, model, batch: dict, tokenizer=None) -> None:
        from scipy.optimize import linear_sum_assignment
        from torchvision.ops import box_iou

        out = model(batch)
        targets = batch["morphology"]
        annotated = (targets != labels.MORPHOLOGY_NOT_ANNOTATED).any(1)
        if "cell_morphology" in out and annotated.any():
            self.cells[0].append(targets[annotated].cpu().numpy())
            self.cells[1].append((out["cell_morphology"][annotated] > 0).long().cpu().numpy())
        if "pred_morphology" not in out:
            return
        for i, target in enumerate(batch["targets"]):
            morph = target["morphology"]
            rows = (morph != labels.MORPHOLOGY_NOT_ANNOTATED).any(1) if len(morph) else torch.zeros(0, dtype=torch.bool)
            if not rows.any():
                continue
            self.annotated_boxes += int(rows.sum())
            h, w = (float(v) for v in target["size"])
            scale = torch.tensor([w, h, w, h], device=target["boxes"].device)
            gt = box_cxcywh_to_xyxy(target["boxes"][rows].float()) * scale
            pr = box_cxcywh_to_xyxy(out["pred_boxes"][i].float()) * scale
            iou = box_iou(gt, pr).cpu().numpy()
            r, c = linear_sum_assignment(-iou)
            ok = iou[r, c] >= self.match_iou
            if ok.any():
                self.boxes[0].append(morph[rows][torch.as_tensor(r[ok])].cpu().numpy())
                self.boxes[1].append((out["pred_morphology"][i, torch.as_tensor(c[ok])] > 0).long().cpu().numpy())

    @staticmethod
    def _scores(pair) -> dict:
        if not pair[0]:
            return {}
        return scores.binary_attribute_scores(np.concatenate(pair[0]), np.concatenate(pair[1]),
                                              labels.MORPHOLOGY_NAMES)

    def result(self) -> dict:
        both = (self.cells[0] + self.boxes[0], self.cells[1] + self.boxes[1])
        out = self._scores(both)
        if not out:
            return {}
        sources = {}
        if self.cells[0]:
            sources["cells"] = self._scores(self.cells)
        if self.annotated_boxes:
            matched = int(sum(len(x) for x in self.boxes[0]))
            sources["boxes"] = {**self._scores(self.boxes), "annotated": self.annotated_boxes, "matched": matched,
                                "match_rate": matched / self.annotated_boxes}
        out["sources"] = sources
        return out

    def artifacts(self) -> dict:
        return {}


def _strip(row) -> list[int]:
    return [int(t) for t in row if t != -100]


class VQACollector:
    """Greedy answers to each question, scored by exact match, BLEU-1..4 and ROUGE-L."""

    def __init__(self, max_new_tokens: int = 32, keep_examples: int = 12):
        self.max_new_tokens = max_new_tokens
        self.keep = keep_examples
        self.questions: list[str] = []
        self.predictions: list[str] = []
        self.references: list[str] = []
        self.batches: list[dict] = []
        self.ranking = RankingTally()

    @torch.no_grad()
    def update(self, model, batch: dict, tokenizer=None) -> None:
        generated = model.generate_text(batch["images"], batch["pixel_mask"], batch["prompt_ids"],
                                        batch["prompt_mask"], max_new_tokens=self.max_new_tokens)
        self.predictions += tokenizer.decode(generated)
        self.references += tokenizer.decode([_strip(r) for r in batch["text_labels"].tolist()])
        if len(self.questions) < self.keep:
            self.questions += tokenizer.decode(batch["prompt_ids"].masked_fill(~batch["prompt_mask"], 0).tolist())
        self.batches.append(batch)  # ranked in finish(), once every question's answer set is known

    def finish(self, model, tokenizer=None) -> None:
        """Closed-vocabulary ranking over the batches seen (see :mod:`unihema.eval.answer_ranking`)."""
        if self.batches:
            rank_batches(model, self.batches, tokenizer, model.cfg.text.max_length, self.ranking)
        self.batches = []

    def result(self) -> dict:
        out = scores.text_scores(self.predictions, self.references)
        if out:
            out["empty_answers"] = sum(not p.strip() for p in self.predictions)
            out.update(self.ranking.compute())
        return out

    def artifacts(self) -> dict:
        return {"examples": [{"question": q, "reference": r, "prediction": p}
                             for q, r, p in zip(self.questions, self.references, self.predictions)][: self.keep]}


class MLMCollector:
    """Token accuracy of the masked spans under teacher forcing (sentinels excluded), as in training."""

    def __init__(self):
        self.metric = TextMetric()

    @torch.no_grad()
    def update(self, model, batch: dict, tokenizer=None) -> None:
        sentinels = set(getattr(tokenizer, "sentinel_ids", []) or [])
        self.metric.update_tokens(model(batch)["text_logits"], batch["text_labels"], sentinels)

    def result(self) -> dict:
        m = self.metric.compute()
        if not m:
            return {}
        return {"token_accuracy": m["accuracy"], "chance_token_accuracy": m["chance_accuracy"], "count": m["count"]}

    def artifacts(self) -> dict:
        return {}


def new_collector(task: str, cfg=None):
    max_new = cfg.model.text.max_length if cfg is not None else 32
    return {"detection": DetectionCollector, "classification": ClassificationCollector,
            "segmentation": SegmentationCollector, "morphology": MorphologyCollector,
            "vqa": lambda: VQACollector(max_new), "mlm": MLMCollector}[task]()


# The number the report leads with for each task, and its chance level.
HEADLINE = {"detection": ("map50", "chance_map50"), "classification": ("accuracy", "chance_accuracy"),
            "segmentation": ("dice", "chance_dice"), "morphology": ("macro_f1", "chance_macro_f1"),
            "vqa": ("exact_match", "chance_exact_match"), "mlm": ("token_accuracy", "chance_token_accuracy"),
            "linear_probe": ("accuracy", "chance_accuracy")}
