"""A run whose checkpoints are on S3 resumes through one node-local copy, removed once its ranks have loaded it."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY = ["--preset", "tiny", "train.log_every=1", "train.val_batches=1"]


def _run(start_cli, args: list[str], log: Path, timeout: float = 480) -> str:
    proc = start_cli("unihema.pretrain", args, log)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"pretrain did not finish in {timeout}s:\n{log.read_text()[-4000:]}")
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    return output


def test_run_on_s3_resumes_from_a_node_local_copy(tmp_path, start_cli):
    """Two workers resume a run stored on the embedded S3 server; the node's copy is gone afterwards."""
    cache = tmp_path / "resume-cache"
    common = [
        *TINY,
        f"storage.embedded_dir={tmp_path / 's3'}",
        "storage.run_uri=s3://unihema/resume-runs",
        "run_name=s3-resume",
        "train.checkpoint_every=2",
        "train.val_every=2",
        f"train.resume_cache_dir={cache}",
    ]
    _run(start_cli, [*common, "train.max_steps=2", "--no-export"], tmp_path / "first.log")
    assert not cache.exists()  # a fresh run downloads nothing
    output = _run(start_cli, [*common, "train.max_steps=4"], tmp_path / "second.log")
    assert "resumed from the checkpoint at step 2" in output
    left = sorted(p.name for p in cache.iterdir())
    assert len(left) == 1 and left[0].startswith("unihema-resume-") and left[0].endswith(".lock"), left
