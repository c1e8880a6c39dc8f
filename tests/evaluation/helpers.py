"""Helpers shared by the evaluation tests (import with ``from .helpers import ...``)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
import torch

from unihema.config import save_config

OPTIONAL = ("sklearn", "sacrebleu", "rouge_score", "matplotlib")


def need_optional():
    """Skip (with the package named) when an optional metrics package is not installed."""
    for module in OPTIONAL:
        pytest.importorskip(module, reason=f"{module} is needed by the evaluation metrics")


def write_zero0_checkpoint(run_dir: Path, model, cfg, with_config: bool = True) -> Path:
    """The layout Ray Train + DeepSpeed ZeRO-0 leave: <run>/config.yaml, <run>/checkpoint_*/checkpoint/..."""
    ckpt = run_dir / "checkpoint_2026-01-01_00-00-00.000000"
    (ckpt / "checkpoint").mkdir(parents=True)
    torch.save({"module": model.state_dict()}, ckpt / "checkpoint" / "mp_rank_00_model_states.pt")
    (ckpt / "latest").write_text("checkpoint")
    if with_config:
        save_config(cfg, run_dir / "config.yaml")
    return ckpt


def png_with_header_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data worth decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
