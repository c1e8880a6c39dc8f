"""Backbone: C3-C5 channels/strides, DINO freezing, local pretrained weights, extra levels."""

from __future__ import annotations

import pytest
import timm
import torch

from unihema.model.backbone import Backbone, build_input_proj, project_levels


def test_levels_and_freezing():
    """resnet18 gives C3-C5 at strides 8/16/32; frozen BN is a buffer; frozen stages do not train."""
    bb = Backbone("resnet18", pretrained="checkpoint", frozen_stages=1, frozen_batchnorm=True)
    assert bb.channels == [128, 256, 512] and bb.strides == [8, 16, 32]
    feats = bb(torch.randn(1, 3, 64, 96))
    assert [f.shape[-2:] for f in feats] == [(8, 12), (4, 6), (2, 3)]
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("body.layer2", "body.layer3", "body.layer4")) for n in trainable)
    assert "body.layer2.0.bn1.running_mean" in dict(bb.named_buffers())
    # Frozen random weights would never learn (and timm zero-inits each block's last BN): refused.
    with pytest.raises(ValueError, match="need pretrained weights"):
        Backbone("resnet18", frozen_stages=0, frozen_batchnorm=True)


def test_local_pretrained_file(tmp_path):
    """A local state dict (timm names or official backbone.0.body.* names) loads with weights_only."""
    torch.manual_seed(0)
    source = timm.create_model("resnet18")
    path = tmp_path / "r18.pth"
    torch.save({"model": {f"backbone.0.body.{k}": v for k, v in source.state_dict().items()}}, path)
    bb = Backbone("resnet18", pretrained=str(path), frozen_stages=0)
    assert torch.equal(bb.body.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert torch.equal(bb.body.layer3[1].bn2.running_var, source.layer3[1].bn2.running_var)


def test_extra_levels_and_masks():
    """Levels past C5 are stride-2 convs; padding masks follow every level's size."""
    bb = Backbone("resnet18", frozen_stages=0)
    proj = build_input_proj(bb.channels, 5, 32, 8)
    mask = torch.zeros(1, 64, 96, dtype=torch.bool)
    mask[:, :, 64:] = True
    srcs, masks = project_levels(proj, bb(torch.randn(1, 3, 64, 96)), mask)
    assert [s.shape[-2:] for s in srcs] == [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    assert all(s.shape[1] == 32 for s in srcs) and [m.shape for m in masks] == [s[:, 0].shape for s in srcs]
    assert masks[0][0, 0, -1] and not masks[0][0, 0, 0]
    assert proj[0][1].num_groups == 8
