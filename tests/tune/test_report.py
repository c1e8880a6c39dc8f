"""Sweep report: trial rows and statuses, the best trial, the preset round trip, table files and plot."""

import sys
from types import SimpleNamespace

import pytest

from unihema.config import TASKS, load_config
from unihema.evaluation.evaluators import HEADLINE
from unihema.tune.__main__ import main as tune_main
from unihema.tune.objective import chance_key, metric_key
from unihema.tune.report import best_preset, best_row, build_rows, to_csv, to_markdown, trial_row, write_report

CFG = load_config("tiny", overrides=["tune.max_steps_per_trial=4", "tune.search=[loss.vqa, loss.mlm]"])


def result(trial: str, step=None, level=0.5, error=None, done=False, **params):
    """A stand-in for a Tune Result: last metrics, the trial's config, its error and folder."""
    metrics = {"trial_id": trial, "done": done}
    if step is not None:
        metrics["step"] = step
        for task in TASKS:
            metrics[metric_key(task)], metrics[chance_key(task)] = level, 0.0
    return SimpleNamespace(metrics=metrics, config=params, error=error, path=f"/runs/sweep/trial_{trial}")


def test_row_status_tells_completed_stopped_failed_and_unfinished():
    """Each trial is labelled: ran to the end, stopped by ASHA, failed (with the error), or interrupted."""
    assert trial_row(result("a", 4), CFG)["status"] == "completed"
    assert trial_row(result("b", 2, done=True), CFG)["status"] == "stopped early"
    assert trial_row(result("c", 2), CFG)["status"] == "unfinished"
    error = RuntimeError("Traceback ...\nTrialFailedError: training did not complete")
    failed = trial_row(result("d", error=error), CFG)
    assert failed["status"] == "failed: TrialFailedError: training did not complete"
    assert failed["objective"] is None and failed["trial"] == "d"


def test_row_shows_each_task_metric_beside_its_score_and_the_weights():
    """A row carries the searched values, the objective and every task's raw headline metric and score."""
    row = trial_row(result("a", 4, level=0.25, **{"loss.vqa": 2.0, "loss.mlm": 0.5}), CFG)
    assert row["loss.vqa"] == 2.0 and row["loss.mlm"] == 0.5
    assert row["objective"] == pytest.approx(0.25)
    for task in TASKS:
        assert row[f"{task}.{HEADLINE[task]}"] == 0.25 and row[f"{task}.score"] == pytest.approx(0.25)


def test_best_prefers_trials_that_ran_to_the_end():
    """A trial ASHA stopped is not compared with completed ones; failed trials never win."""
    rows = build_rows(
        [
            result("early", 2, level=0.9, done=True),
            result("full", 4, level=0.4),
            result("worse", 4, level=0.3),
            result("broken", error=RuntimeError("x")),
        ],
        CFG,
    )
    assert best_row(rows)["trial"] == "full"
    assert best_row(build_rows([result("early", 2, level=0.9, done=True)], CFG))["trial"] == "early"
    assert best_row(build_rows([result("broken", error=RuntimeError("x"))], CFG)) is None
    assert [r["trial"] for r in rows][:2] == ["early", "full"]  # sorted by objective


def test_best_preset_round_trips_through_load_config(tmp_path):
    """best.yaml names the base preset, keeps the user's settings, sets the winning values, drops tune.* and secrets."""
    row = trial_row(result("w", 4, **{"loss.vqa": 3.25, "loss.mlm": 0.375}), CFG)
    user = {
        "model": {"dropout": 0.05},
        "tune": {"num_samples": 9},
        "run_name": "sweep",
        "storage": {"secret_access_key": "s3cr3t", "region": "eu-west-1"},
    }
    text = best_preset(CFG, user, row, "sweep")
    path = tmp_path / "best.yaml"
    path.write_text(text)
    cfg = load_config(files=[path])
    assert cfg.preset == "tiny" and cfg.loss.vqa == 3.25 and cfg.loss.mlm == 0.375
    assert cfg.model.dropout == 0.05 and cfg.storage.region == "eu-west-1"
    assert cfg.tune.num_samples == load_config("tiny").tune.num_samples and cfg.run_name == ""
    assert "s3cr3t" not in text and text.startswith("# Best trial w of sweep sweep")


def test_tables_list_every_trial(tmp_path):
    """CSV and markdown hold one line per trial with weights, objective and per-task columns."""
    rows = build_rows(
        [result("a", 4, **{"loss.vqa": 1.0, "loss.mlm": 2.0}), result("b", error=RuntimeError("boom"))], CFG
    )
    csv_text, md = to_csv(rows), to_markdown(rows)
    assert csv_text.splitlines()[0].startswith("trial,status,step,objective,loss.vqa,loss.mlm,detection.map50")
    assert len(csv_text.splitlines()) == 3 and "vqa.chance" in csv_text
    assert len(md.splitlines()) == 4 and "failed: boom" in md and "vqa.chance" not in md


def test_report_files_and_plot_without_matplotlib(tmp_path, monkeypatch):
    """Without matplotlib the plot is drawn with PIL; all four report files are written."""
    from PIL import Image

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rows = build_rows(
        [
            result("a", 4, level=0.6, **{"loss.vqa": 1.0, "loss.mlm": 2.0}),
            result("b", 2, level=0.2, done=True, **{"loss.vqa": 3.0, "loss.mlm": 0.3}),
        ],
        CFG,
    )
    files = write_report(rows, CFG, {}, tmp_path, "sweep")
    assert set(files) == {"csv", "markdown", "preset", "plot"} and all(p.exists() for p in files.values())
    with Image.open(files["plot"]) as img:
        assert img.format == "PNG" and img.width >= 900


def test_cli_preview_and_errors(capsys):
    """--preview prints the seeded trials and starts nothing; bad settings exit with code 2 and a message."""
    assert tune_main(["--preset", "tiny", "--preview", "tune.num_samples=2", "tune.search=[loss.vqa]"]) == 0
    out = capsys.readouterr().out
    assert "2 trial(s), searcher random, seed 0" in out and "loss.vqa" in out
    assert tune_main(["--preset", "tiny", "--preview", "tune.search=[loss.nope]"]) == 2
    assert "unknown key 'loss.nope'" in capsys.readouterr().err
