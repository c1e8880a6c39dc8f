"""The morphology task's losses: asymmetric loss on the six binary cell attributes.

Attributes are predicted twice: per detection query (``pred_morphology``, supervised through
the Hungarian match of the same decoder layer) and per image from the single-cell feature
(``cell_morphology``). Most cells carry only some attributes, so targets use
MORPHOLOGY_NOT_ANNOTATED (4) and those entries are masked out rather than treated as 0.
ASL (gamma- 4, gamma+ 1, clip 0.08) is the official choice because "absent"/"regular" values
dominate every attribute.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from unihema.labels import MORPHOLOGY_NOT_ANNOTATED
from unihema.losses.functional import asymmetric_loss, connected_zero
from unihema.losses.matcher import Indices, query_index


def masked_asymmetric_sum(logits: Tensor, targets: Tensor, cfg) -> Tensor:
    """Sum of ASL over the annotated entries of (N, A) logits / 0-1-4 targets."""
    targets = targets.to(logits.device)
    valid = targets != MORPHOLOGY_NOT_ANNOTATED
    bad = valid & (targets != 0) & (targets != 1)
    if bool(bad.any()):
        raise ValueError(
            f"morphology targets must be 0, 1 or {MORPHOLOGY_NOT_ANNOTATED} (not annotated); "
            f"got {sorted(set(targets[bad].tolist()))}"
        )
    loss = asymmetric_loss(
        logits,
        targets.clamp(max=1),
        cfg.morph_gamma_neg,
        cfg.morph_gamma_pos,
        cfg.morph_clip,
    )
    # where(), not multiply: a clipped log of an ignored entry could be -inf * 0 = NaN.
    return torch.where(valid, loss, torch.zeros_like(loss)).sum()


def query_morphology_loss(
    pred_morphology: Tensor,
    targets: Sequence[dict],
    indices: Indices,
    num_boxes: Tensor | float,
    cfg,
) -> Tensor:
    """ASL of matched queries' (B, Q, A) logits, divided by the number of boxes as officially.

    An image whose target dict has no ``morphology`` counts as all not-annotated.
    """
    width = pred_morphology.shape[-1]
    matched = []
    for t, (_, tgt) in zip(targets, indices):
        values = t.get("morphology")
        if values is None:
            matched.append(
                torch.full(
                    (len(tgt), width), MORPHOLOGY_NOT_ANNOTATED, dtype=torch.int64, device=pred_morphology.device
                )
            )
        else:
            matched.append(values.to(pred_morphology.device)[tgt])
    src = pred_morphology[query_index(indices)]
    if not matched:
        return connected_zero(pred_morphology)
    return masked_asymmetric_sum(src, torch.cat(matched), cfg) / num_boxes


def image_morphology_loss(cell_morphology: Tensor, morphology: Tensor, cfg) -> Tensor:
    """ASL of per-image (B, A) logits, divided by the number of images with any annotation."""
    if cell_morphology.shape != morphology.shape:
        raise ValueError(f"cell_morphology {tuple(cell_morphology.shape)} vs morphology {tuple(morphology.shape)}")
    annotated = (morphology != MORPHOLOGY_NOT_ANNOTATED).any(-1).sum().clamp(min=1)
    return masked_asymmetric_sum(cell_morphology, morphology, cfg) / annotated.to(cell_morphology.device)
