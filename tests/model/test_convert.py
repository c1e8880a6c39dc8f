"""Official checkpoint interop: every official tensor maps to one of ours (or is listed), round trips."""

from __future__ import annotations

import argparse

import pytest
import torch

from unihema.config import load_config
from unihema.model import build_model
from unihema.model.__main__ import main as model_cli
from unihema.model.convert import (
    PREFIXES, ROW_ADAPTED, UNMATCHED_REASONS, check_inventory, load_checkpoint, load_official, official_to_ours,
    official_to_ours_name, ours_to_official, ours_to_official_name,
)
from unihema.model.official_params import OFFICIAL_PARAMS

from .conftest import tiny_config


@pytest.fixture(scope="module")
def paper_model():
    return build_model(load_config("paper"), device="meta")


def test_inventory_maps_one_to_one(paper_model):
    """Each official tensor maps to exactly one of ours with its numel, or is a listed class head / unmatched."""
    report = check_inventory(paper_model)
    assert not report.mismatched, report.mismatched
    assert len(report.exact) + len(report.adapted) + len(report.unmatched) == len(OFFICIAL_PARAMS)
    targets = list(report.exact.values()) + list(report.adapted.values())
    assert len(targets) == len(set(targets))
    params = dict(paper_model.named_parameters())
    for official, ours in report.exact.items():
        assert params[ours].numel() == OFFICIAL_PARAMS[official]
    # Only class heads are re-indexed, and every unmatched name has a documented reason.
    assert set(report.adapted.values()) == {
        "decoder.class_embed.weight", "decoder.class_embed.bias", "proposals.class_embed.weight",
        "proposals.class_embed.bias", "denoising.label_enc.weight", "heads.classifier.6.weight",
        "heads.classifier.6.bias"}
    assert all(any(n.startswith(p) for p in UNMATCHED_REASONS) for n in report.unmatched)
    print("\n".join(report.lines()))
    mapped = sum(OFFICIAL_PARAMS[n] for n in list(report.exact) + list(report.adapted))
    assert mapped / sum(OFFICIAL_PARAMS.values()) > 0.999


def test_names_are_invertible():
    """Official -> ours -> official gives back every mapped name."""
    for name in OFFICIAL_PARAMS:
        ours = official_to_ours_name(name)
        if ours is not None:
            assert ours_to_official_name(ours) == name
    assert len({o for o, _ in PREFIXES}) == len({u for _, u in PREFIXES}) == len(PREFIXES)


def test_meta_round_trip_from_inventory_shapes(paper_model):
    """A synthetic official state dict (params.json sizes, meta) converts to our shapes and back."""
    reference = paper_model.state_dict()
    official = {n: torch.empty(k, device="meta") for n, k in OFFICIAL_PARAMS.items()}
    ours, report = official_to_ours(official, reference)
    assert not report.mismatched
    for name, value in ours.items():
        assert value.shape == reference[name].shape, name
    back, _ = ours_to_official(ours)
    for name in list(report.exact) + list(report.adapted):
        assert back[name].numel() == OFFICIAL_PARAMS[name], name
    assert set(report.unmatched) == set(OFFICIAL_PARAMS) - set(back)


def test_value_round_trip_and_cli(tmp_path):
    """Ours -> official -> ours keeps every value (also through the CLI, with an argparse Namespace inside)."""
    torch.manual_seed(0)
    model = build_model(tiny_config("model.decoder.dn_enabled=true", "model.backbone.frozen_batchnorm=true",
                                    "model.backbone.pretrained=checkpoint"))
    state = model.state_dict()
    official, _ = ours_to_official(state)
    assert official["transformer.decoder.class_embed.0.weight"].shape[0] == 30  # id 0 row restored
    assert official["classifier_image.classifier2.6.bias"].shape[0] == 45  # official classes only
    ckpt = tmp_path / "official.pth"
    torch.save({"model": official, "args": argparse.Namespace(lr=1e-4), "epoch": 3}, ckpt)
    assert set(load_checkpoint(ckpt)) == set(official)

    fresh = build_model(tiny_config("model.decoder.dn_enabled=true", "model.backbone.frozen_batchnorm=true",
                                    "model.backbone.pretrained=checkpoint"))
    report = load_official(fresh, load_checkpoint(ckpt))
    for name, value in fresh.state_dict().items():
        if name in report.adapted.values():
            count = next(rule[1] for prefix, rule in ROW_ADAPTED.items() if name.startswith(prefix))
            assert torch.equal(value[:count], state[name][:count]), name  # extension rows keep their init
        elif name in report.exact.values():
            assert torch.equal(value, state[name]), name

    out = tmp_path / "ours.safetensors"
    assert model_cli(["convert", "--preset", "tiny", "model.decoder.dn_enabled=true",
                      "--official", str(ckpt), "--out", str(out)]) == 0
    converted = load_checkpoint(out)
    assert torch.equal(converted["decoder.class_embed.weight"], state["decoder.class_embed.weight"])
    back = tmp_path / "back.pth"
    assert model_cli(["convert", "--preset", "tiny", "--ours", str(out), "--out", str(back)]) == 0
    assert torch.equal(load_checkpoint(back)["xformer.queries"], official["xformer.queries"])


def test_inventory_cli_lists_unmatched(capsys):
    """``python -m unihema.model inventory`` reports the counts and every unmatched official name."""
    assert model_cli(["inventory", "--preset", "paper"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("exact=") and "unmatched class_tokens.0" in out and "mismatched=0" in out
