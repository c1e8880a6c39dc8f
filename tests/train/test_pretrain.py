"""``python -m unihema.pretrain`` end to end on CPU: Ray Train + DeepSpeed ZeRO-2, the embedded S3.

Each test runs the real command in a subprocess, exactly as a user would, with Ray bound
to 127.0.0.1. Runs write to a local run folder so the test can watch checkpoints appear.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from unihema.config import REDACTED

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY = ["--preset", "tiny", "train.log_every=1"]


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 480) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"pretrain did not finish in {timeout}s:\n{log.read_text()[-4000:]}")
    return log.read_text()


def _train_workers(root_pid: int) -> list[psutil.Process]:
    """Ray Train worker processes started by the run under test (and nothing else)."""
    found = []
    for proc in psutil.Process(root_pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()) or "RayTrainWorker" in proc.name():
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints Ray Train has registered (a report lost with a dying worker leaves a bare folder)."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    if not snapshot.exists():
        return []
    try:
        results = json.loads(snapshot.read_text())["checkpoint_results"]
    except (json.JSONDecodeError, KeyError):
        return []  # being rewritten
    return [run_dir / r["checkpoint_dir_name"] for r in results]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("pretrain")


@pytest.fixture(scope="module")
def resumed_run(workdir, start_cli):
    """A run whose training worker is killed after the first checkpoint: (exit code, output, run folder).

    Both tests below use it: the second resumes this run, so it depends on it by fixture, not by
    test order (run alone it runs this first; it never skips).
    """
    runs = workdir / "runs"
    log = workdir / "run1.log"
    args = [
        *TINY,
        f"storage.embedded_dir={workdir / 's3'}",
        f"storage.run_uri={runs}",
        "run_name=faults",
        "train.max_steps=9",
        "train.checkpoint_every=3",
        "train.val_every=9",
        "train.max_failures=2",
    ]
    proc = start_cli("unihema.pretrain", args, log)
    run_dir = runs / "faults"
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline and proc.poll() is None:
        if _checkpoints(run_dir):
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"run ended before its first checkpoint:\n{log.read_text()[-3000:]}"
    workers = _train_workers(proc.pid)
    assert workers, "no Ray Train worker process found under the run"
    workers[-1].kill()
    output = _finish(proc, log)
    return proc.returncode, output, run_dir


def test_killed_worker_resumes_and_run_completes(resumed_run):
    """A training worker killed mid-run restarts from the last checkpoint; the run finishes and exports."""
    returncode, output, run_dir = resumed_run
    assert returncode == 0, output[-4000:]
    assert "resumed from the checkpoint at step 3" in output
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 9
    assert set(status["validation"]) == {"detection", "classification", "segmentation", "morphology", "vqa", "mlm"}
    latest = _checkpoints(run_dir)[-1]
    assert (latest / "checkpoint" / "mp_rank_00_model_states.pt").exists()
    assert len(list((latest / "checkpoint").glob("zero_pp_rank_*_optim_states.pt"))) == 2
    assert len(_checkpoints(run_dir)) <= 2  # keep_checkpoints in the tiny preset
    assert (run_dir / "export" / "model.safetensors").exists() and (run_dir / "export" / "tokenizer").is_dir()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((run_dir / "metrics_summary.json").read_text())
    assert summary["export"].endswith("faults/export")
    # The run's config holds the embedded server's credentials in memory; on disk they are redacted.
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["storage"]
    assert saved["access_key_id"] in ("", REDACTED) and saved["secret_access_key"] in ("", REDACTED), saved


def test_nonfinite_losses_stop_the_run_keeping_the_last_checkpoint(resumed_run, workdir, start_cli):
    """Resuming the finished run with a loss weight that overflows skips NaN steps, then stops cleanly."""
    runs = workdir / "runs"
    run_dir = resumed_run[2]
    before = _checkpoints(run_dir)
    assert before, "the resumed run left no checkpoint to resume from"
    log = workdir / "run2.log"
    mix_off = [f"data.mix.{t}=0" for t in ("classification", "segmentation", "morphology", "vqa", "mlm")]
    args = [
        *TINY,
        f"storage.embedded_dir={workdir / 's3'}",
        f"storage.run_uri={runs}",
        "run_name=faults",
        "train.max_steps=20",
        "train.checkpoint_every=3",
        "train.max_consecutive_nonfinite=3",
        "loss.detection=1e38",
        *mix_off,
        "--no-export",
    ]
    output = _finish(start_cli("unihema.pretrain", args, log), log)
    assert proc_failed(output)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"].startswith("stopped: 3 consecutive steps had a non-finite loss")
    assert status["nonfinite_steps"] == 3 and status["step"] == 9  # no update was ever applied
    assert _checkpoints(run_dir) == before  # nothing saved after the good step-9 checkpoint


def proc_failed(output: str) -> bool:
    return "pretraining: stopped" in output


def test_wrong_credentials_fail_at_startup_without_secret(embedded_s3, subprocess_env):
    """S3 refusing the credentials stops the job before Ray starts, naming endpoint and bucket."""
    secret = "wrong-secret-value-0xdeadbeef"
    env = dict(subprocess_env)
    env.update(AWS_ACCESS_KEY_ID=embedded_s3.access_key, AWS_SECRET_ACCESS_KEY=secret)
    proc = subprocess.run(
        [sys.executable, "-m", "unihema.pretrain", *TINY, f"storage.endpoint_url={embedded_s3.endpoint_url}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert f"object storage at {embedded_s3.endpoint_url}, bucket 'unihema'" in proc.stderr
    assert "denied" in proc.stderr and secret not in proc.stdout + proc.stderr
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
