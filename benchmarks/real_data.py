"""Does the model learn real hematology? BCCD and PBC + WBCAtt through the real training path.

Why: the synthetic demo can be learned by shortcuts real smears do not offer; a recipe is
only as good as what it does on real cells. This runs exactly what a user runs, as
subprocesses, and records every number with its chance level:

1. ``python -m data_prep convert`` of ``bccd`` (detection + field VQA/MLM) and ``pbc_wbcatt``
   (classification, WBCAtt morphology, cell VQA/MLM) from ../shared/datasets;
2. ``python -m unihema.pretrain`` (Ray Train workers, DeepSpeed ZeRO-2, Ray Data streaming the
   converted shards) once per dataset, with the recipe in ``benchmarks/recipes/`` over the
   ``demo`` preset, on the tasks the dataset has;
3. ``python -m unihema.evaluate`` of each export on the held-out splits (val, then test);
4. ``benchmarks/results/real-data-<mode>.json``: metrics, chance, steps per task, wall
   times, the commands and the commit.

    python benchmarks/real_data.py                 # the full benchmark (~15 min on 2 cores)
    python benchmarks/real_data.py --quick         # a few steps each: the suite's smoke test (< 5 min)
    python benchmarks/real_data.py --datasets pbc  # one dataset
    python benchmarks/real_data.py --init-from RUN_OR_EXPORT   # fine-tune from a checkpoint instead

Recipe choices are made on val; test is read once, for the report.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "benchmarks" / "recipes"
TASKS = ("detection", "classification", "segmentation", "morphology", "vqa", "mlm")
HEADLINE = {
    "detection": "map50",
    "classification": "accuracy",
    "segmentation": "dice",
    "morphology": "macro_f1",
    "vqa": "exact_match",
    "mlm": "token_accuracy",
}

# name -> (data_prep registry name, folder under the shared datasets, recipe file, full / quick steps)
DATASETS = {
    "pbc": ("pbc_wbcatt", "pbc_wbcatt", "real-cells.yaml", 600, 16),
    "bccd": ("bccd", "bccd", "real-fields.yaml", 300, 8),
}


def default_shared() -> Path:
    return Path(os.environ.get("UNIHEMA_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def run(cmd: list[str], log_file: Path, env: dict) -> float:
    """Run ``cmd`` with its output in ``log_file`` (tail printed on failure); returns seconds."""
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_file.read_text().splitlines()[-40:]
        raise SystemExit(
            f"command failed (exit {proc.returncode}) after {elapsed:.0f} s; last lines of "
            f"{log_file}:\n" + "\n".join(tail)
        )
    return elapsed


def tasks_with_records(data_dir: Path) -> dict[str, int]:
    """{task: train records} from the dataset's manifest (``split_task`` counts "train/<task>")."""
    counts = json.loads((data_dir / "manifest.json").read_text())["counts"]
    out = {}
    for key, n in counts.get("split_task", {}).items():
        split, task = key.split("/", 1)
        if split == "train" and task in TASKS and int(n) > 0:
            out[task] = int(n)
    return out


VALIDATION_LINE = re.compile(r"\[unihema\] validation at step (\d+): (.*)$")
VALIDATION_ITEM = re.compile(r"(\w+): (\w+)=([0-9.]+) \(chance ([0-9.]+), (\d+) steps\)")


def learning_curve(train_log: Path) -> list[dict]:
    """Every validation the training printed: step, and per task metric, chance and its steps so far."""
    curve, seen = [], set()
    for line in train_log.read_text().splitlines():
        match = VALIDATION_LINE.search(line)
        if not match or int(match.group(1)) in seen:  # Ray prints a worker's line more than once
            continue
        seen.add(int(match.group(1)))
        curve.append(
            {
                "step": int(match.group(1)),
                "tasks": {
                    task: {"metric": metric, "value": float(value), "chance": float(chance), "task_steps": int(steps)}
                    for task, metric, value, chance, steps in VALIDATION_ITEM.findall(match.group(2))
                },
            }
        )
    return curve


