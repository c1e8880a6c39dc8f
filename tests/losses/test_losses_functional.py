"""Element-wise focal, asymmetric, Dice and cross-entropy losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tv

from unihema.losses.functional import asymmetric_loss, connected_zero, cross_entropy, dice_loss, sigmoid_focal_loss

LN2 = math.log(2)


def test_focal_hand_values():
    """Focal loss at p=0.5 and p=0.75 for positive and negative targets (alpha .25, gamma 2)."""
    logits = torch.tensor([0.0, 0.0, math.log(3.0), math.log(3.0)])
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0])
    expected = torch.tensor(
        [
            0.25 * 0.5**2 * LN2,  # p_t = .5, alpha_t = .25
            0.75 * 0.5**2 * LN2,  # p_t = .5, alpha_t = .75
            0.25 * 0.25**2 * -math.log(0.75),  # p_t = .75
            0.75 * 0.75**2 * -math.log(0.25),  # p_t = .25
        ]
    )
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, 0.25, 2.0), expected)


def test_focal_matches_torchvision():
    """sigmoid_focal_loss equals torchvision's on random logits, including bf16 inputs."""
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(4, 7, generator=g) * 3, (torch.rand(4, 7, generator=g) > 0.7).float()
    ref = tv.sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets), ref)
    out = sigmoid_focal_loss(logits.bfloat16(), targets)
    assert out.dtype == torch.float32


def test_asymmetric_hand_values_with_clip():
    """ASL: positive p=.5 -> ln2*.5; negative p=.5 -> -ln(.58)*.42^4; negative p<clip -> exactly 0."""
    low = math.log(0.05 / 0.95)  # p = 0.05 < clip 0.08
    logits = torch.tensor([0.0, 0.0, low, low])
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0])
    loss = asymmetric_loss(logits, targets, gamma_neg=4, gamma_pos=1, clip=0.08)
    expected = torch.tensor(
        [
            LN2 * 0.5,
            -math.log(0.58) * 0.42**4,
            0.0,
            -math.log(0.05) * 0.95,
        ]
    )
    torch.testing.assert_close(loss, expected)


def test_asymmetric_focusing_weight_is_detached():
    """With detach_focusing the gradient is the weighted CE gradient only (official ASL setting)."""
    x = torch.tensor([0.3], requires_grad=True)
    asymmetric_loss(x, torch.tensor([1.0]), gamma_pos=1, clip=0.0).sum().backward()
    p = torch.sigmoid(torch.tensor(0.3)).item()
    # d/dx [-log p] * (1 - p) with (1 - p) held constant = -(1 - p) * (1 - p)
    assert x.grad.item() == pytest.approx(-((1 - p) ** 2), rel=1e-5)
    y = torch.tensor([0.3], requires_grad=True)
    asymmetric_loss(y, torch.tensor([1.0]), gamma_pos=1, clip=0.0, detach_focusing=False).sum().backward()
    assert y.grad.item() != pytest.approx(x.grad.item(), rel=1e-3)


def test_dice_hand_values_and_valid_mask():
    """Dice of [1,1,0,0] vs [1,0,1,0] is 1 - 3/5; masking the last two pixels gives 1 - 3/4."""
    probs = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert dice_loss(probs, target).item() == pytest.approx(0.4)
    valid = torch.tensor([[True, True, False, False]])
    assert dice_loss(probs, target, valid).item() == pytest.approx(0.25)
    assert dice_loss(torch.zeros(1, 3), torch.zeros(1, 3)).item() == pytest.approx(0.0)


def test_cross_entropy_ignores_and_all_ignored_is_connected_zero():
    """CE skips -100 labels; with every label ignored it is 0 with a gradient, not NaN."""
    logits = torch.tensor([[0.0, 0.0], [5.0, -5.0]], requires_grad=True)
    assert cross_entropy(logits, torch.tensor([1, -100])).item() == pytest.approx(LN2)
    zero = cross_entropy(logits, torch.tensor([-100, -100]))
    zero.backward()
    assert zero.item() == 0.0 and logits.grad is not None and not logits.grad.any()


def test_connected_zero_requires_a_tensor():
    """connected_zero refuses to make an unconnected zero."""
    with pytest.raises(ValueError):
        connected_zero(None)
