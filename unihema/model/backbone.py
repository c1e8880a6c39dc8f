"""Image backbone: a timm ResNet cut at C3-C5, plus the input projections to ``hidden_dim``.

Why timm: ``features_only`` gives C3-C5 without touching the classifier, and its tags
(``resnet50.a1_in1k`` ...) name pretrained weights. The official model is DINO's ResNet-50
with FrozenBatchNorm2d and a frozen stem + layer1; only layer2-layer4 convolutions train
(23,232,512 parameters), which only makes sense on pretrained weights: frozen random
convolutions never learn, so the combination is refused. Where the weights come from
(``scratch``, a local file, a timm hub tag) and what an unreachable hub means is
:mod:`unihema.model.weights`; a meta-device build never loads or downloads anything.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from unihema.config import ModelConfig
from unihema.config.model import BackboneConfig

from .layers import group_norm
from .weights import BACKBONE_SETTING, PretrainedWeightsError, is_hub_id, loads_nothing, missing_local, unavailable

logger = logging.getLogger(__name__)

# timm names the stem "conv1"/"bn1" and the stages "layer1".."layer4".
_STEM = ("conv1", "bn1")


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """BatchNorm2d -> FrozenBatchNorm2d (statistics and affine become buffers, as in DINO)."""
    from timm.layers.norm_act import freeze_batch_norm_2d

    return freeze_batch_norm_2d(module)


def _read_state(path: Path) -> dict:
    """A state dict from a file (.safetensors, or torch's pickle with weights_only) or a folder holding one."""
    if path.is_dir():
        found = [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()]
        if not found:
            raise PretrainedWeightsError(
                f"{BACKBONE_SETTING}={str(path)!r}: folder has no model.safetensors or pytorch_model.bin"
            )
        path = found[0]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_local_weights(body: nn.Module, path: str) -> None:
    """Load a local backbone state dict (raw, or under "model"/"state_dict") into ``body``."""
    state = _read_state(Path(path).expanduser())
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    # Accept official Uni-Hema/DINO names and torchvision/timm names alike.
    for prefix in ("backbone.0.body.", "backbone.body.", "module."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    missing, unexpected = body.load_state_dict(state, strict=False)
    if missing:
        raise PretrainedWeightsError(
            f"{BACKBONE_SETTING}={path!r} lacks {len(missing)} tensors of the backbone, e.g. {missing[:3]}"
        )
    if unexpected:
        logger.warning(
            "backbone weights %s: ignored %d unexpected tensors, e.g. %s", path, len(unexpected), unexpected[:3]
        )


def _timm_from_hub(arch: str, **kwargs) -> nn.Module:
    """timm's own loader for a pretrained tag; unreachable or missing weights are an error, not random init."""
    from timm.models import get_pretrained_cfg

    tag_cfg = get_pretrained_cfg(arch) if not arch.startswith("hf-hub:") else None
    if not arch.startswith("hf-hub:") and (tag_cfg is None or not (tag_cfg.hf_hub_id or tag_cfg.url or tag_cfg.file)):
        # timm would log a warning and hand back random weights.
        raise unavailable(BACKBONE_SETTING, arch, "timm knows no pretrained weights under this name")
    try:
        return timm.create_model(arch, pretrained=True, **kwargs)
    except Exception as err:  # noqa: BLE001 - hub, network and cache errors come in many types
        raise unavailable(BACKBONE_SETTING, arch, f"{type(err).__name__}: {err}") from None


class Backbone(nn.Module):
    """C3-C5 of a timm ResNet with DINO's freezing; ``forward`` returns the feature maps."""

    def __init__(
        self,
        name: str,
        out_indices=(2, 3, 4),
        pretrained: str = "",
        frozen_stages: int = 0,
        frozen_batchnorm: bool = False,
    ) -> None:
        super().__init__()
        BackboneConfig(name, pretrained, frozen_stages, frozen_batchnorm, tuple(out_indices)).validate()
        kwargs = {"features_only": True, "out_indices": tuple(out_indices)}
        if loads_nothing(pretrained) or torch.get_default_device().type == "meta":
            # On the meta device there is nothing to load into: shapes come from ``name``.
            self.body = timm.create_model(name, **kwargs)
        elif is_hub_id(pretrained):
            self.body = _timm_from_hub(pretrained, **kwargs)
        else:
            if not Path(pretrained).expanduser().exists():
                raise missing_local(BACKBONE_SETTING, pretrained)
            self.body = timm.create_model(name, **kwargs)
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
    projs = [
        nn.Sequential(nn.Conv2d(c, hidden_dim, kernel_size=1), group_norm(hidden_dim, groups)) for c in in_channels
    ]
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
