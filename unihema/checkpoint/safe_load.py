"""Loading DeepSpeed checkpoint files without running code from whoever made them.

A ``.pt`` file is a pickle: ``torch.load(weights_only=False)`` on a checkpoint someone else
made runs whatever that pickle names. ``python -m unihema.evaluate``, ``python -m unihema.export``
and ``model.init_from`` take checkpoints from anywhere, so they load with
``weights_only=True`` and an allowlist of the few plain DeepSpeed types its files hold
(measured on DeepSpeed 0.19: ZeRO-0 model states hold only tensors, dicts and lists; the
ZeRO optimizer states add ``ZeroStageEnum`` and the loss scaler). Anything else is refused
with the file named and the flag that accepts it; nothing falls back to full unpickling
unless the user said they trust the file. A run resuming from its own checkpoints inside
Ray Train stays on DeepSpeed's own loader: those files are the run's own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from pathlib import Path
from typing import Iterator

import torch

log = logging.getLogger(__name__)

# Types DeepSpeed pickles into its checkpoint files that are plain data: an int enum and the
# loss scaler's attributes (numbers). Loading them runs no code of the file's choosing.
_DEEPSPEED_TYPES = (
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
)
TRUST_FLAG = "pass --trust-checkpoint"


class UntrustedCheckpointError(ValueError):
    """A checkpoint file needs full unpickling (arbitrary code) and the user has not said they trust it."""

    def __init__(self, path: str | Path, found: list[str], hint: str = TRUST_FLAG):
        self.path, self.found = str(path), list(found)
        what = (
            f"objects other than tensors ({', '.join(self.found[:5])})"
            if self.found
            else "objects a weights-only load refuses"
        )
        super().__init__(
            f"{self.path}: not loaded: it holds {what}, and unpickling them would run code chosen by whoever "
            f"made the file. If you trust its source, {hint} to load it in full."
        )


def allowed_globals() -> list:
    """The DeepSpeed classes a weights-only load may rebuild (those importable here)."""
    import importlib

    found = []
    for module, name in _DEEPSPEED_TYPES:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # an older/newer DeepSpeed without it: it cannot be in its files
            continue
    return found


def _allowed_names() -> set[str]:
    return {f"{module}.{name}" for module, name in _DEEPSPEED_TYPES}


def unsafe_globals(path: str | Path) -> list[str]:
    """Names a weights-only load of ``path`` would refuse, read from the pickle without running it."""
    from torch.serialization import get_unsafe_globals_in_checkpoint

    try:
        names = get_unsafe_globals_in_checkpoint(str(path))
    except (RuntimeError, ValueError, OSError, pickle.UnpicklingError):  # not a zip-format file: the load says
        return []
    allowed = _allowed_names()
    return [n for n in names if n not in allowed]


def check_files(paths, hint: str = TRUST_FLAG) -> None:
    """Refuse, naming the first such file, when any of ``paths`` needs more than the allowlist."""
    for path in paths:
        found = unsafe_globals(path)
        if found:
            raise UntrustedCheckpointError(path, found, hint)


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` inside is weights-only with the DeepSpeed allowlist, whatever its caller asks.

    DeepSpeed's ``zero_to_fp32`` calls ``torch.load(weights_only=False)`` itself; torch's own
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` switch (read at each call) overrides that. It is process
    wide while set, which can only make other loads stricter, and is restored on exit.
    """
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def load_weights_only(path: str | Path, hint: str = TRUST_FLAG):
    """``torch.load`` of one file with weights_only=True and the allowlist; refusals name the file."""
    check_files([path], hint)
    try:
        with weights_only_loads():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UntrustedCheckpointError(path, [], hint) from err


__all__ = [
    "TRUST_FLAG",
    "UntrustedCheckpointError",
    "allowed_globals",
    "check_files",
    "load_weights_only",
    "unsafe_globals",
    "weights_only_loads",
]
