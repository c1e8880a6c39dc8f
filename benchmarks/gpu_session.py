"""The stages of ``benchmarks/gpu_session.sh``: every GPU claim of the project, checked in one run.

GPU time comes in short loans (minutes on one GPU), so everything that can only be shown on
a GPU is prepared here, rehearsed on CPU at tiny shapes (``--rehearse``), and run in one go.
Each stage is its own process (the shell gives each a timeout) and writes
``OUT/stages/<stage>.json`` with a ``status``: ``ok``, ``skipped: <why>`` or
``failed: <why>``; ``summarize`` folds them, and the shell's exit codes, into
``OUT/summary.json``. Stages reuse what already measures: ``kernel_bench.py`` for backend
timings (CUDA events), ``train_bench.make_batches`` for real collated batches, and the
trainer's own precision recipe, criterion and CLI.

    python benchmarks/gpu_session.py STAGE OUT [--rehearse]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

NO_CUDA = "skipped: no CUDA device (GPU-only stage)"
STAGES = ("env", "gpu_tests", "kernels", "attention_accuracy", "msda_accuracy", "model", "pretrain")
# Relative error ||x - oracle|| / ||oracle|| allowed per dtype (outputs and gradients).
REL_TOL = {"float32": 1e-4, "bfloat16": 2e-2, "float16": 5e-3}


def on_gpu() -> bool:
    return torch.cuda.is_available()


def write_stage(out: Path, stage: str, result: dict) -> None:
    (out / "stages").mkdir(parents=True, exist_ok=True)
    (out / "stages" / f"{stage}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().double(), ref.detach().double()
    return float((x - ref).norm() / ref.norm().clamp_min(1e-30))


# --------------------------------------------------------------------------- env


def stage_env(out: Path, rehearse: bool) -> dict:
    """GPU, driver, CUDA and library versions, and the commit, for every other stage's record."""
    from unihema.train.device import describe_cuda

    def version(module):
        try:
            return __import__(module).__version__
        except Exception as exc:  # noqa: BLE001 - optional extras: record why not
            return f"not importable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    info = {
        "cuda": describe_cuda(),
        "python": platform.python_version(),
        "versions": {
            m: version(m)
            for m in ("torch", "triton", "flash_attn", "xformers", "deepspeed", "ray", "transformers", "timm")
        },
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    if on_gpu():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "count": torch.cuda.device_count(),
        }
        try:
            info["nvidia_smi"] = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm",
                    "--format=csv",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"not run: {exc}"
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    info["status"] = "ok"
    return info


# --------------------------------------------------------------------------- gpu tests

GPU_TEST_FILES = [
    "tests/ops/test_attention_dispatch.py",
    "tests/ops/test_msda_triton.py",
    "tests/train/test_input_device.py",
]


def stage_gpu_tests(out: Path, rehearse: bool) -> dict:
    """The gpu-marked tests (they skip themselves without CUDA)."""
    xml = out / "gpu_tests.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={xml}",
            *GPU_TEST_FILES,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    counts = {}
    if xml.exists():
        text = xml.read_text()
        for key in ("tests", "failures", "errors", "skipped"):
            found = re.search(rf'{key}="(\d+)"', text)
            counts[key] = int(found.group(1)) if found else 0
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    result = {"counts": counts, "returncode": proc.returncode, "output_tail": tail}
    ran = counts.get("tests", 0) - counts.get("skipped", 0)
    if proc.returncode not in (0, 5) or counts.get("failures") or counts.get("errors"):
        result["status"] = f"failed: pytest exit {proc.returncode}, {counts}"
    elif not on_gpu():
        result["status"] = f"{NO_CUDA}: {counts.get('skipped', 0)} gpu-marked tests skipped"
    elif ran == 0:
        result["status"] = "failed: no gpu-marked test ran on a CUDA machine"
    else:
        result["status"] = "ok"
    return result


# --------------------------------------------------------------------------- kernels timing


