"""Named presets: overrides on top of the dataclass defaults (the official values).

- ``tiny``: unit tests, a forward+backward of every task in seconds on one CPU core.
- ``demo``: the embedded default, minutes end to end on a 2-core machine.
- ``paper``: the official Uni-Hema hyperparameters for a GPU cluster.
"""

from __future__ import annotations

TINY_TEXT = {
    "d_model": 32, "d_kv": 8, "d_ff": 64, "num_heads": 4,
    "encoder_layers": 1, "decoder_layers": 1, "vocab_size": 512, "max_length": 24,
}

PRESETS: dict[str, dict] = {
    "tiny": {
        "model": {
            "hidden_dim": 32, "nheads": 4, "norm_groups": 8,
            "backbone": {"name": "resnet18", "frozen_stages": 0, "frozen_batchnorm": False},
            "encoder": {"layers": 1, "n_points": 2, "dim_feedforward": 64},
            "decoder": {"layers": 2, "n_points": 2, "dim_feedforward": 64, "num_queries": 16, "dn_number": 4},
            "text": TINY_TEXT,
            "hema": {"qformer_queries": 8, "qformer_layers": 1, "refine_top_k": 8, "cell_feature_norm": True},
        },
        "data": {
            "uri": "s3://unihema/synthetic-tiny", "synthetic_records": 64, "synthetic_image_size": 96,
            "batch_size": 2, "detection_scales": (96,), "detection_max_size": 128, "detection_crop": (64, 96), "detection_crop_resize": (80, 96),
            "classification_size": 64, "segmentation_size": 64, "text_image_size": 64,
            "shuffle_buffer": 16, "object_store_memory_mb": 256,
        },
        "train": {
            "num_workers": 2, "cpus_per_worker": 1.0, "max_steps": 6, "warmup_steps": 2,
            "checkpoint_every": 3, "keep_checkpoints": 2, "val_every": 3, "val_batches": 2, "log_every": 1,
        },
        "tune": {"num_samples": 2, "max_steps_per_trial": 4},
        "storage": {"run_uri": "s3://unihema/runs-tiny"},
    },
    "demo": {
        "model": {
            "hidden_dim": 64, "nheads": 4, "norm_groups": 16,
            # Built from scratch (no weights offline): BatchNorm must train, as must every stage.
            "backbone": {"name": "resnet18", "frozen_stages": 0, "frozen_batchnorm": False},
            "encoder": {"layers": 2, "n_points": 4, "dim_feedforward": 128},
            "decoder": {"layers": 3, "n_points": 4, "dim_feedforward": 128, "num_queries": 40, "dn_number": 10},
            "text": {
                "d_model": 64, "d_kv": 16, "d_ff": 128, "num_heads": 4,
                "encoder_layers": 2, "decoder_layers": 2, "vocab_size": 512, "max_length": 32,
            },
            "hema": {"qformer_queries": 16, "qformer_layers": 2, "refine_top_k": 20, "cell_feature_norm": True},
        },
        "data": {
            "uri": "s3://unihema/synthetic-demo", "synthetic_records": 2000, "synthetic_image_size": 128,
            "batch_size": 8, "detection_scales": (128,), "detection_max_size": 160, "detection_crop": (96, 128), "detection_crop_resize": (112, 128),
            "classification_size": 64, "segmentation_size": 128, "text_image_size": 64,
            "shuffle_buffer": 128, "object_store_memory_mb": 512,
            # The cell-feature tasks learn slowest from scratch and their steps are the cheapest;
            # MLM learns fastest. Segmentation steps cost the most, but at 0.75 (~58 of 600
            # steps) its loss stalled just short of where Dice leaves zero (0.10); at 1.5, 0.78
            # (measured at 600 steps).
            "mix": {"detection": 1.0, "classification": 2.0, "segmentation": 1.5, "morphology": 2.0,
                    "vqa": 1.5, "mlm": 0.5},
        },
        "train": {
            # Sized for under 10 minutes end to end on 2 cores (550 steps at ~0.85 s; 600 took
            # 10 min 26 s from a fresh clone); from scratch, so the backbone trains at the full
            # rate. One task per step: measured against task_schedule "all" (every task every
            # step; 130 steps took 9.6 min), this left more tasks above chance (docs/TUNING.md).
            "num_workers": 2, "cpus_per_worker": 1.0, "max_steps": 550, "warmup_steps": 30,
            "lr": 1e-3, "lr_backbone": 1e-3, "clip_max_norm": 1.0, "schedule": "cosine",
            "checkpoint_every": 275, "keep_checkpoints": 2, "val_every": 550, "val_batches": 8, "log_every": 50,
        },
        "storage": {"run_uri": "s3://unihema/runs"},
    },
    "paper": {
        # The official run set use_dn=True (dn_number 100, noise 0.5 / 0.4) but never built the
        # DN branch; here it is built and on.
        "model": {"decoder": {"dn_enabled": True}},
        # 700K images at batch 12 on 8 GPUs is ~7.3K steps an epoch: 24 epochs, drop at epoch 10.
        "data": {"uri": "s3://unihema/corpus", "synthetic_records": 0},
        "train": {
            "use_gpu": True, "num_workers": 8, "cpus_per_worker": 8.0, "precision": "auto",
            "max_steps": 175_000, "lr_drop_steps": (72_900,), "schedule": "step",
            "checkpoint_every": 5000, "val_every": 5000,
        },
        "storage": {"run_uri": "s3://unihema/runs", "embedded": False},
    },
}
