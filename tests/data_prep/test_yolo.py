"""YOLO txt fixtures: data.yaml and classes.txt, both split layouts, polygons and broken lines."""

import yaml

from .helpers import image, reasons, run, spec


def test_yolo_data_yaml_split_folders_and_problems(tmp_path):
    """Boxes, a clipped box, a polygon mask, bad lines and missing/empty label files are all accounted."""
    src = tmp_path / "yolo"
    (src / "data.yaml").parent.mkdir(parents=True)
    (src / "data.yaml").write_text(yaml.safe_dump({"names": {0: "RBC", 1: "WBC", 2: "Platelets"}}))
    image(src / "images/train/a.jpg", size=(100, 50), seed=1)
    image(src / "images/val/b.jpg", seed=2)
    image(src / "images/val/c.jpg", seed=3)
    (src / "labels/train").mkdir(parents=True)
    (src / "labels/val").mkdir(parents=True)
    (src / "labels/train/a.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n5 0.1 0.1 0.1 0.1\nx y z\n1 0.95 0.5 0.2 0.2\n2 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n\n"
    )
    (src / "labels/val/b.txt").write_text("\n")
    ds = spec("yolo", tasks=("detection", "segmentation"), labels={"Platelets": "platelet"})
    result, records, errors = run(ds, src, tmp_path / "out", max_error_rate=1.0)
    a = records["fx/images/train/a"]
    assert a["split"] == "train" and a["box_labels"] == ["RBC", "WBC", "platelet"]
    assert a["boxes"][0] == [40.0, 20.0, 60.0, 30.0] and a["boxes"][1][2] == 100.0
    assert a["boxes"][2] == [10.0, 5.0, 30.0, 15.0]
    assert "segmentation" not in a["tasks"]  # only one of three boxes has a polygon: masks are all or none
    dropped = sorted(e["reasons"][0].split(":")[0] for e in errors if e["action"] == "annotation_dropped")
    assert dropped == ["bad_box", "unknown_class"]
    assert reasons([e for e in errors if e["action"] == "record_rejected"]) == {
        "fx/images/val/b": "empty_annotation",
        "fx/images/val/c": "missing_annotation",
    }
    assert result.manifest["prep"]["fixes"]["box_clipped"] == 1


def test_yolo_classes_txt_split_first_layout_with_polygons(tmp_path):
    """classes.txt names and the <split>/images layout; polygon lines give instance masks."""
    src = tmp_path / "yolo"
    image(src / "train/images/p.png", seed=4)
    (src / "train/labels").mkdir(parents=True)
    (src / "train/labels/p.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n")
    (src / "classes.txt").write_text("Sickle Cells\n")
    ds = spec(
        "yolo", tasks=("detection", "segmentation"), options={"images": "{split}/images", "labels": "{split}/labels"}
    )
    _, records, errors = run(ds, src, tmp_path / "out")
    rec = records["fx/train/images/p"]
    assert rec["split"] == "train" and rec["box_labels"] == ["Sickle Cells"] and len(rec["masks"]) == 1
    assert set(rec["tasks"]) == {"detection", "segmentation"} and errors == []
