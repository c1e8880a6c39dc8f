"""Gradient clipping through the real DeepSpeed engine (CPU, one process, gloo on loopback)."""

import pytest
import torch

from unihema.config import load_config
from unihema.train.deepspeed_config import deepspeed_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_clipping_applies_in_fp32(process_group, zero_stage):
    """With clip 0.5 a huge gradient moves the weights by exactly 0.5 under SGD(lr=1), in fp32."""
    import deepspeed

    moves = {}
    for clip in (0.0, 0.5):
        cfg = load_config("tiny", overrides=[f"train.clip_max_norm={clip}", f"train.zero_stage={zero_stage}"]).train
        model = torch.nn.Linear(4, 1, bias=False)
        torch.nn.init.zeros_(model.weight)
        before = model.weight.detach().clone()
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        engine, *_ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            dist_init_required=False,
            config=deepspeed_config(cfg, micro_batch_size=1, world_size=1, on_gpu=False),
        )
        loss = engine(torch.full((1, 4), 100.0)).sum()
        engine.backward(loss)
        engine.step()
        after = engine.module.weight.detach().clone()
        moves[clip] = float((after - before).norm())
    assert moves[0.0] == pytest.approx(200.0, rel=1e-4)  # the raw gradient norm: sqrt(4) * 100
    assert moves[0.5] == pytest.approx(0.5, rel=1e-4)
