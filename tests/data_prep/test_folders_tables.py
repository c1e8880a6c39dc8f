"""Class folders joined to WBCAtt-style CSV rows, and JSON attribute tables that drive records."""

import csv

from .helpers import image, reasons, run, spec, truncated_jpeg, write_json

WBCATT_COLUMNS = [
    "img_name",
    "label",
    "cell_size",
    "cell_shape",
    "nucleus_shape",
    "nuclear_cytoplasmic_ratio",
    "chromatin_density",
    "cytoplasm_vacuole",
    "cytoplasm_texture",
    "cytoplasm_colour",
    "granule_type",
    "granule_colour",
    "granularity",
    "path",
]
GOOD = [
    "small",
    "round",
    "segmented-bilobed",
    "high",
    "loosely",
    "yes",
    "clear",
    "purple blue",
    "coarse",
    "purple",
    "yes",
]


def _csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(WBCATT_COLUMNS)
        for name, label, attrs in rows:
            w.writerow([name, label, *attrs, f"PBC_dataset_normal_DIB/{label.lower()}/{name}"])


def make_pbc(root):
    image(root / "images/basophil/BA_1.jpg", seed=1)
    image(root / "images/neutrophil/NE_1.jpg", seed=2)
    image(root / "images/ig/IG_1.jpg", seed=3)
    image(root / "images/lymphocyte/LY_1.jpg", seed=4)
    truncated_jpeg(root / "images/platelet/PLT_1.jpg")
    image(root / "images/mystery/X_1.jpg", seed=5)
    _csv(
        root / "wbcatt/train.csv",
        [
            ("BA_1.jpg", "Basophil", GOOD),
            ("EO_9.jpg", "Eosinophil", GOOD),
            ("LY_1.jpg", "Lymphocyte", GOOD[:3] + ["huge"] + GOOD[4:]),
        ],
    )
    _csv(root / "wbcatt/val.csv", [("NE_1.jpg", "Basophil", GOOD), ("BA_1.jpg", "Basophil", GOOD)])
    return root


def test_class_folders_with_wbcatt_join(tmp_path):
    """Rows join by file name, bring split and both attribute vocabularies; conflicts and strays are listed."""
    src = make_pbc(tmp_path / "pbc")
    ds = spec(
        "class_folders",
        tasks=("classification", "morphology", "vqa", "mlm"),
        labels={"ig": "immature granulocyte"},
        options={"tables": {"train": "wbcatt/train.csv", "val": "wbcatt/val.csv"}},
    )
    result, records, errors = run(ds, src, tmp_path / "out", max_error_rate=1.0)
    assert sorted(records) == ["fx/basophil/BA_1", "fx/ig/IG_1", "fx/lymphocyte/LY_1"]
    ba = records["fx/basophil/BA_1"]
    assert ba["split"] == "train" and ba["cell_class"] == "basophil"
    assert ba["attributes"]["nucleus_shape"] == "segmented-bilobed"
    assert {
        k: ba["attributes"][k]
        for k in (
            "nuclear_chromatin",
            "nuclear_shape",
            "cytoplasm",
            "cytoplasmic_vacuoles",
            "cytoplasmic_basophilia",
            "nucleolus",
        )
    } == {
        "nuclear_chromatin": "open",
        "nuclear_shape": "irregular",
        "cytoplasm": "scanty",
        "cytoplasmic_vacuoles": "prominent",
        "cytoplasmic_basophilia": "moderate",
        "nucleolus": "not_annotated",
    }
    assert ba["tasks"] == ["classification", "morphology", "vqa", "mlm"] and "bilobed" in ba["mlm_text"]
    assert (
        records["fx/lymphocyte/LY_1"]["attributes"] == {} and "morphology" not in records["fx/lymphocyte/LY_1"]["tasks"]
    )
    assert records["fx/ig/IG_1"]["cell_class"] == "immature granulocyte"
    actions = {(e["id"], e["reasons"][0].split(":")[0]): e["action"] for e in errors}
    assert actions == {
        ("fx/BA_1.jpg", "duplicate_row"): "row_ignored",
        ("fx/EO_9.jpg", "missing_image"): "record_rejected",
        ("fx/lymphocyte/LY_1", "bad_attribute_value"): "attributes_dropped",
        ("fx/neutrophil/NE_1", "label_conflict"): "record_rejected",
        ("fx/platelet/PLT_1", "corrupt_image"): "record_rejected",
        ("fx/mystery/X_1", "unknown_class"): "record_rejected",
    }
    assert result.manifest["prep"]["fixes"] == {"split_by_hash": 1, "split_by_upstream": 2}


