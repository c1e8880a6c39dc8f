"""Training-loop, parallelism and checkpointing settings (used by unihema/train only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from unihema.config.model import NON_NEGATIVE, POSITIVE


@dataclass
class TrainConfig:
    num_workers: int = field(default=2, metadata=POSITIVE)
    use_gpu: bool = False
    cpus_per_worker: float = field(default=1.0, metadata={"min": 0.0})
    gpus_per_worker: float = field(default=1.0, metadata={"min": 0.0})
    # Extra Ray resources per training worker, e.g. {unihema_trainer: 1}, so workers land on
    # the nodes that advertise them (cluster/paper-cluster.yaml); empty: anywhere.
    worker_resources: dict[str, float] = field(default_factory=dict, metadata={"min": 0.0})
    zero_stage: int = field(default=2, metadata={"min": 0, "max": 3})
    offload_optimizer: bool = False
    # "bf16": fp32 weights, bf16 autocast of the forward (unihema/train/precision.py).
    # "auto": bf16 on GPU, fp32 on CPU. No fp16: without loss scaling it underflows, and bf16
    # covers every GPU this stack targets.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    grad_accum_steps: int = field(default=1, metadata=POSITIVE)
    # "round_robin": each optimizer step trains one task, in a weighted round-robin by the
    # data.mix weights: every task gets its share of steps, exactly, interleaved.
    # "sampled": each optimizer step trains one task, drawn at random by the data.mix weights.
    # "all": each optimizer step accumulates one micro-batch of every task with a positive
    # data.mix weight (the loss.<task> weights weigh them).
    task_schedule: Literal["round_robin", "sampled", "all"] = "round_robin"
    # "masked_adamw": AdamW that leaves parameters a step did not use (exactly zero gradient)
    # untouched. DeepSpeed hands the heads of tasks not in a step zero gradients, not None, and
    # plain "adamw" then moves them on momentum and decays them every step they do not train
    # (measured on the demo: the segmentation head ended predicting no foreground).
    optimizer: Literal["adamw", "masked_adamw"] = "masked_adamw"
    clip_max_norm: float = field(default=0.1, metadata=NON_NEGATIVE)
    lr: float = field(default=1e-4, metadata={"min": 0.0})
    lr_backbone: float = field(default=1e-5, metadata={"min": 0.0})
    lr_linear_proj_mult: float = field(default=0.1, metadata={"min": 0.0})
    weight_decay: float = field(default=0.01, metadata={"min": 0.0})
    warmup_steps: int = field(default=1000, metadata=NON_NEGATIVE)
    schedule: Literal["step", "cosine", "constant"] = "step"
    lr_drop_steps: tuple[int, ...] = ()
    lr_drop_factor: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    max_steps: int = field(default=100_000, metadata=POSITIVE)
    checkpoint_every: int = field(default=2000, metadata=POSITIVE)
    keep_checkpoints: int = field(default=3, metadata=POSITIVE)
    val_every: int = field(default=2000, metadata=POSITIVE)
    val_batches: int = field(default=50, metadata=POSITIVE)
    log_every: int = field(default=50, metadata=POSITIVE)
    max_consecutive_nonfinite: int = field(default=5, metadata=POSITIVE)
    max_failures: int = field(default=3, metadata=NON_NEGATIVE)
    # Node-local folder a resuming run downloads its checkpoint into, once per node (all of a
    # checkpoint's ranks' files: put it on a disk with room for that). "" = the system temp folder.
    resume_cache_dir: str = ""
    activation_checkpointing: bool = False
    # How long a collective may wait before the process group fails the step (NCCL/gloo
    # timeout), in minutes. Ray's default of 30 minutes left a hung rank holding every GPU.
    collective_timeout_min: float = field(default=10.0, metadata={"min": 0.1})
    # When joining a cluster that cannot place the workers yet: how long to wait for the
    # autoscaler before failing with what the cluster has. A local cluster never waits.
    resource_wait_s: float = field(default=300.0, metadata=NON_NEGATIVE)
    seed: int = 42

    def micro_steps(self, num_tasks: int) -> int:
        """Micro-batches per optimizer step (the DeepSpeed gradient accumulation)."""
        return self.grad_accum_steps * (num_tasks if self.task_schedule == "all" else 1)

    def validate(self) -> None:
        reserved = {"CPU", "GPU", "memory"} & set(self.worker_resources)
        if reserved:
            raise ValueError(f"worker_resources must not set {sorted(reserved)}: use cpus_per_worker / gpus_per_worker")
