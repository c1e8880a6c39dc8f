"""Initial weights through timm and transformers: local copies by path, and a clear error without the hub."""

from __future__ import annotations

import dataclasses
import json

import pytest
import timm
import torch

from unihema.config import ConfigError, load_config
from unihema.model import build_model, build_tokenizer
from unihema.model.backbone import Backbone
from unihema.model.text import TextModel
from unihema.model.tokenizer import HemaTokenizer
from unihema.model.weights import PretrainedWeightsError, check_available

from .conftest import tiny_config

TINY_T5 = {
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_heads": 4,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "vocab_size": 512,
}


@pytest.fixture()
def offline_hub(monkeypatch, tmp_path):
    """No hub and an empty cache, whatever the machine: the error path in well under a second."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    try:
        import transformers.utils.hub as tf_hub

        monkeypatch.setattr(tf_hub, "_is_offline_mode", True, raising=False)
    except ImportError:
        pass


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    """A tiny T5 and its fast tokenizer written with save_pretrained, as FLAN-T5's hub folder is."""
    from safetensors.torch import load_file, save_file
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-t5")
    config = T5Config(
        vocab_size=512,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_heads=4,
        num_layers=1,
        num_decoder_layers=1,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    t5 = T5ForConditionalGeneration(config)
    t5.save_pretrained(folder)
    # transformers 5 ties a T5 built from a config and saves one matrix; FLAN-T5's files (an
    # older transformers) hold a separate LM head and say so. Write the folder that way.
    state = load_file(str(folder / "model.safetensors"))
    state["lm_head.weight"] = torch.randn_like(state["shared.weight"])
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    meta = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**meta, "tie_word_embeddings": False}))
    backend = HemaTokenizer.builtin(512).tokenizer
    PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(folder)
    embed = state["shared.weight"]
    return folder, {**state, "encoder.embed_tokens.weight": embed, "decoder.embed_tokens.weight": embed}


