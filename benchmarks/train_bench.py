"""Training throughput and per-rank memory: one plain PyTorch process versus Ray Train + DeepSpeed ZeRO-0..3.

Why: the pretraining stack must not lose much to its distribution layer (issue 7 target:
ZeRO-2 with 2 workers >= 0.8x the single-process per-core throughput), and ZeRO-3 must
actually shard the model (per-rank parameter + optimizer memory close to 1/N of ZeRO-0).

Every configuration trains the same model (default preset ``tiny``) at the same global
batch on the same pre-collated batches, one task per step in a fixed round-robin over the
six tasks, so only the execution layer differs:

- ``single``: one process, ``torch.optim.AdamW`` with the official parameter groups,
  ``clip_grad_norm_``, torch threads = all cores of the machine;
- ``single-1-thread``: the same with one torch thread, what each worker below has;
- ``ddp``: plain PyTorch DistributedDataParallel through ``ray.train.torch.prepare_model``
  (gloo), the reference that separates DeepSpeed's cost from Ray Train's and the network's;
- ``zero0`` .. ``zero3``: a ``TorchTrainer`` with ``--workers`` workers (1 CPU, 1 torch
  thread each) on a local Ray cluster, each wrapping the model in a DeepSpeed engine built
  by ``unihema.train.deepspeed_config`` (the trainer's own config), micro-batch = global
  batch / workers.

Throughput is samples/s over the timed steps after warm-up (workers start each timed
window at a barrier); per core = samples/s / cores used. Memory per rank is the bytes of
the distinct tensor storages a rank holds for parameters and optimizer state: module
parameters (ZeRO-3: the rank's partitions), the optimizer's state (every state tensor)
and DeepSpeed's fp32 master partitions. Gradients and activations are not counted. Data
loading is not part of it (``benchmarks/data_bench.py`` measures that).

    python benchmarks/train_bench.py                     # tiny, global batch 8, 30 timed steps
    python benchmarks/train_bench.py --preset demo --global-batch 16 --steps 12

Writes ``benchmarks/results/train-<cpus>cpu-<torch version>-<preset>-<train.optimizer>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unihema.config import TASKS, load_config  # noqa: E402


def make_batches(cfg, global_batch: int, count: int, seed: int = 0) -> list[tuple[str, dict]]:
    """``count`` collated (task, batch) pairs of ``global_batch`` records, tasks in round-robin."""
    import pyarrow as pa

    from unihema.data.collate import collate
    from unihema.data.pipeline import TaskTransform
    from unihema.data.schema import to_arrow_row
    from unihema.data.synthetic.record import generate_record

    size = cfg.data.synthetic_image_size
    pools: dict[str, list[dict]] = {t: [] for t in TASKS}
    index = 0
    while any(len(p) < global_batch for p in pools.values()):
        rec = generate_record(index, seed, size, val_fraction=0.0)
        index += 1
        for task in rec["tasks"]:
            if len(pools[task]) < global_batch:
                pools[task].append(to_arrow_row(rec))
    batches = []
    for i in range(count):
        task = TASKS[i % len(TASKS)]
        transform = TaskTransform(task, cfg.data, cfg.model, train=True, seed=seed, epoch=i)
        batches.append((task, collate(transform(pa.Table.from_pylist(pools[task])), task)))
    return batches


def shard(batch: dict, rank: int, world: int) -> dict:
    """This rank's contiguous share of a collated batch (every per-sample field sliced alike)."""
    n = len(batch["ids"])
    per = n // world
    lo, hi = rank * per, (rank + 1) * per
    out = {}
    for key, value in batch.items():
        if key == "tasks":
            out[key] = value
        elif isinstance(value, (list, torch.Tensor)) and len(value) == n:
            out[key] = value[lo:hi]
        else:
            out[key] = value
    return out


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one flat buffer count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.numel():
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def state_tensors(module: torch.nn.Module, optimizer) -> tuple[list, list]:
    """(parameter tensors, optimizer tensors) this rank holds; ZeRO-3 parameters are their partitions."""
    params = [getattr(p, "ds_tensor", p) for p in module.parameters()]
    base = getattr(optimizer, "optimizer", optimizer)  # DeepSpeed's ZeRO optimizers wrap the torch one
    opt = [v for state in base.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    opt += [p for group in base.param_groups for p in group["params"]]  # fp32 master partitions under ZeRO
    for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):
        opt += list(getattr(optimizer, name, None) or [])
    return params, opt


