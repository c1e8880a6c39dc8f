"""Per-task validation metrics as mergeable accumulators.

Each accumulator keeps sufficient statistics (counts, confusion matrices, detections), so
the trainer can sum them across ranks and compute the metric once. Each also reports a
*chance level* measured on the same data (majority class, constant predictor, ...), so a
run can show its metrics are clearly above what guessing would score.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from unihema.eval.answer_ranking import RankingTally
from unihema.labels import MORPHOLOGY_NOT_ANNOTATED


def macro_f1(confusion: np.ndarray) -> float:
    """Macro F1 over the classes that occur in the targets or the predictions."""
    tp = np.diag(confusion).astype(float)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    present = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


class ClassificationMetric:
    def __init__(self, num_classes: int):
        self.confusion = np.zeros((num_classes, num_classes), np.int64)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        valid = labels >= 0
        pred = logits.argmax(-1)[valid].cpu().numpy()
        np.add.at(self.confusion, (labels[valid].cpu().numpy(), pred), 1)

    def state(self) -> dict:
        return {"confusion": self.confusion}

    def merge(self, state: dict) -> None:
        self.confusion += state["confusion"]

    def compute(self) -> dict:
        total = self.confusion.sum()
        if total == 0:
            return {}
        rows = self.confusion.sum(axis=1)
        return {"accuracy": float(np.trace(self.confusion) / total), "macro_f1": macro_f1(self.confusion),
                "chance_accuracy": float(rows.max() / total), "count": int(total)}


class MorphologyMetric:
    """Per-attribute binary F1 (positive = the attribute's second value), 'not annotated' skipped."""

    def __init__(self, num_attributes: int = 6):
        self.counts = np.zeros((num_attributes, 4), np.int64)  # tp, fp, fn, tn

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        valid = targets != MORPHOLOGY_NOT_ANNOTATED
        pred = (logits > 0).cpu().numpy()
        tgt = (targets == 1).cpu().numpy()
        v = valid.cpu().numpy()
        for a in range(self.counts.shape[0]):
            p, t = pred[:, a][v[:, a]], tgt[:, a][v[:, a]]
            self.counts[a] += [(p & t).sum(), (p & ~t).sum(), (~p & t).sum(), (~p & ~t).sum()]

    def state(self) -> dict:
        return {"counts": self.counts}

    def merge(self, state: dict) -> None:
        self.counts += state["counts"]

    @staticmethod
    def _f1(tp, fp, fn) -> float:
        return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0

    def compute(self) -> dict:
        annotated = self.counts.sum(axis=1) > 0
        if not annotated.any():
            return {}
        f1s, accs, chance = [], [], []
        for tp, fp, fn, tn in self.counts[annotated]:
            # Macro over both classes, so a constant predictor cannot look good on a skewed attribute.
            f1s.append((self._f1(tp, fp, fn) + self._f1(tn, fn, fp)) / 2)
            accs.append((tp + tn) / (tp + fp + fn + tn))
            pos, neg = tp + fn, fp + tn
            chance.append(self._f1(max(pos, neg), min(pos, neg), 0) / 2)  # constant majority guess
        return {"macro_f1": float(np.mean(f1s)), "accuracy": float(np.mean(accs)),
                "chance_macro_f1": float(np.mean(chance)), "count": int(self.counts[annotated].sum())}


class SegmentationMetric:
    """Foreground Dice and IoU over all pixels (ignore index excluded)."""

    def __init__(self, ignore_index: int = 255):
        self.ignore = ignore_index
        self.sums = np.zeros(4, np.int64)  # intersection, pred, target, pixels

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits = torch.nn.functional.interpolate(logits.float(), size=targets.shape[-2:], mode="bilinear",
                                                 align_corners=False)
        pred = logits.argmax(1) > 0
        valid = targets != self.ignore
        tgt = (targets > 0) & valid
        pred = pred & valid
        self.sums += [int((pred & tgt).sum()), int(pred.sum()), int(tgt.sum()), int(valid.sum())]

    def state(self) -> dict:
        return {"sums": self.sums}

    def merge(self, state: dict) -> None:
        self.sums += state["sums"]

    def compute(self) -> dict:
        inter, pred, tgt, pixels = (float(x) for x in self.sums)
        if pixels == 0:
            return {}
        dice = 2 * inter / (pred + tgt) if pred + tgt else 1.0
        iou = inter / (pred + tgt - inter) if pred + tgt - inter else 1.0
        # Chance: predicting foreground everywhere (the better constant guess for Dice).
        return {"dice": dice, "iou": iou, "chance_dice": 2 * tgt / (pixels + tgt), "count": int(pixels)}


class TextMetric:
    """Exact match of generated answers (VQA) or token accuracy of masked spans (MLM)."""

    def __init__(self):
        self.correct = 0
        self.total = 0
        self.answers: Counter = Counter()
        self.empty = 0
        self.ranking = RankingTally()  # VQA closed-vocabulary ranking, filled by the runner

    def update_exact(self, predictions: list[str], references: list[str]) -> None:
        for p, r in zip(predictions, references):
            self.empty += int(not p.strip())
            self.correct += int(p.strip().lower() == r.strip().lower())
            self.total += 1
            self.answers[r.strip().lower()] += 1

    def update_tokens(self, logits: torch.Tensor, labels: torch.Tensor, sentinel_ids: set[int] | None = None) -> None:
        valid = labels != -100
        if sentinel_ids:  # sentinels are structure, not content: score the masked words only
            for sid in sentinel_ids:
                valid &= labels != sid
        pred = logits.argmax(-1)
        self.correct += int((pred[valid] == labels[valid]).sum())
        self.total += int(valid.sum())
        self.answers.update(labels[valid].cpu().tolist())

    def state(self) -> dict:
        return {"correct": self.correct, "total": self.total, "answers": self.answers, "empty": self.empty,
                "ranking": self.ranking.state()}

    def merge(self, state: dict) -> None:
        self.correct += state["correct"]
        self.total += state["total"]
        self.answers.update(state["answers"])
        self.empty += state.get("empty", 0)
        if "ranking" in state:
            self.ranking.merge(state["ranking"])

    def compute(self) -> dict:
        if not self.total:
            return {}
        out = {"accuracy": self.correct / self.total,
               "chance_accuracy": max(self.answers.values()) / self.total, "count": self.total}
        if self.empty:
            out["empty_answers"] = self.empty
        out.update(self.ranking.compute())
        return out


class DetectionMetric:
    """COCO mAP and mAP50 with pycocotools over gathered detections (boxes in pixels).

    Chance level (``chance_map50``): the mAP50 of the same detections scored against the
    ground truth of the next image (boxes rescaled to its size). What the detector's class,
    size and position priors earn without looking at the image; on dense smears that is not
    zero, because a field full of red cells rewards any plausible red-cell-sized box.
    """

    def __init__(self, num_classes: int, max_detections: int = 100):
        self.num_classes = num_classes
        self.max_det = max_detections
        self.images: list[dict] = []

    def update(self, outputs: dict, targets: list[dict]) -> None:
        logits, boxes = outputs["pred_logits"].float(), outputs["pred_boxes"].float()
        probs = logits.sigmoid()
        b, q, c = probs.shape
        k = min(self.max_det, q * c)
        scores, idx = probs.reshape(b, -1).topk(k, dim=1)
        labels = idx % c
        query = idx // c
        for i, target in enumerate(targets):
            h, w = (int(v) for v in target["size"])
            scale = torch.tensor([w, h, w, h], dtype=torch.float32)
            pred = _cxcywh_to_xywh(boxes[i, query[i]].cpu()) * scale
            gt = _cxcywh_to_xywh(target["boxes"].float().cpu()) * scale
            self.images.append({"pred_boxes": pred.numpy(), "pred_scores": scores[i].cpu().numpy(),
                                "pred_labels": labels[i].cpu().numpy(), "gt_boxes": gt.numpy(),
                                "gt_labels": target["labels"].cpu().numpy(), "size": (h, w)})

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
            paired.append(dict(other, pred_boxes=np.asarray(own["pred_boxes"]) * scale,
                               pred_scores=own["pred_scores"], pred_labels=own["pred_labels"]))
        return paired

    def coco_eval(self, images: list[dict] | None = None):
        """The accumulated pycocotools ``COCOeval`` over the gathered images, or over ``images``
        (None without ground truth)."""
        images = self.images if images is None else images
        if not images or not any(len(im["gt_labels"]) for im in images):
            return None
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        import contextlib
        import io

        gt = {"images": [], "annotations": [], "categories": [{"id": c + 1} for c in range(self.num_classes)]}
        dets = []
        for i, im in enumerate(images):
            gt["images"].append({"id": i, "height": im["size"][0], "width": im["size"][1]})
            for box, label in zip(im["gt_boxes"], im["gt_labels"]):
                gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i,
                                          "category_id": int(label) + 1, "bbox": [float(v) for v in box],
                                          "area": float(box[2] * box[3]), "iscrowd": 0})
            for box, score, label in zip(im["pred_boxes"], im["pred_scores"], im["pred_labels"]):
                dets.append({"image_id": i, "category_id": int(label) + 1, "bbox": [float(v) for v in box],
                             "score": float(score)})
        with contextlib.redirect_stdout(io.StringIO()):
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

    def compute(self) -> dict:
        evaluator = self.coco_eval()
        if evaluator is None:
            return {}
        return {"map": max(0.0, float(evaluator.stats[0])), "map50": max(0.0, float(evaluator.stats[1])),
                "chance_map50": self.chance_map50(), "count": len(self.images)}

    def chance_map50(self) -> float:
        """mAP50 of the image-blind pairing (see the class); 0 with fewer than two images."""
        if len(self.images) < 2:
            return 0.0
        blind = self.coco_eval(self.image_blind())
        return 0.0 if blind is None else max(0.0, float(blind.stats[1]))

    def details(self, class_names=None, evaluator=None) -> dict:
        """Per-class AP (IoU .50:.95) and AP50 of the classes with ground truth, and the
        precision-recall curves at IoU 0.5 (COCO's 101 recall points, all areas, max detections)."""
        evaluator = evaluator or self.coco_eval()
        if evaluator is None:
            return {}
        names = list(class_names) if class_names is not None else [str(c) for c in range(self.num_classes)]
        precision = evaluator.eval["precision"]  # (iou thresholds, recall points, classes, areas, max dets)
        gt_counts = np.bincount(np.concatenate([np.asarray(im["gt_labels"], np.int64) for im in self.images]),
                                minlength=self.num_classes)
        per_class, curves = {}, {}
        for k in range(self.num_classes):
            if gt_counts[k] == 0:
                continue
            p_all = precision[:, :, k, 0, -1]
            p50 = precision[0, :, k, 0, -1]
            per_class[names[k]] = {"ap": float(p_all[p_all > -1].mean()) if (p_all > -1).any() else 0.0,
                                   "ap50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else 0.0,
                                   "ground_truth": int(gt_counts[k])}
            curves[names[k]] = np.clip(p50, 0, None).tolist()
        stats = evaluator.stats
        return {"map75": max(0.0, float(stats[2])), "per_class": per_class,
                "pr_curves": {"iou": 0.5, "recall": [float(r) for r in evaluator.params.recThrs], "precision": curves}}


def _cxcywh_to_xywh(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, w, h], dim=-1)


# The headline metric of each task, used by the trainer's summary and the tuner's objective.
HEADLINE = {"detection": "map50", "classification": "accuracy", "segmentation": "dice",
            "morphology": "macro_f1", "vqa": "accuracy", "mlm": "accuracy"}
CHANCE = {"detection": "chance_map50", "classification": "chance_accuracy", "segmentation": "chance_dice",
          "morphology": "chance_macro_f1", "vqa": "chance_accuracy", "mlm": "chance_accuracy"}
