"""Exporting: a checkpoint -> the shareable folder ``from_pretrained`` loads, checked and uploaded.

The folder is the one ``unihema.model.pretrained.save_pretrained`` writes (consolidated fp32
``model.safetensors``, the resolved ``config.yaml`` with secrets redacted, ``tokenizer/``, a
model card), so it loads without DeepSpeed or Ray. Two callers: ``python -m unihema.export``
(any checkpoint, verified by running both models on a fixed input) and the end of a
``pretrain`` run (:func:`export_run`, the run's own latest checkpoint).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import torch

from unihema.checkpoint.consolidate import consolidate_checkpoint
from unihema.config import StorageConfig, UniHemaConfig
from unihema.errors import UserInputError, one_line
from unihema.storage.verify import verify_local_checkpoint

log = logging.getLogger(__name__)


class ExportMismatchError(RuntimeError):
    """The exported folder does not reproduce the checkpoint's outputs."""


def probe_batch(cfg, tokenizer, seed: int = 0, size: int = 64) -> dict:
    """A fixed input that exercises every head: one image, a prompt and text labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(1, 3, size, size, generator=g)
    ids, mask = tokenizer.encode(["what type of cell is this?"], cfg.model.text.max_length)
    labels, label_mask = tokenizer.encode(["a lymphocyte"], cfg.model.text.max_length)
    return {
        "images": images,
        "pixel_mask": torch.zeros(1, size, size, dtype=torch.bool),
        "tasks": ["detection", "classification", "segmentation", "morphology", "vqa"],
        "prompt_ids": ids,
        "prompt_mask": mask,
        "text_labels": labels.masked_fill(~label_mask, -100),
    }


def _flat(out, prefix: str = "") -> dict[str, torch.Tensor]:
    if torch.is_tensor(out):
        return {prefix: out}
    items = out.items() if isinstance(out, dict) else enumerate(out) if isinstance(out, (list, tuple)) else ()
    flat: dict[str, torch.Tensor] = {}
    for k, v in items:
        flat.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return flat


@torch.no_grad()
def output_difference(model_a, model_b, cfg, tokenizer) -> tuple[float, bool]:
    """(max |a - b| over every output tensor, generated answers equal) on :func:`probe_batch`."""
    batch = probe_batch(cfg, tokenizer)
    device_a = next(model_a.parameters()).device
    device_b = next(model_b.parameters()).device
    outs = []
    gens = []
    for model, device in ((model_a, device_a), (model_b, device_b)):
        model.eval()
        b = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        outs.append(_flat(model(b)))
        gens.append(
            model.generate_text(b["images"], b["pixel_mask"], b["prompt_ids"], b["prompt_mask"], max_new_tokens=8).cpu()
        )
    if outs[0].keys() != outs[1].keys():
        return float("inf"), False
    diff = max(
        (float((outs[0][k].float().cpu() - outs[1][k].float().cpu()).abs().max()) if outs[0][k].numel() else 0.0)
        for k in outs[0]
    )
    return diff, bool(torch.equal(gens[0], gens[1]))


def card_info(loaded, metrics_file: str | None) -> dict:
    status = loaded.info.get("status") or {}
    info = {"source": loaded.source, "step": status.get("step"), "data": loaded.cfg.data.uri}
    if metrics_file:
        try:
            metrics = json.loads(Path(metrics_file).read_text())
        except (OSError, ValueError) as err:
            raise UserInputError(f"{metrics_file}: cannot read metrics: {one_line(err)}") from None
        info["metrics"] = metrics.get("tasks", metrics)
        info["metrics_source"] = (
            f"`python -m unihema.evaluate` on `{metrics.get('data', '?')}` split `{metrics.get('split', '?')}`"
        )
    elif status.get("validation"):
        info["metrics"] = status["validation"]
        info["metrics_source"] = "the run's last validation (a few held-out batches per task)"
    return info


def export_checkpoint(
    checkpoint: str,
    out: str | Path,
    *,
    preset=None,
    files=(),
    overrides=(),
    metrics_file=None,
    verify: bool = True,
    storage=None,
    trust: bool = False,
) -> dict:
    """Write the export folder for ``checkpoint`` into ``out`` (local); returns what happened."""
    from unihema.checkpoint.load import load_checkpoint
    from unihema.model.pretrained import load_pretrained, save_pretrained

    loaded = load_checkpoint(
        checkpoint, preset=preset, files=files, overrides=overrides, device="cpu", storage=storage, trust=trust
    )
    folder = save_pretrained(
        loaded.model, out, loaded.cfg, tokenizer=loaded.tokenizer, card_info=card_info(loaded, metrics_file)
    )
    report = {
        "checkpoint": loaded.source,
        "kind": loaded.kind,
        "out": str(folder),
        "tensors": len(loaded.model.state_dict()),
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
    }
    if verify:
        reloaded = load_pretrained(folder)
        diff, same_text = output_difference(loaded.model, reloaded.model, loaded.cfg, loaded.tokenizer)
        report.update(max_abs_difference=diff, same_generation=same_text)
        if diff != 0.0 or not same_text:
            raise ExportMismatchError(
                f"the exported model does not reproduce the checkpoint: "
                f"max |difference| {diff:g}, "
                f"generated text {'equal' if same_text else 'different'}"
            )
    return report


def write_export_folder(
    state: dict, cfg: UniHemaConfig, out_dir: str | Path, status: dict | None = None, source: str | None = None
) -> Path:
    """The shareable folder (weights, config, tokenizer, model card) for a consolidated state dict."""
    from unihema.model.pretrained import save_pretrained

    status = status or {}
    return save_pretrained(
        state,
        out_dir,
        cfg,
        card_info={
            "data": cfg.data.uri,
            "metrics": status.get("validation") or {},
            "source": source,
            "step": status.get("step"),
            "metrics_source": "validation at the end of training" if status else None,
        },
    )


def upload_folder(local: Path, uri: str, storage: StorageConfig) -> None:
    """Copy the folder ``local`` to ``uri`` (local or s3://) and check every file arrived at full size."""
    import shutil

    from unihema.storage import describe_failure, ensure_bucket, open_filesystem, parse_uri
    from unihema.storage.verify import verify_upload

    target = parse_uri(uri)
    fs, root = open_filesystem(target, storage)
    if not target.is_s3:  # pyarrow's copy does not create local parent folders
        shutil.copytree(local, root, dirs_exist_ok=True)
    else:
        ensure_bucket(uri, storage)
        try:
            pafs.copy_files(str(local), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        except OSError as err:
            raise describe_failure(target, storage, err) from None
    verify_upload(local, fs, root, uri)  # every file there, full size, before the export is reported


def export_run(cfg: UniHemaConfig, outcome, storage: StorageConfig) -> str:
    """Consolidate the run's latest checkpoint and write the export folder into the run folder."""
    with tempfile.TemporaryDirectory(prefix="unihema-export-") as tmp:
        local_ckpt = Path(tmp, "ckpt")
        pafs.copy_files(
            outcome.checkpoint_path,
            str(local_ckpt),
            source_filesystem=outcome.checkpoint_filesystem,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        verify_local_checkpoint(local_ckpt, where=f"checkpoint {outcome.checkpoint_path}")
        state = consolidate_checkpoint(local_ckpt, trusted=True)  # the run's own checkpoint, just written
        folder = write_export_folder(state, cfg, Path(tmp, "export"), outcome.status, source=outcome.checkpoint_path)
        upload_folder(folder, f"{outcome.run_uri}/export", storage)
    log.info("exported %d tensors to %s/export", len(state), outcome.run_uri)
    return f"{outcome.run_uri}/export"
