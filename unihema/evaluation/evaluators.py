"""One evaluator per task, and the one loop that runs it: training validation and ``python -m unihema.evaluate``.

An evaluator (in the manner of detectron2's ``DatasetEvaluator``) owns everything about its
task's evaluation: the forward or generate call and its generation length, which batch
fields are the targets, the statistics it keeps, how two ranks' statistics merge, and the
metrics computed from them. Training validation (``unihema.train.worker.validate``: each
rank its share of the split, statistics gathered on rank 0) and the CLI
(:mod:`unihema.evaluation.run`: the whole split in one process) both call
:func:`evaluate_batches`, so the two report the same keys and, on the same batches, the same
values. The CLI keeps the whole result (per-class tables, confusion matrices) and the plots'
:meth:`Evaluator.artifacts`; training keeps the numbers (:func:`scalar_metrics`).

Statistics are gathered predictions or confusion counts, not running means, because F1,
BLEU and AP are not sums over batches. Each task also reports a *chance level* measured on
the same data (majority class, constant predictor, image-blind boxes), so a run can show
its metrics are above what guessing scores.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from typing import Iterable

import numpy as np
import torch

from unihema import labels
from unihema.evaluation import scores
from unihema.evaluation.answer_ranking import RankingTally, rank_batches
from unihema.ops.boxes import box_cxcywh_to_xywh, box_cxcywh_to_xyxy

# The number each task is judged by and its chance level: the training log line, the
# pretrain summary, the sweep objective (``val_<task>_<key>``) and the evaluation report.
HEADLINE = {
    "detection": "map50",
    "classification": "accuracy",
    "segmentation": "dice",
    "morphology": "macro_f1",
    "vqa": "exact_match",
    "mlm": "token_accuracy",
    "linear_probe": "accuracy",
}
CHANCE = {
    "detection": "chance_map50",
    "classification": "chance_accuracy",
    "segmentation": "chance_dice",
    "morphology": "chance_macro_f1",
    "vqa": "chance_exact_match",
    "mlm": "chance_token_accuracy",
    "linear_probe": "chance_accuracy",
}
# Training validation named these ``accuracy`` / ``chance_accuracy`` before the two stacks
# merged; training still reports them under the old names too (``val_vqa_accuracy``), so
# sweeps and scripts that read them keep working.
RENAMED = {
    "vqa": {"accuracy": "exact_match", "chance_accuracy": "chance_exact_match"},
    "mlm": {"accuracy": "token_accuracy", "chance_accuracy": "chance_token_accuracy"},
}


def scalar_metrics(values: dict) -> dict:
    """The numbers of a result (what training logs and reports), without tables and curves."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _strip(row) -> list[int]:
    return [int(t) for t in row if int(t) != -100]


