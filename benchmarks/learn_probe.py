"""How far a preset's model learns each task in N steps: one process, no Ray, no DeepSpeed.

Why: every change to the ``demo`` recipe (task mix, loss settings, synthetic data) has to
show learning on all six tasks within `make demo`'s 10 minutes, and one real run costs ~9
minutes of both cores. This probe trains the same model with the same optimizer, schedule,
clipping and one-task-per-step schedule (``data.mix``, ``train.task_schedule``, as the Ray Train worker does), gives
every parameter a step did not use a zero gradient (what DeepSpeed's flat buffers hand the
optimizer), and reports each task's validation metric against its chance level. Batches
are decoded once from a synthetic dataset generated into a temporary folder, so a step is
pure model time: 600 steps of ``demo`` at batch 16 take ~4.5 minutes on 2 cores.

It tracks the real run in direction, not digit for digit: one fixed augmentation per
record, one process (BatchNorm sees the whole batch), no data pipeline. Measured on
``demo`` (docs/TUNING.md): ``loss.segmentation_trains_detection`` alone lifted detection
mAP50 from 0.007 to 0.132 here; the real run with it and the other demo changes went from
0.015 to 0.05-0.09.

    python benchmarks/learn_probe.py                                   # demo, its max_steps
    python benchmarks/learn_probe.py --steps 150 data.mix.classification=0 data.mix.segmentation=0 \\
        data.mix.morphology=0 data.mix.vqa=0 data.mix.mlm=0           # detection alone

Writes ``benchmarks/results/learn-<preset>-<steps>steps.json`` (or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unihema.config import StorageConfig, load_config  # noqa: E402
from unihema.evaluation.evaluators import CHANCE, HEADLINE  # noqa: E402


def decode_batches(
    cfg, batches_per_task: int, val_batches: int, data_uri: str | None = None
) -> dict[tuple[str, str], list[dict]]:
    """Decode each task's batches once: from converted shards at ``data_uri`` (a local folder
    written by ``python -m data_prep convert``), else from the preset's synthetic dataset
    generated into a temporary folder. Tasks without records in a split are left out."""
    from unihema.data.stream import local_task_batches, task_weights
    from unihema.data.synthetic import generate_dataset

    tasks = list(task_weights(cfg))
    cache = {}
    with tempfile.TemporaryDirectory(prefix="unihema-probe-") as tmp:
        if data_uri:
            cfg.data.uri = data_uri
        else:
            cfg.data.uri = str(Path(tmp) / "data")
            generate_dataset(
                cfg.data.synthetic_records,
                cfg.data.uri,
                seed=cfg.data.synthetic_seed,
                image_size=cfg.data.synthetic_image_size,
                fov_width_um=cfg.data.synthetic_fov_width_um,
                progress=False,
            )
        for split, count in (("train", batches_per_task), ("val", val_batches)):
            for task in tasks:
                batches = list(local_task_batches(task, split, cfg, StorageConfig(), max_batches=count))
                if batches:
                    cache[(split, task)] = batches
                elif split == "train" and not data_uri:
                    raise RuntimeError(f"no {split} batches for {task}: raise --records")
    missing = [t for t in tasks if ("train", t) not in cache]
    if missing:
        print(f"no train records for {missing} at {cfg.data.uri}: those tasks are left out", flush=True)
        for task in missing:
            setattr(cfg.data.mix, task, 0.0)
    return cache


def train(model, cfg, cache: dict, steps: int) -> dict:
    """One task per step drawn by data.mix; returns per-task step counts, seconds and losses."""
    from unihema.data.stream import WeightedRoundRobin, task_weights
    from unihema.losses import UniHemaCriterion
    from unihema.train.optim import build_optimizer

    criterion = UniHemaCriterion(cfg.loss)
    optimizer, scheduler = build_optimizer(model, cfg.train)
    mix = task_weights(cfg)
    tasks, weights = list(mix), list(mix.values())
    rng = random.Random(cfg.train.seed)
    round_robin = WeightedRoundRobin(mix) if cfg.train.task_schedule == "round_robin" else None
    used = collections.Counter()
    seconds = collections.defaultdict(float)
    last_loss = {}
    model.train()
    for step in range(steps):
        task = round_robin.next() if round_robin else rng.choices(tasks, weights)[0]
        batches = cache[("train", task)]
        batch = batches[used[task] % len(batches)]
        used[task] += 1
        start = time.perf_counter()
        losses = criterion(model(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        for param in model.parameters():
            if param.grad is None and param.requires_grad:
                param.grad = torch.zeros_like(param)
        if cfg.train.clip_max_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_max_norm)
        optimizer.step()
        scheduler.step()
        seconds[task] += time.perf_counter() - start
        last_loss[task] = float(losses[f"loss_{task}"].detach())
        if (step + 1) % max(1, cfg.train.log_every) == 0:
            print(f"step {step + 1}/{steps} " + " ".join(f"{t}={v:.3f}" for t, v in last_loss.items()), flush=True)
    return {
        t: {"steps": used[t], "s_per_step": round(seconds[t] / used[t], 3), "last_loss": round(last_loss[t], 4)}
        for t in tasks
        if used[t]
    }


def evaluate(model, cfg, cache: dict) -> dict:
    from unihema.evaluation.evaluators import evaluate_batches
    from unihema.model.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(cfg.model)
    results = {}
    for task in HEADLINE:
        if ("val", task) not in cache:
            continue
        metric = evaluate_batches(model, task, iter(cache[("val", task)]), tokenizer)
        values = metric.compute()
        results[task] = {
            "metric": HEADLINE[task],
            "value": values.get(HEADLINE[task]),
            "chance": values.get(CHANCE[task]),
            "count": values.get("count"),
        }
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default=None, help="named preset (default: the config file's own, else demo)")
    p.add_argument("--config", action="append", default=[], help="YAML config file(s) over the preset")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's train.max_steps)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="batch per step (default: the preset's data.batch_size x train.num_workers, the global batch)",
    )
    p.add_argument("--batches-per-task", type=int, default=110, help="train batches decoded per task (then reused)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--data",
        default=None,
        help="converted shards to probe on (a local folder from `python -m data_prep convert`); "
        "default: the preset's synthetic dataset",
    )
    p.add_argument("--out", default=None)
    p.add_argument("overrides", nargs="*", help="config overrides a.b=value")
    args = p.parse_args(argv)

    cfg = load_config(args.preset, args.config, overrides=args.overrides)
    args.preset = cfg.preset or args.preset or "demo"
    steps = args.steps or cfg.train.max_steps
    cfg.train.max_steps = steps  # the cosine schedule spans the probe
    cfg.data.batch_size = args.batch_size or cfg.data.batch_size * cfg.train.num_workers
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.train.seed)

    from unihema.model import build_model

    start = time.perf_counter()
    cache = decode_batches(cfg, args.batches_per_task, cfg.train.val_batches, args.data)
    decode_s = time.perf_counter() - start
    model = build_model(cfg)
    start = time.perf_counter()
    per_task = train(model, cfg, cache, steps)
    train_s = time.perf_counter() - start
    results = evaluate(model, cfg, cache)

    print(
        f"\n{args.preset}: {steps} steps of batch {cfg.data.batch_size} in {train_s:.0f} s "
        f"(decoding {decode_s:.0f} s), torch threads {torch.get_num_threads()}"
    )
    print(f"{'task':15s} {'steps':>5s} {'s/step':>7s} {'metric':>10s} {'value':>7s} {'chance':>7s}")
    for task, r in results.items():
        t = per_task.get(task, {})
        print(
            f"{task:15s} {t.get('steps', 0):5d} {t.get('s_per_step', 0):7.3f} {r['metric']:>10s} "
            f"{r['value'] if r['value'] is not None else float('nan'):7.3f} "
            f"{r['chance'] if r['chance'] is not None else float('nan'):7.3f}"
        )
    out = Path(args.out or REPO / "benchmarks" / "results" / f"learn-{args.preset}-{steps}steps.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": {
                    "cpus": torch.get_num_threads(),
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                },
                "preset": args.preset,
                "data": args.data or "synthetic",
                "overrides": args.overrides,
                "steps": steps,
                "batch_size": cfg.data.batch_size,
                "train_s": round(train_s, 1),
                "decode_s": round(decode_s, 1),
                "per_task": per_task,
                "validation": results,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
