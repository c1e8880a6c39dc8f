"""UniHemaCriterion: task selection, weighting, gradient routing, DN matches, rank-count hook."""

from __future__ import annotations

import math

import pytest
import torch

from unihema.config import TASKS
from unihema.losses import HungarianMatcher, UniHemaCriterion, box_losses, focal_classification_loss

from .loss_fakes import all_leaves, loss_cfg, make_batch, make_outputs

# Which output leaves each task may send gradient to.
TASK_OUTPUTS = {
    "detection": (
        "pred_logits",
        "pred_boxes",
        "aux_outputs.0.pred_logits",
        "aux_outputs.0.pred_boxes",
        "aux_outputs.1.pred_logits",
        "aux_outputs.1.pred_boxes",
        "interm_outputs.pred_logits",
        "interm_outputs.pred_boxes",
    ),
    "morphology": (
        "pred_morphology",
        "aux_outputs.0.pred_morphology",
        "aux_outputs.1.pred_morphology",
        "cell_morphology",
    ),
    "segmentation": ("semantic_logits", "pred_masks"),
    "classification": ("cell_logits",),
    "vqa": ("text_logits",),
    "mlm": ("text_logits",),
}
TASK_TERMS = {
    "detection": {f"loss_{k}{s}" for k in ("ce", "bbox", "giou") for s in ("", "_0", "_1", "_interm")},
    "morphology": {"loss_morph", "loss_morph_0", "loss_morph_1", "loss_morph_cell"},
    "segmentation": {"loss_seg_dice", "loss_seg_focal", "loss_mask_dice", "loss_mask_focal"},
    "classification": {"loss_cell_ce"},
    "vqa": {"loss_vqa_ce"},
    "mlm": {"loss_mlm_ce"},
}


def run(tasks, cfg=None, outputs=None, batch=None, **kw):
    cfg = cfg or loss_cfg()
    outputs = outputs or make_outputs()
    batch = batch or make_batch(tasks)
    return UniHemaCriterion(cfg, **kw)(outputs, batch), outputs


def test_single_task_keys_and_total():
    """Classification alone yields its term, its task loss and the weighted total, nothing else."""
    cfg = loss_cfg("loss.classification=0.5")
    losses, outputs = run(["classification"], cfg)
    assert set(losses) == {"loss_cell_ce", "loss_classification", "loss"}
    ce = torch.nn.functional.cross_entropy(outputs["cell_logits"][:1], torch.tensor([3]))
    torch.testing.assert_close(losses["loss_cell_ce"], ce)
    torch.testing.assert_close(losses["loss"], 0.5 * ce)


@pytest.mark.parametrize("task", TASKS)
def test_each_task_alone_has_only_its_keys(task):
    """Every task alone produces exactly its terms and task loss; absent tasks add no key and no NaN."""
    batch = make_batch([task])
    if task in ("vqa", "mlm"):
        batch["text_task"] = [task, task]
    losses, _ = run([task], batch=batch)
    assert set(losses) == TASK_TERMS[task] | {f"loss_{task}", "loss"}
    assert all(torch.isfinite(v).all() for v in losses.values())


def test_all_tasks_sum_with_config_weights():
    """With all six tasks the total is the sum of LossConfig task weight x task loss."""
    cfg = loss_cfg(
        "loss.detection=1.5",
        "loss.classification=0.9",
        "loss.morphology=2",
        "loss.segmentation=0.7",
        "loss.vqa=0.3",
        "loss.mlm=0.2",
    )
    batch = make_batch(TASKS)
    batch["text_task"] = ["vqa", "mlm"]
    losses, _ = run(TASKS, cfg, batch=batch)
    # The weights written out, not read back from the config the code reads them from.
    expected = (
        1.5 * losses["loss_detection"]
        + 0.9 * losses["loss_classification"]
        + 0.7 * losses["loss_segmentation"]
        + 2 * losses["loss_morphology"]
        + 0.3 * losses["loss_vqa"]
        + 0.2 * losses["loss_mlm"]
    )
    torch.testing.assert_close(losses["loss"], expected)
    assert set().union(*TASK_TERMS.values()) <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())


