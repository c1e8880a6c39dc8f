"""Image backbone: a timm ResNet cut at C3-C5, plus the input projections to ``hidden_dim``.

Why timm: ``features_only`` gives C3-C5 without touching the classifier, and its tags
(``resnet50.a1_in1k`` ...) name pretrained weights. The official model is DINO's ResNet-50
with FrozenBatchNorm2d and a frozen stem + layer1; only layer2-layer4 convolutions train
(23,232,512 parameters). Pretrained weights load only when the config asks for them, so
the default build never touches the network.
"""

from __future__ import annotations

import logging
import os

import timm
import torch
import torch.nn.functional as F
from torch import nn

from unihema.config import ModelConfig

from .layers import group_norm

logger = logging.getLogger(__name__)

# timm names the stem "conv1"/"bn1" and the stages "layer1".."layer4".
_STEM = ("conv1", "bn1")


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """BatchNorm2d -> FrozenBatchNorm2d (statistics and affine become buffers, as in DINO)."""
    from timm.layers.norm_act import freeze_batch_norm_2d

    return freeze_batch_norm_2d(module)


def _load_local_weights(body: nn.Module, path: str) -> None:
    """Load a local backbone state dict (raw, or under "model"/"state_dict") with weights_only."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    # Accept official Uni-Hema/DINO names and torchvision/timm names alike.
    for prefix in ("backbone.0.body.", "backbone.body.", "module."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    missing, unexpected = body.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"backbone weights {path} lack {len(missing)} tensors, e.g. {missing[:3]}")
    if unexpected:
        logger.warning("backbone weights %s: ignored %d unexpected tensors, e.g. %s",
                       path, len(unexpected), unexpected[:3])


class Backbone(nn.Module):
    """C3-C5 of a timm ResNet with DINO's freezing; ``forward`` returns the feature maps."""

    def __init__(self, name: str, out_indices=(2, 3, 4), pretrained: str = "", frozen_stages: int = 1,
                 frozen_batchnorm: bool = True) -> None:
        super().__init__()
        from_timm = bool(pretrained) and not os.path.exists(pretrained)
        # A timm tag ("resnet50.a1_in1k") carries the architecture; a path or "" uses ``name``.
        arch = pretrained if from_timm else name
        kwargs = {}
        if frozen_batchnorm and not pretrained:
            # timm zero-initialises each block's last BN scale; frozen, that zero would be
            # permanent and the residual branches (most of the convs) would never train.
            kwargs["zero_init_last"] = False
        self.body = timm.create_model(arch, pretrained=from_timm, features_only=True, out_indices=tuple(out_indices),
                                      **kwargs)
        if pretrained and not from_timm:
            _load_local_weights(self.body, pretrained)
        if frozen_batchnorm:
            self.body = _freeze_batchnorm(self.body)
        # frozen_stages k: the stem and layer1..layer{k} (official: 1); 0 trains everything.
        frozen = (_STEM + tuple(f"layer{i}" for i in range(1, frozen_stages + 1))) if frozen_stages else ()
        for attr in frozen:
            if hasattr(self.body, attr):
                for p in getattr(self.body, attr).parameters():
                    p.requires_grad_(False)
        self.channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(images))


def build_backbone(cfg: ModelConfig) -> Backbone:
    b = cfg.backbone
    return Backbone(b.name, b.out_indices, b.pretrained, b.frozen_stages, b.frozen_batchnorm)


def build_input_proj(in_channels: list[int], num_levels: int, hidden_dim: int, groups: int) -> nn.ModuleList:
    """1x1 conv + GroupNorm per backbone level, then 3x3 stride-2 convs for the extra levels.

    The ``Sequential(conv, norm)`` layout matches DINO's ``input_proj.{i}.{0,1}`` names.
    """
    projs = [nn.Sequential(nn.Conv2d(c, hidden_dim, kernel_size=1), group_norm(hidden_dim, groups))
             for c in in_channels]
    c = in_channels[-1]
    for _ in range(num_levels - len(in_channels)):
        projs.append(nn.Sequential(nn.Conv2d(c, hidden_dim, 3, stride=2, padding=1), group_norm(hidden_dim, groups)))
        c = hidden_dim
    for proj in projs:
        nn.init.xavier_uniform_(proj[0].weight, gain=1)
        nn.init.constant_(proj[0].bias, 0)
    return nn.ModuleList(projs)


def project_levels(input_proj: nn.ModuleList, features: list[torch.Tensor], pixel_mask: torch.Tensor):
    """Apply the projections; return per-level maps (B, d, h, w) and padding masks (B, h, w).

    The extra levels take the previous *raw* level for the first one (C5, as in DINO) and
    the previous projected level after that.
    """
    srcs, masks = [], []
    n_backbone = len(features)
    prev = features[-1]
    for lvl, proj in enumerate(input_proj):
        src = proj(features[lvl] if lvl < n_backbone else prev)
        if lvl >= n_backbone:
            prev = src
        mask = F.interpolate(pixel_mask[None].float(), size=src.shape[-2:]).to(torch.bool)[0]
        srcs.append(src)
        masks.append(mask)
    return srcs, masks
