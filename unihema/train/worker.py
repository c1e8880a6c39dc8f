"""``train_loop_per_worker``: what each Ray Train worker runs.

model -> DeepSpeed engine -> multi-task loop (one task per step, the same on every rank)
-> periodic validation -> DeepSpeed checkpoints reported through ``ray.train.report``.
Everything comes from the ``loop_config`` argument (no module globals), so the same
function serves pretraining, tests and every Ray Tune trial.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from unihema.checkpoint.files import CHECKPOINT_TAG
from unihema.config import TASKS, UniHemaConfig
from unihema.config.core import build
from unihema.data.collate import move_to, normalize_images, uint8_images
from unihema.data.pipeline import task_files
from unihema.data.stream import MultiTaskStream, local_task_batches, task_weights
from unihema.evaluation.evaluators import CHANCE, HEADLINE, RENAMED, evaluate_batches, scalar_metrics
from unihema.storage.verify import write_file_manifest
from unihema.train.collectives import all_ranks_finite, maybe_check_devices, sum_over_ranks
from unihema.train.deepspeed_config import deepspeed_config, resolve_precision
from unihema.train.device import process_group_backend, rank_seed, seed_everything, training_device
from unihema.train.optim import build_optimizer
from unihema.train.precision import Precision
from unihema.train.run_files import upload_dir, write_json
from unihema.train.telemetry import (
    ProgressWriter,
    StepTimer,
    count_flops,
    device_peak_tflops,
    format_duration,
    peak_memory_mb,
)
from unihema.train.validation_model import validation_model

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a NaN/inf loss; the run stops, keeping its last good checkpoint."""


def _all_reduce(value: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value, op=op)
    return value


def _gather_objects(obj) -> list:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return _all_reduce(values.clone()) / world


def _main_lr(engine) -> float:
    """The learning rate of the main parameter group (the backbone's is 10x smaller)."""
    groups = engine.optimizer.param_groups
    return float(next((g["lr"] for g in groups if g.get("name") == "main"), groups[-1]["lr"]))


def _batch_tokens(batch: dict) -> int:
    tokens = int(batch["prompt_mask"].sum())
    if "text_labels" in batch:
        tokens += int((batch["text_labels"] != -100).sum())
    return tokens


def validate(
    model, cfg: UniHemaConfig, storage, tokenizer, rank: int, world: int, device, shards: tuple | None = None
) -> dict:
    """Per-task validation metrics on the held-out split, merged across ranks.

    Each rank scores its share of the split with the evaluation loop of
    ``python -m unihema.evaluate`` (:func:`unihema.evaluation.evaluators.evaluate_batches`);
    rank 0 merges the evaluators' statistics and keeps the numbers of the result.
    ``shards``: the split's (filesystem, readable shards), checked once per run by the caller.
    """
    results = {}
    for task in (t for t in TASKS if getattr(cfg.data.mix, t) > 0):
        evaluator = state = None
        try:
            batches = (
                normalize_images(move_to(b, device))
                for b in local_task_batches(
                    task,
                    "val",
                    cfg,
                    storage,
                    rank=rank,
                    world_size=world,
                    max_batches=cfg.train.val_batches,
                    shards=shards,
                )
            )
            evaluator = evaluate_batches(model, task, batches, tokenizer)
            state = evaluator.state()
        except (FileNotFoundError, RuntimeError) as err:  # no val shards, or none for this rank
            log.warning("rank %d: no validation data for %s: %s", rank, task, err)
        states = _gather_objects(state)
        if rank == 0 and evaluator is not None:
            for other in states[1:]:
                if other is not None:
                    evaluator.merge(other)
            results[task] = scalar_metrics(evaluator.compute())
    return results


def _reported_metrics(validation: dict) -> dict:
    """``val_<task>_<key>`` of every number, plus the names training used before the metrics were renamed."""
    out = {f"val_{t}_{k}": v for t, vals in validation.items() for k, v in vals.items()}
    for task, renamed in RENAMED.items():
        for old, new in renamed.items():
            if f"val_{task}_{new}" in out:
                out[f"val_{task}_{old}"] = out[f"val_{task}_{new}"]
    return out


