"""Heads on the single-cell feature: the cell classifier and the per-image morphology logits.

They are separate from the detector's per-query heads (which live with the decoder because
they run on every layer) since they read one vector per image: the 256-d single-cell
feature that linear probing also evaluates. The classifier's layout (Linear, ReLU,
Dropout, Linear, ReLU, Dropout, Linear; d -> d -> d/2 -> classes) follows the official
``classifier_image.classifier2``.
"""

from __future__ import annotations

import torch
from torch import nn


class CellHeads(nn.Module):
    def __init__(self, d_model: int, num_cell_classes: int, num_attributes: int, dropout: float = 0.0) -> None:
        super().__init__()
        half = max(1, d_model // 2)
        self.classifier = nn.Sequential(
            nn.Linear(d_model, d_model),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(d_model, half),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(half, num_cell_classes),
        )
        self.morphology = nn.Linear(d_model, num_attributes)

    def forward(self, cell_feature: torch.Tensor) -> dict:
        return {
            "cell_logits": self.classifier(cell_feature),
            "cell_morphology": self.morphology(cell_feature),
            "cell_feature": cell_feature,
        }
