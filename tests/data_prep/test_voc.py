"""Pascal VOC fixtures written in the upstream layout, including every kind of broken file."""

import json

from .helpers import image, reasons, run, spec, truncated_jpeg

BCCD_LABELS = {"RBC": "RBC", "WBC": "WBC", "Platelets": "platelet"}


def _xml(path, filename, objects, size=(64, 48)):
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height></size>{objs}</annotation>"
    )


def make_voc(root):
    ann, img = root / "Annotations", root / "JPEGImages"
    for i, stem in enumerate("abcdefgh"):
        if stem not in "fg":
            image(img / f"{stem}.jpg", seed=i)
    _xml(ann / "a.xml", "a.jpg", [("RBC", (10, 10, 30, 30)), (" WBC \n", (50, 20, 70, 60)), ("RBC", (5, 5, 5, 5))])
    _xml(ann / "b.xml", "b.jpg", [("Alien", (1, 1, 10, 10)), ("Platelets", (2, 2, 12, 12))])
    (ann / "c.xml").write_text("<annotation><object>")
    (ann / "d.xml").write_text("")
    _xml(ann / "e.xml", "e.jpg", [])
    _xml(ann / "f.xml", "f.jpg", [("RBC", (1, 1, 5, 5))])
    truncated_jpeg(img / "g.jpg")
    _xml(ann / "g.xml", "g.jpg", [("RBC", (1, 1, 5, 5))])
    _xml(ann / "h.xml", "h.jpg", [("RBC", (100, 100, 120, 120))])
    image(img / "z.jpg", seed=99)
    sets = root / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("a\nb\n")
    (sets / "test.txt").write_text("b\n")
    (sets / "trainval.txt").write_text("a\nb\n")
    return root


def test_voc_every_source_record_written_or_listed(tmp_path):
    """Good, clipped, zero-area, unknown-class, malformed, empty, missing and truncated inputs are all accounted."""
    src = make_voc(tmp_path / "voc")
    result, records, errors = run(spec("voc", labels=BCCD_LABELS), src, tmp_path / "out", max_error_rate=1.0)
    assert sorted(records) == ["fx/a", "fx/b"]
    a, b = records["fx/a"], records["fx/b"]
    assert a["box_labels"] == ["RBC", "WBC"] and a["boxes"][1] == [50.0, 20.0, 64.0, 48.0]
    assert b["box_labels"] == ["platelet"]
    assert (a["split"], b["split"]) == ("train", "test")  # b is in train and test lists: the held-out one wins
    by_id = {}
    for e in errors:
        by_id.setdefault(e["id"], []).append((e["reasons"][0].split(":")[0], e["action"]))
    assert by_id["fx/a"] == [("empty_box", "annotation_dropped")]
    assert ("unknown_class", "annotation_dropped") in by_id["fx/b"]
    assert reasons([e for e in errors if e["action"] == "record_rejected"]) == {
        "fx/c": "malformed_annotation",
        "fx/d": "empty_annotation",
        "fx/e": "empty_annotation",
        "fx/f": "missing_image",
        "fx/g": "corrupt_image",
        "fx/h": "no_boxes",
        "fx/z": "missing_annotation",
    }
    prep = result.manifest["prep"]
    assert (prep["source_records"], prep["written"], prep["rejected_records"]) == (9, 2, 7)
    assert prep["fixes"]["box_clipped"] == 1 and prep["dropped_annotations"] == 3
    assert result.manifest["rejected"]["malformed_annotation"] == 1
    assert next(e for e in errors if e["id"] == "fx/a")["origin"] == "Annotations/a.xml"


def test_voc_text_counts_only_complete_classes(tmp_path):
    """Field-of-view QA asks counts only for classes the registry declares completely annotated."""
    src = make_voc(tmp_path / "voc")
    _, records, _ = run(
        spec("voc", tasks=("detection", "vqa", "mlm"), labels=BCCD_LABELS, text={"complete_classes": ("WBC",)}),
        src,
        tmp_path / "out",
        max_error_rate=1.0,
    )
    qa = {p["question"]: p["answer"] for p in records["fx/a"]["qa"]}
    counts = {q: a for q, a in qa.items() if q.startswith("How many")}
    assert list(counts.values()) == ["1"] and "white blood cells" in next(iter(counts))
    assert "red blood cells" in records["fx/a"]["mlm_text"] and "1 white blood cell" in records["fx/a"]["mlm_text"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["task"]["vqa"] == 2
