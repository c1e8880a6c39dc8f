"""Input-pipeline throughput and memory: Ray Data streams versus a plain DataLoader.

Why: the training workers must never wait for data, and memory must not grow with the
number of images streamed. Both pipelines here read the same Parquet shards from the
embedded S3 server and run the same per-record code (``TaskTransform``: decode, augment,
tokenize, then ``collate``), so the comparison is of the execution engines only:

(a) Ray Data: ``unihema.data.stream.TaskStream`` (the rank's read plan -> one streaming
    execution that reads and decodes its pieces in Ray tasks -> shuffle-window draws), one pass;
(b) ``torch.utils.data.DataLoader`` with ``num_workers`` = cores over an IterableDataset
    that splits the shards among its workers.

For each dataset size (default 2,000 and 20,000 synthetic records) and each pipeline it
reports images/s of the task (default ``classification`` at the official 512x512 size),
images/s per core, and peak memory (PSS, also summed RSS) of the pipeline's whole process tree. Each
pipeline runs in a fresh subprocess (its own Ray instance, or its DataLoader workers), so
the tree holds exactly that pipeline: driver plus DataLoader workers, or driver plus Ray's
raylet, GCS and workers (Ray's shared-memory object store counts where its pages are
resident). The S3 server runs in the parent and is not counted. Targets (issue 6): Ray Data >= 1.0x the DataLoader's
images/s; peak memory at 20K <= 1.25x that at 2K; >= 150 classification-size images/s per core.

    python benchmarks/data_bench.py                 # 2K and 20K records
    python benchmarks/data_bench.py --quick         # 300 and 1,200 records, a few CPU minutes

Writes ``benchmarks/results/data-<cpu count>cpu-<torch version>[-quick].json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import psutil  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unihema.config import load_config  # noqa: E402
from unihema.data.collate import collate  # noqa: E402
from unihema.data.pipeline import TaskTransform, task_files  # noqa: E402
from unihema.data.stream import TaskStream  # noqa: E402
from unihema.storage import EmbeddedS3  # noqa: E402


def process_memory(pid: int) -> tuple[int, int]:
    """(PSS, RSS) bytes of one process; from /proc/PID/smaps_rollup, which the kernel sums (cheap)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line and not line.startswith(("0", "7", "f")))
        return int(fields["Pss"].split()[0]) * 1024, int(fields["Rss"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux, or the process just ended
        try:
            rss = psutil.Process(pid).memory_info().rss
        except psutil.Error:
            return 0, 0
        return rss, rss


class TreeMemory:
    """Peak summed PSS and peak summed RSS of a process and all its descendants, sampled every second.

    PSS (proportional set size) counts a page shared by k processes 1/k in each, so Ray's
    shared-memory object store and the libraries every worker maps are counted once: the
    tree's real footprint, and the figure the targets use. Summed RSS counts shared pages
    once per process; it is recorded too, as the upper bound a process monitor would show.
    The sampler runs in the parent, outside the measured tree (in the measured process it
    took the GIL from the pipeline it was measuring), and only once a second: the kernel
    walks every mapping for smaps_rollup, ~30 ms of CPU per sample of a Ray tree. A
    streaming pipeline's memory plateaus within seconds, so the peak is not missed.
    """

    def __init__(self, pid: int, interval_s: float = 1.0):
        self.pid, self.interval_s = pid, interval_s
        self.peak_pss = self.peak_rss = 0
        self.trace: list[tuple[float, int]] = []  # (seconds since start, summed PSS)
        self._start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[int, int]:
        try:
            root = psutil.Process(self.pid)
            pids = [self.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.Error:
            return 0, 0
        pss = rss = 0
        for pid in pids:
            p, r = process_memory(pid)
            pss, rss = pss + p, rss + r
        return pss, rss

    def _run(self):
        while not self._stop.is_set():
            pss, rss = self._sample()
            self.trace.append((time.perf_counter() - self._start, pss))
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class ShardIterable(torch.utils.data.IterableDataset):
    """The same shards and per-record code as the Ray pipeline, split among DataLoader workers."""

    def __init__(self, task, cfg, storage, batch_size):
        self.task, self.cfg, self.storage, self.batch_size = task, cfg, storage, batch_size

    def __iter__(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from unihema.data.pipeline import read_columns

        info = torch.utils.data.get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        fs, files = task_files("train", self.cfg.data, self.storage)
        transform = TaskTransform(self.task, self.cfg.data, self.cfg.model, True, 0, 0)
        for path in files[wid::nworkers]:
            with fs.open_input_file(path) as f:
                columns = read_columns(self.task)
                for batch in pq.ParquetFile(f).iter_batches(batch_size=self.batch_size, columns=columns):
                    yield collate(transform(pa.Table.from_batches([batch])), self.task)


def run_dataloader(task, cfg, storage, workers: int) -> tuple[int, float]:
    loader = torch.utils.data.DataLoader(
        ShardIterable(task, cfg, storage, cfg.data.batch_size),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2,
        persistent_workers=False,
    )
    images, start = 0, time.perf_counter()
    for batch in loader:
        if batch is not None:
            images += len(batch["ids"])
    return images, time.perf_counter() - start


def run_ray(task, cfg, storage) -> tuple[int, float]:
    images, start = 0, time.perf_counter()  # the shard index (footers, task columns) is part of the run
    with TaskStream(task, cfg, storage, endless=False) as stream:
        for batch in stream:
            images += len(batch["ids"])
    return images, time.perf_counter() - start


def measure(pipeline: str, task: str, uri: str, preset: str, workers: int, overrides: list[str]) -> dict:
    """Run one pipeline over one dataset in this process and report images/s (memory: the parent samples it)."""
    from unihema.config import StorageConfig

    storage = StorageConfig()  # endpoint and credentials come from the AWS_* environment
    # The project's own tokenizer, not the paper's FLAN-T5 (a hub download): the data cost is the same.
    cfg = load_config(
        preset,
        overrides=[
            f"data.uri={uri}",
            "data.batch_size=32",
            "model.text.pretrained=scratch",
            "model.text.vocab_size=512",
            *overrides,
        ],
    )
    if pipeline == "ray_data":
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        images, seconds = run_ray(task, cfg, storage)
        ray.shutdown()
    else:
        images, seconds = run_dataloader(task, cfg, storage, workers)
    return {
        "pipeline": pipeline,
        "task": task,
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "images_per_s_per_core": images / seconds / workers,
    }


def measure_in_child(pipeline: str, args, uri: str, env: dict) -> dict:
    """One pipeline in a fresh subprocess, its process tree's memory sampled from here."""
    import subprocess

    cmd = [
        sys.executable,
        __file__,
        "--measure",
        pipeline,
        "--uri",
        uri,
        "--task",
        args.task,
        "--preset",
        args.preset,
        "--workers",
        str(args.workers),
        *args.overrides,
    ]
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeMemory(child.pid) as memory:
        out, err = child.communicate()
    if child.returncode:
        raise RuntimeError(f"{pipeline} measurement failed (exit {child.returncode}):\n{err[-3000:]}")
    return {
        **json.loads(out.strip().splitlines()[-1]),
        "peak_pss_mb": memory.peak_pss / 2**20,
        "peak_rss_sum_mb": memory.peak_rss / 2**20,
        "pss_mb_by_decile": decile_trace(memory.trace),
    }


def decile_trace(trace: list[tuple[float, int]]) -> list[float]:
    """Peak summed PSS (MB) within each tenth of the run: flat once warm means memory does not grow with images."""
    if not trace:
        return []
    end = trace[-1][0] or 1.0
    peaks = [0.0] * 10
    for t, pss in trace:
        i = min(9, int(10 * t / end))
        peaks[i] = max(peaks[i], pss / 2**20)
    return [round(p) for p in peaks]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,20000", help="dataset sizes (records), comma separated")
    parser.add_argument("--quick", action="store_true", help="300 and 1,200 records")
    parser.add_argument("--task", default="classification")
    parser.add_argument("--image-size", type=int, default=256, help="synthetic image size")
    parser.add_argument("--preset", default="paper", help="preset whose data sizes are used (paper = 512x512)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers / Ray CPUs")
    parser.add_argument("overrides", nargs="*", help="config overrides for both pipelines, e.g. data.decode_cpus=1")
    parser.add_argument("--measure", choices=["ray_data", "dataloader"], help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # child mode: one pipeline, one dataset, result as the last stdout line
        print(json.dumps(measure(args.measure, args.task, args.uri, args.preset, args.workers, args.overrides)))
        return 0
    sizes = [300, 1200] if args.quick else [int(s) for s in args.sizes.split(",")]

    import ray

    from unihema.data.synthetic import generate_dataset

    results = []
    with EmbeddedS3() as s3:
        storage = s3.storage_config()
        s3.create_bucket("bench")
        env = {**os.environ, **s3.env()}
        for n in sizes:
            uri = f"s3://bench/synthetic-{n}"
            t = time.perf_counter()
            generate_dataset(n, uri, storage, seed=0, image_size=args.image_size, progress=False, val_fraction=0.0)
            print(f"generated {n} records in {time.perf_counter() - t:.0f}s", flush=True)
            for name in ("ray_data", "dataloader"):
                row = {**measure_in_child(name, args, uri, env), "records": n}
                results.append(row)
                print(json.dumps(row), flush=True)

    by = {(r["pipeline"], r["records"]): r for r in results}
    small, large = sizes[0], sizes[-1]
    summary = {
        "ray_vs_dataloader_images_per_s": {
            n: by[("ray_data", n)]["images_per_s"] / by[("dataloader", n)]["images_per_s"] for n in sizes
        },
        "ray_memory_growth_large_vs_small": by[("ray_data", large)]["peak_pss_mb"]
        / by[("ray_data", small)]["peak_pss_mb"],
        "ray_images_per_s_per_core_large": by[("ray_data", large)]["images_per_s_per_core"],
        "ray_pss_mb_by_decile_large": by[("ray_data", large)]["pss_mb_by_decile"],
    }
    summary["targets"] = {
        "ray >= 1.0x dataloader": all(v >= 1.0 for v in summary["ray_vs_dataloader_images_per_s"].values()),
        "memory(large) <= 1.25x memory(small)": summary["ray_memory_growth_large_vs_small"] <= 1.25,
        ">= 150 images/s per core": summary["ray_images_per_s_per_core_large"] >= 150,
    }
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "overrides": args.overrides,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_avg_at_end": os.getloadavg(),
        },
        "versions": {"torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version()},
        "results": results,
        "summary": summary,
    }
    path = (
        REPO
        / "benchmarks"
        / "results"
        / (f"data-{os.cpu_count()}cpu-{torch.__version__.split('+')[0]}{'-quick' if args.quick else ''}.json")
    )
    path.write_text(json.dumps(out, indent=1))
    print(
        "\n| pipeline | records | images/s | images/s/core | peak PSS MB | peak summed RSS MB |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    for r in results:
        print(
            f"| {r['pipeline']} | {r['records']} | {r['images_per_s']:.1f} | {r['images_per_s_per_core']:.1f} "
            f"| {r['peak_pss_mb']:.0f} | {r['peak_rss_sum_mb']:.0f} |"
        )
    print(json.dumps(summary, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
