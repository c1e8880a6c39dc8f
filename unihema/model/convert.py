"""Official Uni-Hema checkpoints <-> this implementation's state dicts.

The official model is DINO's code with extra modules bolted on; ours is split into
components with names that say what they do. The mapping is a short table of name
prefixes (:data:`PREFIXES`), invertible by construction, plus three kinds of exceptions:

- *row-adapted* class heads: DINO's detection heads have a row for id 0, which no class
  uses (ids start at 1); ours index DETECTION_CLASSES from 0, so official rows 1..29 become
  our rows 0..28. The cell classifier's 45 official rows are our first 45 (ours appends
  extension classes). Rows with no official counterpart keep the target model's values.
- *unmatched* official tensors with no counterpart here (listed by :func:`check_inventory`
  with the reason), e.g. a second, unused mask-embedding MLP.
- *ours-only* tensors (per-query and per-image morphology heads with 6 sigmoid logits,
  extension-class rows) keep their initialisation when an official checkpoint loads.

Checkpoints load with ``torch.load(..., weights_only=True)``; DINO checkpoints also pickle
their ``argparse.Namespace``, which is allow-listed for that one load.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import torch

from unihema import labels

from .official_params import OFFICIAL_PARAMS

logger = logging.getLogger(__name__)

# (official prefix, our prefix); the longest matching prefix wins in each direction.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("backbone.0.body.", "backbone.body."),
    ("input_proj.", "input_proj."),
    ("transformer.level_embed", "level_embed"),
    ("transformer.encoder.layers.", "encoder.layers."),
    ("transformer.encoder.cls_token", "encoder.cell.cls_token"),
    ("transformer.encoder.cls_pos", "encoder.cell.cls_pos"),
    # The official class-token block names its attention "self_attn"; it is a cross-attention.
    ("transformer.encoder.cls_fusion.self_attn.", "encoder.cell.fusion.cross_attn."),
    ("transformer.encoder.cls_fusion.", "encoder.cell.fusion."),
    ("transformer.encoder.fuse_proj.", "encoder.cell.fuse_proj."),
    ("transformer.encoder.mask_features.", "encoder.mask_features."),
    ("transformer.encoder.mask_feature_proj.", "encoder.mask_feature_proj."),
    ("transformer.decoder.layers.", "decoder.layers."),
    ("transformer.decoder.norm.", "decoder.norm."),
    ("transformer.decoder.ref_point_head.", "decoder.ref_point_head."),
    # DINO keeps one (shared) head per layer in a list; ours is the one shared module.
    ("transformer.decoder.bbox_embed.0.", "decoder.bbox_embed."),
    ("transformer.decoder.class_embed.0.", "decoder.class_embed."),
    ("transformer.tgt_embed.", "proposals.tgt_embed."),
    ("transformer.enc_output.", "proposals.enc_output."),
    ("transformer.enc_output_norm.", "proposals.enc_output_norm."),
    ("transformer.enc_out_bbox_embed.", "proposals.bbox_embed."),
    ("transformer.enc_out_class_embed.", "proposals.class_embed."),
    ("transformer.text_proj.", "hema.refine.text_proj."),
    ("transformer.cross_attnn.", "hema.refine.cross_attn."),
    ("transformer.gate_mlp.", "hema.refine.gate_mlp."),
    ("transformer.combined_proj.", "hema.refine.combined_proj."),
    ("transformer.decoder_norm.", "hema.refine.norm."),
    ("transformer.mask_embed.", "hema.mask_former.mask_embed."),
    ("transformer.class_embed.", "hema.mask_former.class_embed."),
    ("label_enc.", "denoising.label_enc."),
    ("xformer.", "hema.qformer."),
    ("upsampler.", "hema.mask_former.upsampler."),
    ("classifier_image.classifier2.", "heads.classifier."),
    ("T5_model.", "text.t5."),
)

# Our tensors whose rows are classes: our prefix -> (first official row, official class count,
# official row total). DINO's heads have a row for the unused id 0; its DN label book has
# dn_labelbook_size + 1 = 31 rows.
_N_DET, _N_CELL = len(labels.OFFICIAL_DETECTION_CLASSES), len(labels.OFFICIAL_CELL_CLASSES)
ROW_ADAPTED: dict[str, tuple[int, int, int]] = {
    "decoder.class_embed.": (1, _N_DET, _N_DET + 1),
    "proposals.class_embed.": (1, _N_DET, _N_DET + 1),
    "denoising.label_enc.": (1, _N_DET, _N_DET + 2),
    "heads.classifier.6.": (0, _N_CELL, _N_CELL),
}

# Official tensors with no counterpart here, and why.
UNMATCHED_REASONS: dict[str, str] = {
    "mask_embed.": "a second mask-embedding MLP; ours has one (hema.mask_former.mask_embed <- transformer.mask_embed)",
    "class_embed_seg.": "31-way per-query head; ours classifies queries over SEGMENTATION_CLASSES + no-object "
                        "(hema.mask_former.class_embed <- transformer.class_embed)",
    "transformer.label_enc.": "a 2-row embedding with no counterpart here",
    "class_tokens.": "per-level class tokens; ours uses one class token (encoder.cell.cls_token)",
    "class_pos_tokens.": "per-level class-token positions; ours: encoder.cell.cls_pos",
    "decoder_norm.": "a second LayerNorm beside transformer.decoder_norm (ours: hema.refine.norm)",
    "morphology_embed.": "12 logits (6 attributes x 2 values); ours are 6 sigmoid logits per query "
                         "(decoder.morph_embed) and per image (heads.morphology)",
}


def _longest(name: str, pairs, side: int):
    best = None
    for pair in pairs:
        prefix = pair[side]
        if name.startswith(prefix) and (best is None or len(prefix) > len(best[side])):
            best = pair
    return best


def official_to_ours_name(name: str) -> str | None:
    pair = _longest(name, PREFIXES, 0)
    return None if pair is None else pair[1] + name[len(pair[0]):]


def ours_to_official_name(name: str) -> str | None:
    pair = _longest(name, PREFIXES, 1)
    return None if pair is None else pair[0] + name[len(pair[1]):]


def _row_rule(our_name: str):
    for prefix, rule in ROW_ADAPTED.items():
        if our_name.startswith(prefix):
            return rule
    return None


def unmatched_reason(official_name: str) -> str:
    for prefix, reason in UNMATCHED_REASONS.items():
        if official_name.startswith(prefix):
            return reason
    return "no rule maps this name"


@dataclasses.dataclass
class Report:
    """What a conversion or inventory check did, name by name."""

    exact: dict[str, str] = dataclasses.field(default_factory=dict)  # official -> ours, same numel
    adapted: dict[str, str] = dataclasses.field(default_factory=dict)  # official -> ours, class rows re-indexed
    unmatched: dict[str, str] = dataclasses.field(default_factory=dict)  # official -> reason
    mismatched: dict[str, str] = dataclasses.field(default_factory=dict)  # official -> what differs
    ours_only: list[str] = dataclasses.field(default_factory=list)  # our trainable tensors nothing maps to

    def lines(self) -> list[str]:
        out = [f"exact={len(self.exact)} adapted={len(self.adapted)} unmatched={len(self.unmatched)} "
               f"mismatched={len(self.mismatched)} ours_only={len(self.ours_only)}"]
        out += [f"adapted   {k} -> {v}" for k, v in self.adapted.items()]
        out += [f"unmatched {k}: {v}" for k, v in self.unmatched.items()]
        out += [f"MISMATCH  {k}: {v}" for k, v in self.mismatched.items()]
        out += [f"ours-only {k}" for k in self.ours_only]
        return out


def check_inventory(model: torch.nn.Module, inventory: dict[str, int] | None = None) -> Report:
    """Map every official trainable tensor (name -> numel) onto ``model``'s trainable parameters.

    Works on a meta-device model. Exact matches must have equal numel; adapted class heads
    must have the official row count minus the unused rows, times our row width.
    """
    inventory = OFFICIAL_PARAMS if inventory is None else inventory
    ours = {n: p for n, p in model.named_parameters() if p.requires_grad}
    report = Report()
    taken: dict[str, str] = {}
    for name, numel in inventory.items():
        target = official_to_ours_name(name)
        if target is None or target not in ours:
            report.unmatched[name] = unmatched_reason(name) if target is None else f"no parameter {target}"
            continue
        if target in taken:
            report.mismatched[name] = f"{target} is already the image of {taken[target]}"
            continue
        taken[target] = name
        p = ours[target]
        rule = _row_rule(target)
        if p.numel() == numel and rule is None:
            report.exact[name] = target
        elif rule is not None:
            first, count, _ = rule
            width = p[0].numel() if p.dim() > 1 else 1
            if numel % width == 0 and numel // width >= first + count and p.shape[0] >= count:
                report.adapted[name] = target
            else:
                report.mismatched[name] = f"{numel} elements cannot give {count} rows of {width} for {target}"
        else:
            report.mismatched[name] = f"{numel} elements vs {target} {tuple(p.shape)}"
    report.ours_only = [n for n in ours if n not in taken]
    return report


def _adapt_rows(value: torch.Tensor, target: torch.Tensor, rule) -> torch.Tensor:
    first, count, _ = rule
    if value.device.type == "meta":
        return torch.empty(target.shape, dtype=value.dtype, device="meta")
    out = target.detach().clone() if target.device.type != "meta" else torch.zeros(target.shape, dtype=value.dtype)
    rows = value.reshape(-1, *target.shape[1:])
    out[:count] = rows[first:first + count].to(out.dtype)
    return out


def official_to_ours(official: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> tuple[dict, Report]:
    """Rename (and row-adapt) an official state dict for a model whose state dict is ``reference``.

    ``reference`` (``model.state_dict()``, meta tensors allowed) gives target shapes and the
    values for rows the official model lacks. Returns (our state dict, report).
    """
    out, report = {}, Report()
    for name, value in official.items():
        target = official_to_ours_name(name)
        if target is None or target not in reference:
            report.unmatched[name] = unmatched_reason(name) if target is None else f"no tensor {target}"
            continue
        ref = reference[target]
        rule = _row_rule(target)
        if rule is not None:
            out[target] = _adapt_rows(value, ref, rule)
            report.adapted[name] = target
        elif value.numel() == ref.numel():
            out[target] = value.reshape(ref.shape)
            report.exact[name] = target
        else:
            report.mismatched[name] = f"{tuple(value.shape)} vs {target} {tuple(ref.shape)}"
    report.ours_only = [n for n in reference if n not in out]
    return out, report


def ours_to_official(state: dict[str, torch.Tensor]) -> tuple[dict, Report]:
    """Our state dict -> official names. Class heads get back their unused rows (zero weight,
    the minimum bias of the others) so the official code can load them."""
    out, report = {}, Report()
    for name, value in state.items():
        target = ours_to_official_name(name)
        if target is None:
            report.ours_only.append(name)
            continue
        rule = _row_rule(name)
        if rule is not None:
            first, count, rows = rule
            full = torch.zeros(rows, *value.shape[1:], dtype=value.dtype, device=value.device)
            if value.dim() == 1 and first:
                full[:first] = value[:count].min()
            full[first:first + count] = value[:count]
            out[target] = full
            report.adapted[target] = name
        else:
            out[target] = value
            report.exact[target] = name
    return out, report


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: raw, or under "model"/"state_dict"/"module"; weights_only."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: no state dict found")
    # DDP-saved checkpoints prefix every key with "module.".
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return {k: v for k, v in obj.items() if torch.is_tensor(v) and not k.endswith("num_batches_tracked")}


def save_state(state: dict[str, torch.Tensor], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        # safetensors refuses shared storage (T5's tied embeddings): store each once, contiguous.
        seen, unique = set(), {}
        for k, v in state.items():
            key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
            if key in seen:
                continue
            seen.add(key)
            unique[k] = v.contiguous()
        save_file(unique, str(path))
    else:
        torch.save(state, path)


def load_official(model: torch.nn.Module, official: dict[str, torch.Tensor]) -> Report:
    """Load an official state dict into ``model`` (non-strict) and return the report."""
    state, report = official_to_ours(official, model.state_dict())
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise RuntimeError(f"converter produced unknown keys: {unexpected[:5]}")
    logger.info("loaded official checkpoint: %s; %d of our tensors kept their values", report.lines()[0], len(missing))
    return report