def test_resnet50_file_loads_by_path_with_identical_tensors(tmp_path):
    """A timm ResNet-50 saved locally (torch and safetensors) loads by path, frozen as in the paper."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = timm.create_model("resnet50")
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics, so a skipped load shows
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    state = source.state_dict()
    torch.save(state, tmp_path / "r50.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r50.safetensors"))
    for path in (tmp_path / "r50.pth", tmp_path / "r50.safetensors"):
        bb = Backbone("resnet50", pretrained=str(path), frozen_stages=1, frozen_batchnorm=True)
        ours = {**dict(bb.body.named_parameters()), **dict(bb.body.named_buffers())}
        compared = 0
        for name, value in state.items():
            if name.startswith("fc.") or name.endswith("num_batches_tracked"):
                continue
            assert torch.equal(ours[name], value), (path.suffix, name)
            compared += 1
        assert compared == len(ours) == 265
        assert not bb.body.conv1.weight.requires_grad and bb.body.layer2[0].conv1.weight.requires_grad


def test_tiny_t5_folder_loads_with_its_tokenizer_and_generates(t5_folder):
    """A save_pretrained T5 folder gives the same tensors, its own tokenizer, and image-conditioned answers."""
    folder, saved = t5_folder
    cfg = tiny_config(*(f"model.text.{k}={v}" for k, v in TINY_T5.items()), f"model.text.pretrained={folder}")
    text = TextModel(cfg.model.text)
    for name, value in text.t5.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert text.t5.lm_head.weight is not text.t5.shared.weight
    tokenizer = build_tokenizer(cfg)
    assert tokenizer.source == str(folder) and tokenizer.vocab_size == HemaTokenizer.builtin(512).vocab_size

    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert torch.equal(
        model.text.t5.encoder.block[0].layer[0].SelfAttention.q.weight,
        saved["encoder.block.0.layer.0.SelfAttention.q.weight"],
    )
    ids, mask = tokenizer.encode(["what type of cell is this?"], 24)
    seq = model.generate_text(torch.randn(1, 3, 64, 64), None, ids, mask, max_new_tokens=3)
    assert seq.shape[0] == 1 and seq.shape[1] >= 2 and seq[0, 0] == 0
    assert isinstance(tokenizer.decode(seq)[0], str)


def test_local_stand_ins_build_the_whole_model_and_pass_the_preflight(t5_folder, tmp_path):
    """Backbone file + T5 folder by path: the model builds with the paper's freezing, and pretrain's check passes."""
    folder, _ = t5_folder
    torch.manual_seed(0)
    source = timm.create_model("resnet18")
    torch.save({"model": source.state_dict()}, tmp_path / "r18.pth")
    cfg = tiny_config(
        *(f"model.text.{k}={v}" for k, v in TINY_T5.items()),
        f"model.text.pretrained={folder}",
        f"model.backbone.pretrained={tmp_path / 'r18.pth'}",
        "model.backbone.frozen_stages=1",
        "model.backbone.frozen_batchnorm=true",
    )
    check_available(cfg.model)
    model = build_model(cfg)
    assert torch.equal(model.backbone.body.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert not model.backbone.body.layer1[0].conv1.weight.requires_grad


def test_unreachable_hub_names_the_setting_the_id_and_the_remedies(offline_hub):
    """Without the hub, both settings fail with the id, a local path, HF_HOME and 'scratch' in the message."""
    with pytest.raises(PretrainedWeightsError) as err:
        Backbone("resnet50", pretrained="resnet50.tv_in1k", frozen_stages=1, frozen_batchnorm=True)
    msg = str(err.value)
    for part in (
        "model.backbone.pretrained='resnet50.tv_in1k'",
        "timm/resnet50.tv_in1k",
        "HF_HOME",
        "/path/to/weights",
        "model.backbone.pretrained=scratch",
    ):
        assert part in msg, part
    text = dataclasses.replace(tiny_config().model.text, **TINY_T5, pretrained="unihema-tests/no-such-t5")
    with pytest.raises(PretrainedWeightsError, match=r"model.text.pretrained='unihema-tests/no-such-t5'.*HF_HOME"):
        TextModel(text)
    with pytest.raises(PretrainedWeightsError, match="model.text.pretrained"):
        build_tokenizer(text)
    with pytest.raises(PretrainedWeightsError, match="model.backbone.pretrained"):
        check_available(load_config("paper").model)


def test_paper_pretrain_stops_before_training(offline_hub, capsys):
    """``python -m unihema.pretrain --preset paper`` with no hub: exit 2 with the weights error, nothing started."""
    from unihema.pretrain import main

    assert main(["--preset", "paper"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("weights error: model.backbone.pretrained='resnet50.tv_in1k'")


def test_paper_names_both_and_from_scratch_is_explicit(tmp_path):
    """paper names the official weights; frozen stages or frozen BN on random weights are refused."""
    paper = load_config("paper").model
    assert (paper.backbone.pretrained, paper.text.pretrained) == ("resnet50.tv_in1k", "google/flan-t5-base")
    assert load_config("demo").model.backbone.pretrained == "scratch"
    for bad in (
        ["model.backbone.pretrained=scratch"],
        ["model.backbone.frozen_stages=2"],
        ["model.backbone.frozen_batchnorm=true"],
    ):
        with pytest.raises(ConfigError, match="need pretrained weights"):
            load_config("paper" if "scratch" in bad[0] else "tiny", overrides=bad)
    with pytest.raises(ValueError, match="need pretrained weights"):
        Backbone("resnet18", frozen_stages=1)
    with pytest.raises(ConfigError, match="is a resnet18 but name is 'resnet50'"):
        load_config("paper", overrides=["model.backbone.pretrained=resnet18.tv_in1k"])
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        Backbone("resnet18", pretrained=str(tmp_path / "missing.pth"))


def test_a_checkpoint_of_a_pretrained_run_keeps_its_tokenizer(t5_folder):
    """Loading a run's checkpoint builds no hub weights but keeps the T5 model's tokenizer (its token ids)."""
    from unihema.model.pretrained import offline_model_config

    folder, _ = t5_folder
    cfg = offline_model_config(
        tiny_config(*(f"model.text.{k}={v}" for k, v in TINY_T5.items()), f"model.text.pretrained={folder}")
    )
    assert cfg.model.text.pretrained == cfg.model.backbone.pretrained == "checkpoint"
    assert build_tokenizer(cfg).source == str(folder)
    assert build_tokenizer(offline_model_config(tiny_config())).source == "builtin"