def test_split_folders_and_ignored_class(tmp_path):
    """Train/Test folders above class folders give splits; a class mapped to None is left out and listed."""
    src = tmp_path / "raabin"
    image(src / "Train/Neutrophil/a.jpg", seed=1)
    image(src / "TestA/Basophil/b.jpg", seed=2)
    image(src / "TestA/mixt/c.jpg", seed=3)
    ds = spec("class_folders", tasks=("classification",), labels={"mixt": None}, options={"root": "."})
    result, records, errors = run(ds, src, tmp_path / "out")
    assert {r["id"]: (r["split"], r["cell_class"]) for r in records.values()} == {
        "fx/Train/Neutrophil/a": ("train", "neutrophil"),
        "fx/TestA/Basophil/b": ("test", "basophil"),
    }
    assert [(e["id"], e["action"]) for e in errors] == [("fx/TestA/mixt/c", "annotation_ignored")]
    assert result.manifest["prep"]["source_records"] == 2


def test_attribute_table_json_official_vocabulary(tmp_path):
    """A JSON table drives records: official attribute names or 0/1 values; bad rows and missing images listed."""
    src = tmp_path / "attri"
    image(src / "images/sub/a.png", seed=1)
    image(src / "images/b.png", seed=2)
    write_json(
        src / "attrs.json",
        [
            {"image": "a.png", "label": "myeloblast", "nuclear_chromatin": "open", "nucleolus": 1, "cytoplasm": "4"},
            {"image": "b.png", "label": "blast", "nuclear_shape": "wavy"},
            {"image": "c.png", "label": "blast"},
            {"label": "blast"},
        ],
    )
    ds = spec("attribute_table", tasks=("classification", "morphology", "vqa"), options={"tables": {"": "attrs.json"}})
    _, records, errors = run(ds, src, tmp_path / "out", max_error_rate=1.0)
    a = records["fx/sub/a"]
    assert a["attributes"] == {"nuclear_chromatin": "open", "nucleolus": "prominent", "cytoplasm": "not_annotated"}
    assert "morphology" in a["tasks"]
    assert {"question": "Is the nucleolus inconspicuous or prominent?", "answer": "prominent"} in a["qa"] or {
        "question": "How visible is the nucleolus?",
        "answer": "prominent",
    } in a["qa"]
    assert records["fx/b"]["attributes"] == {} and records["fx/b"]["tasks"] == ["classification", "vqa"]
    assert reasons(errors) == {
        "fx/b": "bad_attribute_value",
        "fx/c.png": "missing_image",
        "fx/attrs.json#4": "malformed_annotation",
    }


def test_malformed_csv_table_is_reported(tmp_path):
    """A CSV with a ragged row is rejected as a whole and listed; images still convert without attributes."""
    src = tmp_path / "pbc"
    image(src / "images/basophil/BA_1.jpg", seed=1)
    (src / "t.csv").write_text("img_name,label,cell_size\nBA_1.jpg,Basophil\n")
    ds = spec("class_folders", tasks=("classification",), options={"tables": {"train": "t.csv"}})
    result, records, errors = run(ds, src, tmp_path / "out", max_error_rate=1.0)
    assert list(records) == ["fx/basophil/BA_1"]
    assert reasons(errors) == {"fx/t.csv": "malformed_annotation"}
