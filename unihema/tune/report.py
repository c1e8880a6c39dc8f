"""What a sweep leaves behind: a table of its trials and the best configuration as a preset file.

The table lists every trial, failed ones included, with its searched values, the objective
and each task's headline metric beside its normalized score, so a task that collapsed under
some weighting is visible at a glance. The best configuration is written as a YAML file that
``python -m unihema.pretrain --config FILE`` (``load_config(files=[FILE])``) accepts: the
sweep's base preset, the user's own settings, and the winning values; nothing that only
shaped the sweep (trial length, tune.*) and no secret.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import yaml

from unihema.config import TASKS, UniHemaConfig
from unihema.config.core import deep_merge
from unihema.evaluation.evaluators import HEADLINE
from unihema.tune.objective import OBJECTIVE, chance_key, metric_key, score
from unihema.tune.search import TIME_ATTR
from unihema.tune.space import nest, searched_values

COMPLETED, STOPPED, FAILED = "completed", "stopped early", "failed"
# A trial the sweep did not get to finish (interrupted): ``--resume`` continues it.
UNFINISHED = "unfinished"
# Settings that shape a sweep, not the model: they stay out of the best preset.
SWEEP_ONLY_KEYS = ("preset", "run_name", "tune")
SECRET_KEYS = ("access_key_id", "secret_access_key")


def _error_line(error) -> str:
    """The last meaningful line of an error (Ray wraps the trial's exception in its traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:240]


def _trial_id(result) -> str:
    metrics = result.metrics or {}
    if metrics.get("trial_id"):
        return str(metrics["trial_id"])
    name = Path(str(getattr(result, "path", "") or "")).name
    return name.removeprefix("trial_") or "?"


def trial_row(result, cfg: UniHemaConfig) -> dict:
    """One table row from a Tune ``Result`` (anything with metrics, config, error and path)."""
    metrics = dict(result.metrics or {})
    step = metrics.get(TIME_ATTR)
    if result.error is not None:
        status = f"{FAILED}: {_error_line(result.error)}"
    elif step is not None and step >= cfg.tune.max_steps_per_trial:
        status = COMPLETED
    elif metrics.get("done"):  # Tune marks the last result of a trial its scheduler stopped
        status = STOPPED
    else:
        status = UNFINISHED
    row = {"trial": _trial_id(result), "status": status, "step": step}
    has_scores = any(metric_key(t) in metrics for t in TASKS)
    judged = score(metrics, cfg.tune.objective, cfg.tune.task_floor) if has_scores else None
    row[OBJECTIVE] = judged.objective if judged else None
    row.update(searched_values(result.config or {}))
    for task in TASKS:
        row[f"{task}.{HEADLINE[task]}"] = metrics.get(metric_key(task))
        row[f"{task}.score"] = judged.tasks[task] if judged else None
        row[f"{task}.chance"] = metrics.get(chance_key(task))
    row["below_floor"] = ",".join(judged.below_floor) if judged else ""
    row["checkpoint"] = metrics.get("checkpoint_path", "")
    return row


def build_rows(results, cfg: UniHemaConfig) -> list[dict]:
    rows = [trial_row(r, cfg) for r in results]
    return sorted(rows, key=lambda r: (r[OBJECTIVE] is None, -(r[OBJECTIVE] or 0.0), r["trial"]))


def best_row(rows: list[dict]) -> dict | None:
    """The best trial that ran to the end; trials stopped early only when none did.

    A trial stopped by ASHA was judged on fewer steps than one that completed, so its
    objective is not comparable with theirs.
    """
    scored = [r for r in rows if r[OBJECTIVE] is not None and not r["status"].startswith(FAILED)]
    finished = [r for r in scored if r["status"] == COMPLETED]
    pool = finished or scored
    return max(pool, key=lambda r: r[OBJECTIVE]) if pool else None


def _columns(rows: list[dict], brief: bool) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    if brief:  # the markdown table is for reading: chance levels and paths live in the CSV
        cols = [c for c in cols if not c.endswith(".chance") and c != "checkpoint"]
    return cols


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_columns(rows, brief=False), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def to_markdown(rows: list[dict]) -> str:
    cols = _columns(rows, brief=True)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _clean(layer: dict) -> dict:
    out = {k: v for k, v in layer.items() if k not in SWEEP_ONLY_KEYS}
    if isinstance(out.get("storage"), dict):
        out["storage"] = {k: v for k, v in out["storage"].items() if k not in SECRET_KEYS}
    return out


def best_preset(cfg: UniHemaConfig, user_layer: dict, row: dict, sweep: str) -> str:
    """YAML text of the best configuration: base preset, the user's settings, the winning values."""
    data: dict = {"preset": cfg.preset}
    data = deep_merge(data, _clean(user_layer))
    for path in cfg.tune.search:
        if row.get(path) is not None:
            data = deep_merge(data, nest(path, float(row[path])))
    scores = ", ".join(f"{t} {_fmt(row.get(f'{t}.score'))}" for t in TASKS)
    header = (
        f"# Best trial {row['trial']} of sweep {sweep}: objective {_fmt(row[OBJECTIVE])} "
        f"at step {row['step']} ({row['status']}).\n"
        f"# Normalized task scores: {scores}.\n"
        f"# Train with: python -m unihema.pretrain --config <this file>\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)


def write_report(
    rows: list[dict], cfg: UniHemaConfig, user_layer: dict, out_dir: str | Path, sweep: str
) -> dict[str, Path]:
    """results.csv, results.md, best.yaml (when a trial scored) and the plot, in ``out_dir``."""
    from unihema.tune.plot import plot_metrics_vs_weights

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / "results.csv", "markdown": out / "results.md"}
    files["csv"].write_text(to_csv(rows))
    files["markdown"].write_text(to_markdown(rows))
    best = best_row(rows)
    if best is not None:
        files["preset"] = out / "best.yaml"
        files["preset"].write_text(best_preset(cfg, user_layer, best, sweep))
    files["plot"] = plot_metrics_vs_weights(rows, cfg, out / "metrics_vs_weights.png", best)
    return files
