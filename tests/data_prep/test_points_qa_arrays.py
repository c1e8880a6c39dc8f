"""Point tables (boxes and crops), QA JSON/CSV, BBBC041 JSON and MedMNIST-style archives."""

import numpy as np

from .helpers import image, reasons, run, spec, write_json


def test_points_to_boxes_and_crops(tmp_path):
    """Points become fixed-size boxes, or crops that share their source image's split; bad rows are listed."""
    src = tmp_path / "pts"
    image(src / "images/a.jpg", size=(100, 80), seed=1)
    image(src / "images/b.jpg", seed=2)
    (src / "points.csv").write_text(
        "image,x,y,class\na.jpg,50,40,Parasitized\na.jpg,5,5,White_Blood_Cell\n"
        "a.jpg,oops,3,Parasitized\nmissing.jpg,1,1,Parasitized\n"
    )
    labels = {"Parasitized": "plasmodium", "White_Blood_Cell": "WBC"}
    ds = spec(
        "points", labels=labels, options={"table": "points.csv", "box_size": 20, "box_sizes": {"White_Blood_Cell": 30}}
    )
    _, records, errors = run(ds, src, tmp_path / "out", max_error_rate=1.0)
    a = records["fx/a"]
    assert a["boxes"] == [[40.0, 30.0, 60.0, 50.0], [0.0, 0.0, 20.0, 20.0]] and a["box_labels"] == ["plasmodium", "WBC"]
    assert reasons(errors) == {"fx/a": "bad_point", "fx/b": "empty_annotation", "fx/missing.jpg": "missing_image"}

    crops = spec(
        "points",
        tasks=("classification",),
        labels={"Parasitized": "plasmodium", "White_Blood_Cell": "wbc"},
        options={"table": "points.csv", "mode": "crops", "crop_size": 32},
    )
    _, records, _ = run(crops, src, tmp_path / "crops", max_error_rate=1.0)
    assert sorted(records) == ["fx/a/point0", "fx/a/point1"]
    assert (records["fx/a/point0"]["width"], records["fx/a/point1"]["width"]) == (32, 21)
    assert records["fx/a/point0"]["split"] == records["fx/a/point1"]["split"]


def test_points_per_image_headerless_files(tmp_path):
    """Per-image text files without a header are read by column index, skipping a first summary line."""
    src = tmp_path / "nlm"
    image(src / "images/s1.jpg", size=(100, 80), seed=1)
    (src / "GT").mkdir()
    (src / "GT/s1.txt").write_text("2,80,100\n0,Parasitized,Point,30,30\n1,White_Blood_Cell,Point,60,40\n")
    ds = spec(
        "points",
        labels={"Parasitized": "plasmodium", "White_Blood_Cell": "WBC"},
        options={
            "per_image": "GT/{stem}.txt",
            "header": False,
            "skip_rows": 1,
            "columns": {"class": 1, "x": 3, "y": 4},
            "box_size": 10,
        },
    )
    _, records, errors = run(ds, src, tmp_path / "out")
    assert records["fx/s1"]["boxes"] == [[25.0, 25.0, 35.0, 35.0], [55.0, 35.0, 65.0, 45.0]] and errors == []


def test_qa_json_and_csv(tmp_path):
    """QA pairs group per image; empty answers are dropped, unknown images and pair-less images reported."""
    src = tmp_path / "qa"
    image(src / "images/x.png", seed=1)
    image(src / "images/y.png", seed=2)
    write_json(
        src / "qa.json",
        [
            {"image": "x.png", "question": "What cell is this?", "answer": "neutrophil", "split": "val"},
            {
                "image": "x.png",
                "qa": [{"question": "Is it round?", "answer": "yes"}, {"question": "Colour?", "answer": ""}],
            },
            {"image": "y.png", "question": "", "answer": "no"},
            {"image": "nope.png", "question": "Q?", "answer": "A"},
        ],
    )
    ds = spec("qa", tasks=("vqa",), text={"generate": False})
    _, records, errors = run(ds, src, tmp_path / "out", max_error_rate=1.0)
    assert records["fx/x"]["qa"] == [
        {"question": "What cell is this?", "answer": "neutrophil"},
        {"question": "Is it round?", "answer": "yes"},
    ]
    assert records["fx/x"]["split"] == "val"
    assert sorted((e["id"], e["reasons"][0].split(":")[0], e["action"]) for e in errors) == [
        ("fx/nope.png", "missing_image", "record_rejected"),
        ("fx/x", "bad_qa", "annotation_dropped"),
        ("fx/y", "bad_qa", "annotation_dropped"),
        ("fx/y", "no_qa", "record_rejected"),
    ]
    (src / "qa.csv").write_text("image,question,answer,cell\ny.png,What is it?,platelet,platelet\n")
    ds = spec(
        "qa", tasks=("vqa", "classification"), text={"generate": False}, options={"qa": "qa.csv", "class_key": "cell"}
    )
    _, records, _ = run(ds, src, tmp_path / "out2")
    assert records["fx/y"]["cell_class"] == "platelet" and records["fx/y"]["tasks"] == ["vqa", "classification"]


def test_bbbc041_json(tmp_path):
    """BBBC041's row/column boxes map to xyxy; a malformed entry is reported."""
    src = tmp_path / "bbbc"
    image(src / "images/m1.png", size=(100, 80), seed=1)
    box = {"minimum": {"r": 10, "c": 20}, "maximum": {"r": 30, "c": 50}}
    write_json(
        src / "training.json",
        [
            {
                "image": {"pathname": "/images/m1.png", "shape": {"r": 80, "c": 100}},
                "objects": [
                    {"bounding_box": box, "category": "red blood cell"},
                    {"bounding_box": box, "category": "ring"},
                ],
            },
            {"objects": []},
        ],
    )
    write_json(src / "test.json", [])
    ds = spec("bbbc041_json", labels={"red blood cell": "RBC"})
    _, records, errors = run(ds, src, tmp_path / "out", max_error_rate=1.0)
    rec = records["fx/images/m1"]
    assert rec["boxes"] == [[20.0, 10.0, 50.0, 30.0]] * 2 and rec["box_labels"] == ["RBC", "ring"]
    assert rec["split"] == "train" and reasons(errors) == {"fx/training.json#1": "malformed_annotation"}


def test_npz_arrays(tmp_path):
    """Archive rows become PNG records with upstream splits; an out-of-range label index is reported."""
    src = tmp_path / "mnist"
    src.mkdir()
    rng = np.random.default_rng(0)
    np.savez(
        src / "blood.npz",
        train_images=rng.integers(0, 255, (3, 28, 28, 3), np.uint8),
        train_labels=np.array([[0], [3], [9]]),
        test_images=rng.integers(0, 255, (1, 28, 28, 3), np.uint8),
        test_labels=np.array([[7]]),
    )
    ds = spec(
        "npz_arrays",
        tasks=("classification",),
        options={
            "file": "blood.npz",
            "class_names": [
                "basophil",
                "eosinophil",
                "erythroblast",
                "immature granulocyte",
                "lymphocyte",
                "monocyte",
                "neutrophil",
                "platelet",
            ],
        },
    )
    _, records, errors = run(ds, src, tmp_path / "out", max_error_rate=1.0)
    assert {k: (r["split"], r["cell_class"]) for k, r in records.items()} == {
        "fx/train/000000": ("train", "basophil"),
        "fx/train/000001": ("train", "immature granulocyte"),
        "fx/test/000000": ("test", "platelet"),
    }
    assert reasons(errors) == {"fx/train/000002": "unknown_class"}
