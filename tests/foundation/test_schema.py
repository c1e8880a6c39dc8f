"""Record schema: validation reasons, Arrow round trip, shard writer/reader and manifest."""

import json

import pyarrow.parquet as pq
import pytest

from unihema.data.schema import RECORD_SCHEMA, from_arrow_row, reason_code, to_table, validate_record
from unihema.data.shards import ShardReader, ShardWriter, list_shards, read_manifest, write_manifest

from .records import make_record, png


def test_valid_record_has_no_problems():
    """A complete record serving all six tasks validates."""
    assert validate_record(make_record()) == []


@pytest.mark.parametrize(
    "changes, code",
    [
        ({"split": "holdout"}, "bad_split"),
        ({"tasks": []}, "no_task"),
        ({"tasks": ["detection", "counting"]}, "unknown_task"),
        ({"image": b"not an image"}, "undecodable_image"),
        ({"width": 41}, "image_size_mismatch"),
        ({"boxes": [[5.0, 5.0, 5.0, 9.0]]}, "empty_box"),
        ({"boxes": [[5.0, 5.0, 50.0, 9.0]]}, "box_out_of_bounds"),
        ({"boxes": [[5.0, 5.0, float("nan"), 9.0]]}, "bad_box"),
        ({"box_labels": ["dragon"]}, "unknown_class"),
        ({"box_labels": []}, "box_label_mismatch"),
        ({"cell_class": "dragon"}, "unknown_class"),
        ({"attributes": {"nuclear_chromatin": "sparkly"}}, "bad_attribute_value"),
        ({"attributes": {"glow": "yes"}}, "unknown_attribute"),
        ({"masks": [png(10, 10, "L")]}, "mask_size_mismatch"),
        ({"semantic_mask": b"junk"}, "undecodable_mask"),
        ({"qa": [{"question": "?", "answer": ""}]}, "bad_qa"),
        ({"mlm_text": None}, "no_mlm_text"),
        ({"cell_class": None}, "no_cell_class"),
        ({"boxes": [], "box_labels": [], "box_attributes": [], "masks": []}, "no_boxes"),
        ({"license": ""}, "missing_field"),
    ],
)
def test_bad_records_are_rejected_with_reason(changes, code):
    """Each kind of breakage yields a reason with its stable code."""
    problems = validate_record(make_record(**changes))
    assert code in {reason_code(p) for p in problems}, problems


def test_morphology_needs_an_official_attribute():
    """A morphology record whose official attributes are all unannotated is rejected."""
    rec = make_record(attributes={"cell_size": "big"}, box_attributes=[{"cytoplasm": "not_annotated"}])
    assert "no_morphology" in {reason_code(p) for p in validate_record(rec)}


def test_arrow_round_trip_preserves_record():
    """A record survives conversion to the Arrow schema and back."""
    rec = make_record()
    table = to_table([rec])
    assert table.schema.equals(RECORD_SCHEMA, check_metadata=False)
    back = from_arrow_row(table.to_pylist()[0])
    for key in ("id", "tasks", "image", "boxes", "box_labels", "box_attributes", "masks", "attributes", "qa"):
        assert back[key] == rec[key], key


def test_writer_rejects_with_reasons_and_manifest_counts(tmp_path):
    """Bad records land in errors.jsonl with reasons; the manifest counts what was written."""
    uri = str(tmp_path / "ds")
    with ShardWriter(uri, max_records_per_shard=3) as writer:
        for i in range(7):
            assert writer.write(make_record(i, split="val" if i % 4 == 0 else "train"))
        assert not writer.write(make_record(99, boxes=[[0.0, 0.0, 0.0, 0.0]]))
        writer.reject("src-1", "a.xml", ["malformed_xml: unexpected end"])
    manifest = write_manifest(uri, writer.stats)
    assert manifest["records"] == 7 and manifest["counts"]["split"] == {"train": 5, "val": 2}
    assert manifest["counts"]["task"]["vqa"] == 7 and manifest["counts"]["cell_class"] == {"neutrophil": 7}
    assert manifest["rejected"] == {"empty_box": 1, "malformed_xml": 1}
    assert sum(f["records"] for f in manifest["files"]) == 7 and len(manifest["files"]) == 3
    errors = [json.loads(line) for line in (tmp_path / "ds" / "errors.jsonl").read_text().splitlines()]
    assert {e["id"] for e in errors} == {"rec-99", "src-1"}
    assert read_manifest(uri) == manifest
    assert len(list_shards(uri, "val")) == 1


def test_reader_returns_valid_records_and_checks_schema(tmp_path):
    """The reader yields every written record and refuses a shard of another schema."""
    uri = tmp_path / "ds"
    with ShardWriter(str(uri)) as writer:
        for i in range(3):
            writer.write(make_record(i))
    assert [r["id"] for r in ShardReader(str(uri))] == ["rec-0", "rec-1", "rec-2"]
    bad = to_table([make_record(5)]).drop_columns(["qa"])
    pq.write_table(bad, uri / "split=train" / "zz-bad.parquet")
    with pytest.raises(ValueError, match="zz-bad.parquet does not match record schema"):
        list(ShardReader(str(uri)))
