"""Write a real DeepSpeed ZeRO-3 checkpoint of the tiny model, and the model's outputs, for the export test.

Started by ``test_export.py`` as a subprocess: DeepSpeed caches process groups per process,
so a group of its own (one gloo rank on 127.0.0.1) keeps this test and the other DeepSpeed
tests of the session from meeting each other's stale groups.
Usage: ``python zero3_worker.py RUN_DIR``; writes RUN_DIR/config.yaml, RUN_DIR/checkpoint_000/
(the DeepSpeed checkpoint after one optimizer step) and RUN_DIR/expected.pt ({"outputs", "state"}
of the engine's model, gathered, on the fixed probe batch of ``unihema.export``).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def main(run: Path) -> None:
    import deepspeed

    from unihema.checkpoint.export import probe_batch
    from unihema.config import load_config, save_config
    from unihema.model import build_model, build_tokenizer
    from unihema.train.deepspeed_config import deepspeed_config
    from unihema.train.optim import build_optimizer

    os.environ.setdefault("LOCAL_RANK", "0")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    cfg = load_config("tiny", overrides=["train.zero_stage=3"])
    torch.manual_seed(1)
    model = build_model(cfg)
    optimizer, scheduler = build_optimizer(model, cfg.train)
    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(cfg.train, 1, 1, False),
        dist_init_required=False,
    )
    batch = probe_batch(cfg, build_tokenizer(cfg))
    loss = sum(v.float().mean() for v in engine(batch).values() if torch.is_tensor(v) and v.is_floating_point())
    engine.backward(loss)
    engine.step()  # the weights move away from their initial values
    save_config(cfg, run / "config.yaml")
    engine.save_checkpoint(str(run / "checkpoint_000"), tag="checkpoint")
    engine.eval()
    with torch.no_grad(), deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        outputs = {k: v.clone() for k, v in engine.module(batch).items() if torch.is_tensor(v)}
        state = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    torch.save({"outputs": outputs, "state": state}, run / "expected.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
