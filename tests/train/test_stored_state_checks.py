"""What is already in storage must match the config: the synthetic dataset's generator
settings, the tasks a converted dataset holds, and the model inside a run's checkpoints
before Ray Train resumes it."""

from __future__ import annotations

import pytest

from unihema.config import StorageConfig, load_config
from unihema.config.core import dump_yaml
from unihema.data.synthetic.scenes import FOV_WIDTH_UM
from unihema.train.launch import (
    IncompatibleStateError,
    check_resumable,
    check_synthetic_manifest,
    check_task_records,
    ensure_dataset,
)

STORAGE = StorageConfig()


def _cfg(tmp_path, *overrides: str):
    return load_config(
        "tiny",
        overrides=[
            f"data.uri={tmp_path / 'syn'}",
            "data.synthetic_records=6",
            "data.synthetic_image_size=64",
            *overrides,
        ],
    )


def test_config_default_field_width_is_the_generators():
    assert load_config("tiny").data.synthetic_fov_width_um == pytest.approx(FOV_WIDTH_UM)


def test_synthetic_dataset_made_with_other_settings_is_refused(tmp_path):
    """ensure_dataset generates once, reuses a matching dataset, and names what differs otherwise."""
    cfg = _cfg(tmp_path, "data.synthetic_fov_width_um=40")
    made = ensure_dataset(cfg, STORAGE)
    assert made["generator"]["fov_width_um"] == 40 and made["records"] == 6
    assert ensure_dataset(cfg, STORAGE)["created"] == made["created"]
    with pytest.raises(IncompatibleStateError) as err:
        ensure_dataset(_cfg(tmp_path, "data.synthetic_fov_width_um=50"), STORAGE)
    assert str(tmp_path / "syn") in str(err.value) and "fov_width_um: 40" in str(err.value)
    assert "50" in str(err.value)
    with pytest.raises(IncompatibleStateError, match="n: 6 there, 7 asked"):
        ensure_dataset(_cfg(tmp_path, "data.synthetic_fov_width_um=40", "data.synthetic_records=7"), STORAGE)


def test_older_manifests_and_converted_data_pass(tmp_path):
    """A manifest from before the width setting means the default width; real data is not checked."""
    cfg = _cfg(tmp_path)
    old = {"generator": {"name": "unihema.data.synthetic", "n": 6, "seed": 0, "image_size": 64}}
    check_synthetic_manifest(old, cfg)
    with pytest.raises(IncompatibleStateError, match="fov_width_um"):
        check_synthetic_manifest(old, _cfg(tmp_path, "data.synthetic_fov_width_um=30"))
    check_synthetic_manifest({"generator": {"name": "data_prep.convert"}}, cfg)
    check_synthetic_manifest(
        old | {"generator": old["generator"] | {"n": 99}}, _cfg(tmp_path, "data.synthetic_records=0")
    )


def test_resuming_a_run_with_another_model_is_refused(tmp_path):
    """A run folder with checkpoints and a config whose model differs: a clear error, not a state-dict crash."""
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    saved = load_config("tiny")
    (run / "config.yaml").write_text(dump_yaml(saved))
    # No checkpoint yet: nothing to compare with.
    check_resumable(str(run), load_config("tiny", overrides=["model.decoder.num_queries=20"]), STORAGE)
    (run / "checkpoint_2026-11-27_10-00-00.000000").mkdir()
    check_resumable(str(run), saved, STORAGE)
    check_resumable(str(run), load_config("tiny", overrides=["train.max_steps=12", "train.lr=3e-4"]), STORAGE)
    with pytest.raises(IncompatibleStateError) as err:
        check_resumable(str(run), load_config("tiny", overrides=["model.decoder.num_queries=20"]), STORAGE)
    message = str(err.value)
    assert str(run) in message and "model.decoder.num_queries: 16 there, 20 now" in message
    assert "run_name=" in message


# What data_prep writes for a BCCD-like dataset: detection and field text, no single cells.
FIELDS_ONLY = {
    "records": 12,
    "counts": {
        "split": {"train": 8, "val": 4},
        "split_task": {"train/detection": 8, "train/vqa": 8, "train/mlm": 8, "val/detection": 4, "val/vqa": 4},
    },
}


def test_a_mix_that_trains_tasks_the_dataset_lacks_is_refused(tmp_path):
    """The error names the absent tasks, what the dataset holds and the overrides that train on it."""
    cfg = load_config("tiny", overrides=[f"data.uri={tmp_path}"])
    with pytest.raises(IncompatibleStateError) as err:
        check_task_records(FIELDS_ONLY, cfg)
    message = str(err.value)
    assert "no train records for classification, segmentation, morphology" in message
    assert "detection (8), mlm (8), vqa (8)" in message
    assert "data.mix.classification=0 data.mix.segmentation=0 data.mix.morphology=0," in message
    fields = load_config(
        "tiny",
        overrides=[
            f"data.uri={tmp_path}",
            "data.mix.classification=0",
            "data.mix.segmentation=0",
            "data.mix.morphology=0",
        ],
    )
    check_task_records(FIELDS_ONLY, fields)
    check_task_records({"counts": {"split": {"train": 8}}}, cfg)  # older manifests: nothing to check against
    only_cells = load_config(
        "tiny",
        overrides=[
            f"data.uri={tmp_path}",
            *(f"data.mix.{t}=0" for t in ("detection", "segmentation", "morphology", "vqa", "mlm")),
        ],
    )
    with pytest.raises(IncompatibleStateError, match="and a weight > 0 for one of its tasks"):
        check_task_records(FIELDS_ONLY, only_cells)


def test_pretrain_stops_before_ray_on_a_dataset_without_the_mixed_tasks(tmp_path, capsys):
    """``python -m unihema.pretrain`` on such a dataset exits 1 with the error, before Ray or the model start."""
    import json

    from unihema.pretrain import main

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text(json.dumps(FIELDS_ONLY))
    code = main(
        [
            "--preset",
            "tiny",
            f"data.uri={tmp_path / 'data'}",
            f"storage.run_uri={tmp_path / 'runs'}",
            "storage.embedded=false",
        ]
    )
    assert code == 1
    assert "no train records for classification, segmentation, morphology" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
