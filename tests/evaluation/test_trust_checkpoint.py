"""Checkpoints from elsewhere: DeepSpeed files load weights only; anything more is refused, named, unless trusted.

The untrusted file here pickles a call to ``os.makedirs``: if it were ever unpickled, a
folder would appear. Its absence after a refusal is the proof that nothing ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from unihema.checkpoint.load import load_checkpoint
from unihema.errors import UserInputError
from unihema.evaluate import main as evaluate_main
from unihema.export import main as export_main

from .helpers import write_zero0_checkpoint


class _RunsCode:
    """Unpickling this calls os.makedirs(path): code chosen by the file, the thing weights_only prevents."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.makedirs, (self.path,)


@pytest.fixture
def untrusted_run(tmp_path, tiny_model, tiny_cfg):
    """A ZeRO-0 run folder whose model-states file also holds a pickled call; returns (run, marker folder)."""
    run = tmp_path / "run"
    ckpt = write_zero0_checkpoint(run, tiny_model, tiny_cfg)
    marker = tmp_path / "code-ran"
    torch.save(
        {"module": tiny_model.state_dict(), "extra": _RunsCode(marker)},
        ckpt / "checkpoint" / "mp_rank_00_model_states.pt",
    )
    return run, marker


def test_plain_deepspeed_checkpoint_loads_weights_only(zero0_run, tiny_model):
    """A checkpoint holding only tensors and containers loads without --trust-checkpoint, weights exact."""
    loaded = load_checkpoint(str(zero0_run))
    for name, value in tiny_model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name


def test_pickled_code_is_refused_naming_the_file(untrusted_run):
    """The load names the file and the flag, and the pickled call never runs."""
    run, marker = untrusted_run
    with pytest.raises(UserInputError) as info:
        load_checkpoint(str(run))
    message = str(info.value)
    assert "mp_rank_00_model_states.pt" in message and "--trust-checkpoint" in message and "makedirs" in message
    assert not marker.exists()


def test_trusted_checkpoint_loads_in_full(untrusted_run, tiny_model):
    """trust=True is full unpickling: the weights load, and (the price) the file's call runs."""
    run, marker = untrusted_run
    loaded = load_checkpoint(str(run), trust=True)
    assert torch.equal(loaded.model.state_dict()["level_embed"], tiny_model.state_dict()["level_embed"])
    assert marker.is_dir()


def test_clis_ask_for_trust_checkpoint(untrusted_run, tmp_path, capsys):
    """export and evaluate exit 2 with one line naming the file and --trust-checkpoint; export then works with it."""
    run, marker = untrusted_run
    assert export_main(["--checkpoint", str(run), "--out", str(tmp_path / "out"), "--no-verify"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mp_rank_00_model_states.pt" in err and "--trust-checkpoint" in err
    assert (
        evaluate_main(
            [
                "--checkpoint",
                str(run),
                "--data",
                str(tmp_path / "no-data"),
                "--tasks",
                "detection",
                "--no-probe",
                "--no-plots",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 2
    )
    assert "--trust-checkpoint" in capsys.readouterr().err
    assert not marker.exists()
    assert (
        export_main(["--checkpoint", str(run), "--out", str(tmp_path / "out"), "--no-verify", "--trust-checkpoint"])
        == 0
    )


def test_init_from_asks_for_model_trust_checkpoint(untrusted_run, tmp_path):
    """model.init_from refuses the file with the config key to set; with it set, the weights are prepared."""
    from unihema.config import StorageConfig, load_config
    from unihema.train.init_weights import prepare_init_weights

    run, marker = untrusted_run
    cfg = load_config("tiny", overrides=[f"model.init_from={run}"])
    with pytest.raises(UserInputError, match="model.trust_checkpoint=true"):
        prepare_init_weights(cfg, StorageConfig(), str(tmp_path / "new-run"))
    assert not marker.exists()
    trusted = load_config("tiny", overrides=[f"model.init_from={run}", "model.trust_checkpoint=true"])
    report = prepare_init_weights(trusted, StorageConfig(), str(tmp_path / "new-run"))
    assert report["reinitialised"] == 0 and (tmp_path / "new-run" / "init_weights.safetensors").is_file()