def memory_report(module, optimizer) -> dict:
    params, opt = state_tensors(module, optimizer)
    # Optimizer tensors that alias parameter storage (plain AdamW's param_groups) count once, as parameters.
    param_ptrs = {t.untyped_storage().data_ptr() for t in params if t.numel()}
    opt_only = [t for t in opt if t.numel() and t.untyped_storage().data_ptr() not in param_ptrs]
    return {"param_mb": storage_bytes(params) / 2**20, "optimizer_mb": storage_bytes(opt_only) / 2**20}


def train_steps(step_fn, batches, warmup: int, barrier=lambda: None) -> tuple[float, int]:
    """Run warm-up then timed steps; returns (seconds of the timed steps, timed samples on this rank)."""
    for task, batch in batches[:warmup]:
        step_fn(task, batch)
    barrier()
    start = time.perf_counter()
    samples = 0
    for task, batch in batches[warmup:]:
        step_fn(task, batch)
        samples += len(batch["ids"])
    barrier()
    return time.perf_counter() - start, samples


def build_training(cfg):
    """Model, criterion, optimizer (official groups) and schedule, seeded alike in every process."""
    from unihema.losses import UniHemaCriterion
    from unihema.model import build_model
    from unihema.train.optim import build_optimizer

    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg).train()
    optimizer, scheduler = build_optimizer(model, cfg.train)
    return model, UniHemaCriterion(cfg.loss), optimizer, scheduler