def stage_kernels(out: Path, rehearse: bool) -> dict:
    """kernel_bench.py (CUDA-event timings, TFLOP/s, peak memory, auto's pick) at paper shapes, or quick on CPU."""
    import kernel_bench

    path = out / "kernels.json"
    argv = ["--out", str(path)]
    argv += (
        ["--quick", "--threads", "1", "--warmup", "1", "--repeats", "3", "--budget", "0.2"]
        if rehearse
        else ["--warmup", "3", "--repeats", "20", "--budget", "1.0"]
    )
    kernel_bench.main(argv)
    report = json.loads(path.read_text())
    picks = {}
    for family in ("attention", "ms_deform_attn"):
        for case, row in report[family].items():
            auto = row["auto"]
            timing = row["backends"].get(auto, {})
            picks[case] = {
                "auto": auto,
                "fwd_bwd_tflops": timing.get("fwd_bwd", {}).get("tflops"),
                "x_reference_fwd_bwd": timing.get("fwd_bwd", {}).get("x_reference"),
            }
    return {
        "status": "ok",
        "file": path.name,
        "dtype": report["dtype"],
        "matmul_tflops": report["matmul_tflops"],
        "auto": picks,
        "targets": report.get("targets"),
    }


# --------------------------------------------------------------------------- accuracy


def stage_attention_accuracy(out: Path, rehearse: bool) -> dict:
    """Every runnable attention backend vs the fp32 math oracle: output and q/k/v gradients, bf16 and fp16."""
    import kernel_bench

    from unihema.ops import attention, check_attention_backends, choose_attention_backend

    device = torch.device("cuda" if on_gpu() else "cpu")
    dtypes = (torch.bfloat16, torch.float16) if on_gpu() else (torch.bfloat16,)
    cases = kernel_bench.attention_cases(rehearse)
    if rehearse:
        cases = {k: v for k, v in cases.items() if k != "encoder_dense"}  # minutes of fp32 math on CPU
    results, failures = {}, []
    for name, (b, lq, lk, h, d, padding, bias, scale, _note) in cases.items():
        for dtype in dtypes:
            key = f"{name}/{str(dtype).removeprefix('torch.')}/head_dim{d}"
            (q, k, v), kw = kernel_bench.make_attention(b, lq, lk, h, d, padding, bias, device, dtype)
            oracle_in = [t.detach().float().requires_grad_() for t in (q, k, v)]
            oracle_kw = {k2: (t.float() if t.is_floating_point() else t) for k2, t in kw.items()}
            try:
                ref = attention(*oracle_in, scale=scale, backend="math", **oracle_kw)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                results[key] = {"skipped": "fp32 oracle out of memory"}
                continue
            grad_out = torch.randn_like(ref)
            ref_grads = torch.autograd.grad(ref, oracle_in, grad_out)
            row = {"auto": choose_attention_backend(q, k, v, **kw), "backends": {}}
            tol = REL_TOL[str(dtype).removeprefix("torch.")]
            for check in check_attention_backends(q, k, v, scale=scale, **kw):
                if not check.ok:
                    row["backends"][check.name] = {"skipped": check.reason}
                    continue
                inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
                got = attention(*inputs, scale=scale, backend=check.name, **kw)
                grads = torch.autograd.grad(got, inputs, grad_out.to(got.dtype))
                errors = {
                    "out": rel_error(got, ref),
                    **{f"grad_{n}": rel_error(g, r) for n, g, r in zip("qkv", grads, ref_grads)},
                }
                ok = all(e <= tol for e in errors.values())
                row["backends"][check.name] = {"rel_error": errors, "tolerance": tol, "ok": ok}
                if not ok:
                    failures.append(f"{key} {check.name}")
            results[key] = row
            del ref, ref_grads, oracle_in
            if device.type == "cuda":
                torch.cuda.empty_cache()
    status = "ok" if not failures else f"failed: beyond tolerance: {', '.join(failures)}"
    return {"status": status, "device": device.type, "cases": results}


