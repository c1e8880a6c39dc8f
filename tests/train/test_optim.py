"""Optimizer groups, learning-rate schedule and the DeepSpeed configuration."""

import pytest
import torch

from unihema.config import load_config
from unihema.train.deepspeed_config import deepspeed_config, resolve_precision
from unihema.train.optim import MaskedAdamW, build_optimizer, lr_factor, param_groups


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(2, 2)
        self.encoder = torch.nn.ModuleDict({"sampling_offsets": torch.nn.Linear(2, 2)})
        self.reference_points = torch.nn.Linear(2, 2)
        self.head = torch.nn.Linear(2, 2)
        self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)


def test_official_parameter_groups():
    """Backbone at lr_backbone, offsets/reference points at lr x lr_linear_proj_mult, the rest at lr; frozen left
    out."""
    # paper: x 1.0, as the official run trained them (its 0.1 reached no group).
    assert {g["name"]: g["lr"] for g in param_groups(_Toy(), load_config("paper").train)}["linear_proj"] == 1e-4
    cfg = load_config("paper", overrides=["train.lr_linear_proj_mult=0.1"]).train
    groups = {g["name"]: g for g in param_groups(_Toy(), cfg)}
    assert groups["backbone"]["lr"] == 1e-5 and len(groups["backbone"]["params"]) == 2
    assert groups["linear_proj"]["lr"] == pytest.approx(1e-5) and len(groups["linear_proj"]["params"]) == 4
    assert groups["main"]["lr"] == 1e-4 and len(groups["main"]["params"]) == 2
    assert all(g["weight_decay"] == 0.01 for g in groups.values())


def test_schedules():
    """Linear warm-up, then step drops or a cosine to zero."""
    cfg = load_config(
        "tiny",
        overrides=["train.warmup_steps=4", "train.max_steps=14", "train.schedule=step", "train.lr_drop_steps=[10]"],
    ).train
    assert [lr_factor(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(9, cfg) == 1.0 and lr_factor(10, cfg) == pytest.approx(0.1)
    cos = load_config("tiny", overrides=["train.warmup_steps=0", "train.max_steps=10", "train.schedule=cosine"]).train
    assert lr_factor(0, cos) == 1.0
    assert lr_factor(5, cos) == pytest.approx(0.5) and lr_factor(10, cos) == pytest.approx(0)


def test_scheduler_drives_every_group():
    """The LambdaLR scales each group's own base rate."""
    cfg = load_config("tiny", overrides=["train.warmup_steps=2"]).train
    optimizer, scheduler = build_optimizer(_Toy(), cfg)
    expected = [cfg.lr_backbone / 2, cfg.lr * 0.1 / 2, cfg.lr / 2]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(expected)
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([cfg.lr_backbone, cfg.lr * 0.1, cfg.lr])


def test_deepspeed_config_from_train_config():
    """ZeRO stage, clipping, accumulation and precision map into DeepSpeed's config."""
    cfg = load_config(
        "tiny",
        overrides=[
            "train.zero_stage=3",
            "train.grad_accum_steps=2",
            "train.clip_max_norm=0.1",
            "train.offload_optimizer=true",
        ],
    ).train
    ds = deepspeed_config(cfg, micro_batch_size=4, world_size=2, on_gpu=False)
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["gradient_clipping"] == 0.1 and ds["train_batch_size"] == 16
    assert not ds["bf16"]["enabled"] and resolve_precision(cfg, on_gpu=True) == "bf16"
    every = load_config("tiny", overrides=["train.task_schedule=all", "train.grad_accum_steps=2"]).train
    ds = deepspeed_config(every, micro_batch_size=4, world_size=2, on_gpu=False, num_tasks=6)
    # One micro-batch per task per accumulation step: 2 x 6 micro-batches of 4 on each of 2 ranks.
    assert ds["gradient_accumulation_steps"] == 12 and ds["train_batch_size"] == 96
    with pytest.raises(ValueError, match="zero_stage >= 1"):
        deepspeed_config(
            load_config("tiny", overrides=["train.zero_stage=0", "train.offload_optimizer=true"]).train, 4, 1, False
        )


def test_masked_adamw_matches_adamw_on_dense_gradients():
    """Where every element has a gradient, MaskedAdamW is torch's AdamW."""
    torch.manual_seed(0)
    reference = torch.randn(64, requires_grad=True)
    masked = reference.detach().clone().requires_grad_()
    opt_ref = torch.optim.AdamW([reference], lr=1e-2, weight_decay=0.1)
    opt_masked = MaskedAdamW([masked], lr=1e-2, weight_decay=0.1)
    for _ in range(25):
        grad = torch.randn(64)
        reference.grad, masked.grad = grad.clone(), grad.clone()
        opt_ref.step()
        opt_masked.step()
    torch.testing.assert_close(masked, reference, rtol=0, atol=5e-6)


def test_masked_adamw_skips_zero_gradient_elements_like_adamw_skips_none():
    """A flat buffer whose second half sees gradients one step in three evolves exactly like
    AdamW on two separate tensors, the second with grad None on the other steps."""
    torch.manual_seed(1)
    start = torch.randn(10)
    first, second = start[:5].clone().requires_grad_(), start[5:].clone().requires_grad_()
    flat = start.clone().requires_grad_()
    opt_ref = torch.optim.AdamW([first, second], lr=1e-2, weight_decay=0.05)
    opt_masked = MaskedAdamW([flat], lr=1e-2, weight_decay=0.05)
    for step in range(20):
        grad = torch.randn(10)
        trains_second = step % 3 == 0
        first.grad, second.grad = grad[:5].clone(), grad[5:].clone() if trains_second else None
        flat.grad = grad.clone() if trains_second else torch.cat([grad[:5], torch.zeros(5)])
        opt_ref.step()
        opt_masked.step()
    torch.testing.assert_close(flat.detach(), torch.cat([first, second]).detach(), rtol=0, atol=5e-6)
    # Seven of twenty steps touched the second half: its own count drives the bias correction.
    torch.testing.assert_close(
        opt_masked.state[flat]["beta2_power"], torch.tensor([0.999**20] * 5 + [0.999**7] * 5), rtol=1e-6, atol=0
    )


def test_masked_adamw_state_survives_a_checkpoint_round_trip():
    """Resuming from state_dict continues exactly where an uninterrupted run would be."""
    torch.manual_seed(2)
    grads = [torch.randn(8) * (torch.rand(8) > 0.5) for _ in range(6)]
    straight = torch.zeros(8, requires_grad=True)
    opt = MaskedAdamW([straight], lr=0.1)
    for g in grads:
        straight.grad = g.clone()
        opt.step()
    resumed = torch.zeros(8, requires_grad=True)
    first = MaskedAdamW([resumed], lr=0.1)
    for g in grads[:3]:
        resumed.grad = g.clone()
        first.step()
    second = MaskedAdamW([resumed], lr=0.1)
    second.load_state_dict(first.state_dict())
    for g in grads[3:]:
        resumed.grad = g.clone()
        second.step()
    torch.testing.assert_close(resumed, straight, rtol=0, atol=1e-7)


def test_optimizer_choice_comes_from_the_config():
    masked, _ = build_optimizer(_Toy(), load_config("tiny").train)
    plain, _ = build_optimizer(_Toy(), load_config("tiny", overrides=["train.optimizer=adamw"]).train)
    assert isinstance(masked, MaskedAdamW) and type(plain) is torch.optim.AdamW
