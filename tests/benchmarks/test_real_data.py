"""``benchmarks/real_data.py --quick``: convert, train and evaluate both real datasets end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]
REPO = Path(__file__).resolve().parents[2]


def test_real_data_quick_runs_every_stage_and_reports_chance(shared_datasets, subprocess_env, tmp_path):
    """The quick mode converts BCCD and PBC, trains each through pretrain, evaluates val and test,
    and writes each headline metric beside its chance level and the steps each task had."""
    out = tmp_path / "real-data-quick.json"
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/real_data.py",
            "--quick",
            "--shared",
            str(shared_datasets),
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    pbc, bccd = report["datasets"]["pbc"], report["datasets"]["bccd"]
    assert set(pbc["train_records"]) == {"classification", "morphology", "vqa", "mlm"}
    assert set(bccd["train_records"]) == {"detection", "vqa", "mlm"}
    for entry in (pbc, bccd):
        assert entry["status"] == "completed"
        assert sum(entry["task_steps"].values()) == entry["steps"]
        assert set(entry["task_steps"]) == set(entry["train_records"])  # round-robin: every task trained
        for split in ("val", "test"):
            for task, h in entry[split]["headline"].items():
                assert 0.0 <= h["value"] <= 1.0 and h["chance"] is not None, (split, task, h)
    assert set(pbc["test"]["headline"]) == {"classification", "morphology", "vqa", "mlm"}
    assert "closed_accuracy" in pbc["test"]["tasks"]["vqa"]
    assert set(bccd["test"]["tasks"]["detection"]["per_class"]) == {"RBC", "WBC", "platelet"}
    assert report["commands"][0].split()[1:3] == ["-m", "data_prep"]
