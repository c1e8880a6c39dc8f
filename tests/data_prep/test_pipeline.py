"""The run as a whole: error threshold, workers-independent output, re-runs, crashes, validate and the CLI."""

import json

import pytest

from data_prep import audit, cli
from data_prep.converters.voc import VocConverter
from data_prep.pipeline import ConversionFailed

from .helpers import image, run, spec
from .test_voc import BCCD_LABELS, _xml, make_voc


def _good_voc(root, n=24, first="RBC"):
    for i in range(n):
        image(root / f"JPEGImages/im{i:02d}.jpg", seed=i)
        _xml(root / f"Annotations/im{i:02d}.xml", f"im{i:02d}.jpg", [(first, (1, 1, 20, 20)), ("WBC", (30, 5, 60, 40))])
    return root


def test_error_threshold_fails_with_reasons_and_no_manifest(tmp_path):
    """Past the error rate the run fails naming the top reasons; errors.jsonl is written, no manifest is left."""
    src = make_voc(tmp_path / "voc")
    run(spec("voc", labels=BCCD_LABELS), src, tmp_path / "out", max_error_rate=1.0)
    assert (tmp_path / "out/manifest.json").exists()
    with pytest.raises(
        ConversionFailed,
        match=r"7 of 9 source records were rejected .*max error rate 50.0%.*"
        r"malformed_annotation",
    ):
        run(spec("voc", labels=BCCD_LABELS), src, tmp_path / "out", max_error_rate=0.5)
    assert not (tmp_path / "out/manifest.json").exists()
    assert len((tmp_path / "out/errors.jsonl").read_text().splitlines()) == 11  # 7 records, 3 boxes, 1 split
    assert not audit.validate(str(tmp_path / "out")).ok


def test_annotation_error_rate_also_fails(tmp_path):
    """Dropping too many boxes fails the run even when every record is written."""
    src = _good_voc(tmp_path / "voc", n=4, first="Alien")
    with pytest.raises(ConversionFailed, match=r"4 of 8 annotations were dropped .* unknown_class x4"):
        run(spec("voc"), src, tmp_path / "out")


def test_parallel_output_equals_serial_and_reruns_skip(tmp_path):
    """Two workers write byte-identical shards to one worker; a re-run skips them; a re-shard prunes stale ones."""
    src = _good_voc(tmp_path / "voc")
    ds = spec("voc", labels=BCCD_LABELS)
    serial, _, _ = run(ds, src, tmp_path / "one", target_shard_bytes=20_000)
    parallel, records, _ = run(ds, src, tmp_path / "two", workers=2, target_shard_bytes=20_000)
    assert len(serial.manifest["files"]) > 3
    assert [f["sha256"] for f in serial.manifest["files"]] == [f["sha256"] for f in parallel.manifest["files"]]
    again, _, _ = run(ds, src, tmp_path / "one", target_shard_bytes=20_000)
    assert again.uploaded == [] and len(again.skipped) == len(serial.manifest["files"])
    bigger, _, _ = run(ds, src, tmp_path / "one", target_shard_bytes=1 << 30)
    assert bigger.pruned and audit.validate(str(tmp_path / "one")).ok
    assert len(records) == 24


def test_converter_crash_becomes_a_listed_rejection(tmp_path, monkeypatch):
    """An exception inside a converter rejects that record with converter_error and the run goes on."""
    src = _good_voc(tmp_path / "voc", n=30)
    original = VocConverter.convert

    def flaky(self, unit, ctx):
        if unit[0].endswith("im07.xml"):
            raise RuntimeError("boom")
        return original(self, unit, ctx)

    monkeypatch.setattr(VocConverter, "convert", flaky)
    result, records, errors = run(spec("voc", labels=BCCD_LABELS), src, tmp_path / "out")
    assert len(records) == 29 and errors[0]["reasons"] == ["converter_error: RuntimeError: boom"]


def test_validate_catches_tampering_and_cli_round_trip(tmp_path, capsys):
    """CLI convert/validate/stats work on a local URI; validate flags a changed shard and a stray one."""
    src = _good_voc(tmp_path / "voc", n=6)
    out = tmp_path / "out"
    assert (
        cli.main(
            [
                "convert",
                "bccd",
                "--src",
                str(src),
                "--out",
                str(out),
                "--workers",
                "1",
                "--no-progress",
                "--option",
                "split_lists=no_such_folder",
            ]
        )
        == 0
    )
    assert "6 of 6 source records written" in capsys.readouterr().out
    assert cli.main(["validate", str(out), "--no-progress"]) == 0
    assert cli.main(["stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert stats["records"] == 6 and stats["prep"]["source_records"] == 6
    shard = next(out.rglob("*.parquet"))
    (shard.parent / "stray-00000.parquet").write_bytes(shard.read_bytes())
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    report = audit.validate(str(out))
    assert any("sha256 differs" in p for p in report.problems) and any("stray" in p for p in report.problems)
    assert cli.main(["validate", str(out), "--no-progress"]) == 1


def test_identical_images_share_a_hash_split_and_upstream_leaks_are_reported(tmp_path):
    """Identical pixels get the same hash split; identical images in different upstream splits are reported."""
    src = tmp_path / "cells"
    for i in range(3):
        image(src / f"plain/basophil/copy{i}.png", seed=7)
    image(src / "split/Train/basophil/a.png", seed=8)
    image(src / "split/Test/basophil/b.png", seed=8)
    ds = spec("class_folders", tasks=("classification",), options={"root": "plain"})
    result, records, _ = run(ds, src, tmp_path / "plain")
    assert len({r["split"] for r in records.values()}) == 1
    assert result.manifest["prep"]["duplicates"]["groups"] == 1
    ds = spec("class_folders", tasks=("classification",), options={"root": "split"})
    result, _, _ = run(ds, src, tmp_path / "split")
    dup = result.manifest["prep"]["duplicates"]
    assert dup["cross_split_groups"] == 1 and "fx/Train/basophil/a (train)" in dup["examples"][0]
