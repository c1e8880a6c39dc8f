"""The one mixed-precision recipe of training and validation: fp32 master weights, bf16 autocast.

DeepSpeed's ``bf16`` section is not used: it casts the parameters (not the buffers, not the
inputs) to bf16, so the fp32 images from ``collate`` meet bf16 convolution weights at the
first forward ("Input type (float) and weight type (bfloat16)"), and the box and sampling
arithmetic of a deformable DETR would run in bf16. Here DeepSpeed sees an fp32 model
(parameters, gradients and optimizer state stay fp32) and ``torch.autocast`` runs the
matmuls and convolutions in bf16. What needs the range and resolution stays fp32: the model
computes deformable sampling locations and box refinement in fp32 (``ms_deform_attn_module``,
``decoder``), and the criterion (Hungarian matcher and every loss) runs with autocast off
on fp32 copies of the outputs.

bf16 autocast exists on CPU too, so the same code path runs in CI, where no GPU is.
"""

from __future__ import annotations

import contextlib

import torch

from unihema.config import TrainConfig

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def resolve_precision(cfg: TrainConfig, on_gpu: bool) -> str:
    """``train.precision`` with ``auto`` resolved: bf16 on GPU, fp32 on CPU (where bf16 is slower)."""
    if cfg.precision == "auto":
        return "bf16" if on_gpu else "fp32"
    return cfg.precision


def to_fp32(obj):
    """``obj`` with every half-precision tensor (also inside dicts, lists, tuples) cast to fp32, keeping the graph."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.dtype in (torch.bfloat16, torch.float16) else obj
    if isinstance(obj, dict):
        return {k: to_fp32(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_fp32(v) for v in obj)
    return obj


class Precision:
    """The autocast region of a forward and the fp32 region of the criterion, for one device."""

    def __init__(self, precision: str, device: torch.device):
        if precision not in DTYPES:
            raise ValueError(f"unknown precision {precision!r}; allowed: {', '.join(DTYPES)}")
        self.name = precision
        self.device = torch.device(device)
        self.dtype = DTYPES[precision]

    def autocast(self):
        """Forward (training, validation, FLOP counting) in the recipe's compute dtype."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def criterion(self, criterion, outputs: dict, batch: dict) -> dict:
        """The losses of ``outputs`` in fp32, even when called inside :meth:`autocast`."""
        with torch.autocast(self.device.type, enabled=False):
            return criterion(to_fp32(outputs), batch)
