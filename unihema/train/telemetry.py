"""What a training run tells its operator: progress lines, TensorBoard events, throughput,
data-wait fraction, peak memory and (on GPU) model FLOP utilization.

Only rank 0 prints and writes events; every rank measures, and the numbers that depend on
the whole job (images/s) are summed across ranks by the caller.
"""

from __future__ import annotations

import resource
import sys
import time
from collections import defaultdict

import torch

# Dense bf16 peak of common accelerators (TFLOP/s), for MFU; unknown devices report no MFU.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def device_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn`` (forward), counted by PyTorch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # Grad mode on, even inside a caller's no_grad: the counter's module tracker hooks the
    # autograd graph and fails ("Expected gradient function to be set") when a module is
    # handed a Parameter under no_grad, as the cell-feature fusion is. The graph is dropped.
    with counter, torch.enable_grad():
        fn()
    return counter.get_total_flops()


def format_duration(seconds: float) -> str:
    """``1h02m``, ``4m05s`` or ``12s``: the ETA of a progress line."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class StepTimer:
    """Accumulates per-interval totals between progress reports."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.data_s = 0.0
        self.steps = 0
        self.images = 0
        self.tokens = 0
        self.flops = 0
        self.losses: dict[str, list] = defaultdict(list)

    def add(self, data_s: float, images: int, tokens: int, flops: int, losses: dict) -> None:
        """``losses``: floats or 0-dim tensors; tensors stay where they are until :meth:`summary`."""
        self.data_s += data_s
        self.steps += 1
        self.images += images
        self.tokens += tokens
        self.flops += flops
        for k, v in losses.items():
            self.losses[k].append(v)

    def summary(self) -> dict:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        out = {
            "images_per_s": self.images / elapsed,
            "tokens_per_s": self.tokens / elapsed,
            "data_wait_fraction": min(1.0, self.data_s / elapsed),
            "step_time_s": elapsed / max(self.steps, 1),
            "achieved_tflops": self.flops / elapsed / 1e12,
        }
        if self.losses:
            # One host sync for every loss of the interval (the training step itself makes none).
            means = torch.stack(
                [
                    torch.stack([torch.as_tensor(x, dtype=torch.float32).reshape(()) for x in v]).mean()
                    for v in self.losses.values()
                ]
            ).tolist()
            out.update(zip(self.losses, means))
        return out


class ProgressWriter:
    """Rank 0's compact progress line and TensorBoard event files."""

    def __init__(self, log_dir: str | None, enabled: bool):
        self.enabled = enabled
        self.writer = None
        if enabled and log_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir)

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)
        self.writer.flush()

    def line(self, text: str) -> None:
        # Written to the stream, not print(): in a Ray Train worker print() goes to the root
        # logger and, because Ray wraps sys.stdout, to the stream too (every line twice).
        if self.enabled:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
