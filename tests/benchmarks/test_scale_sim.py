"""``benchmarks/scale_sim.py`` at smoke size: a corpus of the registry's sources, read as 2 and 4 ranks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from unihema.data.plan import PIECE_ROWS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_scale_sim_writes_the_corpus_and_measures_every_stage(tmp_path, subprocess_env):
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "scale_sim.py"),
            "--records",
            "1500",
            "--ranks",
            "2,4",
            "--records-per-shard",
            "100",
            "--memory-world",
            "4",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    sources = report["sources"]
    assert len(sources) == 46 and report["write"]["rejected"] == 0
    assert report["write"]["records"] == sum(s["records"] for s in sources.values())
    tiny = min(s["records"] for s in sources.values())
    for task in ("detection", "classification", "segmentation", "morphology", "vqa", "mlm"):
        # every task has one much smaller source, and still reaches every rank
        assert min(s["records"] for s in sources.values() if task in s["tasks"]) == tiny, task
    assert [p["world"] for p in report["plans"]] == [2, 4]
    assert all(p["every_rank_every_task"] for p in report["plans"])
    stream = report["stream"]
    assert set(stream["first_batch_s"]) == {"2:0", "2:1", "4:0", "4:2", "4:3"}
    epoch = stream["epoch"]
    assert epoch["images"] > 0 and set(epoch["task_images"]) == set(report["plans"][0]["dealt_records"])
    resume = stream["resume"]
    # a resume reads again only what its shuffle windows held: per task a window, a batch and a piece at most
    bound = len(epoch["task_images"]) * (resume["window_rows"] + resume["batch_size"] + PIECE_ROWS)
    assert resume["step"] > 0 and 0 < resume["rows_read_again"] <= bound
    # before its first batch it reads at most one piece per row of that batch
    assert 0 < resume["rows_read_before_first_batch"] <= resume["batch_size"] * PIECE_ROWS
    assert resume["bytes_read_before_first_batch_rank"] > 0
    assert set(report["summary"]["targets"]) and report["summary"]["shards"] >= 46
