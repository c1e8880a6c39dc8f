"""Per-task loss modules (detection, morphology, segmentation, text) on tiny hand-worked tensors."""

from __future__ import annotations

import math

import pytest
import torch

from unihema.losses.detection import box_losses, focal_classification_loss
from unihema.losses.functional import sigmoid_focal_loss
from unihema.losses.morphology import image_morphology_loss, query_morphology_loss
from unihema.losses.segmentation import instance_mask_losses, semantic_losses
from unihema.losses.text import text_losses

from .loss_fakes import loss_cfg

LN2 = math.log(2)
FOCAL_POS = 0.25 * 0.25 * LN2  # logit 0, target 1
FOCAL_NEG = 0.75 * 0.25 * LN2  # logit 0, target 0


def test_focal_classification_normalized_by_boxes():
    """Zero logits: matched class pays the positive focal term, everything else the negative, / num_boxes."""
    logits = torch.zeros(1, 3, 4)
    targets = [{"labels": torch.tensor([2]), "boxes": torch.zeros(1, 4)}]
    indices = [(torch.tensor([1]), torch.tensor([0]))]
    loss = focal_classification_loss(logits, targets, indices, num_boxes=2.0)
    assert loss.item() == pytest.approx((FOCAL_POS + 11 * FOCAL_NEG) / 2, rel=1e-5)


def test_box_losses_hand_values():
    """L1 0.4 and 1 - GIoU 0.75 for a box inside a twice-as-large target; both / num_boxes."""
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]]])
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]
    l1, giou = box_losses(boxes, targets, [(torch.tensor([0]), torch.tensor([0]))], num_boxes=1.0)
    assert l1.item() == pytest.approx(0.4) and giou.item() == pytest.approx(0.75)
    l1, giou = box_losses(boxes, targets, [(torch.tensor([0]), torch.tensor([0]))], num_boxes=4.0)
    assert l1.item() == pytest.approx(0.1) and giou.item() == pytest.approx(0.1875)


def test_query_morphology_ignores_not_annotated():
    """Matched-query ASL counts only 0/1 entries and divides by num_boxes; 4s contribute nothing."""
    cfg = loss_cfg()
    pred = torch.zeros(1, 2, 6, requires_grad=True)
    targets = [{"morphology": torch.tensor([[1, 0, 4, 4, 4, 4], [4, 4, 4, 4, 4, 4]])}]
    indices = [(torch.tensor([0, 1]), torch.tensor([1, 0]))]  # query 1 gets the annotated cell
    loss = query_morphology_loss(pred, targets, indices, num_boxes=2.0, cfg=cfg)
    pos, neg = LN2 * 0.5, -math.log(0.58) * 0.42**4
    assert loss.item() == pytest.approx((pos + neg) / 2, rel=1e-5)
    loss.backward()
    assert not pred.grad[0, 0].any() and pred.grad[0, 1, :2].ne(0).all() and not pred.grad[0, 1, 2:].any()


def test_query_morphology_rejects_bad_values():
    """A morphology value other than 0, 1 or 4 is an error."""
    with pytest.raises(ValueError, match="0, 1 or 4"):
        query_morphology_loss(
            torch.zeros(1, 1, 6),
            [{"morphology": torch.tensor([[2, 0, 0, 0, 0, 0]])}],
            [(torch.tensor([0]), torch.tensor([0]))],
            1.0,
            loss_cfg(),
        )


def test_image_morphology_divides_by_annotated_images():
    """Per-image ASL sums annotated entries and divides by images with any annotation."""
    cfg = loss_cfg()
    logits = torch.zeros(3, 6)
    morph = torch.full((3, 6), 4)
    morph[0, 0] = 1
    morph[2, 1] = 0
    expected = (LN2 * 0.5 - math.log(0.58) * 0.42**4) / 2
    assert image_morphology_loss(logits, morph, cfg).item() == pytest.approx(expected, rel=1e-5)
    all_missing = torch.zeros(2, 6, requires_grad=True)
    zero = image_morphology_loss(all_missing, torch.full((2, 6), 4), cfg)
    zero.backward()
    assert zero.item() == 0.0 and all_missing.grad is not None


