"""Where training runs, decided loudly: the worker's device, its seeds, and whether the cluster fits.

Three ways a GPU job used to go wrong without saying so:

- ``use_gpu and torch.cuda.is_available()`` trained on CPU when the node's driver was older
  than the CUDA of the torch build (``is_available()`` is then False); asking for a GPU
  and not getting one is now an error naming the device count, torch's CUDA and the driver.
- A cluster that cannot place the requested workers (``--preset paper`` on a machine
  without GPUs) left Ray Train retrying its worker-group start for ever; the driver now
  compares the request with the nodes before ``fit`` and says what to change.
- Every rank used the same seed, so dropout masks, denoising noise and augmentations were
  identical across ranks; initial weights must agree (and still do), the rest now differs.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# Spacing of per-rank seeds: far apart so that seed + rank of one run never meets the seed
# of a neighbouring run (seed 42 rank 1 vs seed 43 rank 0).
_RANK_STRIDE = 1_000_003


class NoUsableGPUError(RuntimeError):
    """``train.use_gpu=true`` on a worker where torch cannot use a CUDA device."""


class ClusterCapacityError(RuntimeError):
    """The Ray cluster cannot place the training workers the config asks for."""


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random streams (dropout, DN noise, augmentation); rank 0 keeps ``seed``."""
    return (seed + _RANK_STRIDE * rank) % 2**63


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device) and numpy's global generator."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _driver_cuda_version() -> str | None:
    """The highest CUDA version the installed driver supports (cuDriverGetVersion), e.g. '12.2'."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def _driver_version() -> str | None:
    """The NVIDIA kernel driver's version, from /proc (no NVML or nvidia-smi needed)."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    for word in text.split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return None


def describe_cuda() -> dict:
    """What decides whether torch can use a GPU here, for error messages and benchmark records."""
    return {
        "device_count": torch.cuda.device_count(),
        "is_available": torch.cuda.is_available(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "driver": _driver_version(),
        "driver_cuda": _driver_cuda_version(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def require_gpu() -> None:
    """Raise :class:`NoUsableGPUError` unless torch can run on a CUDA device here."""
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return
    info = describe_cuda()
    if info["torch_cuda"] is None:
        why = f"torch {info['torch']} is a CPU-only build"
    elif info["driver"] is None and info["driver_cuda"] is None:
        why = "no NVIDIA driver was found (/proc/driver/nvidia/version and libcuda.so.1 are absent)"
    elif info["driver_cuda"] and _older(info["driver_cuda"], info["torch_cuda"]):
        why = (
            f"the driver supports CUDA up to {info['driver_cuda']}, older than the CUDA {info['torch_cuda']} "
            f"torch was built for: upgrade the driver or install a torch built for CUDA <= {info['driver_cuda']}"
        )
    else:
        why = "torch.cuda.is_available() is False"
    raise NoUsableGPUError(
        f"train.use_gpu=true but this worker cannot use a CUDA device: {why}. "
        f"device count {info['device_count']}, torch {info['torch']} built for CUDA {info['torch_cuda']}, "
        f"NVIDIA driver {info['driver'] or 'not found'} (CUDA {info['driver_cuda'] or 'unknown'}), "
        f"CUDA_VISIBLE_DEVICES={info['CUDA_VISIBLE_DEVICES']!r}. Set train.use_gpu=false to train on CPU."
    )


def _older(a: str, b: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".")[:2] if x.isdigit())

    return parts(a) < parts(b)


def training_device(use_gpu: bool) -> torch.device:
    """This worker's device: its GPU (an error when there is none to use) or the CPU."""
    if not use_gpu:
        return torch.device("cpu")
    require_gpu()
    import ray.train.torch

    device = ray.train.torch.get_device()
    torch.cuda.set_device(device)  # NCCL and all_gather_object use the current device
    return device


def process_group_backend(use_gpu: bool) -> str:
    """NCCL for CUDA tensors and gloo for the CPU ones (object gathers, CPU offload) in one group."""
    return "cpu:gloo,cuda:nccl" if use_gpu else "gloo"


def worker_bundle(train_cfg) -> dict[str, float]:
    """The Ray resources one training worker reserves."""
    bundle = {"CPU": float(train_cfg.cpus_per_worker), **{k: float(v) for k, v in train_cfg.worker_resources.items()}}
    if train_cfg.use_gpu:
        bundle["GPU"] = float(train_cfg.gpus_per_worker)
    return {k: v for k, v in bundle.items() if v > 0}


def workers_that_fit(bundle: dict[str, float], nodes: list[dict[str, float]]) -> int:
    """How many copies of ``bundle`` the nodes can hold, each copy on a single node."""
    total = 0
    for resources in nodes:
        per_node = [math.floor(resources.get(k, 0.0) / v + 1e-9) for k, v in bundle.items()]
        total += min(per_node) if per_node else 0
    return total


def _alive_nodes() -> list[dict[str, float]]:
    import ray

    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def capacity_message(train_cfg, nodes: list[dict[str, float]]) -> str:
    bundle = worker_bundle(train_cfg)
    fit = workers_that_fit(bundle, nodes)
    totals: dict[str, float] = {}
    for resources in nodes:
        for key in set(bundle) | {"CPU", "GPU"}:
            totals[key] = totals.get(key, 0.0) + resources.get(key, 0.0)
    has = ", ".join(f"{k} {v:g}" for k, v in sorted(totals.items()))
    largest = {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in bundle}
    hints = ["train.num_workers"]
    if bundle.get("GPU", 0) > 0 and totals.get("GPU", 0) == 0:
        hints.insert(0, "train.use_gpu=false (the cluster has no GPU)")
    elif "GPU" in bundle:
        hints.append("train.gpus_per_worker")
    hints.append("train.cpus_per_worker")
    if train_cfg.worker_resources:
        hints.append("train.worker_resources")
    return (
        f"the Ray cluster cannot hold {train_cfg.num_workers} training workers of "
        f"{{{', '.join(f'{k}: {v:g}' for k, v in bundle.items())}}} each: its {len(nodes)} node(s) have "
        f"{has} in all (largest node: {', '.join(f'{k} {v:g}' for k, v in largest.items())}), room for {fit} "
        f"worker(s). Change {', '.join(hints)}, or add nodes."
    )


def check_cluster_capacity(train_cfg, wait_s: float = 0.0, poll_s: float = 5.0, nodes_fn=_alive_nodes) -> None:
    """Raise :class:`ClusterCapacityError` unless the cluster can place every worker.

    ``wait_s`` > 0 gives an autoscaling cluster that long to add nodes (logging what it has
    meanwhile); a local cluster started by this process cannot grow, so it waits 0.
    """
    deadline = time.monotonic() + wait_s
    while True:
        nodes = nodes_fn()
        if workers_that_fit(worker_bundle(train_cfg), nodes) >= train_cfg.num_workers:
            return
        message = capacity_message(train_cfg, nodes)
        if time.monotonic() >= deadline:
            raise ClusterCapacityError(message + (f" (waited {wait_s:.0f}s for the autoscaler)" if wait_s else ""))
        log.warning("%s Waiting up to %.0fs more for the cluster to grow.", message, deadline - time.monotonic())
        time.sleep(poll_s)
