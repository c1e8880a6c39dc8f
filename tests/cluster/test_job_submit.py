"""``ray job submit`` against a real (local, loopback-only) Ray head, as the README documents it.

The head is a separate ``ray start --head`` with token authentication on; the client passes
the token the documented way (``RAY_AUTH_MODE=token``; the token comes from ``RAY_AUTH_TOKEN``
here, from ``~/.ray/auth_token`` on a workstation). Ray uploads the working directory minus
what ``.gitignore`` lists (``.venv``, ``.cache``, ...) and runs the entrypoint from it.

Data and run folder live on S3 as on a cluster: the embedded server stands in for the
bucket and its endpoint and credentials reach the job through the environment (on a real
cluster: an instance profile or IRSA, never the job's runtime_env).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# A tiny run takes about 3 minutes here on an idle machine; the margin is for a busy one.
JOB_TIMEOUT_S = 540


def _job_status(ray_head, job_id: str) -> str:
    """The job's status from `ray job status` (it words terminal states, prints the others)."""
    res = ray_head.ray("job", "status", "--address", ray_head.dashboard_url, job_id)
    text = res.stdout + res.stderr
    if f"Job '{job_id}' succeeded" in text:
        return "SUCCEEDED"
    if f"Job '{job_id}' failed" in text:
        return "FAILED"
    if f"Job '{job_id}' was stopped" in text:
        return "STOPPED"
    found = re.search(rf"Status for job '{re.escape(job_id)}': (?:JobStatus\.)?(\w+)", text)
    return found.group(1) if found else ""


def test_job_submit_tiny_run_succeeds_and_checkpoints(ray_head, embedded_s3, tmp_path):
    """A tiny run sent by `ray job submit --working-dir . --runtime-env ray_job.yaml` succeeds and checkpoints to S3."""
    job_id = f"unihema-ci-{int(time.time())}"
    # The shipped ray_job.yaml, plus what this machine needs: the S3 endpoint and throwaway
    # credentials of the test's server, and the DeepSpeed extension cache beside the repo.
    runtime_env = yaml.safe_load((REPO / "ray_job.yaml").read_text())
    runtime_env["env_vars"] = {
        **runtime_env.get("env_vars", {}),
        **embedded_s3.env(),
        "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions"),
    }
    runtime_env_file = tmp_path / "runtime_env.yaml"
    runtime_env_file.write_text(yaml.safe_dump(runtime_env))
    entrypoint = [
        "python",
        "-m",
        "unihema.pretrain",
        "--preset",
        "tiny",
        "run_name=job",
        "train.max_steps=4",
        "train.checkpoint_every=2",
        "train.val_every=4",
        "train.val_batches=1",
        "data.uri=s3://unihema/ci-job-data",
        "storage.run_uri=s3://unihema/ci-job-runs",
    ]
    start = time.monotonic()
    submit = ray_head.ray(
        "job",
        "submit",
        "--address",
        ray_head.dashboard_url,
        "--submission-id",
        job_id,
        "--no-wait",
        "--working-dir",
        ".",
        "--runtime-env",
        str(runtime_env_file),
        "--",
        *entrypoint,
        cwd=REPO,
        timeout=120,
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    status = ""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        status = _job_status(ray_head, job_id) or status
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(3)
    elapsed = time.monotonic() - start
    logs = ray_head.ray("job", "logs", "--address", ray_head.dashboard_url, job_id).stdout
    (tmp_path / "job.log").write_text(logs)
    if status not in ("SUCCEEDED", "FAILED", "STOPPED"):
        ray_head.ray("job", "stop", "--address", ray_head.dashboard_url, "--no-wait", job_id)
    assert status == "SUCCEEDED", f"job {job_id}: {status or 'no status'} after {elapsed:.0f}s\n{logs[-6000:]}"

    fs = embedded_s3.filesystem()
    run_dir = "unihema/ci-job-runs/job"
    names = [info.base_name for info in fs.get_file_info(pafs.FileSelector(run_dir))]
    assert any(n.startswith("checkpoint_") for n in names), f"no checkpoint in s3://{run_dir}: {names}"
    with fs.open_input_stream(f"{run_dir}/metrics_summary.json") as f:
        summary = json.loads(f.read())
    assert summary["status"] == "completed" and summary["step"] == 4, summary
    print(f"job {job_id} succeeded in {elapsed:.0f}s; run folder: {sorted(names)}")
