"""The DeepSpeed configuration built from TrainConfig: ZeRO stage, offload, precision, clipping.

Clipping is DeepSpeed's ``gradient_clipping``, which applies in every precision (the
official run configured 0.1 but only clipped under AMP, which was off, so it never did).
DeepSpeed's own ``bf16``/``fp16`` modes stay off: they cast the parameters to half
precision, while the training recipe keeps fp32 weights and autocasts the forward
(``unihema.train.precision``).
"""

from __future__ import annotations

from unihema.config import TrainConfig
from unihema.train.precision import resolve_precision

__all__ = ["deepspeed_config", "resolve_precision"]


def deepspeed_config(
    cfg: TrainConfig, micro_batch_size: int, world_size: int, on_gpu: bool, num_tasks: int = 1
) -> dict:
    """``num_tasks``: tasks with a positive sampling weight (each is one micro-batch under task_schedule "all")."""
    accum = cfg.micro_steps(num_tasks)
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.zero_stage >= 1:
        zero.update(overlap_comm=on_gpu, contiguous_gradients=True, reduce_bucket_size=5e7, allgather_bucket_size=5e7)
    if cfg.zero_stage == 3:
        zero.update(
            stage3_param_persistence_threshold=1e4,
            stage3_prefetch_bucket_size=5e7,
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if cfg.offload_optimizer:
        if cfg.zero_stage == 0:
            raise ValueError("train.offload_optimizer needs train.zero_stage >= 1")
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    config = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": accum,
        "train_batch_size": micro_batch_size * accum * world_size,
        "gradient_clipping": cfg.clip_max_norm if cfg.clip_max_norm > 0 else 0.0,
        "zero_optimization": zero,
        # fp32 master weights whatever train.precision says: bf16 is autocast's job.
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,  # progress is printed by the trainer, not by DeepSpeed
        "wall_clock_breakdown": False,
        # A torch optimizer is passed in; with CPU offload DeepSpeed would otherwise insist on its own.
        "zero_force_ds_cpu_optimizer": False,
        "zero_allow_untested_optimizer": True,
    }
    return config
