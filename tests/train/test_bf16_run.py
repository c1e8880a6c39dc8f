"""The GPU precision recipe (fp32 weights, bf16 autocast) end to end on CPU, through the real command.

A CPU run in fp32 could not see the GPU-only crash of DeepSpeed's bf16 parameter cast; bf16
autocast exists on CPU, so these runs take the very code path a GPU run takes. The workers
run with every torch.distributed collective checked for tensors off the model's device.
"""

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "train"))

from test_pretrain import _checkpoints, _finish  # noqa: E402

CHECKED = {"UNIHEMA_CHECK_COLLECTIVE_DEVICES": "1"}


@pytest.fixture
def checked_cli(subprocess_env):
    """start_cli with the collective device check on in every Ray worker (they inherit the env)."""
    import subprocess

    env = dict(subprocess_env, **CHECKED)

    def start(module: str, args: list[str], log: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    return start


def _losses(output: str) -> dict[int, float]:
    """Logged total loss by step (Ray may echo a worker's line twice)."""
    return {int(s): float(v) for s, v in re.findall(r"\[unihema\] step (\d+)/\d+ loss=(\S+)", output)}


def test_tiny_bf16_run_completes_with_finite_losses(tmp_path, checked_cli):
    """`--preset tiny train.precision=bf16` (2 workers, ZeRO-2) runs to the end, every logged loss finite."""
    runs, log = tmp_path / "runs", tmp_path / "bf16.log"
    args = [
        "--preset",
        "tiny",
        "train.precision=bf16",
        f"storage.embedded_dir={tmp_path / 's3'}",
        f"storage.run_uri={runs}",
        "run_name=bf16",
        "--no-export",
    ]
    proc = checked_cli("unihema.pretrain", args, log)
    output = _finish(proc, log)
    assert proc.returncode == 0, output[-4000:]
    assert "2 workers on cpu (gloo), ZeRO-2, bf16" in output
    losses = _losses(output)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6] and all(math.isfinite(v) for v in losses.values()), losses
    status = json.loads((runs / "bf16" / "status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 6 and status["nonfinite_steps"] == 0
    assert status["precision"] == "bf16" and len(status["validation"]) == 6


def test_zero3_bf16_checkpoint_saves_resumes_and_exports(tmp_path, checked_cli):
    """A ZeRO-3 bf16 run checkpoints; a longer run of the same name resumes from it and exports fp32 weights."""
    runs = tmp_path / "runs"
    common = [
        "--preset",
        "tiny",
        "train.precision=bf16",
        "train.zero_stage=3",
        f"storage.embedded_dir={tmp_path / 's3'}",
        f"storage.run_uri={runs}",
        "run_name=z3",
        "train.checkpoint_every=2",
        "train.val_every=100",
        "train.val_batches=1",
    ]
    first = tmp_path / "first.log"
    proc = checked_cli("unihema.pretrain", [*common, "train.max_steps=2", "--no-export"], first)
    output = _finish(proc, first)
    assert proc.returncode == 0, output[-4000:]
    saved = _checkpoints(runs / "z3")
    assert len(saved) == 1 and list((saved[0] / "checkpoint").glob("zero_pp_rank_*_optim_states.pt"))

    second = tmp_path / "second.log"
    proc = checked_cli("unihema.pretrain", [*common, "train.max_steps=3"], second)
    output = _finish(proc, second)
    assert proc.returncode == 0, output[-4000:]
    assert "resumed from the checkpoint at step 2" in output
    losses = _losses(output)
    assert sorted(losses) == [3] and all(math.isfinite(v) for v in losses.values()), losses
    status = json.loads((runs / "z3" / "status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 3 and status["zero_stage"] == 3

    from safetensors.torch import load_file

    weights = load_file(runs / "z3" / "export" / "model.safetensors")
    floats = [t for t in weights.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in floats)