def headline(tasks: dict) -> dict:
    """{task: (value, chance)} of an evaluate metrics.json's tasks."""
    out = {}
    for task, values in tasks.items():
        key = HEADLINE.get(task)
        if key and key in values:
            out[task] = {"value": values[key], "chance": values.get(f"chance_{key}"), "metric": key}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few steps per dataset (smoke test)")
    p.add_argument("--datasets", default="pbc,bccd", help="comma-separated subset of " + ", ".join(DATASETS))
    p.add_argument(
        "--shared",
        type=Path,
        default=None,
        help="folder holding bccd/ and pbc_wbcatt/ (default: $UNIHEMA_SHARED_DATASETS, else ../shared/datasets)",
    )
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="where shards, runs and evaluations go (default: .cache/real-data-<mode>)",
    )
    p.add_argument("--steps", type=int, default=None, help="training steps per dataset (default: the recipe's)")
    p.add_argument("--init-from", default="", help="fine-tune from this run/export (model.init_from)")
    p.add_argument("--splits", default="val,test", help="held-out splits to evaluate")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("overrides", nargs="*", help="extra config overrides a.b=value for every run")
    args = p.parse_args(argv)

    mode = "quick" if args.quick else "full"
    shared = args.shared or default_shared()
    work = args.work or REPO / ".cache" / f"real-data-{mode}"
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        p.error(f"unknown datasets {unknown}; choose from {sorted(DATASETS)}")
    missing = [DATASETS[n][1] for n in names if not (shared / DATASETS[n][1]).is_dir()]
    if missing:
        print(
            f"the real datasets {missing} are not under {shared}: set --shared or UNIHEMA_SHARED_DATASETS",
            file=sys.stderr,
        )
        return 2
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "GLOO_SOCKET_IFNAME": "lo",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
    }
    py = sys.executable
    total_start = time.perf_counter()
    results: dict = {}
    commands: list[str] = []
    for name in names:
        registry, folder, recipe, full_steps, quick_steps = DATASETS[name]
        steps = args.steps or (quick_steps if args.quick else full_steps)
        data_dir, run_root = work / "data" / name, work / "runs"
        entry: dict = {"recipe": f"benchmarks/recipes/{recipe}", "steps": steps}
        cmd = [
            py,
            "-m",
            "data_prep",
            "convert",
            registry,
            "--src",
            str(shared / folder),
            "--out",
            str(data_dir),
            "--no-progress",
        ]
        commands.append(" ".join(cmd))
        entry["convert_s"] = round(run(cmd, work / f"convert-{name}.log", env), 1)
        present = tasks_with_records(data_dir)
        entry["train_records"] = present
        mix = [f"data.mix.{t}=0" for t in TASKS if t not in present]
        overrides = [
            f"data.uri={data_dir}",
            f"storage.run_uri={run_root}",
            f"run_name={name}",
            f"train.max_steps={steps}",
            *mix,
        ]
        if args.quick:
            overrides += ["train.val_batches=2", f"train.checkpoint_every={steps}", "train.log_every=2"]
        if args.init_from:
            overrides.append(f"model.init_from={args.init_from}")
        cmd = [py, "-m", "unihema.pretrain", "--config", str(RECIPES / recipe), *overrides, *args.overrides]
        commands.append(" ".join(cmd))
        entry["train_s"] = round(run(cmd, work / f"train-{name}.log", env), 1)
        status = json.loads((run_root / name / "status.json").read_text())
        entry["status"] = status.get("status")
        entry["task_steps"] = status.get("task_steps")
        entry["training_validation"] = status.get("validation")
        entry["learning_curve"] = learning_curve(work / f"train-{name}.log")
        export = run_root / name / "export"
        for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
            out_dir = work / "eval" / f"{name}-{split}"
            cmd = [
                py,
                "-m",
                "unihema.evaluate",
                "--checkpoint",
                str(export),
                "--data",
                str(data_dir),
                "--split",
                split,
                "--out",
                str(out_dir),
                "--no-plots",
                "--device",
                "cpu",
            ]
            if args.quick:
                cmd += ["--max-batches", "2", "--probe-max-batches", "2"]
            commands.append(" ".join(cmd))
            entry[f"eval_{split}_s"] = round(run(cmd, work / f"eval-{name}-{split}.log", env), 1)
            metrics = json.loads((out_dir / "metrics.json").read_text())
            entry[split] = {
                "headline": headline(metrics["tasks"]),
                "tasks": metrics["tasks"],
                "skipped": metrics.get("skipped"),
            }
        results[name] = entry

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=REPO
    )
    import torch

    report = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "commit": commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else ""),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "wall_s": round(time.perf_counter() - total_start, 1),
        "init_from": args.init_from or None,
        "overrides": args.overrides,
        "commands": commands,
        "datasets": results,
    }
    out = args.out or REPO / "benchmarks" / "results" / f"real-data-{mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))

    print(f"\nreal data ({mode}), {report['wall_s']:.0f} s in all, commit {report['commit']}")
    print(f"{'dataset':8s} {'split':5s} {'task':15s} {'metric':14s} {'value':>7s} {'chance':>7s} {'steps':>6s}")
    for name, entry in results.items():
        for split in ("val", "test"):
            for task, h in (entry.get(split) or {}).get("headline", {}).items():
                chance = h["chance"] if h["chance"] is not None else float("nan")
                steps = (entry.get("task_steps") or {}).get(task, 0)
                print(f"{name:8s} {split:5s} {task:15s} {h['metric']:14s} {h['value']:7.3f} {chance:7.3f} {steps:6d}")
            vqa = (entry.get(split) or {}).get("tasks", {}).get("vqa", {})
            if "closed_accuracy" in vqa:
                print(
                    f"{name:8s} {split:5s} {'vqa':15s} {'closed_acc':14s} {vqa['closed_accuracy']:7.3f} "
                    f"{vqa['chance_closed_accuracy']:7.3f}"
                )
            det = (entry.get(split) or {}).get("tasks", {}).get("detection", {})
            for cls, v in (det.get("per_class") or {}).items():
                print(f"{name:8s} {split:5s} {'  AP50 ' + cls:15s} {'ap50':14s} {v['ap50']:7.3f}")
    for name, entry in results.items():
        for point in entry.get("learning_curve", []):
            print(
                f"{name:8s} val at step {point['step']:4d}: "
                + ", ".join(f"{t} {v['value']:.3f} ({v['task_steps']} steps)" for t, v in point["tasks"].items())
            )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
