"""Export round trips: DeepSpeed checkpoints (hand-made ZeRO-0, real ZeRO-3) -> folder -> same outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unihema.checkpoint.export import output_difference
from unihema.export import main as export_main
from unihema.model.pretrained import from_pretrained, load_pretrained

from .helpers import write_zero0_checkpoint

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("zero3_worker.py")


def test_save_and_from_pretrained_give_identical_outputs(export_dir, tiny_model, tiny_cfg):
    """save_pretrained -> from_pretrained reproduces every output and the generated text exactly."""
    from unihema.model import build_tokenizer

    reloaded = from_pretrained(export_dir)
    assert not reloaded.training
    diff, same_text = output_difference(tiny_model, reloaded, tiny_cfg, build_tokenizer(tiny_cfg))
    assert diff == 0.0 and same_text
    assert (export_dir / "tokenizer" / "tokenizer.json").is_file()


def test_unihema_class_methods_save_and_load_an_export(tiny_model, tiny_cfg, tmp_path):
    """``model.save_pretrained`` / ``UniHema.from_pretrained``, the methods the README shows, round-trip."""
    from unihema.model import build_tokenizer
    from unihema.model.uni_hema import UniHema

    tiny_model.save_pretrained(tmp_path / "export", tiny_cfg)
    reloaded = UniHema.from_pretrained(tmp_path / "export")
    assert isinstance(reloaded, UniHema) and not reloaded.training
    diff, same_text = output_difference(tiny_model, reloaded, tiny_cfg, build_tokenizer(tiny_cfg))
    assert diff == 0.0 and same_text


def test_export_cli_from_zero0_run_folder(zero0_run, tiny_model, tmp_path, capsys):
    """A run folder (config.yaml + checkpoint_*/checkpoint/) exports to a folder that loads and matches the weights."""
    out = tmp_path / "export"
    assert export_main(["--checkpoint", str(zero0_run), "--out", str(out)]) == 0
    assert "verified: outputs identical" in capsys.readouterr().out
    bundle = load_pretrained(out)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[k], v), k
    card = (out / "README.md").read_text()
    assert "not for diagnosis" in card and "## Tasks" in card and "## Metrics" in card and "## Training data" in card


def test_export_refuses_what_is_not_a_checkpoint(tmp_path, capsys):
    """A folder without weights gets exit code 2 and one line saying what a checkpoint looks like."""
    (tmp_path / "empty").mkdir()
    assert export_main(["--checkpoint", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a checkpoint" in err and "Traceback" not in err


def test_bare_deepspeed_checkpoint_needs_a_config(tmp_path, tiny_model, tiny_cfg, capsys):
    """A checkpoint with no config.yaml nearby asks for --preset; with it, the export works."""
    ckpt = write_zero0_checkpoint(tmp_path / "run", tiny_model, tiny_cfg, with_config=False)
    assert export_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--no-verify"]) == 2
    assert "--preset" in capsys.readouterr().err
    assert (
        export_main(
            ["--checkpoint", str(ckpt / "checkpoint"), "--out", str(tmp_path / "o"), "--preset", "tiny", "--no-verify"]
        )
        == 0
    )
    reloaded = from_pretrained(tmp_path / "o").state_dict()
    assert torch.equal(reloaded["level_embed"], tiny_model.state_dict()["level_embed"])


def test_weights_that_do_not_fit_the_config_are_named(export_dir, tmp_path):
    """Loading with a config that builds another shape names the tensor instead of a size-mismatch trace."""
    from unihema.model.pretrained import PretrainedError

    with pytest.raises(PretrainedError, match="another shape"):
        load_pretrained(export_dir, overrides=["model.hidden_dim=64", "model.norm_groups=8"])


@pytest.mark.slow
def test_export_from_real_zero3_checkpoint_matches_engine(tmp_path):
    """A ZeRO-3 checkpoint after one training step exports to weights and outputs equal to the engine's model."""
    from unihema.checkpoint.export import probe_batch
    from unihema.config import load_config
    from unihema.model import build_tokenizer

    run = tmp_path / "run"
    run.mkdir()
    env = dict(
        os.environ,
        TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions")),
    )
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(run)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = torch.load(run / "expected.pt", weights_only=False)

    out = tmp_path / "export"
    assert export_main(["--checkpoint", str(run), "--out", str(out)]) == 0
    exported = from_pretrained(out)
    for k, v in expected["state"].items():
        assert torch.equal(exported.state_dict()[k], v.float()), k
    cfg = load_config("tiny")
    with torch.no_grad():
        got = exported(probe_batch(cfg, build_tokenizer(cfg)))
    for k, v in expected["outputs"].items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6, msg=k)
