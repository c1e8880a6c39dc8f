"""Benchmark the whole model: forward and forward+backward time per task.

Why: the task mix decides what a training step costs (a VQA batch runs T5 and the Q-Former,
a classification batch only the image encoder), and the trainer's throughput targets and
the Tune trial budgets are set from these numbers. For each task alone this measures the
median time of forward and of forward+backward (surrogate loss over every output) after
warm-up, CUDA-synchronised, and on CUDA the peak memory of a step.

    python benchmarks/model_bench.py                      # tiny preset, CPU, seconds
    python benchmarks/model_bench.py --preset paper       # paper model, needs a GPU (bf16 autocast)

Inputs per task follow the preset's data sizes: detection/morphology images of the largest
detection scale at 4:3, segmentation/classification/text images at their square sizes,
10 boxes per image (3 for small presets), 24 prompt tokens and 12 answer tokens.

Writes ``benchmarks/results/model-<device>-<torch version>[-<preset>].json`` and prints a
Markdown table. On CPU it also records process CPU time and the load average: on a shared
machine wall time mostly measures the other tenants. Without a GPU the paper preset is recorded as not measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unihema.config import load_config  # noqa: E402 - needs the repo on sys.path when run as a script
from unihema.model import TASKS, build_model, build_tokenizer  # noqa: E402

NO_GPU = "not measured: no GPU in this session"


def image_size(cfg, task: str) -> tuple[int, int]:
    d = cfg.data
    if task in ("detection", "morphology"):
        short = max(d.detection_scales)
        return short, min(d.detection_max_size, (short * 4 // 3) // 32 * 32)
    side = {"segmentation": d.segmentation_size, "classification": d.classification_size}.get(task, d.text_image_size)
    return side, side


def make_batch(cfg, tokenizer, task: str, batch: int, device, boxes: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    h, w = image_size(cfg, task)
    targets = []
    for _ in range(batch):
        xy = torch.rand(boxes, 2, generator=g) * 0.6 + 0.2
        wh = torch.rand(boxes, 2, generator=g) * 0.1 + 0.05
        targets.append(
            {
                "labels": torch.randint(0, 29, (boxes,), generator=g).to(device),
                "boxes": torch.cat([xy, wh], 1).to(device),
                "morphology": torch.randint(0, 2, (boxes, 6), generator=g).to(device),
            }
        )
    prompts = ["what type of cell is this? describe its nucleus, chromatin and cytoplasm."] * batch
    prompt_ids, prompt_mask = tokenizer.encode(prompts, 24)
    labels, label_mask = tokenizer.encode(["a segmented neutrophil with coarse chromatin"] * batch, 12)
    return {
        "images": torch.randn(batch, 3, h, w, generator=g).to(device),
        "pixel_mask": torch.zeros(batch, h, w, dtype=torch.bool, device=device),
        "tasks": [task],
        "targets": targets,
        "prompt_ids": prompt_ids.to(device),
        "prompt_mask": prompt_mask.to(device),
        "text_labels": labels.masked_fill(~label_mask, -100).to(device),
    }


def _leaves(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _leaves(v)


def surrogate(out: dict) -> torch.Tensor:
    return sum(t.float().square().mean() for t in _leaves(out) if t.is_floating_point())


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup: int, repeats: int) -> tuple[float, float]:
    """Median wall-clock ms and median process CPU ms (all threads) per call.

    The CPU time is reported because wall time on a shared CPU machine mostly measures the
    other tenants; CPU time is far less sensitive to them.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def bench_task(model, batch, device, dtype, args) -> dict:
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def forward():
        with torch.no_grad(), autocast:
            model(batch)

    def forward_backward():
        with autocast:
            loss = surrogate(model(batch))
        loss.backward()
        model.zero_grad(set_to_none=True)

    result = {"image": list(batch["images"].shape[-2:]), "batch": batch["images"].shape[0]}
    result["fwd_ms"], result["fwd_cpu_ms"] = timed(forward, device, args.warmup, args.repeats)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    result["fwd_bwd_ms"], result["fwd_bwd_cpu_ms"] = timed(forward_backward, device, args.warmup, args.repeats)
    if device.type == "cuda":
        result["fwd_bwd_peak_gib"] = (torch.cuda.max_memory_allocated(device) - before) / 2**30
    result["images_per_s"] = result["batch"] / (result["fwd_bwd_ms"] / 1e3)
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device) -> dict:
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
            ).stdout.strip()
            or None
        )
    except OSError:
        commit = None
    info = {"type": device.type, "cpu_threads": torch.get_num_threads()}
    if hasattr(os, "getloadavg"):
        # CPU timings on a shared machine are only comparable at similar load.
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    info["name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    import timm
    import transformers

    return {
        "device": info,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "transformers": transformers.__version__,
        },
        "git_commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def table(report: dict) -> str:
    lines = [
        f"model benchmark, preset {report['preset']} on {report['device']['name']} ({report['dtype']})",
        "",
        "| task | batch | image | fwd ms | fwd+bwd ms | fwd+bwd CPU ms | images/s | peak GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, r in report["tasks"].items():
        if "skipped" in r:
            lines.append(f"| {task} | | | {r['skipped']} | | | | |")
            continue
        peak = f"{r['fwd_bwd_peak_gib']:.2f}" if "fwd_bwd_peak_gib" in r else "-"
        lines.append(
            f"| {task} | {r['batch']} | {r['image'][0]}x{r['image'][1]} | {r['fwd_ms']:.1f} | "
            f"{r['fwd_bwd_ms']:.1f} | {r['fwd_bwd_cpu_ms']:.1f} | {r['images_per_s']:.2f} | {peak} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--batch", type=int, default=0, help="images per batch (default: the preset's, max 2 on GPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--dtype", choices=("auto", "fp32", "bf16"), default="auto", help="auto = bf16 autocast on CUDA, fp32 elsewhere"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    bf16 = args.dtype == "bf16" or (args.dtype == "auto" and device.type == "cuda")
    dtype = torch.bfloat16 if bf16 else torch.float32
    cfg = load_config(args.preset)
    # Offline: random weights stand in for a checkpoint (the paper's freezing kept); only speed is measured.
    cfg.model.backbone.pretrained = "checkpoint"
    cfg.model.text.pretrained = "checkpoint"
    report = {
        **environment(device),
        "preset": args.preset,
        "dtype": str(dtype).removeprefix("torch."),
        "command": "python benchmarks/model_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "tasks": {},
    }
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.preset == "paper" and device.type != "cuda":
        report["tasks"] = {t: {"skipped": NO_GPU} for t in tasks}
    else:
        torch.manual_seed(0)
        model = build_model(cfg).to(device).train()
        tokenizer = build_tokenizer(cfg)
        batch_size = args.batch or (min(2, cfg.data.batch_size) if device.type == "cuda" else cfg.data.batch_size)
        boxes = 10 if cfg.model.decoder.num_queries >= 100 else 3
        report["parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        for task in tasks:
            batch = make_batch(cfg, tokenizer, task, batch_size, device, boxes)
            report["tasks"][task] = bench_task(model, batch, device, dtype, args)
            print(f"{task}: {report['tasks'][task]}", file=sys.stderr)

    version = torch.__version__.split("+")[0]
    dev = re.sub(r"[^a-z0-9]+", "-", (report["device"]["name"] if device.type == "cuda" else "cpu").lower()).strip("-")
    suffix = "" if args.preset == "tiny" else f"-{args.preset}"
    out = args.out or REPO / "benchmarks" / "results" / f"model-{dev}-{version}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"\nwrote {os.path.relpath(out, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
