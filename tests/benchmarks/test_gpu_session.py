"""The GPU session's CPU rehearsal: every stage of benchmarks/gpu_session.sh runs at tiny shapes and reports.

A GPU loan is minutes long; a stage that crashes on its first line would waste it. The
rehearsal runs the same stage code on CPU, so CI sees such a crash first.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STAGES = {"env", "gpu_tests", "kernels", "attention_accuracy", "msda_accuracy", "model", "pretrain"}


def test_rehearsal_runs_every_stage_ok_or_skipped_for_want_of_a_gpu(tmp_path, subprocess_env):
    """`gpu_session.sh --rehearse OUT` writes OUT/summary.json; each stage is ok, or skipped only for lack of CUDA."""
    out = tmp_path / "session"
    env = dict(subprocess_env, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_session.sh"), "--rehearse", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=330,
        start_new_session=True,
    )
    summary_file = out / "summary.json"
    assert summary_file.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(summary_file.read_text())
    stages = summary["stages"]
    assert set(stages) == STAGES
    logs = {name: (out / "logs" / f"{name}.log") for name in stages}
    for name, entry in stages.items():
        status = entry["status"]
        tail = logs[name].read_text()[-2000:] if logs[name].exists() else ""
        assert status == "ok" or (status.startswith("skipped") and "no CUDA device" in status), (name, status, tail)
        assert entry["seconds"] <= entry["limit_s"] + 10
    assert stages["pretrain"]["status"] == "ok" and stages["model"]["status"] == "ok"
    assert sum(entry["seconds"] for entry in stages.values()) <= 300
    assert proc.returncode == 0, proc.stdout[-3000:]
    model = json.loads((out / "stages" / "model.json").read_text())
    assert set(model["tasks"]) == {"detection", "classification", "segmentation", "morphology", "vqa", "mlm"}
    pretrain = json.loads((out / "stages" / "pretrain.json").read_text())
    assert pretrain["runs"][1]["resumed"] and pretrain["validation"]
    assert os.path.exists(out / "kernels.json")