def stage_msda_accuracy(out: Path, rehearse: bool) -> dict:
    """Triton deformable attention vs the grid_sample reference in fp32: output and gradients, fp32 and bf16."""
    import kernel_bench

    from unihema.ops import ms_deform_attn, ms_deform_attn_reference

    device = torch.device("cuda" if on_gpu() else "cpu")
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return {"status": "skipped: no CUDA device and TRITON_INTERPRET is not set"}
    cases = kernel_bench.msda_cases(quick=True) if rehearse else kernel_bench.msda_cases(quick=False)
    if rehearse:  # Triton's interpreter runs a few thousand points per second
        cases = {"msda_tiny": (1, [(8, 10), (4, 5)], 24, 2, 16, 2, "interpreter-sized")}
    results, failures = {}, []
    for name, (b, levels, lq, h, d, p, _note) in cases.items():
        for dtype in (torch.float32, torch.bfloat16):
            key = f"{name}/{str(dtype).removeprefix('torch.')}"
            value, shapes, starts, locations, weights = kernel_bench.make_msda(b, levels, lq, h, d, p, device, dtype)
            leaves = [value, locations, weights]
            ref_in = [t.detach().float().requires_grad_() for t in leaves]
            ref = ms_deform_attn_reference(ref_in[0], shapes, starts, ref_in[1], ref_in[2])
            grad_out = torch.randn_like(ref)
            ref_grads = torch.autograd.grad(ref, ref_in, grad_out)
            inputs = [t.detach().clone().requires_grad_() for t in leaves]
            got = ms_deform_attn(inputs[0], shapes, starts, inputs[1], inputs[2], backend="triton")
            grads = torch.autograd.grad(got, inputs, grad_out.to(got.dtype))
            errors = {
                "out": rel_error(got, ref),
                **{
                    f"grad_{n}": rel_error(g, r) for n, g, r in zip(("value", "locations", "weights"), grads, ref_grads)
                },
            }
            tol = REL_TOL[str(dtype).removeprefix("torch.")]
            ok = all(e <= tol for e in errors.values())
            results[key] = {
                "shape": dict(batch=b, levels=levels, queries=lq, heads=h, head_dim=d, points=p),
                "rel_error": errors,
                "tolerance": tol,
                "ok": ok,
            }
            if not ok:
                failures.append(key)
    status = "ok" if not failures else f"failed: beyond tolerance: {', '.join(failures)}"
    return {"status": status, "device": device.type, "interpreter": device.type == "cpu", "cases": results}


# --------------------------------------------------------------------------- model


def stage_model(out: Path, rehearse: bool) -> dict:
    """The model, one fwd+bwd per task through the trainer's precision recipe, input path and criterion."""
    from train_bench import make_batches

    from unihema.config import TASKS, load_config
    from unihema.data.collate import move_to, normalize_images, uint8_images
    from unihema.losses import UniHemaCriterion
    from unihema.model import build_model
    from unihema.train.precision import Precision
    from unihema.train.telemetry import count_flops, device_peak_tflops

    device = torch.device("cuda" if on_gpu() else "cpu")
    preset, batch_size = ("tiny", 2) if rehearse else ("paper", 12)
    cfg = load_config(preset)
    # Nothing is downloaded on the loan machine: random weights stand in for a checkpoint
    # ("checkpoint" keeps the paper's frozen stem and FrozenBatchNorm; only speed is measured).
    cfg.model.backbone.pretrained = "checkpoint"
    cfg.model.text.pretrained = "checkpoint"
    if rehearse:
        torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    criterion = UniHemaCriterion(cfg.loss)
    amp = Precision("bf16", device)
    peak = device_peak_tflops(device)
    with uint8_images(pin_memory=device.type == "cuda"):
        batches = make_batches(cfg, batch_size, len(TASKS))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step(batch):
        with amp.autocast():
            loss = amp.criterion(criterion, model(batch), batch)["loss"]
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss.detach()

    results, failures = {}, []
    for task, host_batch in batches:
        batch = normalize_images(move_to(host_batch, device))
        row = {"image": list(batch["images"].shape[-2:]), "batch": int(batch["images"].shape[0])}
        try:
            with torch.no_grad(), amp.autocast():
                row["flops_fwd_bwd"] = 3 * count_flops(functools.partial(model, batch))
            step(batch)  # warm-up (cuDNN autotuning, Triton compilation)
            sync()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                loss = step(batch)
                end.record()
                end.synchronize()
                seconds = start.elapsed_time(end) / 1e3
                row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            else:
                t0 = time.perf_counter()
                loss = step(batch)
                seconds = time.perf_counter() - t0
            row.update(loss=float(loss), step_s=seconds, tflops=row["flops_fwd_bwd"] / seconds / 1e12)
            if peak:
                row["mfu"] = row["tflops"] / peak
            if not math.isfinite(row["loss"]):
                failures.append(f"{task}: loss {row['loss']}")
        except torch.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            row["error"] = f"out of memory: {str(exc).splitlines()[0]}"
            failures.append(f"{task}: out of memory")
        results[task] = row
    status = "ok" if not failures else f"failed: {'; '.join(failures)}"
    return {
        "status": status,
        "preset": preset,
        "device": device.type,
        "precision": "bf16 autocast, fp32 weights",
        "peak_bf16_tflops": peak,
        "parameters": sum(p.numel() for p in model.parameters()),
        "note": "forward+backward without the optimizer step (its states are not in peak memory)",
        "tasks": results,
    }