class Evaluator:
    """The protocol: ``process`` every batch, ``finish`` once per rank, then ``state``/``merge``
    across ranks and ``compute`` once. ``compute`` returns {} when there was nothing to score."""

    task = ""

    def process(self, model, batch: dict, tokenizer=None) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement process()")

    def finish(self, model, tokenizer=None) -> None:
        """Work that needs the whole pass of this rank (VQA answer ranking); nothing by default."""

    def state(self) -> dict:
        return dict(vars(self))

    def merge(self, state: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement merge()")

    def compute(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__} does not implement compute()")

    def artifacts(self) -> dict:
        """What the report plots (curves, examples), after :meth:`compute`."""
        return {}


class DetectionEvaluator(Evaluator):
    """COCO mAP, mAP50 and mAP75, per-class AP and PR curves (pycocotools) over gathered detections.

    Chance level (``chance_map50``): the mAP50 of the same detections scored against the
    ground truth of the next image (boxes rescaled to its size). What the detector's class,
    size and position priors earn without looking at the image; on dense smears that is not
    zero, because a field full of red cells rewards any plausible red-cell-sized box.
    """

    task = "detection"

    def __init__(self, max_detections: int = 100):
        self.num_classes = len(labels.DETECTION_CLASSES)
        self.max_det = max_detections
        self.images: list[dict] = []
        self._curves: dict = {}

    @torch.no_grad()
    def process(self, model, batch: dict, tokenizer=None) -> None:
        outputs = model(batch)
        logits, boxes = outputs["pred_logits"].float(), outputs["pred_boxes"].float()
        probs = logits.sigmoid()
        b, q, c = probs.shape
        k = min(self.max_det, q * c)
        top, idx = probs.reshape(b, -1).topk(k, dim=1)
        classes, query = idx % c, idx // c
        for i, target in enumerate(batch["targets"]):
            h, w = (int(v) for v in target["size"])
            scale = torch.tensor([w, h, w, h], dtype=torch.float32)
            self.images.append(
                {
                    "pred_boxes": (box_cxcywh_to_xywh(boxes[i, query[i]].cpu()) * scale).numpy(),
                    "pred_scores": top[i].cpu().numpy(),
                    "pred_labels": classes[i].cpu().numpy(),
                    "gt_boxes": (box_cxcywh_to_xywh(target["boxes"].float().cpu()) * scale).numpy(),
                    "gt_labels": target["labels"].cpu().numpy(),
                    "size": (h, w),
                }
            )

    def state(self) -> dict:
        return {"images": self.images}

    def merge(self, state: dict) -> None:
        self.images.extend(state["images"])

    def image_blind(self) -> list[dict]:
        """Each image's detections paired with the next image's ground truth and size."""
        paired = []
        for i, own in enumerate(self.images):
            other = self.images[(i + 1) % len(self.images)]
            (h, w), (oh, ow) = own["size"], other["size"]
            scale = np.array([ow / w, oh / h, ow / w, oh / h], np.float32)
            paired.append(
                dict(
                    other,
                    pred_boxes=np.asarray(own["pred_boxes"]) * scale,
                    pred_scores=own["pred_scores"],
                    pred_labels=own["pred_labels"],
                )
            )
        return paired

    def coco_eval(self, images: list[dict] | None = None):
        """The accumulated pycocotools ``COCOeval`` over the gathered images, or over ``images``
        (None without ground truth)."""
        images = self.images if images is None else images
        if not images or not any(len(im["gt_labels"]) for im in images):
            return None
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        gt = {"images": [], "annotations": [], "categories": [{"id": c + 1} for c in range(self.num_classes)]}
        dets = []
        for i, im in enumerate(images):
            gt["images"].append({"id": i, "height": im["size"][0], "width": im["size"][1]})
            for box, label in zip(im["gt_boxes"], im["gt_labels"]):
                gt["annotations"].append(
                    {
                        "id": len(gt["annotations"]) + 1,
                        "image_id": i,
                        "category_id": int(label) + 1,
                        "bbox": [float(v) for v in box],
                        "area": float(box[2] * box[3]),
                        "iscrowd": 0,
                    }
                )
            for box, score, label in zip(im["pred_boxes"], im["pred_scores"], im["pred_labels"]):
                dets.append(
                    {
                        "image_id": i,
                        "category_id": int(label) + 1,
                        "bbox": [float(v) for v in box],
                        "score": float(score),
                    }
                )
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
            coco = COCO()
            coco.dataset = gt
            coco.createIndex()
            coco_dt = coco.loadRes(dets) if dets else COCO()
            evaluator = COCOeval(coco, coco_dt, "bbox")
            evaluator.params.maxDets = [1, 10, self.max_det]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return evaluator

    def chance_map50(self) -> float:
        """mAP50 of the image-blind pairing (see the class); 0 with fewer than two images."""
        if len(self.images) < 2:
            return 0.0
        blind = self.coco_eval(self.image_blind())
        return 0.0 if blind is None else max(0.0, float(blind.stats[1]))

    def compute(self) -> dict:
        evaluator = self.coco_eval()
        if evaluator is None:
            return {}
        per_class, curves = self._per_class(evaluator)
        self._curves = {"iou": 0.5, "recall": [float(r) for r in evaluator.params.recThrs], "precision": curves}
        stats = evaluator.stats
        return {
            "map": max(0.0, float(stats[0])),
            "map50": max(0.0, float(stats[1])),
            "chance_map50": self.chance_map50(),
            "map75": max(0.0, float(stats[2])),
            "count": len(self.images),
            "boxes": int(sum(len(im["gt_labels"]) for im in self.images)),
            "per_class": per_class,
        }

    def _per_class(self, evaluator) -> tuple[dict, dict]:
        """Per-class AP (IoU .50:.95) and AP50 of the classes with ground truth, and their
        precision-recall curves at IoU 0.5 (COCO's 101 recall points, all areas, max detections)."""
        precision = evaluator.eval["precision"]  # (iou thresholds, recall points, classes, areas, max dets)
        gt_counts = np.bincount(
            np.concatenate([np.asarray(im["gt_labels"], np.int64) for im in self.images]), minlength=self.num_classes
        )
        per_class, curves = {}, {}
        for k, name in enumerate(labels.DETECTION_CLASSES):
            if gt_counts[k] == 0:
                continue
            p_all = precision[:, :, k, 0, -1]
            p50 = precision[0, :, k, 0, -1]
            per_class[name] = {
                "ap": float(p_all[p_all > -1].mean()) if (p_all > -1).any() else 0.0,
                "ap50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else 0.0,
                "ground_truth": int(gt_counts[k]),
            }
            curves[name] = np.clip(p50, 0, None).tolist()
        return per_class, curves

    def artifacts(self) -> dict:
        return {"pr_curves": self._curves} if self._curves else {}


class ClassificationEvaluator(Evaluator):
    """Accuracy, weighted / macro F1, confusion matrix and PR curves of the single-cell classifier."""

    task = "classification"

    def __init__(self):
        self.y_true: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []

    @torch.no_grad()
    def process(self, model, batch: dict, tokenizer=None) -> None:
        targets = batch["cell_labels"]
        valid = targets >= 0
        if not valid.any():
            return
        probs = model(batch)["cell_logits"].float().softmax(-1)
        self.y_true.append(targets[valid].cpu().numpy())
        self.probs.append(probs[valid].cpu().numpy())

    def merge(self, state: dict) -> None:
        self.y_true += state["y_true"]
        self.probs += state["probs"]

    def compute(self) -> dict:
        if not self.y_true:
            return {}
        return scores.classification_scores(
            np.concatenate(self.y_true), np.concatenate(self.probs).argmax(1), labels.CELL_CLASSES
        )

    def artifacts(self) -> dict:
        if not self.y_true:
            return {}
        return {
            "pr_curves": scores.precision_recall_curves(
                np.concatenate(self.y_true), np.concatenate(self.probs), labels.CELL_CLASSES
            )
        }


class SegmentationEvaluator(Evaluator):
    """Dice and IoU from the pixel confusion matrix at the target resolution (ignore index left out)."""

    task = "segmentation"

    def __init__(self):
        n = len(labels.SEGMENTATION_CLASSES)
        self.confusion = np.zeros((n, n), np.int64)
        self.images = 0

    @torch.no_grad()
    def process(self, model, batch: dict, tokenizer=None) -> None:
        targets = batch["semantic_masks"]
        logits = model(batch)["semantic_logits"].float()
        # Scored at the mask's resolution: the logits are coarser, and upsampling them is what inference does.
        logits = torch.nn.functional.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        pred = logits.argmax(1)
        n = len(self.confusion)
        valid = (targets != labels.IGNORE_INDEX) & (targets >= 0) & (targets < n)
        idx = (targets[valid] * n + pred[valid]).cpu().numpy()
        self.confusion += np.bincount(idx, minlength=n * n).reshape(n, n)
        self.images += len(targets)

    def merge(self, state: dict) -> None:
        self.confusion += state["confusion"]
        self.images += state["images"]

    def compute(self) -> dict:
        out = scores.segmentation_scores(self.confusion, labels.SEGMENTATION_CLASSES)
        return {**out, "count": self.images} if out else {}


class MorphologyEvaluator(Evaluator):
    """Per-attribute F1 of single cells (the cell head) and of annotated cells in fields of view
    (the per-query head of the detection that best overlaps each cell, one-to-one, IoU >= 0.5)."""

    task = "morphology"

    def __init__(self, match_iou: float = 0.5):
        self.match_iou = match_iou
        self.cells: tuple[list, list] = ([], [])
        self.boxes: tuple[list, list] = ([], [])
        self.annotated_boxes = 0

    @torch.no_grad()
    def process(self, model, batch: dict, tokenizer=None) -> None:
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

    def merge(self, state: dict) -> None:
        for mine, theirs in ((self.cells, state["cells"]), (self.boxes, state["boxes"])):
            mine[0].extend(theirs[0])
            mine[1].extend(theirs[1])
        self.annotated_boxes += state["annotated_boxes"]

    @staticmethod
    def _scores(pair) -> dict:
        if not pair[0]:
            return {}
        return scores.binary_attribute_scores(np.concatenate(pair[0]), np.concatenate(pair[1]), labels.MORPHOLOGY_NAMES)

    def compute(self) -> dict:
        out = self._scores((self.cells[0] + self.boxes[0], self.cells[1] + self.boxes[1]))
        if not out:
            return {}
        sources = {}
        if self.cells[0]:
            sources["cells"] = self._scores(self.cells)
        if self.annotated_boxes:
            matched = int(sum(len(x) for x in self.boxes[0]))
            sources["boxes"] = {
                **self._scores(self.boxes),
                "annotated": self.annotated_boxes,
                "matched": matched,
                "match_rate": matched / self.annotated_boxes,
            }
        out["sources"] = sources
        return out


class VQAEvaluator(Evaluator):
    """Greedy answers scored by exact match, BLEU-1..4 and ROUGE-L, and closed-vocabulary ranking.

    Generation may run to ``max_new_tokens`` = the model's text length, the length every
    reference answer was encoded to, so no answer is cut short by the evaluation itself.
    """

    task = "vqa"

    def __init__(self, max_new_tokens: int, keep_examples: int = 12):
        self.max_new_tokens = max_new_tokens
        self.keep = keep_examples
        self.questions: list[str] = []
        self.predictions: list[str] = []
        self.references: list[str] = []
        self.batches: list[dict] = []
        self.ranking = RankingTally()

    @torch.no_grad()
    def process(self, model, batch: dict, tokenizer=None) -> None:
        generated = model.generate_text(
            batch["images"],
            batch["pixel_mask"],
            batch["prompt_ids"],
            batch["prompt_mask"],
            max_new_tokens=self.max_new_tokens,
        )
        self.predictions += tokenizer.decode(generated)
        self.references += tokenizer.decode([_strip(r) for r in batch["text_labels"].tolist()])
        if len(self.questions) < self.keep:
            self.questions += tokenizer.decode(batch["prompt_ids"].masked_fill(~batch["prompt_mask"], 0).tolist())
        self.batches.append(batch)  # ranked in finish(), once every question's answer set is known

    def finish(self, model, tokenizer=None) -> None:
        """Closed-vocabulary ranking over this rank's batches (see :mod:`unihema.evaluation.answer_ranking`)."""
        if self.batches:
            rank_batches(model, self.batches, tokenizer, model.cfg.text.max_length, self.ranking)
        self.batches = []

    def state(self) -> dict:
        return {
            "questions": self.questions,
            "predictions": self.predictions,
            "references": self.references,
            "ranking": self.ranking.state(),
        }

    def merge(self, state: dict) -> None:
        self.questions += state["questions"][: max(0, self.keep - len(self.questions))]
        self.predictions += state["predictions"]
        self.references += state["references"]
        self.ranking.merge(state["ranking"])

    def compute(self) -> dict:
        out = scores.text_scores(self.predictions, self.references)
        if out:
            out["empty_answers"] = sum(not p.strip() for p in self.predictions)
            out.update(self.ranking.compute())
        return out

    def artifacts(self) -> dict:
        return {
            "examples": [
                {"question": q, "reference": r, "prediction": p}
                for q, r, p in zip(self.questions, self.references, self.predictions)
            ][: self.keep]
        }


class MLMEvaluator(Evaluator):
    """Token accuracy of the masked spans under teacher forcing, sentinels excluded (they are
    structure, not content); chance: always the most frequent masked token."""

    task = "mlm"

    def __init__(self):
        self.correct = 0
        self.total = 0
        self.tokens: Counter = Counter()

    @torch.no_grad()
    def process(self, model, batch: dict, tokenizer=None) -> None:
        targets = batch["text_labels"]
        valid = targets != -100
        for sentinel in getattr(tokenizer, "sentinel_ids", None) or ():
            valid &= targets != sentinel
        pred = model(batch)["text_logits"].argmax(-1)
        self.correct += int((pred[valid] == targets[valid]).sum())
        self.total += int(valid.sum())
        self.tokens.update(targets[valid].cpu().tolist())

    def merge(self, state: dict) -> None:
        self.correct += state["correct"]
        self.total += state["total"]
        self.tokens.update(state["tokens"])

    def compute(self) -> dict:
        if not self.total:
            return {}
        return {
            "token_accuracy": self.correct / self.total,
            "chance_token_accuracy": max(self.tokens.values()) / self.total,
            "count": self.total,
        }


def new_evaluator(task: str, text_length: int) -> Evaluator:
    """The evaluator of ``task``; ``text_length`` (the model's ``text.max_length``) bounds VQA generation."""
    return {
        "detection": DetectionEvaluator,
        "classification": ClassificationEvaluator,
        "segmentation": SegmentationEvaluator,
        "morphology": MorphologyEvaluator,
        "vqa": lambda: VQAEvaluator(text_length),
        "mlm": MLMEvaluator,
    }[task]()


def evaluate_batches(
    model, task: str, batches: Iterable[dict], tokenizer=None, max_batches: int | None = None
) -> Evaluator:
    """The loop: ``task``'s evaluator filled with up to ``max_batches`` of ``batches`` and finished.

    The model is put in eval mode for the pass and back in its previous mode after it.
    """
    evaluator = new_evaluator(task, model.cfg.text.max_length)
    was_training = model.training
    model.eval()
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            evaluator.process(model, batch, tokenizer)
        evaluator.finish(model, tokenizer)
    finally:
        model.train(was_training)
    return evaluator


__all__ = [
    "CHANCE",
    "HEADLINE",
    "RENAMED",
    "ClassificationEvaluator",
    "DetectionEvaluator",
    "Evaluator",
    "MLMEvaluator",
    "MorphologyEvaluator",
    "SegmentationEvaluator",
    "VQAEvaluator",
    "evaluate_batches",
    "new_evaluator",
    "scalar_metrics",
]
