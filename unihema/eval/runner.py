"""Run a model over batches of one task and accumulate that task's metric.

Used by the trainer's periodic validation (per rank, then merged) and by the evaluation
CLI. Works on any iterable of collated batches; knows nothing about Ray or DeepSpeed.
"""

from __future__ import annotations

from typing import Iterable

import torch

from unihema.eval.answer_ranking import rank_batches
from unihema.eval.metrics import (
    ClassificationMetric, DetectionMetric, MorphologyMetric, SegmentationMetric, TextMetric,
)
from unihema.labels import CELL_CLASSES, DETECTION_CLASSES, MORPHOLOGY_NAMES


def new_metric(task: str):
    return {
        "detection": lambda: DetectionMetric(len(DETECTION_CLASSES)),
        "classification": lambda: ClassificationMetric(len(CELL_CLASSES)),
        "segmentation": SegmentationMetric,
        "morphology": lambda: MorphologyMetric(len(MORPHOLOGY_NAMES)),
        "vqa": TextMetric,
        "mlm": TextMetric,
    }[task]()


def _strip_labels(labels: torch.Tensor) -> list[list[int]]:
    return [[int(t) for t in row if t != -100] for row in labels]


@torch.no_grad()
def update_metric(metric, task: str, model, batch: dict, tokenizer=None, max_new_tokens: int = 16) -> None:
    """Run ``model`` on one collated batch of ``task`` and feed ``metric``."""
    if task == "vqa":
        generated = model.generate_text(batch["images"], batch["pixel_mask"], batch["prompt_ids"],
                                        batch["prompt_mask"], max_new_tokens=max_new_tokens)
        predictions = tokenizer.decode(generated)
        references = tokenizer.decode(_strip_labels(batch["text_labels"]))
        metric.update_exact(predictions, references)
        return
    outputs = model(batch)
    if task == "detection":
        metric.update(outputs, batch["targets"])
    elif task == "classification":
        metric.update(outputs["cell_logits"], batch["cell_labels"])
    elif task == "morphology":
        if "cell_morphology" in outputs:
            metric.update(outputs["cell_morphology"], batch["morphology"])
    elif task == "segmentation":
        metric.update(outputs["semantic_logits"], batch["semantic_masks"])
    elif task == "mlm":
        sentinels = set(getattr(tokenizer, "sentinel_ids", []) or [])
        metric.update_tokens(outputs["text_logits"], batch["text_labels"], sentinels)


def evaluate_batches(model, task: str, batches: Iterable[dict], tokenizer=None, max_batches: int | None = None):
    """A filled metric accumulator for ``task`` over up to ``max_batches`` batches.

    VQA also ranks each question's answer set (:mod:`unihema.eval.answer_ranking`): its
    batches are kept until the pass ends, since the answer sets are known only then.
    """
    metric = new_metric(task)
    was_training = model.training
    model.eval()
    kept = []
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            update_metric(metric, task, model, batch, tokenizer)
            if task == "vqa":
                kept.append(batch)
        if kept:
            rank_batches(model, kept, tokenizer, model.cfg.text.max_length, metric.ranking)
    finally:
        model.train(was_training)
    return metric
