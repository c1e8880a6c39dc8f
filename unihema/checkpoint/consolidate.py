"""A DeepSpeed checkpoint of any ZeRO stage -> one fp32 state dict, loading weights only unless trusted."""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import torch

from unihema.checkpoint.files import CHECKPOINT_TAG, MODEL_STATES
from unihema.checkpoint.safe_load import TRUST_FLAG, UntrustedCheckpointError, check_files, weights_only_loads


def consolidate_checkpoint(
    ckpt_dir: str | Path, tag: str = CHECKPOINT_TAG, *, trusted: bool = False, trust_hint: str = TRUST_FLAG
) -> dict[str, torch.Tensor]:
    """Full fp32 state dict of the module saved in a DeepSpeed checkpoint folder (ZeRO 0-3).

    Untrusted (the default) loads weights only (see :mod:`unihema.checkpoint.safe_load`) and raises
    UntrustedCheckpointError, naming the file and ``trust_hint``, for a file that needs more.
    """
    ckpt_dir = Path(ckpt_dir)
    tag_dir = ckpt_dir / tag
    if not tag_dir.is_dir():
        raise FileNotFoundError(f"{ckpt_dir} holds no DeepSpeed checkpoint tag {tag!r}")
    zero = any(tag_dir.glob("*optim_states.pt")) and any(tag_dir.glob("zero_pp_rank_*"))
    if not trusted:
        # Before any load: a refusal names the file and costs no read of the tensors.
        check_files(sorted(tag_dir.glob("*.pt")) if zero else [tag_dir / MODEL_STATES], trust_hint)
    scope = contextlib.nullcontext() if trusted else weights_only_loads()
    try:
        with scope:
            if zero:
                from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

                state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
            else:  # ZeRO-0: rank 0's model states hold the whole module
                blob = torch.load(tag_dir / MODEL_STATES, map_location="cpu", weights_only=not trusted)
                state = blob["module"]
    except pickle.UnpicklingError as err:  # what the scan above could not see (an old-format file)
        raise UntrustedCheckpointError(tag_dir, [], trust_hint) from err
    return {k: v.float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in state.items()}
