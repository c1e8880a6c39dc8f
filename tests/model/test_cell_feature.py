"""The single-cell feature must carry what differs between images, not only what they share."""

from __future__ import annotations

import pytest
import torch

from unihema.config import load_config
from unihema.model import build_model


def cell_like_images(n: int = 16, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Normalised images that differ the way cell crops do: one stained blob of varying size,
    place and colour on a shared background, so most of each image is common to all."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    background = torch.tensor([0.8, 0.6, 0.7]).view(3, 1, 1)
    images = []
    for _ in range(n):
        radius = 0.3 + 0.4 * torch.rand(1, generator=g)
        cx, cy = (torch.rand(2, generator=g) - 0.5) * 0.4
        blob = (((xx - cx) ** 2 + (yy - cy) ** 2) < radius**2).float()
        colour = (torch.tensor([0.4, 0.2, 0.6]) + 0.15 * torch.randn(3, generator=g)).view(3, 1, 1)
        images.append(background * (1 - blob) + colour * blob + 0.02 * torch.randn(3, size, size, generator=g))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (torch.stack(images) - mean) / std


def between_image_share(features: torch.Tensor) -> float:
    """Share of the features' mean squared norm that varies between images (1 = none shared)."""
    f = features.double()
    return float(f.var(0, unbiased=False).sum() / (f**2).sum(1).mean())


def feature_share(preset: str, *overrides: str) -> float:
    torch.manual_seed(0)
    model = build_model(load_config(preset, overrides=list(overrides))).train()
    with torch.no_grad():
        return between_image_share(model.cell_features(cell_like_images()))


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_preset_cell_feature_differs_between_images_at_init(preset):
    """The tiny and demo presets' cell feature keeps over 10% of its variance between images at init."""
    assert feature_share(preset) > 0.10


def test_per_sample_normalisation_leaves_a_shared_feature():
    """The per-sample LayerNorm variant keeps under 10% between images: the check can fail."""
    assert feature_share("demo", "model.hema.cell_feature_norm=layer") < 0.10


def test_batchnorm_feature_uses_running_statistics_in_eval_and_for_one_image():
    """After training-mode batches, eval uses the running statistics; a training batch of one does not crash."""
    torch.manual_seed(0)
    model = build_model(load_config("tiny")).train()
    norm = model.encoder.cell.norm
    assert isinstance(norm, torch.nn.BatchNorm1d)
    with torch.no_grad():
        for seed in range(3):
            model.cell_features(cell_like_images(seed=seed))
        assert norm.num_batches_tracked.item() == 3 and norm.running_mean.abs().sum() > 0
        one = model.cell_features(cell_like_images(n=1))
        assert one.shape == (1, model.cfg.hidden_dim) and torch.isfinite(one).all()
        assert norm.num_batches_tracked.item() == 3  # the single image did not move the statistics
        model.eval()
        assert torch.isfinite(model.cell_features(cell_like_images(n=2))).all()


def test_backbone_pool_variant_adds_a_projection_and_trains():
    """cell_feature_backbone_pool adds the backbone's pooled levels, and gradient reaches their projection."""
    torch.manual_seed(0)
    model = build_model(load_config("tiny", overrides=["model.hema.cell_feature_backbone_pool=true"])).train()
    proj = model.encoder.cell.backbone_proj
    assert proj is not None and proj.in_features == sum(model.backbone.channels)
    model.cell_features(cell_like_images(n=4)).pow(2).sum().backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
