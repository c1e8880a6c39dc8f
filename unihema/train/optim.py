"""AdamW with the official Uni-Hema parameter groups, and the learning-rate schedule.

Groups (training_args.txt): the image backbone trains at ``lr_backbone`` (1e-5); the
deformable-attention sampling-offset and reference-point projections at ``lr`` x
``lr_linear_proj_mult`` (0.1); everything else at ``lr`` (1e-4); weight decay 0.01 for all,
as in the official run. The schedule warms up linearly, then steps or follows a cosine.

The optimizer is torch's AdamW or ``MaskedAdamW`` (``train.optimizer``). One optimizer step
usually trains one task, so most heads take no part in it. Plain PyTorch leaves their
gradients at None and AdamW skips them, as in the official run. DeepSpeed instead reduces
flat gradient buffers in which the heads that took no part hold zeros, and torch's AdamW
then keeps moving them on momentum and shrinks them by weight decay on every step of
another task (on the demo, segmentation trained one step in eleven and ended predicting no
foreground). ``MaskedAdamW`` restores the plain-PyTorch behaviour inside flat buffers.
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


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW that leaves every element whose gradient is exactly zero as it is.

    Such an element was not used by the step's loss: its weight, both moments and its own
    step count (for the bias corrections) stay unchanged, which is what torch's AdamW does
    for a parameter whose gradient is None. Elements that have a gradient get exactly
    torch's AdamW update. The per-element step count is one more fp32 state tensor (the
    optimizer state grows from 2 to 3 values per parameter). A genuinely zero gradient
    (e.g. a dead ReLU unit) is also skipped, where AdamW would decay the weight.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"MaskedAdamW betas must be in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError("MaskedAdamW does not support sparse gradients")
                state = self.state[param]
                if not state:
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["element_steps"] = torch.zeros_like(param, dtype=torch.float32)
                used = (grad != 0).to(param.dtype)
                steps = state["element_steps"]
                steps.add_(used)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, used * (1 - beta1))
                # Where unused the gradient is 0, so only the decay needs masking.
                exp_avg_sq.mul_(1 - used * (1 - beta2)).addcmul_(grad, grad, value=1 - beta2)
                taken = steps.clamp(min=1)
                bias1 = 1 - torch.pow(beta1, taken)
                bias2_sqrt = (1 - torch.pow(beta2, taken)).sqrt_()
                denom = exp_avg_sq.sqrt().div_(bias2_sqrt).add_(eps)
                update = exp_avg.div(bias1).div_(denom).mul_(used)
                if wd:
                    param.mul_(1 - lr * wd * used)
                param.sub_(update, alpha=lr)
        return loss


OPTIMIZERS = {"adamw": torch.optim.AdamW, "masked_adamw": MaskedAdamW}


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = OPTIMIZERS[cfg.optimizer](param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    return optimizer, scheduler
