"""python -m unihema.evaluate on a small synthetic dataset: metrics.json, the report and the plots."""

from __future__ import annotations

import json
import sys

from unihema.evaluate import main as evaluate_main

from .helpers import need_optional


def test_evaluate_all_tasks_writes_metrics_report_and_plots(export_dir, synthetic_data, tmp_path, capsys):
    """Every task and the linear probe are scored from an export folder; metrics.json, report.md and PNGs appear."""
    need_optional()
    out = tmp_path / "eval"
    rc = evaluate_main(
        [
            "--checkpoint",
            str(export_dir),
            "--data",
            str(synthetic_data),
            "--out",
            str(out),
            "--max-batches",
            "1",
            "--probe-max-batches",
            "3",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    tasks = metrics["tasks"]
    assert set(tasks) == {"detection", "classification", "segmentation", "morphology", "vqa", "mlm", "linear_probe"}
    assert {"map", "map50", "per_class"} <= set(tasks["detection"])
    assert {"accuracy", "weighted_f1", "macro_f1", "confusion_matrix"} <= set(tasks["classification"])
    assert {"dice", "iou"} <= set(tasks["segmentation"])
    assert {"macro_f1", "per_attribute"} <= set(tasks["morphology"])
    assert {"exact_match", "bleu1", "bleu2", "bleu3", "bleu4", "rouge_l"} <= set(tasks["vqa"])
    assert "token_accuracy" in tasks["mlm"]
    assert {"accuracy", "macro_f1", "train_count"} <= set(tasks["linear_probe"])
    for task, values in tasks.items():
        for key in ("accuracy", "map50", "dice", "macro_f1", "exact_match", "token_accuracy"):
            if key in values:
                assert 0.0 <= values[key] <= 1.0, (task, key)
    assert metrics["checkpoint_kind"] == "export" and metrics["split"] == "val"
    report = (out / "report.md").read_text()
    assert "## Summary" in report and "## Linear probe" in report
    assert {"confusion_matrix.png", "pr_detection.png", "pr_classification.png"} <= set(metrics["plots"])
    for name in metrics["plots"]:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
        assert f"]({name})" in report


def test_evaluate_deepspeed_run_folder(zero0_run, synthetic_data, tmp_path):
    """A run folder with a DeepSpeed checkpoint is evaluated with the run's own config."""
    need_optional()
    out = tmp_path / "eval"
    assert (
        evaluate_main(
            [
                "--checkpoint",
                str(zero0_run),
                "--data",
                str(synthetic_data),
                "--out",
                str(out),
                "--tasks",
                "classification",
                "--max-batches",
                "1",
                "--no-probe",
                "--no-plots",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint_kind"] == "deepspeed" and list(metrics["tasks"]) == ["classification"]
    assert metrics["plots"] == []


def test_evaluate_names_a_missing_package_before_any_work(export_dir, synthetic_data, tmp_path, monkeypatch, capsys):
    """Without matplotlib the run stops at once with exit 2 and the package to install; --no-plots avoids it."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc = evaluate_main(
        [
            "--checkpoint",
            str(export_dir),
            "--data",
            str(synthetic_data),
            "--out",
            str(tmp_path / "e"),
            "--tasks",
            "mlm",
            "--no-probe",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "pip install matplotlib" in err and "--no-plots" in err
    assert not (tmp_path / "e").exists()


def test_evaluate_unknown_split_is_one_line(export_dir, synthetic_data, tmp_path, capsys):
    """A split with no shards is a one-line error, exit code 2."""
    rc = evaluate_main(
        [
            "--checkpoint",
            str(export_dir),
            "--data",
            str(synthetic_data),
            "--split",
            "test",
            "--out",
            str(tmp_path / "e"),
            "--tasks",
            "mlm",
            "--no-probe",
            "--no-plots",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "test" in err and err.count("\n") == 0
