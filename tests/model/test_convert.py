"""Official checkpoint interop: every official tensor maps to one of ours (or is listed), round trips."""

from __future__ import annotations

import argparse

import pytest
import torch

from unihema.config import load_config
from unihema.model import build_model
from unihema.model.__main__ import main as model_cli
from unihema.model.convert import (
    PREFIXES,
    ROW_ADAPTED,
    UNMATCHED_REASONS,
    check_inventory,
    is_dead,
    load_checkpoint,
    load_official,
    official_to_ours,
    official_to_ours_name,
    ours_to_official,
    ours_to_official_name,
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
        "decoder.class_embed.weight",
        "decoder.class_embed.bias",
        "proposals.class_embed.weight",
        "proposals.class_embed.bias",
        "denoising.label_enc.weight",
        "heads.classifier.6.weight",
        "heads.classifier.6.bias",
        "decoder.morph_embed.weight",
        "decoder.morph_embed.bias",
    }
    assert all(any(n.startswith(p) for p in UNMATCHED_REASONS) for n in report.unmatched)
    print("\n".join(report.lines()))
    # Of what the official forward reads, all but the listed heads map (dead tensors never do).
    mapped = sum(OFFICIAL_PARAMS[n] for n in list(report.exact) + list(report.adapted))
    live = sum(k for n, k in OFFICIAL_PARAMS.items() if not is_dead(n))
    assert mapped / live > 0.9999


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
    model = build_model(
        tiny_config(
            "model.decoder.dn_enabled=true",
            "model.backbone.frozen_batchnorm=true",
            "model.backbone.pretrained=checkpoint",
        )
    )
    state = model.state_dict()
    official, _ = ours_to_official(state)
    assert official["transformer.decoder.class_embed.0.weight"].shape[0] == 30  # id 0 row restored
    assert official["classifier_image.classifier2.6.bias"].shape[0] == 45  # official classes only
    ckpt = tmp_path / "official.pth"
    torch.save({"model": official, "args": argparse.Namespace(lr=1e-4), "epoch": 3}, ckpt)
    assert set(load_checkpoint(ckpt)) == set(official)

    fresh = build_model(
        tiny_config(
            "model.decoder.dn_enabled=true",
            "model.backbone.frozen_batchnorm=true",
            "model.backbone.pretrained=checkpoint",
        )
    )
    report = load_official(fresh, load_checkpoint(ckpt))
    for name, value in fresh.state_dict().items():
        rule = next((r for prefix, r in ROW_ADAPTED.items() if name.startswith(prefix)), None)
        if name in report.adapted.values() and rule is not None:
            assert torch.equal(value[: rule[1]], state[name][: rule[1]]), name  # extension rows keep their init
        elif name in report.exact.values() or name in report.adapted.values():  # morphology: (0, x) -> x
            assert torch.equal(value, state[name]), name

    out = tmp_path / "ours.safetensors"
    assert (
        model_cli(
            ["convert", "--preset", "tiny", "model.decoder.dn_enabled=true", "--official", str(ckpt), "--out", str(out)]
        )
        == 0
    )
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


# Read off the official forward (models/dino/dino.py, deformable_transformer.py), independently
# of the converter's own table: built, never read.
DEAD_IN_OFFICIAL_FORWARD = (
    "transformer.mask_embed.",
    "transformer.class_embed.",
    "transformer.decoder_norm.",
    "transformer.combined_proj.",
    "transformer.encoder.cls_fusion.",
    "transformer.label_enc.",
    "class_pos_tokens.",
    "class_tokens.0",
    "class_tokens.1",
    "class_tokens.2",
)
# Read by the official forward, without a counterpart here (each has its reason in convert.py).
LIVE_WITHOUT_COUNTERPART = {"class_embed_seg.weight", "class_embed_seg.bias", "class_tokens.3"}


def test_dead_official_tensors_never_reach_an_output():
    """Official layout from params.json, dead tensors NaN: every task's outputs stay finite, every live tensor lands."""
    from unihema.model.convert import unmatched_reason
    from unihema.model.tokenizer import HemaTokenizer

    from .conftest import ALL_TASKS, make_batch, tensors

    cfg = load_config("paper", overrides=["model.backbone.pretrained=checkpoint", "model.text.pretrained=checkpoint"])
    torch.manual_seed(0)
    source = build_model(cfg).eval()
    live, _ = ours_to_official(source.state_dict())
    official = {}
    for name, numel in OFFICIAL_PARAMS.items():
        if name.startswith(DEAD_IN_OFFICIAL_FORWARD):
            official[name] = torch.full((numel,), float("nan"))
        else:
            official[name] = live[name] if name in live else torch.randn(numel) * 0.02
    official.update({k: v for k, v in live.items() if k not in OFFICIAL_PARAMS})  # BatchNorm statistics
    del source, live

    torch.manual_seed(1)
    model = build_model(cfg).eval()
    report = load_official(model, official)
    assert not report.mismatched, report.mismatched
    landed = set(report.exact) | set(report.adapted)
    for name in OFFICIAL_PARAMS:
        if name.startswith(DEAD_IN_OFFICIAL_FORWARD):
            assert name not in landed and unmatched_reason(name).startswith("dead:"), name
        elif name in LIVE_WITHOUT_COUNTERPART:
            assert unmatched_reason(name) != "no rule maps this name", name
        else:
            assert name in landed, name
    assert {n for n in report.unmatched if n in OFFICIAL_PARAMS} == (
        {n for n in OFFICIAL_PARAMS if n.startswith(DEAD_IN_OFFICIAL_FORWARD)} | LIVE_WITHOUT_COUNTERPART
    )

    # 256 px: the two-stage selection needs at least 900 encoder tokens.
    batch = make_batch(HemaTokenizer.builtin(512), ALL_TASKS, batch_size=1, size=(256, 256))
    with torch.no_grad():
        out = model(batch)
    for key in (
        "pred_logits",
        "pred_boxes",
        "pred_morphology",
        "pred_masks",
        "semantic_logits",
        "cell_logits",
        "cell_morphology",
        "text_logits",
    ):
        assert key in out and all(torch.isfinite(t).all() for t in tensors(out[key])), key
