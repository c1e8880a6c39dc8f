"""One evaluation: every task over a split of a dataset, the linear probe, then the files.

Batches are decoded in this process without augmentation (the held-out recipe, whatever the
split), exactly as the trainer's validation sees them, and scored by the same loop and
evaluators (:mod:`unihema.evaluation.evaluators`), only over the whole split.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Iterable

import torch

from unihema.config import TASKS
from unihema.data.collate import collate, move_to
from unihema.errors import UserInputError
from unihema.evaluation.evaluators import HEADLINE, evaluate_batches

log = logging.getLogger(__name__)

# Which optional packages each part needs (checked before any work is done).
NEEDS = {
    "classification": ["sklearn"],
    "morphology": ["sklearn"],
    "vqa": ["sacrebleu", "rouge_score"],
    "linear_probe": ["sklearn"],
    "plots": ["matplotlib"],
}


def eval_batches(task: str, split: str, cfg, storage, *, max_batches: int | None = None, errors: Counter | None = None):
    """Collated batches of ``task`` from ``split``, decoded without augmentation."""
    from unihema.data.pipeline import iter_local_batches, task_files

    fs, files = task_files(split, cfg.data, storage)
    # iter_local_batches reads its split argument only to decide on augmentation: "eval" means none,
    # so even the train split (for the linear probe) is seen as held-out data is.
    for raw in iter_local_batches(
        task,
        "eval",
        cfg.data,
        cfg.model,
        fs,
        files,
        batch_size=cfg.data.batch_size,
        seed=cfg.train.seed,
        max_batches=max_batches,
    ):
        batch = collate(raw, task, errors)
        if batch is not None:
            yield batch


def _on_device(batches, device, seen: Counter):
    """``batches`` moved to ``device``, their images counted into ``seen["images"]``."""
    for batch in batches:
        seen["images"] += len(batch["ids"])
        yield move_to(batch, device)


def _say(progress, text: str) -> None:
    if progress:
        print(f"[evaluate] {text}", flush=True)


def evaluate(
    model,
    cfg,
    tokenizer,
    storage,
    *,
    split: str = "val",
    tasks: Iterable[str] = TASKS,
    max_batches: int | None = None,
    probe: bool = True,
    probe_max_batches: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[dict, dict]:
    """(metrics, artifacts) of ``model`` on ``split`` of ``cfg.data.uri``."""
    from unihema.data.pipeline import task_files

    device = torch.device(device)
    try:
        task_files(split, cfg.data, storage)
    except FileNotFoundError as err:
        raise UserInputError(str(err)) from None
    model.eval()
    errors: Counter = Counter()
    results, artifacts, skipped = {}, {}, {}
    for task in tasks:
        start = time.perf_counter()
        seen: Counter = Counter()
        batches = eval_batches(task, split, cfg, storage, max_batches=max_batches, errors=errors)
        evaluator = evaluate_batches(model, task, _on_device(batches, device, seen), tokenizer)
        n = seen["images"]
        values = evaluator.compute() if n else {}
        if not values:
            skipped[task] = f"no {split} records with {task} targets" if not n else "no usable targets"
            _say(progress, f"{task}: skipped ({skipped[task]})")
            continue
        results[task], artifacts[task] = values, evaluator.artifacts()
        key = HEADLINE[task]
        _say(progress, f"{task}: {key}={values[key]:.3f} over {n} images ({time.perf_counter() - start:.1f}s)")
    if probe:
        start = time.perf_counter()
        values = run_probe(model, cfg, storage, split, max_batches, probe_max_batches, device, errors)
        if "skipped" in values:
            skipped["linear_probe"] = values["skipped"]
            _say(progress, f"linear probe: skipped ({values['skipped']})")
        else:
            results["linear_probe"] = values
            _say(
                progress,
                f"linear probe: accuracy={values['accuracy']:.3f} ({values['train_count']} train cells, "
                f"{values['count']} eval cells, {time.perf_counter() - start:.1f}s)",
            )
    metrics = {"split": split, "data": cfg.data.uri, "tasks": results, "skipped": skipped, "data_errors": dict(errors)}
    return metrics, artifacts


def run_probe(model, cfg, storage, split, max_batches, probe_max_batches, device, errors) -> dict:
    from unihema.evaluation.probe import extract_features, linear_probe

    if split == "train":
        return {"skipped": "the probe fits on the train split, so it needs another split to score"}

    def features(which, limit):
        try:
            batches = (
                move_to(b, device)
                for b in eval_batches("classification", which, cfg, storage, max_batches=limit, errors=errors)
            )
            return extract_features(model, batches)
        except FileNotFoundError:
            return extract_features(model, [])

    train_x, train_y = features("train", probe_max_batches)
    test_x, test_y = features(split, max_batches)
    return linear_probe(train_x, train_y, test_x, test_y, seed=cfg.train.seed)


def write_results(metrics: dict, artifacts: dict, out_dir: Path, plots: bool = True) -> dict:
    """metrics.json, report.md and the plots in ``out_dir``; returns the written paths."""
    from unihema.evaluation.report import render_markdown, write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    names = write_plots(metrics, artifacts, out_dir) if plots else []
    metrics["plots"] = names
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    (out_dir / "report.md").write_text(render_markdown(metrics, artifacts, names))
    return {"metrics": out_dir / "metrics.json", "report": out_dir / "report.md", "plots": [out_dir / n for n in names]}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
