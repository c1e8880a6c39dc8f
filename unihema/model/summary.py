"""Trainable-parameter counts per component, beside the official release's where they apply.

The comparison groups the official names by prefix (:data:`GROUPS`, official side) and
ours by module (our side); the official numbers are computed from the inventory, never
typed in. Counting only ``requires_grad`` parameters matches how the DINO code counted
the released 301,808,544 (frozen ResNet stem, layer1 and BatchNorm are excluded).
"""

from __future__ import annotations

import torch

from .official_params import OFFICIAL_PARAMS

# (group, our prefixes, official prefixes); the first group whose prefix matches a name wins.
GROUPS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("backbone", ("backbone.",), ("backbone.",)),
    ("input_proj", ("input_proj.",), ("input_proj.",)),
    ("encoder", ("encoder.",), ("transformer.encoder.",)),
    ("decoder", ("decoder.",), ("transformer.decoder.",)),
    ("qformer", ("hema.qformer.",), ("xformer.",)),
    ("upsampler", ("hema.mask_former.upsampler.",), ("upsampler.",)),
    ("t5", ("text.",), ("T5_model.",)),
    (
        "two_stage",
        ("level_embed", "proposals."),
        ("transformer.level_embed", "transformer.tgt_embed", "transformer.enc_output", "transformer.enc_out_"),
    ),
    (
        "refinement",
        ("hema.refine.",),
        (
            "transformer.text_proj",
            "transformer.cross_attnn",
            "transformer.gate_mlp",
            "transformer.combined_proj",
            "transformer.decoder_norm",
        ),
    ),
    (
        "mask_former",
        ("hema.mask_former.",),
        ("transformer.mask_embed", "transformer.class_embed", "mask_embed", "class_embed_seg", "transformer.label_enc"),
    ),
    ("denoising", ("denoising.",), ("label_enc",)),
    (
        "cell_heads",
        ("heads.",),
        ("classifier_image", "morphology_embed", "class_tokens", "class_pos_tokens", "decoder_norm"),
    ),
)
# The components the release names with their sizes; the paper preset must match each within 1%.
CHECKED_GROUPS = ("backbone", "encoder", "decoder", "input_proj", "qformer", "upsampler", "t5")
OTHER = "other"


def group_of(name: str, side: int) -> str:
    """Group of a parameter name; side 1 = our names, 2 = official names."""
    for group in GROUPS:
        if any(name.startswith(p) for p in group[side]):
            return group[0]
    return OTHER


def count_trainable(model: torch.nn.Module) -> dict[str, int]:
    counts = {g[0]: 0 for g in GROUPS}
    counts[OTHER] = 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            counts[group_of(name, 1)] += p.numel()
    return counts


def count_official(inventory: dict[str, int] | None = None) -> dict[str, int]:
    inventory = OFFICIAL_PARAMS if inventory is None else inventory
    counts = {g[0]: 0 for g in GROUPS}
    counts[OTHER] = 0
    for name, numel in inventory.items():
        counts[group_of(name, 2)] += numel
    return counts


def summary_rows(model: torch.nn.Module, compare: bool) -> list[tuple[str, int, int | None]]:
    ours = count_trainable(model)
    official = count_official() if compare else {}
    names = [g for g in ours if ours[g] or official.get(g)]
    rows = [(g, ours[g], official.get(g) if compare else None) for g in names]
    rows.append(("total", sum(ours.values()), sum(official.values()) if compare else None))
    return rows


def format_summary(model: torch.nn.Module, compare: bool) -> str:
    """The table printed by ``python -m unihema.model summary``; its last line is ``total_params=N``."""
    rows = summary_rows(model, compare)
    lines = []
    if compare:
        lines.append(f"{'component':<12} {'trainable':>13} {'official':>13} {'diff':>10} {'diff %':>8}")
        for name, ours, official in rows:
            diff = ours - official
            pct = 100.0 * diff / official if official else float("nan")
            mark = " *" if name in CHECKED_GROUPS else ""
            lines.append(f"{name:<12} {ours:>13,} {official:>13,} {diff:>+10,} {pct:>+7.3f}%{mark}")
        lines.append(
            "* components the release names with their sizes (checked to 1%; total to 0.2%: the official "
            "total counts 1,647,363 parameters its forward never reads, see docs/DIFFERENCES.md)"
        )
    else:
        lines.append(f"{'component':<12} {'trainable':>13}")
        lines += [f"{name:<12} {ours:>13,}" for name, ours, _ in rows]
    lines.append(f"total_params={rows[-1][1]}")
    return "\n".join(lines)
