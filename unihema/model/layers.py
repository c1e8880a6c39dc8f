"""Small building blocks shared by the detector, the Hema-Former and the heads.

They live here so that every module computes boxes, sigmoids and normalisations the same
way: a box convention that differs by half a pixel between the decoder and the proposal
generator is the kind of bug that costs a day of training to notice.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU in between (DETR's box head shape).

    The layers sit in ``self.layers`` so parameter names match DETR/DINO checkpoints
    (``bbox_embed.layers.0.weight`` ...).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x) with clamping, so boxes touching the border stay finite."""
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``.

    The paper uses 32 groups on 256 channels; narrow test models (32 or 64 channels, or the
    128/64-channel upsampler stages) need a smaller divisor rather than an error.
    """
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


def masked_mean(x: torch.Tensor, padding_mask: torch.Tensor | None, dim: int = 1) -> torch.Tensor:
    """Mean over ``dim`` ignoring positions where ``padding_mask`` is True."""
    if padding_mask is None:
        return x.mean(dim)
    keep = (~padding_mask).to(x.dtype).unsqueeze(-1)
    return (x * keep).sum(dim) / keep.sum(dim).clamp(min=1.0)


def bias_init_with_prob(prior_prob: float) -> float:
    """Bias that makes a sigmoid output ``prior_prob`` (focal-loss init of RetinaNet/DINO)."""
    return -math.log((1.0 - prior_prob) / prior_prob)


def activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}; allowed: 'relu', 'gelu'")