def plain_step(model, criterion, optimizer, scheduler, clip_max_norm: float):
    """One PyTorch training step: loss, backward, clip, AdamW, schedule."""

    def step(task, batch):
        loss = criterion(model(batch), batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_max_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
        optimizer.step()
        scheduler.step()

    return step


def run_single(cfg, batches, warmup: int, threads: int, name: str = "single") -> dict:
    torch.set_num_threads(threads)
    model, criterion, optimizer, scheduler = build_training(cfg)
    step = plain_step(model, criterion, optimizer, scheduler, cfg.train.clip_max_norm)
    seconds, samples = train_steps(step, batches, warmup)
    return {
        "config": name,
        "workers": 1,
        "cores": threads,
        "seconds": seconds,
        "samples": samples,
        "samples_per_s": samples / seconds,
        "samples_per_s_per_core": samples / seconds / threads,
        "ranks": [memory_report(model, optimizer)],
    }


def distributed_loop(loop_config: dict) -> None:
    """Ray Train worker: plain DDP or the trainer's DeepSpeed engine over this rank's share of the batches."""
    import ray.train
    import torch.distributed as dist

    from unihema.config import UniHemaConfig
    from unihema.config.core import build

    cfg = build(UniHemaConfig, loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    batches = [(t, shard(b, rank, world)) for t, b in torch.load(loop_config["batches"], weights_only=False)]
    model, criterion, optimizer, scheduler = build_training(cfg)
    if loop_config["mode"] == "ddp":
        import ray.train.torch

        # Heads of the tasks a step does not run get no gradient: DDP must be told to expect that.
        ddp = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
        step = plain_step(ddp, criterion, optimizer, scheduler, cfg.train.clip_max_norm)
    else:
        import deepspeed

        from unihema.train.deepspeed_config import deepspeed_config

        micro = len(batches[0][1]["ids"])
        engine, _, _, _ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=deepspeed_config(cfg.train, micro, world, on_gpu=False),
            dist_init_required=False,
        )
        model, optimizer = engine.module, engine.optimizer

        def step(task, batch):
            engine.backward(criterion(engine(batch), batch)["loss"])
            engine.step()

    seconds, samples = train_steps(step, batches, loop_config["warmup"], barrier=dist.barrier)
    _hand_over(
        loop_config,
        rank,
        world,
        {
            "rank": rank,
            "seconds": seconds,
            "samples": samples,
            "threads": torch.get_num_threads(),
            **memory_report(model, optimizer),
        },
    )


def _hand_over(loop_config: dict, rank: int, world: int, report: dict) -> None:
    import torch.distributed as dist

    reports = [None] * world
    dist.all_gather_object(reports, report)
    if rank == 0:  # Ray Train V2 keeps only metrics reported with a checkpoint: hand them over in a file
        Path(loop_config["report"]).write_text(json.dumps(reports))


def run_distributed(cfg, name: str, batches_file: str, warmup: int, workers: int) -> dict:
    """``name`` = ``ddp`` or ``zero<stage>``, with ``workers`` Ray Train workers of 1 CPU each."""
    import dataclasses

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    stage = int(name[4:]) if name.startswith("zero") else cfg.train.zero_stage
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, zero_stage=stage, num_workers=workers))
    with tempfile.TemporaryDirectory(prefix="unihema-train-bench-") as storage:
        report = Path(storage, "ranks.json")
        trainer = TorchTrainer(
            distributed_loop,
            train_loop_config={
                "config": cfg.to_dict(),
                "batches": batches_file,
                "warmup": warmup,
                "mode": "ddp" if name == "ddp" else "zero",
                "report": str(report),
            },
            scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name=name, storage_path=storage),
            torch_config=TorchConfig(backend="gloo"),
        )
        trainer.fit()
        if not report.exists():
            raise RuntimeError(f"{name}: the workers finished without reporting")
        ranks = json.loads(report.read_text())
    seconds = max(r["seconds"] for r in ranks)
    samples = sum(r["samples"] for r in ranks)
    return {
        "config": name,
        "workers": workers,
        "cores": workers,
        "seconds": seconds,
        "samples": samples,
        "samples_per_s": samples / seconds,
        "samples_per_s_per_core": samples / seconds / workers,
        "ranks": [{k: r[k] for k in ("rank", "threads", "param_mb", "optimizer_mb")} for r in ranks],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.hidden_dim=64")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=6, help="untimed steps first (one per task)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stages", default="0,1,2,3", help="ZeRO stages to run, comma separated")
    parser.add_argument("--no-ddp", dest="ddp", action="store_false", help="skip the plain DDP reference")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="torch threads of the single process")
    args = parser.parse_args(argv)
    if args.global_batch % args.workers:
        parser.error(f"--global-batch {args.global_batch} must divide among --workers {args.workers}")

    import ray

    from unihema.train.launch import keep_local_ray_on_loopback

    keep_local_ray_on_loopback()
    cfg = load_config(args.preset, overrides=args.overrides)
    batches = make_batches(cfg, args.global_batch, args.warmup + args.steps)
    results = [run_single(cfg, batches, args.warmup, args.cores)]
    print(json.dumps(results[-1]), flush=True)
    if args.cores > 1:  # context: what one core does alone, as each worker below runs
        results.append(run_single(cfg, batches, args.warmup, 1, name="single-1-thread"))
        print(json.dumps(results[-1]), flush=True)
    ray.init(
        num_cpus=max(args.workers, os.cpu_count() or 1),
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    with tempfile.NamedTemporaryFile(suffix=".pt") as f:
        torch.save(batches, f.name)
        for name in [*(["ddp"] if args.ddp else []), *(f"zero{int(s)}" for s in args.stages.split(","))]:
            results.append(run_distributed(cfg, name, f.name, args.warmup, args.workers))
            print(json.dumps(results[-1]), flush=True)
    ray.shutdown()

    by = {r["config"]: r for r in results}
    single = by["single"]
    summary = {
        f"{name}_vs_single_per_core": r["samples_per_s_per_core"] / single["samples_per_s_per_core"]
        for name, r in by.items()
        if name != "single"
    }
    if "ddp" in by and "zero2" in by:
        summary["zero2_vs_ddp"] = by["zero2"]["samples_per_s"] / by["ddp"]["samples_per_s"]
    if "zero0" in by and "zero3" in by:

        def state(r):
            return max(x["param_mb"] + x["optimizer_mb"] for x in r["ranks"])

        summary["zero3_rank_state_vs_zero0"] = state(by["zero3"]) / state(by["zero0"])
    targets = {}
    if "zero2" in by:
        targets["zero2 >= 0.8x single per core"] = summary["zero2_vs_single_per_core"] >= 0.8
    if "zero3_rank_state_vs_zero0" in summary:
        # "close to 1/N": within 25% of the ideal share.
        targets[f"zero3 rank state <= 1.25/{args.workers} of zero0"] = (
            summary["zero3_rank_state_vs_zero0"] <= 1.25 / args.workers
        )
    summary["targets"] = targets
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_avg_at_end": os.getloadavg(),
        },
        "versions": {"torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version()},
        "preset": args.preset,
        "overrides": args.overrides,
        "global_batch": args.global_batch,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "results": results,
        "summary": summary,
    }
    try:
        import deepspeed

        out["versions"]["deepspeed"] = deepspeed.__version__
    except ImportError:
        pass
    path = (
        REPO
        / "benchmarks"
        / "results"
        / (f"train-{os.cpu_count()}cpu-{torch.__version__.split('+')[0]}-{args.preset}-{cfg.train.optimizer}.json")
    )
    path.write_text(json.dumps(out, indent=1))
    print(
        "\n| config | workers | samples/s | samples/s/core | per-rank params MB | per-rank optimizer MB |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    for r in results:
        params = max(x["param_mb"] for x in r["ranks"])
        opt = max(x["optimizer_mb"] for x in r["ranks"])
        print(
            f"| {r['config']} | {r['workers']} | {r['samples_per_s']:.2f} | {r['samples_per_s_per_core']:.2f} "
            f"| {params:.1f} | {opt:.1f} |"
        )
    print(json.dumps(summary, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
