"""The paper preset rebuilds the official model: trainable counts on the meta device vs params.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unihema.config import load_config
from unihema.model import build_model
from unihema.model.__main__ import main as model_cli
from unihema.model.convert import check_inventory, is_dead
from unihema.model.official_params import OFFICIAL_PARAMS
from unihema.model.summary import CHECKED_GROUPS, GROUPS, OTHER, count_official, count_trainable, group_of
from unihema.model.text import TextModel

SHARED_PARAMS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "unihema-official" / "params.json"
OFFICIAL_TOTAL = 301_808_544


@pytest.fixture(scope="module")
def paper_model():
    return build_model(load_config("paper"), device="meta")


def test_vendored_inventory_matches_reference():
    """The packaged inventory is the release's params.json (when the shared copy is present)."""
    assert sum(OFFICIAL_PARAMS.values()) == OFFICIAL_TOTAL and len(OFFICIAL_PARAMS) == 727
    if not SHARED_PARAMS.is_file():
        pytest.skip(f"{SHARED_PARAMS} not present")
    assert json.loads(SHARED_PARAMS.read_text()) == OFFICIAL_PARAMS


def test_official_groups_are_computed_from_the_inventory():
    """Grouping params.json by prefix gives the component sizes the release states."""
    official = count_official()
    assert official[OTHER] == 0
    assert {g: official[g] for g in CHECKED_GROUPS} == {
        "backbone": 23_232_512,
        "encoder": 9_271_552,
        "decoder": 9_613_090,
        "input_proj": 5_639_168,
        "qformer": 2_583_296,
        "upsampler": 2_141_953,
        "t5": 247_577_856,
    }


def test_paper_total_and_groups_match_official(paper_model):
    """What maps matches what the official forward reads to 0.01%; the total is within 0.2%; components within 1%.

    The official total counts 1,647,363 parameters its forward never reads (convert.OFFICIAL_DEAD);
    ours counts 1,317,385 of its own (the class token's cross-attention, the per-image morphology
    head, the per-query segmentation classes): docs/DIFFERENCES.md.
    """
    assert all(p.device.type == "meta" for p in paper_model.parameters())
    ours, official = count_trainable(paper_model), count_official()
    total = sum(ours.values())
    assert total == sum(p.numel() for p in paper_model.parameters() if p.requires_grad)
    assert abs(total - OFFICIAL_TOTAL) / OFFICIAL_TOTAL < 2e-3, total
    report = check_inventory(paper_model)
    params = dict(paper_model.named_parameters())
    ours_mapped = total - sum(params[n].numel() for n in report.ours_only)
    official_live = sum(k for n, k in OFFICIAL_PARAMS.items() if n not in report.unmatched)
    assert abs(ours_mapped - official_live) / official_live < 1e-4, (ours_mapped, official_live)
    assert sum(k for n, k in OFFICIAL_PARAMS.items() if is_dead(n)) == 1_647_363
    for group in CHECKED_GROUPS:
        assert abs(ours[group] - official[group]) / official[group] < 1e-2, (group, ours[group], official[group])
    assert ours[OTHER] == 0, "every parameter belongs to a named component"
    assert ours["backbone"] == 23_232_512  # exactly layer2-layer4 convs: stem, layer1, BN frozen


def test_every_group_has_both_sides():
    """Each summary group names prefixes on our side and the official side."""
    for name, ours, official in GROUPS:
        assert ours and official, name
    assert group_of("hema.mask_former.upsampler.upsample.1.weight", 1) == "upsampler"
    assert group_of("upsampler.upsample.1.weight", 2) == "upsampler"


def test_t5_head_is_untied_and_counted():
    """FLAN-T5-base from config has a separate LM head: 247,577,856 parameters, not 222,903,552."""
    with torch.device("meta"):
        text = TextModel(load_config("paper").model.text)
    assert text.t5.lm_head.weight is not text.t5.shared.weight
    assert sum(p.numel() for p in text.parameters()) == 247_577_856
    assert text.t5.config.tie_word_embeddings is False


def test_summary_cli_prints_table_and_total(capsys):
    """``python -m unihema.model summary --preset paper`` ends with total_params=<N> beside official counts."""
    assert model_cli(["summary", "--preset", "paper"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("total_params=")
    total = int(lines[-1].split("=")[1])
    assert abs(total - OFFICIAL_TOTAL) / OFFICIAL_TOTAL < 2e-3
    assert any(line.startswith("t5") and "247,577,856" in line for line in lines)
    assert model_cli(["summary", "--preset", "tiny"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("total_params=")