def _val_shards(cfg: UniHemaConfig, storage, bad_shards: dict) -> tuple | None:
    """The validation split's footers, read once per run (None: no readable val shards)."""
    try:
        return task_files("val", cfg.data, storage, bad_shards)
    except FileNotFoundError as err:
        log.warning("no validation shards: %s", err)
        return None


def _save_checkpoint(engine, stream: MultiTaskStream, step: int, metrics: dict, rank: int) -> None:
    """DeepSpeed checkpoint of every rank plus each rank's data position, reported to Ray Train."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="unihema-ckpt-") as tmp:
        engine.save_checkpoint(tmp, tag=CHECKPOINT_TAG, client_state={"step": step})
        Path(tmp, f"data_state_rank{rank}.json").write_text(json.dumps({"step": step, "positions": stream.positions()}))
        write_file_manifest(tmp, rank)  # sizes and sha256 of what this rank hands Ray Train to upload
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _resume(engine, rank: int, cache_dir: str = "") -> int:
    """The step to resume at (0 for a new run), with the engine's state loaded from the checkpoint.

    The data stream needs only the step: it replays its read plan to it.
    """
    import ray.train

    from unihema.train.resume_cache import node_local_checkpoint

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    barrier = dist.barrier if dist.is_available() and dist.is_initialized() else (lambda: None)
    # One verified download per node, shared by its ranks however late each arrives (see resume_cache).
    with node_local_checkpoint(
        checkpoint, ray.train.get_context().get_local_rank(), barrier, base=cache_dir or None
    ) as copy:
        ckpt_dir = str(copy.path)
        _, client_state = engine.load_checkpoint(ckpt_dir, tag=CHECKPOINT_TAG)
        state_file = Path(ckpt_dir, f"data_state_rank{rank}.json")
        if not state_file.exists():  # resumed with more workers than saved: the plan is dealt anew
            state_file = Path(ckpt_dir, "data_state_rank0.json")
        state = json.loads(state_file.read_text())
    step = int((client_state or {}).get("step", state["step"]))
    log.info("rank %d resumed at step %d from %s", rank, step, checkpoint.path)
    return step


def train_loop_per_worker(loop_config: dict) -> None:
    import deepspeed
    import ray.train

    from unihema.losses import UniHemaCriterion
    from unihema.model import build_model
    from unihema.model.tokenizer import build_tokenizer

    cfg: UniHemaConfig = build(UniHemaConfig, loop_config["config"])
    run_uri: str = loop_config["run_uri"]
    storage = cfg.storage
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # Ray does not always set OMP_NUM_THREADS for Train workers; torch then starts one thread
    # per core in every worker, and on CPU the spinning pools of N workers oversubscribe the
    # cores (measured: 3x slower steps, most of it kernel time). One thread per reserved CPU.
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    # train.use_gpu without a usable GPU is an error here, never a quiet CPU run.
    on_gpu = cfg.train.use_gpu
    device = training_device(on_gpu)
    precision = resolve_precision(cfg.train, on_gpu)
    amp = Precision(precision, device)

    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_model(cfg)
    init_loaded = None
    if cfg.model.init_from and ray.train.get_checkpoint() is None:  # a resumed run keeps its own weights
        from unihema.train.init_weights import load_init_weights

        init_loaded = load_init_weights(model, run_uri, storage)
    model = model.to(device)
    # From here each rank draws its own dropout masks and denoising noise. Augmentations are
    # per record and records are sharded by rank; the stream keeps cfg.train.seed because
    # the task of each step must agree across ranks.
    seed_everything(rank_seed(cfg.train.seed, rank))
    if cfg.train.activation_checkpointing and hasattr(model, "set_activation_checkpointing"):
        model.set_activation_checkpointing(True)
    tokenizer = build_tokenizer(cfg.model)
    criterion = UniHemaCriterion(cfg.loss, num_boxes_reducer=_mean_over_ranks)
    optimizer, scheduler = build_optimizer(model, cfg.train)
    num_tasks = len(task_weights(cfg))
    micro_steps = cfg.train.micro_steps(num_tasks)
    ds_config = deepspeed_config(cfg.train, cfg.data.batch_size, world, on_gpu, num_tasks)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config, dist_init_required=False
    )
    start_step = _resume(engine, rank, cfg.train.resume_cache_dir)
    # Its position is the micro-step: the read plan is replayed to it, whatever the world size was.
    stream = MultiTaskStream(
        cfg,
        storage,
        rank=rank,
        world_size=world,
        seed=cfg.train.seed,
        start_step=start_step * micro_steps,
        index=loop_config.get("shard_index"),
    )

    tb_dir = tempfile.mkdtemp(prefix="unihema-tb-") if rank == 0 else None
    progress = ProgressWriter(tb_dir, enabled=rank == 0)
    timer = StepTimer()
    peak_tflops = device_peak_tflops(device)
    flops_per_task: dict[str, int] = {}
    nonfinite_total = consecutive_nonfinite = 0
    step = start_step
    last_val: dict = {}
    if start_step:
        progress.line(f"[unihema] resumed from the checkpoint at step {start_step}")
    elif init_loaded is not None:
        progress.line(
            f"[unihema] {init_loaded} tensors loaded from model.init_from={cfg.model.init_from} "
            "(the rest re-initialised: see init_from.json in the run folder)"
        )
    progress.line(
        f"[unihema] rank0: {world} workers on {device.type} ({process_group_backend(on_gpu)}), "
        f"ZeRO-{cfg.train.zero_stage}, {precision}, "
        f"steps {start_step}->{cfg.train.max_steps}, tasks {list(stream.weights)}"
    )
    status = "completed"
    val_shards = _val_shards(cfg, storage, stream.stats.bad_shards)
    # uint8 images (pinned on GPU) normalized on the device; the device check is for tests.
    scopes = contextlib.ExitStack()
    scopes.enter_context(uint8_images(pin_memory=device.type == "cuda"))
    scopes.enter_context(maybe_check_devices(device))
    try:
        while step < cfg.train.max_steps:
            step_ok = True
            for _ in range(micro_steps):
                wait_before = stream.stats.wait_s
                task, batch = next(stream)
                data_s = stream.stats.wait_s - wait_before
                tokens = _batch_tokens(batch)  # counted on the host copy: no device sync
                batch = normalize_images(move_to(batch, device))
                if peak_tflops and task not in flops_per_task:
                    with torch.no_grad(), amp.autocast():
                        flops_per_task[task] = 3 * count_flops(lambda: model(batch))  # fwd + bwd ~ 3x fwd
                with amp.autocast():
                    outputs = engine(batch)
                    losses = amp.criterion(criterion, outputs, batch)
                loss = losses["loss"]
                # The one host sync of a micro-step: whether to step decides control flow.
                if all_ranks_finite(loss).item() < 1:
                    step_ok = False
                    break
                engine.backward(loss)
                engine.step()
                # Loss tensors, not floats: they are read (one sync) only when a line is logged.
                timer.add(
                    data_s,
                    len(batch["ids"]),
                    tokens,
                    flops_per_task.get(task, 0),
                    {f"loss_{task}": losses[f"loss_{task}"].detach(), "loss": loss.detach()},
                )
            # DeepSpeed itself skips an update whose gradients overflowed: that is a lost step too.
            if not step_ok or not engine.was_step_applied():
                nonfinite_total += 1
                consecutive_nonfinite += 1
                log.warning(
                    "rank %d: non-finite loss or gradients at step %d (task %s); step skipped", rank, step, task
                )
                if consecutive_nonfinite >= cfg.train.max_consecutive_nonfinite:
                    raise NonFiniteLossError(
                        f"{consecutive_nonfinite} consecutive steps had a non-finite loss or gradients (last task "
                        f"{task!r}, step {step}); stopping with the last good checkpoint kept"
                    )
                engine.zero_grad()  # drop what earlier micro-batches of this step accumulated
                continue
            consecutive_nonfinite = 0
            step += 1
            if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                summary = timer.summary()
                totals = sum_over_ranks([summary["images_per_s"], summary["tokens_per_s"]], device).tolist()
                summary.update(
                    images_per_s=float(totals[0]),
                    tokens_per_s=float(totals[1]),
                    lr=_main_lr(engine),
                    peak_memory_mb=peak_memory_mb(device),
                    nonfinite_steps=nonfinite_total,
                    data_errors=sum(stream.stats.errors.values()),
                )
                if peak_tflops:
                    summary["mfu"] = summary["achieved_tflops"] / peak_tflops
                progress.scalars("train", summary, step)
                loss_text = " ".join(f"{k[5:]}={v:.3f}" for k, v in sorted(summary.items()) if k.startswith("loss_"))
                eta_s = summary["step_time_s"] * micro_steps * (cfg.train.max_steps - step)
                progress.line(
                    f"[unihema] step {step}/{cfg.train.max_steps} loss={summary.get('loss', 0):.3f} "
                    f"{loss_text} | {summary['images_per_s']:.1f} img/s, data wait "
                    f"{summary['data_wait_fraction']:.0%}, lr {summary['lr']:.2e}, "
                    f"peak {summary['peak_memory_mb']:.0f} MB, ETA {format_duration(eta_s)}"
                )
                timer.reset()
            is_last = step == cfg.train.max_steps
            if step % cfg.train.val_every == 0 or is_last:
                # Under ZeRO-3 a gathered plain copy: the engine's forwards are collectives.
                val_model = validation_model(engine, cfg, cfg.train.zero_stage, device)
                with amp.autocast():
                    last_val = validate(val_model, cfg, storage, tokenizer, rank, world, device, val_shards)
                del val_model
                if rank == 0:
                    for task, values in last_val.items():
                        progress.scalars(f"val/{task}", values, step)
                    progress.line(
                        f"[unihema] validation at step {step}: "
                        + ", ".join(
                            f"{t}: {HEADLINE[t]}={v.get(HEADLINE[t], float('nan')):.3f} "
                            f"(chance {v.get(CHANCE[t], 0):.3f}, {stream.task_steps.get(t, 0)} steps)"
                            for t, v in last_val.items()
                        )
                    )
            if step % cfg.train.checkpoint_every == 0 or is_last:
                metrics = {
                    "step": step,
                    "nonfinite_steps": nonfinite_total,
                    "task_steps": dict(stream.task_steps),
                    "data_errors": dict(stream.stats.errors),
                    "bad_shards": dict(stream.stats.bad_shards),
                }
                metrics.update(_reported_metrics(last_val))
                _save_checkpoint(engine, stream, step, metrics, rank)
                if rank == 0 and tb_dir:
                    upload_dir(tb_dir, run_uri, "tensorboard", storage)
    except NonFiniteLossError as err:
        status = f"stopped: {err}"
        progress.line(f"[unihema] {status}")
    finally:
        stream.close()  # an execution left open keeps the worker from exiting
        scopes.close()
        progress.close()
    # What each rank trained on (a rank without a task would show here, and fail earlier).
    rank_task_images = _gather_objects(dict(stream.stats.task_images))
    if rank == 0:
        if tb_dir:
            upload_dir(tb_dir, run_uri, "tensorboard", storage)
        write_json(
            run_uri,
            "status.json",
            {
                "status": status,
                "step": step,
                "nonfinite_steps": nonfinite_total,
                "task_steps": dict(stream.task_steps),
                "data_errors": dict(stream.stats.errors),
                "bad_shards": dict(stream.stats.bad_shards),
                "validation": last_val,
                "rank_task_images": rank_task_images,
                "world_size": world,
                "zero_stage": cfg.train.zero_stage,
                "precision": precision,
                "pid": os.getpid(),
            },
            storage,
        )
