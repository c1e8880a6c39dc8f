"""Input-pipeline settings: where the shards are, how tasks are mixed, image sizes."""

from __future__ import annotations

from dataclasses import dataclass, field

from unihema.config.model import NON_NEGATIVE, POSITIVE


@dataclass
class TaskMix:
    """Relative sampling weight of each task stream; 0 switches a task off."""

    detection: float = field(default=1.0, metadata=NON_NEGATIVE)
    classification: float = field(default=1.0, metadata=NON_NEGATIVE)
    segmentation: float = field(default=1.0, metadata=NON_NEGATIVE)
    morphology: float = field(default=1.0, metadata=NON_NEGATIVE)
    vqa: float = field(default=1.0, metadata=NON_NEGATIVE)
    mlm: float = field(default=1.0, metadata=NON_NEGATIVE)

    def validate(self) -> None:
        if not any(v > 0 for v in vars(self).values()):
            raise ValueError("at least one task must have a positive sampling weight")


@dataclass
class DataConfig:
    # Shards: a local folder or s3://bucket/prefix holding split=<name>/ Parquet shards.
    uri: str = "s3://unihema/synthetic"
    # When the uri is empty of shards, the synthetic generator fills it with this many records.
    synthetic_records: int = field(default=2000, metadata=NON_NEGATIVE)
    synthetic_seed: int = 0
    synthetic_image_size: int = field(default=256, metadata={"min": 64})
    # How much of the smear a synthetic field of view shows (the generator's FOV_WIDTH_UM,
    # ~75 um); a narrower field shows fewer, larger cells at the same image size.
    synthetic_fov_width_um: float = field(default=256 / 3.4, metadata={"min": 10.0})
    mix: TaskMix = field(default_factory=TaskMix)
    batch_size: int = field(default=12, metadata=POSITIVE)
    # Official augmentation recipes (short side scales, max size, crops).
    detection_scales: tuple[int, ...] = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
    detection_max_size: int = field(default=1333, metadata=POSITIVE)
    detection_crop: tuple[int, ...] = (384, 600)
    # Short sides of the resize before the random crop.
    detection_crop_resize: tuple[int, ...] = (400, 500, 600)
    classification_size: int = field(default=512, metadata=POSITIVE)
    segmentation_size: int = field(default=512, metadata=POSITIVE)
    text_image_size: int = field(default=256, metadata=POSITIVE)
    shuffle_buffer: int = field(default=256, metadata=NON_NEGATIVE)
    prefetch_batches: int = field(default=2, metadata=NON_NEGATIVE)
    # Ray Data limits so that memory stays bounded however many images stream through.
    object_store_memory_mb: int = field(default=1024, metadata=NON_NEGATIVE)
    max_cpus: float = field(default=0.0, metadata=NON_NEGATIVE)
    # CPUs each Ray Data read-and-decode task reserves. A fraction lets the streams of all
    # training workers share the data CPUs instead of waiting on whole-CPU slots.
    decode_cpus: float = field(default=0.5, metadata={"min": 0.0})
    # Extra Ray resources per read/decode task, e.g. {unihema_data: 0.01}, so decoding runs on
    # the CPU data nodes (cluster/paper-cluster.yaml); empty: anywhere.
    task_resources: dict[str, float] = field(default_factory=dict, metadata={"min": 0.0})

    def validate(self) -> None:
        reserved = {"CPU", "GPU", "memory"} & set(self.task_resources)
        if reserved:
            raise ValueError(f"task_resources must not set {sorted(reserved)}: use decode_cpus")
