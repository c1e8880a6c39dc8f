"""From a DeepSpeed checkpoint of any ZeRO stage to a shareable folder.

The folder holds consolidated fp32 ``model.safetensors``, the resolved ``config.yaml``
(secrets redacted), the ``tokenizer/`` and a model card; ``unihema.model`` loads it
without DeepSpeed or Ray.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import torch

from unihema.config import StorageConfig, UniHemaConfig, save_config

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


MODEL_CARD = """# Uni-Hema checkpoint ({preset})

Trained with the UniHema pretraining stack: detection, single-cell classification,
segmentation, morphology attributes, VQA and masked-language modelling on blood smears.

- data: `{data_uri}`
- steps: {step}, workers: {world}, ZeRO stage {zero}, precision {precision}
- validation metrics (headline per task): {metrics}

Files: `model.safetensors` (fp32), `config.yaml` (the resolved configuration), `tokenizer/`.

Intended for research on hematopathology models, **not for diagnosis**. Metrics from the
synthetic demo data say nothing about performance on real smears.
"""


def write_export_folder(state: dict, cfg: UniHemaConfig, out_dir: str | Path, status: dict | None = None) -> Path:
    from safetensors.torch import save_file

    from unihema.model.tokenizer import build_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Tensors sharing storage (tied weights) would be refused by safetensors: store copies.
    save_file({k: v.clone() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    save_config(cfg, out / "config.yaml")
    build_tokenizer(cfg.model).save(out / "tokenizer")
    status = status or {}
    metrics = ", ".join(f"{t}: {', '.join(f'{k}={v:.3f}' for k, v in vals.items() if isinstance(v, float))}"
                        for t, vals in (status.get("validation") or {}).items()) or "not recorded"
    (out / "README.md").write_text(MODEL_CARD.format(
        preset=cfg.preset, data_uri=cfg.data.uri, step=status.get("step", "?"), world=status.get("world_size", "?"),
        zero=status.get("zero_stage", cfg.train.zero_stage), precision=status.get("precision", "?"), metrics=metrics))
    return out


def export_run(cfg: UniHemaConfig, outcome, storage: StorageConfig) -> str:
    """Consolidate the run's latest checkpoint and write the export folder into the run folder."""
    from unihema.train.run_files import upload_dir

    with tempfile.TemporaryDirectory(prefix="unihema-export-") as tmp:
        local_ckpt = Path(tmp, "ckpt")
        pafs.copy_files(outcome.checkpoint_path, str(local_ckpt), source_filesystem=outcome.checkpoint_filesystem,
                        destination_filesystem=pafs.LocalFileSystem())
        state = consolidate_checkpoint(local_ckpt)
        folder = write_export_folder(state, cfg, Path(tmp, "export"), outcome.status)
        upload_dir(folder, outcome.run_uri, "export", storage)
    log.info("exported %d tensors to %s/export", len(state), outcome.run_uri)
    return f"{outcome.run_uri}/export"
