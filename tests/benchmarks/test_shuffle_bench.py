"""``benchmarks/shuffle_bench.py`` on a small synthetic dataset: the three orders are measured and saved."""

import importlib.util
import json
from pathlib import Path

from unihema.data.synthetic import generate_dataset

REPO = Path(__file__).resolve().parents[2]


def test_shuffle_bench_reports_plan_iid_and_file_order(tmp_path):
    data = tmp_path / "cells"
    generate_dataset(160, str(data), seed=4, image_size=32, workers=1, progress=False)
    spec = importlib.util.spec_from_file_location("shuffle_bench", REPO / "benchmarks" / "shuffle_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "shuffle.json"
    assert bench.main([str(data), "--batch", "4", "--batches", "6", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    per_batch = result["distinct_classes_per_batch"]
    assert set(per_batch) == {"plan", "iid", "file_order"}
    assert all(1.0 <= v <= 4.0 for v in per_batch.values())
    assert result["train_records"] == sum(result["classes"].values()) > 0
