"""Official Uni-Hema checkpoints <-> this implementation's state dicts.

The official model is DINO's code with extra modules bolted on; ours is split into
components with names that say what they do. The mapping is a short table of name
prefixes (:data:`PREFIXES`), invertible by construction, covering only what the official
forward reads, plus these exceptions:

- *dead* official tensors (:data:`OFFICIAL_DEAD`): built but never read by the official
  forward (a second mask MLP, a second decoder norm, the class-token fusion layer, ...).
  They are never mapped: their values are untrained, and the live tensors of the same role
  (the top-level ``mask_embed`` and ``decoder_norm``) are the ones the model used.
- *row-adapted* class heads: DINO's detection heads have a row for id 0, which no class
  uses (ids start at 1); ours index DETECTION_CLASSES from 0, so official rows 1..29 become
  our rows 0..28. The cell classifier's 45 official rows are our first 45 (ours appends
  extension classes). Rows with no official counterpart keep the target model's values.
- the *pair-difference* morphology head: 2 softmax logits per attribute officially, one
  sigmoid logit here (logit1 - logit0, exact).
- *unmatched* live official tensors with no counterpart here, each with its reason
  (:func:`check_inventory`, ``python -m unihema.model inventory``).
- *ours-only* tensors (the per-image morphology head, the class token's cross-attention,
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

# (official prefix, our prefix); the longest matching prefix wins in each direction. Only
# tensors the official forward reads are here (see OFFICIAL_DEAD for the others).
PREFIXES: tuple[tuple[str, str], ...] = (
    ("backbone.0.body.", "backbone.body."),
    ("input_proj.", "input_proj."),
    ("transformer.level_embed", "level_embed"),
    ("transformer.encoder.layers.", "encoder.layers."),
    ("transformer.encoder.cls_token", "encoder.cell.cls_token"),
    ("transformer.encoder.cls_pos", "encoder.cell.cls_pos"),
    ("transformer.encoder.fuse_proj.", "encoder.cell.fuse_proj."),
    # Same names, and the encoder applies each to the official input: mask_features to the
    # un-encoded stride-8 map (a 1x1 conv there), mask_feature_proj to the encoded tokens.
    ("transformer.encoder.mask_features.", "encoder.mask_features."),
    ("transformer.encoder.mask_feature_proj.", "encoder.mask_feature_proj."),
    ("transformer.decoder.layers.", "decoder.layers."),
    ("transformer.decoder.norm.", "decoder.norm."),
    ("transformer.decoder.ref_point_head.", "decoder.ref_point_head."),
    # DINO keeps one (shared) head per layer in a list; ours is the one shared module.
    ("transformer.decoder.bbox_embed.0.", "decoder.bbox_embed."),
    ("transformer.decoder.class_embed.0.", "decoder.class_embed."),
    ("morphology_embed.0.", "decoder.morph_embed."),
    ("transformer.tgt_embed.", "proposals.tgt_embed."),
    ("transformer.enc_output.", "proposals.enc_output."),
    ("transformer.enc_output_norm.", "proposals.enc_output_norm."),
    ("transformer.enc_out_bbox_embed.", "proposals.bbox_embed."),
    ("transformer.enc_out_class_embed.", "proposals.class_embed."),
    # TGVR (hema.refinement=official has exactly these three).
    ("transformer.text_proj.", "hema.refine.text_proj."),
    ("transformer.cross_attnn.", "hema.refine.cross_attn."),
    ("transformer.gate_mlp.", "hema.refine.gate_mlp."),
    # The mask heads DINO's forward_prediction_heads uses are the top-level ones.
    ("decoder_norm.", "hema.mask_former.norm."),
    ("mask_embed.", "hema.mask_former.mask_embed."),
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

# The official morphology head gives 2 logits per attribute, interleaved (its loss views
# them as (6, 2) and takes a softmax); softmax(l0, l1)[1] = sigmoid(l1 - l0), so rows
# 2a+1 minus rows 2a are exactly our one sigmoid logit per attribute.
PAIR_DIFFERENCE = ("decoder.morph_embed.",)

# Official tensors its forward never reads (verified in models/dino/dino.py and
# deformable_transformer.py of the release): mapping them would put untrained values
# into live paths. Listed by check_inventory and the converter with the reason.
OFFICIAL_DEAD: dict[str, str] = {
    "transformer.mask_embed.": "dead: only DeformableTransformer.forward_prediction_heads reads it, and its one "
    "call is commented out (the live mask MLP is the top-level mask_embed)",
    "transformer.class_embed.": "dead: only DeformableTransformer.forward_prediction_heads reads it (never called)",
    "transformer.decoder_norm.": "dead: only DeformableTransformer.forward_prediction_heads reads it (never called; "
    "the live one is the top-level decoder_norm)",
    "transformer.combined_proj.": "dead: every use in DeformableTransformer.forward is commented out",
    "transformer.label_enc.": "dead: never read after __init__",
    "transformer.encoder.cls_fusion.": "dead: both calls in the encoder's forward are commented out",
    "class_pos_tokens.": "dead: never read in DINO.forward",
    "class_tokens.0": "dead: DINO.forward reads class_tokens[l] only for the extra levels (l >= 3)",
    "class_tokens.1": "dead: DINO.forward reads class_tokens[l] only for the extra levels (l >= 3)",
    "class_tokens.2": "dead: DINO.forward reads class_tokens[l] only for the extra levels (l >= 3)",
}

# Official tensors its forward reads that have no counterpart here, and why.
UNMATCHED_REASONS: dict[str, str] = {
    **OFFICIAL_DEAD,
    "class_tokens.3": "written into the top-left pixel of the stride-64 level's map (padded by one row and "
    "column); ours has no token inside the feature maps (its class token, encoder.cell.cls_token, "
    "reads all levels instead)",
    "class_embed_seg.": "read by forward_prediction_heads, but its logits (predictions_class) reach no output and "
    "no loss, so a checkpoint holds its initialisation; ours classifies queries over the "
    "segmentation classes + no-object (hema.mask_former.class_embed)",
    "transformer.decoder.bbox_embed.": "copies of the shared head (.0 is converted)",
    "transformer.decoder.class_embed.": "copies of the shared head (.0 is converted)",
    "morphology_embed.": "copies of the shared head (.0 is converted)",
    "bbox_embed.": "the same shared head as transformer.decoder.bbox_embed.0",
    "class_embed.": "the same shared head as transformer.decoder.class_embed.0",
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
    return None if pair is None else pair[1] + name[len(pair[0]) :]


def ours_to_official_name(name: str) -> str | None:
    pair = _longest(name, PREFIXES, 1)
    return None if pair is None else pair[0] + name[len(pair[1]) :]


def _row_rule(our_name: str):
    for prefix, rule in ROW_ADAPTED.items():
        if our_name.startswith(prefix):
            return rule
    return None


def unmatched_reason(official_name: str) -> str:
    matches = [p for p in UNMATCHED_REASONS if official_name.startswith(p)]
    return UNMATCHED_REASONS[max(matches, key=len)] if matches else "no rule maps this name"


def is_dead(official_name: str) -> bool:
    """Whether the official forward never reads this tensor (see OFFICIAL_DEAD)."""
    return any(official_name.startswith(p) for p in OFFICIAL_DEAD)


def _pair_rule(our_name: str) -> bool:
    return our_name.startswith(PAIR_DIFFERENCE)


@dataclasses.dataclass
class Report:
    """What a conversion or inventory check did, name by name."""

    exact: dict[str, str] = dataclasses.field(default_factory=dict)  # official -> ours, same numel
    adapted: dict[str, str] = dataclasses.field(default_factory=dict)  # official -> ours, class rows re-indexed
    unmatched: dict[str, str] = dataclasses.field(default_factory=dict)  # official -> reason
    mismatched: dict[str, str] = dataclasses.field(default_factory=dict)  # official -> what differs
    ours_only: list[str] = dataclasses.field(default_factory=list)  # our trainable tensors nothing maps to

    def lines(self) -> list[str]:
        out = [
            f"exact={len(self.exact)} adapted={len(self.adapted)} unmatched={len(self.unmatched)} "
            f"mismatched={len(self.mismatched)} ours_only={len(self.ours_only)}"
        ]
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
        target = None if is_dead(name) else official_to_ours_name(name)
        if target is None or target not in ours:
            report.unmatched[name] = unmatched_reason(name) if target is None else f"no parameter {target}"
            continue
        if target in taken:
            report.mismatched[name] = f"{target} is already the image of {taken[target]}"
            continue
        taken[target] = name
        p = ours[target]
        rule = _row_rule(target)
        if _pair_rule(target):
            if numel == 2 * p.numel():
                report.adapted[name] = target
            else:
                report.mismatched[name] = f"{numel} elements are not 2 logits per row of {target} {tuple(p.shape)}"
        elif p.numel() == numel and rule is None:
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
    out[:count] = rows[first : first + count].to(out.dtype)
    return out


def official_to_ours(official: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> tuple[dict, Report]:
    """Rename (and row-adapt) an official state dict for a model whose state dict is ``reference``.

    ``reference`` (``model.state_dict()``, meta tensors allowed) gives target shapes and the
    values for rows the official model lacks. Returns (our state dict, report).
    """
    out, report = {}, Report()
    for name, value in official.items():
        target = None if is_dead(name) else official_to_ours_name(name)
        if target is None or target not in reference:
            report.unmatched[name] = unmatched_reason(name) if target is None else f"no tensor {target}"
            continue
        ref = reference[target]
        rule = _row_rule(target)
        if _pair_rule(target) and value.numel() == 2 * ref.numel():
            pairs = value.reshape(ref.shape[0], 2, *ref.shape[1:])
            out[target] = pairs[:, 1] - pairs[:, 0]
            report.adapted[name] = target
        elif rule is not None:
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
        if _pair_rule(name):
            # (0, x): the official softmax over the pair gives back sigmoid(x).
            pairs = torch.stack([torch.zeros_like(value), value], dim=1)
            out[target] = pairs.reshape(2 * value.shape[0], *value.shape[1:])
            report.adapted[target] = name
        elif rule is not None:
            first, count, rows = rule
            full = torch.zeros(rows, *value.shape[1:], dtype=value.dtype, device=value.device)
            if value.dim() == 1 and first:
                full[:first] = value[:count].min()
            full[first : first + count] = value[:count]
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
        obj = {k[len("module.") :]: v for k, v in obj.items()}
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