# --------------------------------------------------------------------------- pretrain


def stage_pretrain(out: Path, rehearse: bool) -> dict:
    """``python -m unihema.pretrain`` on one device: train, checkpoint, resume to the end, validate, export."""
    work = out / "pretrain"
    work.mkdir(parents=True, exist_ok=True)
    preset = "tiny" if rehearse else "paper"
    first, total = (2, 3) if rehearse else (10, 20)
    cpus = 1 if rehearse else max(1, min(8, (os.cpu_count() or 2) // 2))
    # Offline: random weights stand in for a checkpoint (the paper's freezing kept); the stage checks the path.
    common = [
        "--preset",
        preset,
        "model.backbone.pretrained=checkpoint",
        "model.text.pretrained=checkpoint",
        f"data.uri={work / 'data'}",
        "data.synthetic_records=96",
        f"storage.run_uri={work / 'runs'}",
        "storage.embedded=false",
        "run_name=session",
        "train.num_workers=1",
        f"train.cpus_per_worker={cpus}",
        f"train.use_gpu={'true' if on_gpu() else 'false'}",
        "train.precision=bf16",
        "train.log_every=1",
        f"train.checkpoint_every={first}",
        f"train.val_every={first}",
        "train.val_batches=1",
        "train.warmup_steps=2",
        "train.max_failures=0",
    ]
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        UNIHEMA_CHECK_COLLECTIVE_DEVICES="1",
    )
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    runs = []
    for phase, steps, extra in (("train", first, ["--no-export"]), ("resume", total, [])):
        log = work / f"{phase}.log"
        start = time.perf_counter()
        with log.open("w") as fh:
            proc = subprocess.run(
                [sys.executable, "-m", "unihema.pretrain", *common, f"train.max_steps={steps}", *extra],
                cwd=REPO,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        text = log.read_text()
        losses = {int(s): float(v) for s, v in re.findall(r"\[unihema\] step (\d+)/\d+ loss=(\S+)", text)}
        runs.append(
            {
                "phase": phase,
                "returncode": proc.returncode,
                "seconds": round(time.perf_counter() - start, 1),
                "losses": losses,
                "log": str(log.relative_to(out)),
                "resumed": bool(re.search(rf"resumed from the checkpoint at step {first}\b", text)),
            }
        )
        if proc.returncode != 0:
            return {
                "status": f"failed: {phase} run exited {proc.returncode} (see {log.relative_to(out)})",
                "runs": runs,
                "log_tail": text.splitlines()[-20:],
            }
    status_file = work / "runs" / "session" / "status.json"
    status = json.loads(status_file.read_text()) if status_file.exists() else {}
    problems = []
    if not runs[1]["resumed"]:
        problems.append(f"the second run did not resume from step {first}")
    if status.get("status") != "completed" or status.get("step") != total:
        problems.append(f"status {status.get('status')!r} at step {status.get('step')}")
    if not status.get("validation"):
        problems.append("no validation metrics")
    if not all(math.isfinite(v) for r in runs for v in r["losses"].values()):
        problems.append("non-finite logged loss")
    if not (work / "runs" / "session" / "export" / "model.safetensors").exists():
        problems.append("no export")
    return {
        "status": "ok" if not problems else f"failed: {'; '.join(problems)}",
        "preset": preset,
        "steps": {"first": first, "total": total},
        "runs": runs,
        "validation": status.get("validation"),
        "precision": status.get("precision"),
    }


# --------------------------------------------------------------------------- summary


def summarize(out: Path, rehearse: bool) -> dict:
    """OUT/summary.json: each stage's status (its own verdict, or how the shell saw it end) and key figures."""
    stages = {}
    for stage in STAGES:
        result_file = out / "stages" / f"{stage}.json"
        exit_file = out / "stages" / f"{stage}.exit.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else None
        ended = json.loads(exit_file.read_text()) if exit_file.exists() else None
        if ended is None:
            entry = {"status": "failed: not run (the session's time ran out first)"}
        elif ended["rc"] in (124, 137):
            entry = {"status": f"failed: timed out after {ended['limit_s']}s (see logs/{stage}.log)"}
        elif result is None:
            entry = {"status": f"failed: exit code {ended['rc']} without a result (see logs/{stage}.log)"}
        else:
            entry = {"status": result.get("status", "failed: no status")}
            if ended["rc"] != 0 and entry["status"] == "ok":
                entry["status"] = f"failed: exit code {ended['rc']}"
        if ended is not None:
            entry.update(seconds=ended.get("seconds"), limit_s=ended.get("limit_s"))
        entry["result"] = f"stages/{stage}.json" if result is not None else None
        stages[stage] = entry
    summary = {
        "mode": "rehearse (CPU, tiny shapes)" if rehearse else "gpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "all_ok": all(s["status"] == "ok" or s["status"].startswith("skipped") for s in stages.values()),
        "stages": stages,
    }
    env_file = out / "stages" / "env.json"
    if env_file.exists():
        env = json.loads(env_file.read_text())
        summary["environment"] = {
            "gpu": env.get("gpu"),
            "cuda": env.get("cuda"),
            "versions": env.get("versions"),
            "git_commit": env.get("git_commit"),
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


STAGE_FUNCTIONS = {
    "env": stage_env,
    "gpu_tests": stage_gpu_tests,
    "kernels": stage_kernels,
    "attention_accuracy": stage_attention_accuracy,
    "msda_accuracy": stage_msda_accuracy,
    "model": stage_model,
    "pretrain": stage_pretrain,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=[*STAGES, "summarize"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rehearse", action="store_true", help="tiny shapes on CPU")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "summarize":
        summary = summarize(args.out, args.rehearse)
        for name, entry in summary["stages"].items():
            print(f"{name:20s} {entry['status']}")
        return 0 if summary["all_ok"] else 1
    if not args.rehearse and not on_gpu() and args.stage not in ("env", "gpu_tests"):
        write_stage(args.out, args.stage, {"status": NO_CUDA})
        return 0
    try:
        result = STAGE_FUNCTIONS[args.stage](args.out, args.rehearse)
    except Exception as exc:  # noqa: BLE001 - the stage's verdict is the record, the shell goes on
        result = {
            "status": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "traceback": traceback.format_exc().splitlines()[-25:],
        }
    write_stage(args.out, args.stage, result)
    print(f"{args.stage}: {result['status']}")
    return 0 if result["status"] == "ok" or result["status"].startswith("skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
