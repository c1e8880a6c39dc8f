"""Fine-tuning: start a run from another run's or an export's weights (``model.init_from``).

The driver resolves the source once (any checkpoint :func:`unihema.checkpoint.load.load_checkpoint`
reads: an export, a DeepSpeed checkpoint of any ZeRO stage, a run folder; local or s3://),
keeps the tensors whose name and shape fit the model this run builds, and writes them to the
run folder as ``init_weights.safetensors`` with a report ``init_from.json`` (what loaded,
what kept its initialisation and why). Every worker then loads that one file before
DeepSpeed wraps the model, so ranks start identical, and on a cluster no worker needs the
driver's disk. Optimizer, schedule and step start afresh; a run resuming from its own
checkpoint never reads the file (the checkpoint wins).
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import torch

from unihema.config import StorageConfig, UniHemaConfig
from unihema.train.run_files import read_bytes, write_bytes, write_json

log = logging.getLogger(__name__)
WEIGHTS_FILE = "init_weights.safetensors"
REPORT_FILE = "init_from.json"


def _modules(keys) -> dict[str, int]:
    """Tensor counts per module two levels deep ("heads.classifier": 6), for a readable report."""
    return dict(Counter(".".join(k.split(".")[:2]) for k in keys))


def match_state(own: dict[str, torch.Tensor], source: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(tensors to load, report): name and shape must both match."""
    load, reinit = {}, {}
    for name, tensor in own.items():
        theirs = source.get(name)
        if theirs is None:
            reinit[name] = "not in the source"
        elif tuple(theirs.shape) != tuple(tensor.shape):
            reinit[name] = f"shape {tuple(theirs.shape)} in the source, {tuple(tensor.shape)} here"
        else:
            load[name] = theirs
    unused = sorted(set(source) - set(own))
    report = {
        "loaded": len(load),
        "reinitialised": len(reinit),
        "reinitialised_tensors": reinit,
        "reinitialised_modules": _modules(reinit),
        "unused_source_tensors": unused,
    }
    return load, report


def prepare_init_weights(cfg: UniHemaConfig, storage: StorageConfig, run_uri: str) -> dict | None:
    """Resolve ``cfg.model.init_from`` into the run folder; returns the report (None when unset)."""
    if not cfg.model.init_from:
        return None
    from safetensors.torch import save

    from unihema.checkpoint.load import load_checkpoint
    from unihema.model import build_model

    source = load_checkpoint(
        cfg.model.init_from,
        device="cpu",
        storage=storage,
        trust=cfg.model.trust_checkpoint,
        trust_hint="set model.trust_checkpoint=true",
    )
    source_state = source.model.state_dict()
    own = build_model(cfg).state_dict()
    load, report = match_state(own, source_state)
    if not load:
        raise ValueError(
            f"model.init_from={cfg.model.init_from}: no tensor of it fits this model "
            f"(is it a Uni-Hema checkpoint of the same architecture?)"
        )
    # Tied tensors (T5's embeddings) share storage, which safetensors refuses: save copies.
    write_bytes(run_uri, WEIGHTS_FILE, save({k: v.detach().clone().contiguous() for k, v in load.items()}), storage)
    report = {
        "source": cfg.model.init_from,
        "source_kind": source.kind,
        "source_step": source.info.get("step"),
        **report,
    }
    write_json(run_uri, REPORT_FILE, report, storage)
    log.info(
        "init_from %s: %d tensors loaded, %d re-initialised (%s)",
        cfg.model.init_from,
        report["loaded"],
        report["reinitialised"],
        ", ".join(f"{m} x{n}" for m, n in report["reinitialised_modules"].items()) or "none",
    )
    return report


def load_init_weights(model: torch.nn.Module, run_uri: str, storage: StorageConfig) -> int:
    """Load the run's prepared initial weights into ``model`` (before DeepSpeed); returns how many."""
    from safetensors.torch import load

    data = read_bytes(run_uri, WEIGHTS_FILE, storage)
    if data is None:
        raise FileNotFoundError(
            f"{run_uri}/{WEIGHTS_FILE} is missing: model.init_from was set but the driver did not prepare the weights"
        )
    state = load(data)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{run_uri}/{WEIGHTS_FILE} holds tensors this model lacks: {unexpected[:3]}")
    return len(state)


def read_report(run_uri: str, storage: StorageConfig) -> dict | None:
    data = read_bytes(run_uri, REPORT_FILE, storage)
    return None if data is None else json.loads(data)


__all__ = ["load_init_weights", "match_state", "prepare_init_weights", "read_report"]