def test_segmentation_can_also_train_detection():
    """With segmentation_trains_detection a segmentation batch pays both losses, weighted; without, only its own."""
    alone, _ = run(["segmentation"])
    assert "loss_detection" not in alone
    cfg = loss_cfg("loss.segmentation_trains_detection=true", "loss.detection=0.5", "loss.segmentation=2")
    outputs = make_outputs()
    batch = make_batch(["segmentation"])
    joint, _ = run(["segmentation"], cfg, outputs=outputs, batch=batch)
    assert set(joint) == TASK_TERMS["segmentation"] | TASK_TERMS["detection"] | {
        "loss_segmentation",
        "loss_detection",
        "loss",
    }
    reference, _ = run(
        ["segmentation", "detection"], cfg, outputs=outputs, batch=dict(batch, tasks=["segmentation", "detection"])
    )
    torch.testing.assert_close(joint["loss"], reference["loss"])
    torch.testing.assert_close(joint["loss"], 2 * joint["loss_segmentation"] + 0.5 * joint["loss_detection"])
    assert batch["tasks"] == ["segmentation"]  # the caller's batch is left as it was
    assert set(run(["classification"], cfg)[0]) == {"loss_cell_ce", "loss_classification", "loss"}


def test_task_losses_are_weighted_sums_of_terms():
    """Detection/segmentation/morphology task losses weight their terms with the flat config scalars."""
    cfg = loss_cfg(
        "loss.det_cls=0.5",
        "loss.det_bbox=3",
        "loss.det_giou=1.5",
        "loss.seg_dice=2",
        "loss.seg_focal=0.25",
        "loss.mask_dice=4",
        "loss.mask_focal=0.1",
    )
    losses, _ = run(["detection", "segmentation", "morphology"], cfg)
    det = sum(
        w * losses[f"loss_{k}{s}"]
        for k, w in (("ce", 0.5), ("bbox", 3), ("giou", 1.5))
        for s in ("", "_0", "_1", "_interm")
    )
    torch.testing.assert_close(losses["loss_detection"], det)
    seg = (
        2 * losses["loss_seg_dice"]
        + 0.25 * losses["loss_seg_focal"]
        + 4 * losses["loss_mask_dice"]
        + 0.1 * losses["loss_mask_focal"]
    )
    torch.testing.assert_close(losses["loss_segmentation"], seg)
    morph = sum(losses[k] for k in TASK_TERMS["morphology"])
    torch.testing.assert_close(losses["loss_morphology"], morph)


@pytest.mark.parametrize(
    "tasks",
    [
        ["detection"],
        ["morphology"],
        ["segmentation"],
        ["classification"],
        ["vqa"],
        ["classification", "morphology"],
        ["detection", "mlm"],
    ],
)
def test_gradients_reach_only_present_tasks_outputs(tasks):
    """backward of the total fills .grad exactly on the outputs of the tasks in the batch."""
    batch = make_batch(tasks)
    losses, outputs = run(tasks, batch=batch)
    losses["loss"].backward()
    allowed = {name for t in tasks for name in TASK_OUTPUTS[t]}
    for name, tensor in all_leaves(outputs).items():
        if name in allowed:
            assert tensor.grad is not None, name
        else:
            assert tensor.grad is None, name


def test_present_tasks_without_valid_labels_give_connected_zeros():
    """All labels ignored (-100, 4, 255, no boxes): finite zeros whose backward still reaches outputs."""
    tasks = ["classification", "morphology", "segmentation", "vqa"]
    batch = make_batch(tasks, counts=(0, 0))
    batch["cell_labels"][:] = -100
    batch["morphology"][:] = 4
    batch["semantic_masks"][:] = 255
    batch["text_labels"][:] = -100
    losses, outputs = run(tasks, batch=batch)
    for task in tasks:
        assert losses[f"loss_{task}"].item() == 0.0
    losses["loss"].backward()
    for name in ("cell_logits", "cell_morphology", "semantic_logits", "text_logits", "pred_masks"):
        assert outputs[name].grad is not None, name


def test_detection_without_any_box_is_finite():
    """A detection batch of images without boxes trains every query towards background, finitely."""
    losses, outputs = run(["detection"], batch=make_batch(["detection"], counts=(0, 0)))
    assert torch.isfinite(losses["loss"]) and losses["loss_bbox"].item() == 0.0 and losses["loss_ce"] > 0
    losses["loss"].backward()
    assert outputs["pred_boxes"].grad is not None


def test_aux_off_drops_intermediate_layers():
    """LossConfig.aux = False keeps the final layer and encoder proposals only."""
    losses, _ = run(["detection", "morphology"], loss_cfg("loss.aux=false"))
    assert "loss_ce_0" not in losses and "loss_morph_0" not in losses and "loss_ce_interm" in losses


