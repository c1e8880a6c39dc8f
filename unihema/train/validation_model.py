"""The model that validation runs: the engine's own under ZeRO 0-2, a gathered plain copy under ZeRO-3.

Under ZeRO-3 every forward of the engine's module is a collective: DeepSpeed's forward hooks
broadcast and gather parameters across ranks, even inside ``GatheredParameters``. Ranks hold
different validation batches (and a rank may hold none), so validating on the engine's module
left one rank waiting in a forward hook while another waited in the metric gather, for ever.
A plain copy of the gathered weights runs forwards on each rank alone.
"""

from __future__ import annotations

import torch
from torch import nn


def validation_model(engine, cfg, zero_stage: int, device: torch.device) -> nn.Module:
    """A module with the engine's current weights whose forwards need no other rank."""
    if zero_stage < 3:
        return engine.module
    import deepspeed

    from unihema.model import build_model

    # Every rank takes part in the gather; afterwards each holds the whole state.
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
        state = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    model = build_model(cfg).to(device)
    model.load_state_dict(state)
    return model
