"""A head that is not in a step's task stays put under DeepSpeed (real engine, CPU, gloo on loopback).

DeepSpeed hands such a head zero gradients, not None; torch's AdamW would then keep moving it
on momentum and decay it. The trainer's default optimizer leaves it untouched.
"""

import pytest
import torch

from unihema.config import load_config
from unihema.train.deepspeed_config import deepspeed_config
from unihema.train.optim import build_optimizer

pytestmark = pytest.mark.slow


class _TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Linear(4, 4)
        self.head_a = torch.nn.Linear(4, 1)
        self.head_b = torch.nn.Linear(4, 1)

    def forward(self, x, heads):
        h = self.trunk(x)
        return sum(getattr(self, f"head_{name}")(h).sum() for name in heads)


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_idle_head_is_untouched_by_masked_adamw(process_group, zero_stage):
    import deepspeed

    moved = {}
    for optimizer_name in ("adamw", "masked_adamw"):
        cfg = load_config(
            "tiny",
            overrides=[
                f"train.optimizer={optimizer_name}",
                f"train.zero_stage={zero_stage}",
                "train.warmup_steps=0",
                "train.schedule=constant",
                "train.lr=0.01",
                "train.weight_decay=0.1",
            ],
        ).train
        torch.manual_seed(0)
        model = _TwoHeads()
        optimizer, scheduler = build_optimizer(model, cfg)
        engine, *_ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            dist_init_required=False,
            config=deepspeed_config(cfg, micro_batch_size=1, world_size=1, on_gpu=False),
        )
        x = torch.randn(1, 4)
        engine.backward(engine(x, ("a", "b")))  # both heads train once: both have momentum
        engine.step()
        head_b = engine.module.head_b.weight.detach().clone()
        trunk = engine.module.trunk.weight.detach().clone()
        for _ in range(3):  # then only head a's task
            engine.backward(engine(x, ("a",)))
            engine.step()
        moved[optimizer_name] = float((engine.module.head_b.weight.detach() - head_b).abs().max())
        assert not torch.equal(engine.module.trunk.weight, trunk)  # the shared part keeps training
    assert moved["adamw"] > 1e-3  # the failure the masked optimizer exists for
    assert moved["masked_adamw"] == 0.0
