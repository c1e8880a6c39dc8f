"""Dataset spec files: the docs' spec per format converts a dataset, errors name the key, dry runs write nothing."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from data_prep.cli import main
from data_prep.registry import registry
from data_prep.spec import load_spec, spec_from_dict
from unihema.config.core import ConfigError
from unihema.data.shards import ShardReader

from .helpers import image, mask, write_json

DOCS = Path(__file__).resolve().parents[2] / "docs" / "DATA_PREP.md"


def doc_specs() -> dict[str, str]:
    """The ```yaml blocks of DATA_PREP.md's "Adding your own dataset", by spec name."""
    section = DOCS.read_text().split("## Adding your own dataset", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    return {yaml.safe_load(b)["name"]: b for b in blocks}


def _voc(src: Path) -> None:
    for i, (stem, objects) in enumerate(
        {"a": [("RBC", (5, 5, 20, 20)), ("WBC", (30, 10, 50, 30))], "b": [("Platelets", (2, 2, 10, 10))]}.items()
    ):
        image(src / f"JPEGImages/{stem}.jpg", seed=i)
        objs = "".join(
            f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
            f"<ymax>{b[3]}</ymax></bndbox></object>"
            for n, b in objects
        )
        (src / "Annotations").mkdir(parents=True, exist_ok=True)
        (src / f"Annotations/{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>64</width><height>48</height></size>"
            f"{objs}</annotation>"
        )


def _coco(src: Path) -> None:
    image(src / "images/a.jpg", seed=1)
    write_json(
        src / "annotations.json",
        {
            "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 10]},
                {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 20, 10, 10]},
            ],
            "categories": [{"id": 1, "name": "neutro"}, {"id": 2, "name": "Platelet"}],
        },
    )


def _yolo(src: Path) -> None:
    image(src / "images/a.jpg", seed=1)
    (src / "labels").mkdir(parents=True)
    (src / "labels/a.txt").write_text("0 0.5 0.5 0.2 0.2\n2 0.25 0.25 0.1 0.1\n")
    (src / "classes.txt").write_text("RBC\nWBC\nPlatelets\n")


def _folders(src: Path) -> None:
    image(src / "images/neutro/a.jpg", seed=1)
    image(src / "images/basophil/b.jpg", seed=2)
    image(src / "images/junk/c.jpg", seed=3)


def _masks(src: Path) -> None:
    image(src / "images/a.png", seed=1)
    values = np.zeros((48, 64), np.uint8)
    values[5:20, 5:20], values[25:40, 30:50] = 128, 255
    mask(src / "masks/a.png", values)


def _colour_masks(src: Path) -> None:
    image(src / "images/a.png", seed=1)
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[5:20, 5:20] = (255, 0, 0)
    rgb[25:40, 30:50] = (0, 255, 0)
    mask(src / "masks/a.png", rgb)


def _points(src: Path) -> None:
    for i in range(2):
        image(src / f"images/s{i}.png", size=(100, 80), seed=i)
        (src / "points").mkdir(parents=True, exist_ok=True)
        (src / f"points/s{i}.txt").write_text("20 30 ring\n60  40\trbc\n\n")


def _attributes(src: Path) -> None:
    image(src / "images/a.png", seed=1)
    image(src / "images/b.png", seed=2)
    (src / "attributes.csv").write_text(
        "image,label,nuclear_chromatin,nucleolus\n"
        "a.png,myeloblast,open,prominent\nb.png,lymphocyte,coarse,inconspicuous\n"
    )


def _qa(src: Path) -> None:
    image(src / "images/x.png", seed=1)
    write_json(src / "qa.json", [{"image": "x.png", "question": "What cell is this?", "answer": "neutrophil"}])


def _semantic(rec: dict) -> set:
    import io

    from PIL import Image

    return set(np.unique(np.asarray(Image.open(io.BytesIO(rec["semantic_mask"])))).tolist())


# name in the docs -> (fixture writer, check of {id: record})
FORMATS = {
    "my_voc": (
        _voc,
        lambda r: (
            r["my_voc/a"]["box_labels"] == ["RBC", "WBC"]
            and r["my_voc/b"]["box_labels"] == ["platelet"]
            and r["my_voc/a"]["qa"]
        ),
    ),
    "my_coco": (_coco, lambda r: r["my_coco/a"]["box_labels"] == ["neutrophil", "platelet"]),
    "my_yolo": (_yolo, lambda r: r["my_yolo/images/a"]["box_labels"] == ["RBC", "platelet"]),
    "my_cells": (
        _folders,
        lambda r: (
            {k: v["cell_class"] for k, v in r.items()}
            == {"my_cells/neutro/a": "neutrophil", "my_cells/basophil/b": "basophil"}
        ),
    ),
    "my_masks": (_masks, lambda r: _semantic(r["my_masks/images/a"]) == {0, 1}),
    "my_colour_masks": (_colour_masks, lambda r: _semantic(r["my_colour_masks/images/a"]) == {0, 1}),
    "my_points": (
        _points,
        lambda r: (
            r["my_points/s0"]["box_labels"] == ["plasmodium", "RBC"]
            and r["my_points/s0"]["boxes"] == [[14.0, 24.0, 26.0, 36.0], [54.0, 34.0, 66.0, 46.0]]
        ),
    ),
    "my_attributes": (
        _attributes,
        lambda r: (
            r["my_attributes/a"]["cell_class"] == "myeloblast"
            and r["my_attributes/a"]["attributes"]["nuclear_chromatin"] == "open"
            and "morphology" in r["my_attributes/b"]["tasks"]
        ),
    ),
    "my_qa": (_qa, lambda r: r["my_qa/x"]["qa"] == [{"question": "What cell is this?", "answer": "neutrophil"}]),
}


def test_docs_have_a_spec_per_format():
    """DATA_PREP.md shows one minimal spec for every format these tests convert, each under 30 lines."""
    specs = doc_specs()
    assert sorted(specs) == sorted(FORMATS)
    assert all(len(text.splitlines()) < 30 for text in specs.values())


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_convert_through_the_docs_spec(name, tmp_path):
    """The docs' spec converts a small dataset of its format via `convert --spec`, with nothing lost."""
    write, check = FORMATS[name]
    src, out, spec_file = tmp_path / "src", tmp_path / "out", tmp_path / f"{name}.yaml"
    write(src)
    spec_file.write_text(doc_specs()[name])
    assert (
        main(
            [
                "convert",
                "--spec",
                str(spec_file),
                "--src",
                str(src),
                "--out",
                str(out),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    records = {r["id"]: r for r in ShardReader(str(out))}
    assert sorted(records) and check(records), sorted(records)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["name"] == name and manifest["prep"]["rejected_records"] == 0
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert all(e["action"] == "annotation_ignored" for e in errors), errors  # only `junk: null` of my_cells


def test_every_builtin_entry_round_trips_through_info_yaml(tmp_path, capsys):
    """`info NAME --yaml` of each built-in entry loads back, as a spec file, to an equal spec."""
    for name, spec in registry().items():
        assert main(["info", name, "--yaml"]) == 0
        path = tmp_path / f"{name}.yaml"
        path.write_text(capsys.readouterr().out)
        assert load_spec(path) == spec, name


BASE = {
    "name": "mine",
    "tasks": ["detection"],
    "converter": "points",
    "options": {"per_image": "p/{stem}.txt", "header": False, "columns": {"x": 0, "y": 1, "class": 2}},
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tasks": ["detect"]}, r"tasks\[0\]: invalid value 'detect'; allowed: .*closest: 'detection'"),
        ({"converter": "point"}, r"converter: invalid value 'point'; allowed: .*closest: 'points'"),
        ({"lisence": "MIT"}, r"unknown key 'lisence' in spec; allowed keys: .*did you mean 'license'"),
        ({"options": {**BASE["options"], "box_sise": 3}}, r"unknown key 'options.box_sise'.*closest: 'box_size'"),
        (
            {"options": {**BASE["options"], "box_size": "big"}},
            r"options.box_size: invalid value 'big'; expected a number",
        ),
        (
            {"options": {**BASE["options"], "columns": {"x": 0, "y": 1, "class": "cls"}}},
            r"options.columns.class: invalid value 'cls'; without a header a column is given by its 0-based index",
        ),
        ({"options": {"header": False}}, r"options.table or per_image: one is needed"),
        (
            {"labels": {"Parasitized": "plasmodum"}},
            r"labels.Parasitized: 'plasmodum' is not a detection class.*"
            r"closest: 'plasmodium'",
        ),
        ({"text": {"complete_classes": ["WBCs"]}}, r"text.complete_classes\[0\]: 'WBCs' is not a detection class"),
        ({"split_ratios": [0.8, 0.2]}, r"split_ratios: invalid value \[0.8, 0.2\]; expected three"),
        ({"name": "my/set"}, r"name: invalid value 'my/set'"),
        ({"converter": None}, r"converter: invalid value None"),
    ],
)
def test_spec_errors_name_the_key(change, message):
    """A bad spec is refused before any file is read, naming the key and what is allowed."""
    with pytest.raises(ConfigError, match=message):
        spec_from_dict({k: v for k, v in {**BASE, **change}.items()})


def test_missing_key_and_bad_file(tmp_path, capsys):
    """A missing required key, a missing file and broken YAML exit 2 with the file named."""
    (tmp_path / "a.yaml").write_text("name: x\ntasks: [detection]\n")
    (tmp_path / "b.yaml").write_text("name: [x\n")
    for path, text in [
        ("a.yaml", "missing key 'converter'; a spec needs name, tasks, converter"),
        ("none.yaml", "spec file '{}' does not exist"),
        ("b.yaml", "is not valid YAML"),
    ]:
        assert main(["convert", "--spec", str(tmp_path / path), "--dry-run"]) == 2
        assert text.format(tmp_path / path) in capsys.readouterr().err


def test_masks_colours_must_be_hex():
    """Colour masks take '#rrggbb' keys: anything else names the colour at fault."""
    spec = {
        "name": "c",
        "tasks": ["segmentation"],
        "converter": "masks",
        "options": {"mode": "colours", "values": {"red": "cell"}},
    }
    with pytest.raises(ConfigError, match=r"options.values: colour 'red' is not written as '#rrggbb'"):
        spec_from_dict(spec)


def test_dry_run_reports_and_writes_nothing(tmp_path, capsys):
    """--dry-run reports counts, classes, mapping and problems (closest names for unknown ones) and writes nothing."""
    src = tmp_path / "src"
    _points(src)
    (src / "points/s1.txt").write_text("20 30 ring\n60 40 Platlets\n1 1\n")
    spec_file = tmp_path / "my_points.yaml"
    spec_file.write_text(doc_specs()["my_points"].replace("rbc: RBC", "rbc: RBC, wbc: WBC"))
    before = sorted(p for p in tmp_path.rglob("*"))
    out = tmp_path / "out"
    rc = main(
        [
            "convert",
            "--spec",
            str(spec_file),
            "--src",
            str(src),
            "--out",
            str(out),
            "--dry-run",
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 1 and "a real run would FAIL" in text  # 2 of 6 annotations lost > 5 %
    assert sorted(p for p in tmp_path.rglob("*")) == before and not out.exists()
    assert "would write 2" in text and "detection classes written: {'RBC': 1, 'plasmodium': 2}" in text
    assert "'Platlets' -> UNKNOWN (closest: platelet)  x1" in text and "'ring' -> plasmodium  x2" in text
    assert "label map entries no source class used: 'wbc'" in text
    assert "problems by reason: {'bad_point': 1, 'unknown_class': 1}" in text
    assert "closest: 'platelet'" in text


def test_convert_prints_the_training_command(tmp_path, capsys):
    """After a conversion the CLI prints the pretrain command, with no share of steps for absent tasks."""
    src, out, spec_file = tmp_path / "src", tmp_path / "out", tmp_path / "my_points.yaml"
    _points(src)
    spec_file.write_text(doc_specs()["my_points"])
    assert (
        main(
            [
                "convert",
                "--spec",
                str(spec_file),
                "--src",
                str(src),
                "--out",
                str(out),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        f"train on it: python -m unihema.pretrain data.uri={out} data.mix.classification=0 "
        "data.mix.segmentation=0 data.mix.morphology=0 data.mix.vqa=0 data.mix.mlm=0"
    ) in capsys.readouterr().out


def test_unknown_class_hint_in_errors_and_manifest(tmp_path):
    """A real run lists an unknown class with its closest label-space names; the manifest lists source classes."""
    src, out = tmp_path / "src", tmp_path / "out"
    _points(src)
    (src / "points/s1.txt").write_text("20 30 ring\n60 40 Neutrofil\n")
    spec_file = tmp_path / "my_points.yaml"
    spec_file.write_text(doc_specs()["my_points"])
    assert (
        main(
            [
                "convert",
                "--spec",
                str(spec_file),
                "--src",
                str(src),
                "--out",
                str(out),
                "--workers",
                "1",
                "--no-progress",
                "--max-error-rate",
                "0.5",
            ]
        )
        == 0
    )
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["reasons"][0].split("; ", 1)[1] for e in errors] == [
        "closest: 'neutrophil' (add it under labels: in the spec)"
    ]
    classes = json.loads((out / "manifest.json").read_text())["prep"]["source_classes"]
    assert {"name": "Neutrofil", "to": "?", "count": 1} in classes and {
        "name": "ring",
        "to": "plasmodium",
        "count": 2,
    } in classes


def test_classes_found_in_worker_processes_reach_the_report(tmp_path):
    """The label map counts in each worker; those counts come back with the outcomes, equal to one process's."""
    from data_prep.pipeline import ConvertSettings, convert

    src = tmp_path / "src"
    _points(src)
    spec = spec_from_dict(yaml.safe_load(doc_specs()["my_points"]))
    results = [
        convert(spec, src, None, settings=ConvertSettings(workers=w, progress=False, dry_run=True)) for w in (1, 2)
    ]
    assert (
        results[0].manifest["prep"]["source_classes"]
        == results[1].manifest["prep"]["source_classes"]
        == [{"name": "rbc", "to": "RBC", "count": 2}, {"name": "ring", "to": "plasmodium", "count": 2}]
    )
