"""Element-wise loss formulas used by more than one criterion.

Each function returns unreduced values so the caller owns the normalization: detection
divides by the (possibly all-reduced) number of boxes, segmentation by valid pixels, and
the two must not be mixed up inside a helper. Inputs are promoted to float32 because these
run on logits that may come out of a bf16/fp16 autocast region, where ``log`` and the
focusing powers lose most of their precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def connected_zero(*tensors: Tensor | None) -> Tensor:
    """A float32 zero that depends on ``tensors``.

    Returned when a task is present but has nothing to supervise (every label ignored, no
    boxes): backward then still visits the task's parameters, which DDP requires of every
    rank, and the sum stays finite where an empty ``mean`` would be NaN.
    """
    present = [t for t in tensors if t is not None]
    if not present:
        raise ValueError("connected_zero needs at least one tensor")
    return sum(t.float().sum() * 0.0 for t in present)


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Binary focal loss per element (Lin et al., 2017), as used by Deformable DETR / DINO.

    ``alpha`` < 0 disables the class-balance factor.
    """
    logits, targets = logits.float(), targets.float()
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def asymmetric_loss(
    logits: Tensor,
    targets: Tensor,
    gamma_neg: float = 4.0,
    gamma_pos: float = 1.0,
    clip: float = 0.08,
    eps: float = 1e-8,
    detach_focusing: bool = True,
) -> Tensor:
    """Asymmetric loss per element (Ridnik et al., 2021), positive values.

    ``clip`` shifts the negative probability up (probability shifting), so easy negatives
    with p < clip contribute exactly zero. The focusing weight is detached by default, as in
    the official Uni-Hema run and the ASL authors' training code: the weight then only
    rescales each element's cross-entropy gradient instead of adding its own term.
    """
    logits, targets = logits.float(), targets.float()
    prob = logits.sigmoid()
    prob_neg = 1 - prob
    if clip > 0:
        prob_neg = (prob_neg + clip).clamp(max=1)
    loss = targets * torch.log(prob.clamp(min=eps)) + (1 - targets) * torch.log(prob_neg.clamp(min=eps))
    with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_focusing):
        p_t = prob * targets + prob_neg * (1 - targets)
        gamma = gamma_pos * targets + gamma_neg * (1 - targets)
        weight = torch.pow(1 - p_t, gamma)
    return -loss * weight


def dice_loss(probs: Tensor, targets: Tensor, valid: Tensor | None = None, smooth: float = 1.0) -> Tensor:
    """Soft Dice loss per row of (N, P) probabilities; ``valid`` (N, P) drops ignored pixels.

    The +1 smoothing (as in DETR / Mask2Former) keeps an empty target with an empty
    prediction at zero loss instead of 0/0.
    """
    probs, targets = probs.float(), targets.float()
    if valid is not None:
        valid = valid.to(probs.dtype)
        probs, targets = probs * valid, targets * valid
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return 1 - (numerator + smooth) / (denominator + smooth)


def cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean cross-entropy over non-ignored labels; a connected zero when all are ignored.

    ``F.cross_entropy`` returns NaN (0/0) for an all-ignored batch, which is common here:
    a mixed batch may carry one VQA sample and no MLM sample, or no labelled cell.
    """
    logits = logits.reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1)
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"cross_entropy: {logits.shape[0]} logit rows for {labels.shape[0]} labels")
    # Sum over valid labels / their count (at least 1): the mean where labels exist, a
    # connected zero where none do, with no host sync to find out which.
    valid = (labels != ignore_index).sum().clamp(min=1)
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum") / valid
