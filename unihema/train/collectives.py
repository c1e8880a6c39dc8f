"""The training loop's collectives, with their tensors on the training device.

NCCL (Ray Train's backend on GPU) takes CUDA tensors only, so a ``torch.tensor([...])``
built on the host and handed to ``all_reduce`` works under gloo on CPU and fails on the
first GPU step. Every tensor the loop reduces is built here, on the device of the tensor or
model it comes from. :func:`check_devices` wraps ``torch.distributed``'s collectives so a
test (or ``UNIHEMA_CHECK_COLLECTIVE_DEVICES=1`` on a worker) fails on the first tensor that
is not on the model's device; DeepSpeed's collectives go through the same functions.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
import torch.distributed as dist

CHECK_ENV = "UNIHEMA_CHECK_COLLECTIVE_DEVICES"
# The collectives that take tensors; object collectives (all_gather_object ...) pick their
# own device (the current CUDA device under NCCL) and are not wrapped.
TENSOR_COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "broadcast",
    "reduce",
    "all_to_all_single",
    "_all_gather_base",
    "_reduce_scatter_base",
)


class CollectiveDeviceError(RuntimeError):
    """A tensor handed to torch.distributed is not on the training device."""


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce(value: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """In place over every rank (a no-op outside a process group); returns ``value``."""
    if distributed():
        dist.all_reduce(value, op=op)
    return value


def all_ranks_finite(loss: torch.Tensor) -> torch.Tensor:
    """A 1-element tensor on the loss's device: 1 when the loss is finite on every rank, else 0.

    Built on the device from the loss itself: no host round trip to make it, one to read it.
    """
    flag = torch.isfinite(loss.detach()).all().to(torch.float32).reshape(1)
    return all_reduce(flag, dist.ReduceOp.MIN)


def sum_over_ranks(values: list[float], device: torch.device) -> torch.Tensor:
    """``values`` summed over ranks, as a float64 tensor on ``device``."""
    return all_reduce(torch.tensor(values, dtype=torch.float64, device=device))


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of ``values`` (on whatever device they are; the criterion builds them on the model's)."""
    world = dist.get_world_size() if distributed() else 1
    return all_reduce(values.clone()) / world


def _tensors(args, kwargs):
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))


def _same_device(tensor: torch.Tensor, device: torch.device) -> bool:
    if tensor.device.type != device.type:
        return False
    return device.index is None or tensor.device.index == device.index


@contextlib.contextmanager
def check_devices(device: torch.device, record: list | None = None):
    """Within the block, a torch.distributed collective given a tensor off ``device`` raises.

    ``record`` (optional) collects (collective name, tensor device) of every call.
    """
    device = torch.device(device)
    saved = {}
    for name in TENSOR_COLLECTIVES:
        original = getattr(dist, name, None)
        if original is None:
            continue
        saved[name] = original

        @functools.wraps(original)
        def checked(*args, __name=name, __original=original, **kwargs):
            for tensor in _tensors(args, kwargs):
                if record is not None:
                    record.append((__name, tensor.device))
                if not _same_device(tensor, device):
                    raise CollectiveDeviceError(
                        f"torch.distributed.{__name} got a tensor on {tensor.device}, "
                        f"the model is on {device}: NCCL would refuse it"
                    )
            return __original(*args, **kwargs)

        setattr(dist, name, checked)
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(dist, name, original)


def maybe_check_devices(device: torch.device):
    """:func:`check_devices` when ``UNIHEMA_CHECK_COLLECTIVE_DEVICES=1`` (tests set it for the workers), else
    nothing."""
    if os.environ.get(CHECK_ENV) == "1":
        return check_devices(device)
    return contextlib.nullcontext()
