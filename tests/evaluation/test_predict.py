"""python -m unihema.predict on synthetic images: every image mode converted, bad files refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from unihema.errors import UserInputError
from unihema.evaluation.images import read_image_file
from unihema.evaluation.inference import fill_sentinels, to_sentinels
from unihema.predict import main as predict_main


@pytest.mark.parametrize("name, mode", [("rgb", "RGB"), ("rgba", "RGBA"), ("gray", "L"), ("gray16", "I;16")])
def test_image_modes_become_rgb(image_files, name, mode):
    """RGB, RGBA (composited on white), grayscale and 16-bit grayscale all load as 8-bit RGB of the same size."""
    loaded = read_image_file(image_files[name])
    assert loaded.mode == mode
    assert loaded.image.mode == "RGB" and loaded.image.size == (96, 96)
    arr = np.asarray(loaded.image)
    assert arr.dtype == np.uint8 and arr.max() > 0


@pytest.mark.parametrize(
    "name, reason",
    [
        ("corrupt", "undecodable_image"),
        ("text", "undecodable_image"),
        ("huge", "image_too_large"),
        ("bomb", "image_too_large"),
    ],
)
def test_bad_files_are_refused_with_reason(image_files, name, reason):
    """Corrupt, non-image and oversized files raise a one-line error naming the file and the reason."""
    with pytest.raises(UserInputError) as info:
        read_image_file(image_files[name])
    message = str(info.value)
    assert str(image_files[name]) in message and reason in message and "\n" not in message
    assert "BytesIO" not in message


def test_mask_filling_helpers():
    """<mask> / [MASK] become numbered sentinels, and generated spans fill them in order."""
    masked = to_sentinels("a <mask> cell with [MASK] chromatin")
    assert masked == "a <extra_id_0> cell with <extra_id_1> chromatin"
    filled, spans = fill_sentinels(masked, "<extra_id_0> large <extra_id_1> open coarse <extra_id_2>")
    assert filled == "a large cell with open coarse chromatin" and spans == {0: "large", 1: "open coarse"}
    assert fill_sentinels(masked, "<extra_id_0> big")[0] == "a big cell with ? chromatin"


def test_predict_writes_json_and_overlays(export_dir, image_files, tmp_path, capsys):
    """Detection, segmentation and classification on an RGBA and a 16-bit file: a JSON and an overlay each."""
    out = tmp_path / "pred"
    images = [str(image_files[k]) for k in ("rgba", "gray16")]
    assert (
        predict_main(
            images + ["--checkpoint", str(export_dir), "--out", str(out), "--threshold", "0", "--max-detections", "5"]
        )
        == 0
    )
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    for name in ("rgba", "gray16"):
        payload = json.loads((out / f"{name}.json").read_text())
        assert len(payload["detections"]) == 5
        det = payload["detections"][0]
        assert len(det["box_xyxy"]) == 4 and 0 <= det["score"] <= 1 and det["label"]
        assert set(det["morphology"]) == {
            "nuclear_chromatin",
            "nuclear_shape",
            "nucleolus",
            "cytoplasm",
            "cytoplasmic_basophilia",
            "cytoplasmic_vacuoles",
        }
        assert payload["classification"]["label"] and len(payload["classification"]["top"]) == 5
        seg = payload["segmentation"]
        assert seg["instances"] and seg["instances"][0]["mask_rle"]["size"] == [96, 96]
        assert Image.open(out / seg["mask_png"]).size == (96, 96)
        assert Image.open(out / payload["files"]["overlay"]).size[0] >= 96
        assert payload["converted_to_rgb"]


def test_predict_answers_questions_and_fills_masks(export_dir, image_files, tmp_path):
    """--question and --text give an answer and a filled sentence per image, conditioned on the image."""
    out = tmp_path / "text"
    assert (
        predict_main(
            [
                str(image_files["cell"]),
                "--checkpoint",
                str(export_dir),
                "--out",
                str(out),
                "--task",
                "vqa,mlm",
                "--question",
                "what type of cell is this?",
                "--text",
                "this is a <mask> cell",
            ]
        )
        == 0
    )
    payload = json.loads((out / "cell.json").read_text())
    assert payload["vqa"][0]["question"] == "what type of cell is this?"
    assert isinstance(payload["vqa"][0]["answer"], str)
    assert payload["mlm"][0]["filled"].startswith("this is a ") and "detections" not in payload


def test_predict_refuses_bad_files_in_one_line_each(export_dir, image_files, tmp_path, capsys):
    """Bad files give exit code 2 and one line each naming file and reason; --skip-bad carries on with exit 0."""
    bad = [str(image_files[k]) for k in ("corrupt", "text", "huge", "bomb")] + [str(tmp_path / "missing.png")]
    assert predict_main(bad + ["--checkpoint", str(export_dir), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("error: ") for line in err)
    for path, line in zip(bad, err):
        assert path in line
    assert "Traceback" not in "\n".join(err)
    assert (
        predict_main(
            [
                str(image_files["corrupt"]),
                str(image_files["rgb"]),
                "--checkpoint",
                str(export_dir),
                "--out",
                str(tmp_path / "o"),
                "--task",
                "classification",
                "--skip-bad",
            ]
        )
        == 0
    )
    assert (tmp_path / "o" / "rgb.json").is_file()


def test_predict_with_a_missing_checkpoint_is_one_line(image_files, tmp_path, capsys):
    """A checkpoint path that does not exist is a one-line error with exit code 2."""
    assert predict_main([str(image_files["rgb"]), "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such file or folder" in err and err.count("\n") == 0


def test_default_checkpoint_is_the_demo_export():
    """With no --checkpoint, predict looks where `make demo` exports."""
    from unihema.predict import default_checkpoint

    assert default_checkpoint() == "s3://unihema/runs/unihema-demo/export"


@pytest.mark.slow
def test_predict_from_an_s3_export(embedded_s3, export_dir, image_files, tmp_path, monkeypatch):
    """An export folder in S3 (as `make demo` leaves it) is downloaded and used."""
    import pyarrow.fs as pafs

    pafs.copy_files(
        str(export_dir),
        "unihema/runs/unihema-tiny/export",
        source_filesystem=pafs.LocalFileSystem(),
        destination_filesystem=embedded_s3.filesystem(),
    )
    for key, value in embedded_s3.env().items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "s3pred"
    assert (
        predict_main(
            [
                str(image_files["cell"]),
                "--checkpoint",
                "s3://unihema/runs/unihema-tiny/export",
                "--out",
                str(out),
                "--task",
                "classification",
            ]
        )
        == 0
    )
    payload = json.loads((out / "cell.json").read_text())
    assert payload["checkpoint"] == "s3://unihema/runs/unihema-tiny/export" and payload["classification"]["label"]
