"""From a DeepSpeed checkpoint of any ZeRO stage to a shareable folder.

The folder is the one ``unihema.model.pretrained.save_pretrained`` writes (consolidated fp32
``model.safetensors``, the resolved ``config.yaml`` with secrets redacted, ``tokenizer/``, a
model card), so ``from_pretrained`` loads it without DeepSpeed or Ray.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import torch

from unihema.config import StorageConfig, UniHemaConfig
from unihema.storage.verify import verify_local_checkpoint
from unihema.train.safe_load import TRUST_FLAG, UntrustedCheckpointError, check_files, weights_only_loads

log = logging.getLogger(__name__)
CHECKPOINT_TAG = "checkpoint"


def consolidate_checkpoint(ckpt_dir: str | Path, tag: str = CHECKPOINT_TAG, *, trusted: bool = False,
                           trust_hint: str = TRUST_FLAG) -> dict[str, torch.Tensor]:
    """Full fp32 state dict of the module saved in a DeepSpeed checkpoint folder (ZeRO 0-3).

    Untrusted (the default) loads weights only (see :mod:`unihema.train.safe_load`) and raises
    UntrustedCheckpointError, naming the file and ``trust_hint``, for a file that needs more.
    """
    ckpt_dir = Path(ckpt_dir)
    tag_dir = ckpt_dir / tag
    if not tag_dir.is_dir():
        raise FileNotFoundError(f"{ckpt_dir} holds no DeepSpeed checkpoint tag {tag!r}")
    zero = any(tag_dir.glob("*optim_states.pt")) and any(tag_dir.glob("zero_pp_rank_*"))
    if not trusted:
        # Before any load: a refusal names the file and costs no read of the tensors.
        check_files(sorted(tag_dir.glob("*.pt")) if zero else [tag_dir / "mp_rank_00_model_states.pt"], trust_hint)
    scope = contextlib.nullcontext() if trusted else weights_only_loads()
    try:
        with scope:
            if zero:
                from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

                state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
            else:  # ZeRO-0: rank 0's model states hold the whole module
                blob = torch.load(tag_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=not trusted)
                state = blob["module"]
    except pickle.UnpicklingError as err:  # what the scan above could not see (an old-format file)
        raise UntrustedCheckpointError(tag_dir, [], trust_hint) from err
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
        verify_local_checkpoint(local_ckpt, where=f"checkpoint {outcome.checkpoint_path}")
        state = consolidate_checkpoint(local_ckpt, trusted=True)  # the run's own checkpoint, just written
        folder = write_export_folder(state, cfg, Path(tmp, "export"), outcome.status, source=outcome.checkpoint_path)
        upload_dir(folder, outcome.run_uri, "export", storage, verify=True)
    log.info("exported %d tensors to %s/export", len(state), outcome.run_uri)
    return f"{outcome.run_uri}/export"
