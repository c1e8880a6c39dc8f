"""UniHemaCriterion: the one multi-task loss the training loop calls.

It decides, from ``batch["tasks"]``, which task losses a batch pays for, computes each
from its own module, and weights them with the flat LossConfig scalars so a Ray Tune sweep
can move any one of them. Rules it keeps:

- a task absent from the batch adds no key and no gradient, whatever the model returned
  (one exception, opt-in: ``segmentation_trains_detection`` adds detection to segmentation
  batches, whose targets carry the classes and boxes it needs);
- a present task whose labels are all ignored yields a zero that is still connected to the
  task's outputs (DDP needs every parameter in the graph, and no empty mean turns to NaN);
- a present task whose outputs or labels are missing is an error, not a silent zero;
- the box count used for normalization goes through ``num_boxes_reducer`` exactly once per
  call, even for batches without boxes, so an all-reduce there stays in lock-step when
  ranks hold different tasks.

Term keys (DINO's where they exist): ``loss_ce``/``loss_bbox``/``loss_giou`` with suffix
``""`` (final layer), ``_{i}`` (decoder layer i), ``_interm`` (encoder proposals), ``_dn`` and
``_dn_{i}`` (denoising); ``loss_morph``[``_{i}``] (per query), ``loss_morph_cell`` (per
image); ``loss_cell_ce``; ``loss_seg_dice``/``loss_seg_focal`` (semantic),
``loss_mask_dice``/``loss_mask_focal`` (instances); ``loss_vqa_ce``/``loss_mlm_ce``.
Task keys: ``loss_detection``, ``loss_classification``, ``loss_segmentation``,
``loss_morphology``, ``loss_vqa``, ``loss_mlm``; the total: ``loss``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from unihema.config import TASKS, LossConfig
from unihema.losses.detection import DetectionCriterion, decoder_levels
from unihema.losses.functional import cross_entropy
from unihema.losses.matcher import HungarianMatcher, MatchCache
from unihema.losses.morphology import image_morphology_loss, query_morphology_loss
from unihema.losses.segmentation import instance_mask_losses, semantic_losses
from unihema.losses.text import text_losses

# Maps a float tensor of local counts to the mean over ranks, e.g.
#   def reducer(t): torch.distributed.all_reduce(t); return t / torch.distributed.get_world_size()
CountReducer = Callable[[Tensor], Tensor]


def _local(counts: Tensor) -> Tensor:
    return counts


class UniHemaCriterion(nn.Module):
    """``criterion(outputs, batch) -> {term: tensor, loss_<task>: tensor, "loss": tensor}``."""

    def __init__(
        self,
        cfg: LossConfig,
        matcher: HungarianMatcher | None = None,
        num_boxes_reducer: CountReducer | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.matcher = matcher or HungarianMatcher.from_config(cfg)
        self.num_boxes_reducer = num_boxes_reducer or _local
        self.detection = DetectionCriterion(cfg)

    def task_weight(self, task: str) -> float:
        return float(getattr(self.cfg, task))

    def forward(self, outputs: dict, batch: dict) -> dict[str, Tensor]:
        tasks = _tasks(batch)
        if self.cfg.segmentation_trains_detection and "segmentation" in tasks and "detection" not in tasks:
            tasks.append("detection")
        targets = batch.get("targets")
        num_boxes, num_masks = self._counts(outputs, targets)
        matches = MatchCache(self.matcher, targets) if targets is not None else None

        terms: dict[str, Tensor] = {}
        task_losses: dict[str, Tensor] = {}
        for task in tasks:
            if task == "detection":
                _require(outputs, ("pred_logits", "pred_boxes"), task)
                _require_targets(targets, task)
                det_terms, task_losses[task] = self.detection(outputs, targets, num_boxes, matches)
                terms.update(det_terms)
            elif task == "classification":
                _require(outputs, ("cell_logits",), task)
                _require(batch, ("cell_labels",), task, "batch")
                terms["loss_cell_ce"] = task_losses[task] = cross_entropy(
                    outputs["cell_logits"], batch["cell_labels"].to(outputs["cell_logits"].device)
                )
            elif task == "morphology":
                task_losses[task] = self._morphology(outputs, batch, targets, num_boxes, matches, terms)
            elif task == "segmentation":
                task_losses[task] = self._segmentation(outputs, batch, targets, num_masks, matches, terms)
        if "vqa" in tasks or "mlm" in tasks:
            _require(outputs, ("text_logits",), "vqa/mlm")
            _require(batch, ("text_labels",), "vqa/mlm", "batch")
            for task, value in text_losses(
                outputs["text_logits"],
                batch["text_labels"],
                tasks,
                batch.get("text_task"),
            ).items():
                terms[f"loss_{task}_ce"] = task_losses[task] = value

        result = dict(terms)
        for task in tasks:
            result[f"loss_{task}"] = task_losses[task]
        result["loss"] = sum(self.task_weight(task) * task_losses[task] for task in tasks)
        return result

    def _counts(self, outputs: dict, targets: Sequence[dict] | None) -> tuple[Tensor, Tensor]:
        """(boxes, instance masks) averaged over ranks, clamped to >= 1 for division."""
        device = _device(outputs)
        boxes = masks = 0
        for t in targets or ():
            boxes += len(t["labels"])
            if t.get("masks") is not None:
                masks += len(t["masks"])
        counts = self.num_boxes_reducer(torch.tensor([boxes, masks], dtype=torch.float32, device=device))
        counts = counts.clamp(min=1)
        return counts[0], counts[1]

    def _morphology(self, outputs, batch, targets, num_boxes, matches, terms) -> Tensor:
        parts = []
        per_query = (
            "pred_morphology" in outputs
            and _can_match(outputs, targets)
            and any(t.get("morphology") is not None for t in targets)
        )
        if per_query:
            for suffix, out in decoder_levels(outputs, self.cfg.aux):
                if "pred_morphology" not in out:
                    continue
                indices = matches(suffix, out)
                value = query_morphology_loss(out["pred_morphology"], targets, indices, num_boxes, self.cfg)
                terms[f"loss_morph{suffix}"] = value
                parts.append(value)
        if "cell_morphology" in outputs and batch.get("morphology") is not None:
            value = image_morphology_loss(outputs["cell_morphology"], batch["morphology"], self.cfg)
            terms["loss_morph_cell"] = value
            parts.append(value)
        if not parts:
            raise KeyError(
                "batch holds the morphology task but neither pred_morphology + pred_logits with "
                "targets[..]['morphology'] nor cell_morphology with batch['morphology'] is there"
            )
        return sum(parts)

    def _segmentation(self, outputs, batch, targets, num_masks, matches, terms) -> Tensor:
        cfg = self.cfg
        total = None
        if "semantic_logits" in outputs and batch.get("semantic_masks") is not None:
            dice, focal = semantic_losses(
                outputs["semantic_logits"],
                batch["semantic_masks"],
                cfg.focal_alpha,
                cfg.focal_gamma,
            )
            terms["loss_seg_dice"], terms["loss_seg_focal"] = dice, focal
            total = cfg.seg_dice * dice + cfg.seg_focal * focal
        instance = (
            "pred_masks" in outputs
            and _can_match(outputs, targets)
            and any(t.get("masks") is not None for t in targets)
        )
        if instance:
            dice, focal = instance_mask_losses(
                outputs["pred_masks"],
                targets,
                matches("", outputs),
                num_masks,
                cfg.focal_alpha,
                cfg.focal_gamma,
            )
            terms["loss_mask_dice"], terms["loss_mask_focal"] = dice, focal
            value = cfg.mask_dice * dice + cfg.mask_focal * focal
            total = value if total is None else total + value
        if total is None:
            raise KeyError(
                "batch holds the segmentation task but neither semantic_logits with "
                "batch['semantic_masks'] nor pred_masks + pred_logits with targets[..]['masks'] is there"
            )
        return total


def build_criterion(cfg: LossConfig, num_boxes_reducer: CountReducer | None = None) -> UniHemaCriterion:
    return UniHemaCriterion(cfg, num_boxes_reducer=num_boxes_reducer)


def _tasks(batch: dict) -> list[str]:
    tasks = list(dict.fromkeys(batch.get("tasks") or ()))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} in batch['tasks']; known: {', '.join(TASKS)}")
    if not tasks:
        raise ValueError("batch['tasks'] is empty: there is nothing to compute a loss for")
    return tasks


def _require(source: dict, keys: Sequence[str], task: str, what: str = "outputs") -> None:
    missing = [k for k in keys if source.get(k) is None]
    if missing:
        raise KeyError(f"batch holds the {task} task but {what} lack {', '.join(missing)}")


def _require_targets(targets, task: str) -> None:
    if targets is None:
        raise KeyError(f"batch holds the {task} task but has no targets")


def _can_match(outputs: dict, targets) -> bool:
    return targets is not None and outputs.get("pred_logits") is not None and outputs.get("pred_boxes") is not None


def _device(outputs: dict) -> torch.device:
    for value in outputs.values():
        if isinstance(value, Tensor):
            return value.device
    return torch.device("cpu")
