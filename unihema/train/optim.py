"""AdamW with the official Uni-Hema parameter groups, and the learning-rate schedule.

Groups (training_args.txt): the image backbone trains at ``lr_backbone`` (1e-5); the
deformable-attention sampling-offset and reference-point projections at ``lr`` x
``lr_linear_proj_mult`` (0.1); everything else at ``lr`` (1e-4); weight decay 0.01 for all,
as in the official run. The schedule warms up linearly, then steps or follows a cosine.
"""

from __future__ import annotations

import math

import torch

from unihema.config import TrainConfig

LINEAR_PROJ_NAMES = ("sampling_offsets", "reference_points")
BACKBONE_PREFIXES = ("backbone.",)


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """Trainable parameters split into the backbone, linear-projection and main groups."""
    groups = {"backbone": [], "linear_proj": [], "main": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if any(name.startswith(p) or f".{p}" in name for p in BACKBONE_PREFIXES):
            groups["backbone"].append(param)
        elif any(key in name for key in LINEAR_PROJ_NAMES):
            groups["linear_proj"].append(param)
        else:
            groups["main"].append(param)
    lrs = {"backbone": cfg.lr_backbone, "linear_proj": cfg.lr * cfg.lr_linear_proj_mult, "main": cfg.lr}
    return [{"params": ps, "lr": lrs[name], "initial_lr": lrs[name], "weight_decay": cfg.weight_decay, "name": name}
            for name, ps in groups.items() if ps]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of each group's base learning rate at ``step`` (0-based optimizer steps)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return cfg.lr_drop_factor ** sum(step >= s for s in cfg.lr_drop_steps)
    return 1.0


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    return optimizer, scheduler
