"""From a DeepSpeed checkpoint of any ZeRO stage to a shareable folder.

The folder is the one ``unihema.model.pretrained.save_pretrained`` writes (consolidated fp32
``model.safetensors``, the resolved ``config.yaml`` with secrets redacted, ``tokenizer/``, a
model card), so ``from_pretrained`` loads it without DeepSpeed or Ray.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import torch

from unihema.config import StorageConfig, UniHemaConfig

log = logging.getLogger(__name__)
CHECKPOINT_TAG = "checkpoint"


def consolidate_checkpoint(ckpt_dir: str | Path, tag: str = CHECKPOINT_TAG) -> dict[str, torch.Tensor]:
    """Full fp32 state dict of the module saved in a DeepSpeed checkpoint folder (ZeRO 0-3)."""
    ckpt_dir = Path(ckpt_dir)
    tag_dir = ckpt_dir / tag
    if not tag_dir.is_dir():
        raise FileNotFoundError(f"{ckpt_dir} holds no DeepSpeed checkpoint tag {tag!r}")
    if any(tag_dir.glob("*optim_states.pt")) and any(tag_dir.glob("zero_pp_rank_*")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    else:  # ZeRO-0: rank 0's model states hold the whole module
        blob = torch.load(tag_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        state = blob["module"]
    return {k: v.float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in state.items()}


def write_export_folder(state: dict, cfg: UniHemaConfig, out_dir: str | Path, status: dict | None = None,
                        source: str | None = None) -> Path:
    """The shareable folder (weights, config, tokenizer, model card) for a consolidated state dict."""
    from unihema.model.pretrained import save_pretrained

    status = status or {}
    return save_pretrained(state, out_dir, cfg, card_info={
        "data": cfg.data.uri, "metrics": status.get("validation") or {}, "source": source,
        "step": status.get("step"), "metrics_source": "validation at the end of training" if status else None})


def export_run(cfg: UniHemaConfig, outcome, storage: StorageConfig) -> str:
    """Consolidate the run's latest checkpoint and write the export folder into the run folder."""
    from unihema.train.run_files import upload_dir

    with tempfile.TemporaryDirectory(prefix="unihema-export-") as tmp:
        local_ckpt = Path(tmp, "ckpt")
        pafs.copy_files(outcome.checkpoint_path, str(local_ckpt), source_filesystem=outcome.checkpoint_filesystem,
                        destination_filesystem=pafs.LocalFileSystem())
        state = consolidate_checkpoint(local_ckpt)
        folder = write_export_folder(state, cfg, Path(tmp, "export"), outcome.status, source=outcome.checkpoint_path)
        upload_dir(folder, outcome.run_uri, "export", storage)
    log.info("exported %d tensors to %s/export", len(state), outcome.run_uri)
    return f"{outcome.run_uri}/export"