def test_dn_uses_fixed_matches_and_group_normalization():
    """DN outputs are scored on dn_meta's pairs (no matching), divided by num_boxes x num_groups."""
    outputs = make_outputs(dn=8)
    batch = make_batch(["detection"], counts=(2, 1))
    groups = 2
    outputs["dn_meta"] = {
        "positive_idx": [torch.tensor([0, 1, 4, 5]), torch.tensor([0, 4])],
        "target_idx": [torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0])],
        "num_groups": groups,
    }
    calls = []

    class Counting(HungarianMatcher):
        def __call__(self, outputs, targets):
            calls.append(outputs["pred_logits"].shape[1])
            return super().__call__(outputs, targets)

    criterion = UniHemaCriterion(loss_cfg(), matcher=Counting())
    losses = criterion(outputs, batch)
    assert len(calls) == 4 and 8 not in calls  # final + 2 aux + interm; never the DN queries
    indices = list(zip(outputs["dn_meta"]["positive_idx"], outputs["dn_meta"]["target_idx"]))
    dn = outputs["dn_outputs"]
    num = 3 * groups
    ce = focal_classification_loss(dn["pred_logits"], batch["targets"], indices, num)
    torch.testing.assert_close(losses["loss_ce_dn"], ce)
    l1, giou = box_losses(dn["pred_boxes"], batch["targets"], indices, num)
    torch.testing.assert_close((losses["loss_bbox_dn"], losses["loss_giou_dn"]), (l1, giou))
    assert {"loss_ce_dn_0", "loss_bbox_dn_1"} <= set(losses)
    losses["loss"].backward()
    assert dn["pred_boxes"].grad is not None and dn["aux_outputs"][1]["pred_logits"].grad is not None


def test_reducer_called_once_per_call_and_scales_normalization():
    """num_boxes_reducer sees [boxes, masks] once per call, even without boxes, and its result divides."""
    seen = []

    def reducer(counts):
        seen.append(counts.clone())
        return counts * 2  # as if other ranks held more boxes

    outputs = make_outputs()
    batch = make_batch(["detection"], counts=(3, 1))
    local = UniHemaCriterion(loss_cfg())(outputs, batch)
    scaled = UniHemaCriterion(loss_cfg(), num_boxes_reducer=reducer)(outputs, batch)
    assert seen[0].tolist() == [4.0, 4.0]
    torch.testing.assert_close(scaled["loss_detection"], local["loss_detection"] / 2)
    UniHemaCriterion(loss_cfg(), num_boxes_reducer=reducer)(outputs, make_batch(["classification"]))
    assert len(seen) == 2


def test_missing_outputs_and_unknown_tasks_are_errors():
    """A present task without its outputs, an unknown or an empty task list raise clearly."""
    outputs = make_outputs()
    del outputs["cell_logits"]
    with pytest.raises(KeyError, match="cell_logits"):
        UniHemaCriterion(loss_cfg())(outputs, make_batch(["classification"]))
    with pytest.raises(ValueError, match="unknown task"):
        UniHemaCriterion(loss_cfg())(make_outputs(), make_batch(["counting"]))
    with pytest.raises(ValueError, match="empty"):
        UniHemaCriterion(loss_cfg())(make_outputs(), make_batch([]))
    with pytest.raises(ValueError, match="0-based"):
        batch = make_batch(["detection"])
        batch["targets"][0]["labels"][0] = 99
        UniHemaCriterion(loss_cfg())(make_outputs(), batch)


def test_absent_outputs_of_absent_tasks_are_fine():
    """Outputs holding only the present task's tensors are enough (the model may skip the rest)."""
    full = make_outputs()
    outputs = {"cell_logits": full["cell_logits"], "cell_morphology": full["cell_morphology"]}
    batch = {
        "tasks": ["classification", "morphology"],
        "cell_labels": torch.tensor([0, 2]),
        "morphology": torch.tensor([[0, 1, 4, 4, 4, 4], [4] * 6]),
    }
    losses = UniHemaCriterion(loss_cfg())(outputs, batch)
    assert set(losses) == {"loss_cell_ce", "loss_morph_cell", "loss_classification", "loss_morphology", "loss"}
    assert math.isfinite(losses["loss"].item())


def test_bf16_outputs_give_float32_losses():
    """Autocast-style bf16 outputs are promoted: every loss comes out float32 and finite."""
    outputs = make_outputs()
    for tensor in all_leaves(outputs).values():
        tensor.data = tensor.data.bfloat16()
    batch = make_batch(TASKS)
    batch["text_task"] = ["vqa", "mlm"]
    losses = UniHemaCriterion(loss_cfg())(outputs, batch)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