def test_semantic_hand_values_and_ignore():
    """One valid pixel of class 0 at logit 0: focal (pos+neg)/2, Dice (0.2 + 1/3)/2; 255 ignored."""
    logits = torch.zeros(1, 2, 1, 2)
    masks = torch.tensor([[[0, 255]]])
    dice, focal = semantic_losses(logits, masks)
    assert focal.item() == pytest.approx((FOCAL_POS + FOCAL_NEG) / 2, rel=1e-5)
    assert dice.item() == pytest.approx((0.2 + 1 / 3) / 2, rel=1e-5)


def test_semantic_upsamples_to_target_size():
    """Logits at a coarser resolution are upsampled bilinearly to the mask size."""
    masks = torch.tensor([[[0, 1, 1, 255]] * 4])
    coarse = torch.zeros(1, 2, 2, 2, requires_grad=True)
    dice_c, focal_c = semantic_losses(coarse, masks)
    dice_f, focal_f = semantic_losses(torch.zeros(1, 2, 4, 4), masks)
    torch.testing.assert_close((dice_c, focal_c), (dice_f, focal_f))
    (dice_c + focal_c).backward()
    assert coarse.grad.abs().sum() > 0


def test_semantic_all_ignored_is_connected_zero():
    """A segmentation batch whose masks are all 255 gives zeros that still reach the logits."""
    logits = torch.randn(2, 2, 3, 3, requires_grad=True)
    dice, focal = semantic_losses(logits, torch.full((2, 3, 3), 255))
    (dice + focal).backward()
    assert dice.item() == focal.item() == 0.0 and logits.grad is not None


def test_instance_masks_hand_values():
    """Matched query mask vs its instance mask, upsampled 2x; Dice and mean-pixel focal / num_masks."""
    pred = torch.zeros(1, 3, 1, 1)
    pred[0, 2] = 10.0  # ~all foreground after sigmoid
    target = torch.zeros(1, 2, 2, dtype=torch.bool)
    target[0, 0] = True  # half the pixels
    targets = [{"masks": target}]
    dice, focal = instance_mask_losses(pred, targets, [(torch.tensor([2]), torch.tensor([0]))], num_masks=1.0)
    p = torch.sigmoid(torch.tensor(10.0)).item()
    assert dice.item() == pytest.approx(1 - (2 * 2 * p + 1) / (4 * p + 2 + 1), rel=1e-5)
    logits = torch.full((4,), 10.0)
    ref = sigmoid_focal_loss(logits, torch.tensor([1.0, 1.0, 0.0, 0.0])).mean()
    assert focal.item() == pytest.approx(ref.item(), rel=1e-5)


def test_text_split_by_sample_task():
    """text_task routes each sample's tokens to the vqa or mlm loss; each is a mean over its tokens."""
    logits = torch.randn(3, 4, 7)
    labels = torch.randint(0, 7, (3, 4))
    labels[0, 3] = -100
    out = text_losses(logits, labels, ["vqa", "mlm"], ["vqa", "mlm", "vqa"])
    ce = torch.nn.functional.cross_entropy
    vqa = ce(logits[[0, 2]].reshape(-1, 7), labels[[0, 2]].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out["vqa"], vqa)
    torch.testing.assert_close(out["mlm"], ce(logits[1], labels[1]))


def test_text_without_split_needs_one_text_task():
    """No text_task: the loss goes to the single text task; with both present it refuses to guess."""
    logits, labels = torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3))
    assert set(text_losses(logits, labels, ["mlm", "detection"])) == {"mlm"}
    with pytest.raises(ValueError, match="text_task"):
        text_losses(logits, labels, ["vqa", "mlm"])


def test_text_task_without_samples_is_connected_zero():
    """A text task with no sample of its own in the batch gives a zero, not NaN."""
    logits = torch.randn(2, 3, 5, requires_grad=True)
    out = text_losses(logits, torch.randint(0, 5, (2, 3)), ["vqa", "mlm"], ["vqa", "vqa"])
    assert out["mlm"].item() == 0.0 and torch.isfinite(out["vqa"])
