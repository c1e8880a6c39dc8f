"""The real BCCD (VOC) and PBC + WBCAtt data from ../shared/datasets, converted onto the embedded S3 server."""

import json
import shutil

import pytest

from data_prep import audit, cli
from data_prep.pipeline import ConvertSettings, convert
from data_prep.registry import get
from unihema.data.shards import ShardReader

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def test_bccd_to_s3_counts_and_error_report(shared_datasets, embedded_s3):
    """364 BCCD images become 364 records in the upstream splits; the two zero-area boxes are listed."""
    cfg = embedded_s3.storage_config()
    uri = "s3://unihema/real/bccd"
    result = convert(get("bccd"), shared_datasets / "bccd", uri, cfg, ConvertSettings(workers=2, progress=False))
    m = result.manifest
    assert m["records"] == 364 and m["counts"]["split"] == {"train": 205, "val": 87, "test": 72}
    assert m["counts"]["detection_class"] == {"RBC": 4153, "WBC": 372, "platelet": 361}
    assert m["prep"]["source_records"] == 364 and m["prep"]["annotations"] == 4888
    errors = [
        json.loads(line)
        for line in embedded_s3.client().get_object(Bucket="unihema", Key="real/bccd/errors.jsonl")["Body"].iter_lines()
    ]
    assert [(e["origin"], e["reasons"][0].split(":")[0], e["action"]) for e in errors] == [
        ("Annotations/BloodImage_00338.xml", "empty_box", "annotation_dropped"),
        ("Annotations/BloodImage_00343.xml", "empty_box", "annotation_dropped"),
    ]
    rerun = convert(get("bccd"), shared_datasets / "bccd", uri, cfg, ConvertSettings(workers=2, progress=False))
    assert rerun.uploaded == [] and len(rerun.skipped) == len(m["files"])
    assert audit.validate(uri, cfg).ok


def test_pbc_wbcatt_to_s3_through_the_cli(shared_datasets, embedded_s3, monkeypatch, capsys):
    """800 PBC images become classification/VQA/MLM records, 500 with both attribute vocabularies (AWS env only)."""
    for key, value in embedded_s3.env().items():
        monkeypatch.setenv(key, value)
    uri = "s3://unihema/real/pbc_wbcatt"
    assert (
        cli.main(
            [
                "convert",
                "pbc_wbcatt",
                "--src",
                str(shared_datasets / "pbc_wbcatt"),
                "--out",
                uri,
                "--workers",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert cli.main(["validate", uri, "--no-progress"]) == 0
    assert cli.main(["stats", uri, "--json"]) == 0
    out = capsys.readouterr().out
    assert embedded_s3.secret_key not in out
    m = json.loads(out[out.index("{\n") :])
    assert m["records"] == 800 and m["prep"]["rejected_records"] == 0 and m["prep"]["error_entries"] == 0
    assert m["counts"]["task"] == {"classification": 800, "mlm": 800, "morphology": 500, "vqa": 800}
    assert set(m["counts"]["cell_class"].values()) == {100} and "immature granulocyte" in m["counts"]["cell_class"]
    # WBCAtt's 400 train rows: ~10% moved to test by content hash (WBCAtt has no test list here).
    split_task = m["counts"]["split_task"]
    assert split_task["train/morphology"] + split_task["test/morphology"] == 400
    assert 20 <= split_task["test/morphology"] <= 60 and split_task["val/morphology"] == 100
    assert m["prep"]["fixes"]["split_by_test_from_train"] == split_task["test/morphology"]
    rec = next(r for r in ShardReader(uri, "val", embedded_s3.storage_config()) if r["attributes"])
    assert len(rec["attributes"]) == 17 and rec["attributes"]["nucleolus"] == "not_annotated"
    # Every class reaches test, and records are not in class-folder order in the shards.
    test_classes = {r["cell_class"] for r in ShardReader(uri, "test", embedded_s3.storage_config())}
    assert len(test_classes) == 8
    first = [r["cell_class"] for r, _ in zip(ShardReader(uri, "train", embedded_s3.storage_config()), range(24))]
    assert len(set(first)) >= 5, first


def test_identical_images_across_datasets_are_reported(shared_datasets, embedded_s3, tmp_path):
    """Three PBC images copied into another dataset are found by content hash across the two URIs."""
    cfg = embedded_s3.storage_config()
    uri = "s3://unihema/real/pbc_for_dedup"
    convert(get("pbc_wbcatt"), shared_datasets / "pbc_wbcatt", uri, cfg, ConvertSettings(workers=2, progress=False))
    copies = tmp_path / "copy" / "PBC_dataset_normal_DIB" / "basophil"
    copies.mkdir(parents=True)
    for path in sorted((shared_datasets / "pbc_wbcatt" / "images" / "basophil").iterdir())[:3]:
        shutil.copy(path, copies / path.name)
    convert(get("pbc"), tmp_path / "copy", str(tmp_path / "out"), cfg, ConvertSettings(workers=1, progress=False))
    report = audit.dedup([uri, str(tmp_path / "out")], cfg)
    assert report["images"] == 803 and report["groups_across_datasets"] == 3
    assert all(len(group) == 2 for group in report["examples"])
