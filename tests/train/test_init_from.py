"""``model.init_from``: a run starts from another checkpoint's weights, keeping what fits."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import torch

from unihema.config import StorageConfig, load_config
from unihema.model import build_model
from unihema.train.init_weights import load_init_weights, match_state, prepare_init_weights


def _source_export(folder, *overrides):
    """An export of a tiny model (seeded), built with ``overrides`` so some shapes differ from tiny's."""
    torch.manual_seed(123)
    cfg = load_config("tiny", overrides=list(overrides))
    model = build_model(cfg)
    model.save_pretrained(folder, cfg)
    return model


def test_match_state_keeps_name_and_shape_matches_only():
    """A tensor loads only when its name and shape match; the rest is reported with the reason."""
    own = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    source = {"a": torch.ones(2), "b": torch.ones(4), "d": torch.ones(1)}
    load, report = match_state(own, source)
    assert set(load) == {"a"} and report["loaded"] == 1 and report["reinitialised"] == 2
    assert report["reinitialised_tensors"] == {"b": "shape (4,) in the source, (3,) here", "c": "not in the source"}
    assert report["unused_source_tensors"] == ["d"]


def test_prepared_weights_load_the_matching_tensors_exactly(tmp_path):
    """Weights prepared from an export with another vocabulary: every fitting tensor equals the source's,
    the text embeddings keep this model's initialisation and are listed as re-initialised."""
    source = _source_export(tmp_path / "export", "model.text.vocab_size=600")
    cfg = load_config("tiny", overrides=[f"model.init_from={tmp_path / 'export'}"])
    run_uri = str(tmp_path / "run")
    report = prepare_init_weights(cfg, StorageConfig(), run_uri)
    assert json.loads((tmp_path / "run" / "init_from.json").read_text())["loaded"] == report["loaded"] > 0
    assert any(k.startswith("text.t5") for k in report["reinitialised_modules"])
    torch.manual_seed(7)
    model = build_model(cfg)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    assert load_init_weights(model, run_uri, StorageConfig()) == report["loaded"]
    theirs, ours = source.state_dict(), model.state_dict()
    for name, tensor in ours.items():
        if name in report["reinitialised_tensors"]:
            assert torch.equal(tensor, fresh[name]), name
        else:
            assert torch.equal(tensor, theirs[name]), name


def test_init_from_nothing_usable_is_refused(tmp_path):
    """A source none of whose tensors fits is an error naming the setting, not a silent fresh start."""
    from unihema.errors import UserInputError

    (tmp_path / "empty").mkdir()
    cfg = load_config("tiny", overrides=[f"model.init_from={tmp_path / 'empty'}"])
    with pytest.raises(UserInputError, match="not a checkpoint"):
        prepare_init_weights(cfg, StorageConfig(), str(tmp_path / "run"))


@pytest.mark.slow
def test_pretrain_fine_tunes_from_an_export(tmp_path, start_cli):
    """`python -m unihema.pretrain model.init_from=EXPORT` trains from those weights and reports what it
    re-initialised."""
    _source_export(tmp_path / "export", "model.text.vocab_size=600")
    runs, log = tmp_path / "runs", tmp_path / "finetune.log"
    args = [
        "--preset",
        "tiny",
        f"storage.embedded_dir={tmp_path / 's3'}",
        f"storage.run_uri={runs}",
        "run_name=finetune",
        "train.max_steps=2",
        "train.val_every=2",
        "train.checkpoint_every=2",
        f"model.init_from={tmp_path / 'export'}",
        "--no-export",
    ]
    proc = start_cli("unihema.pretrain", args, log)
    try:
        proc.wait(timeout=480)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"pretrain did not finish:\n{log.read_text()[-4000:]}")
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    report = json.loads((runs / "finetune" / "init_from.json").read_text())
    assert report["source_kind"] == "export" and report["loaded"] > 0 and report["reinitialised"] > 0
    assert f"{report['loaded']} tensors loaded from model.init_from" in output
    status = json.loads((runs / "finetune" / "status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 2
