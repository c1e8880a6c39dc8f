"""The synthetic hematology generator: determinism, valid exact annotations, morphology in pixels, shards."""

from __future__ import annotations

import colorsys
import io

import numpy as np
import pytest
from PIL import Image

from unihema.data.schema import validate_record
from unihema.data.shards import ShardReader, read_manifest
from unihema.data.synthetic import generate_dataset, generate_record, split_of
from unihema.data.synthetic.__main__ import main as cli_main
from unihema.data.synthetic.png import encode_png, encode_sparse_mask_png
from unihema.data.synthetic.scenes import compose_crop
from unihema.data.synthetic.wbc_types import WBC_CLASSES
from unihema.labels import CELL_CLASSES, DETECTION_CLASSES, MORPHOLOGY_ATTRIBUTES


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """Forty records of seed 0 at the default size: about half fields of view, half crops."""
    return [generate_record(i, seed=0) for i in range(40)]


def test_same_seed_and_index_give_identical_bytes():
    """A record is a pure function of (seed, index); another seed gives another image."""
    for index in (0, 7):
        a, b = generate_record(index, seed=3), generate_record(index, seed=3)
        assert a == b
    assert generate_record(0, seed=3)["image"] != generate_record(0, seed=4)["image"]
    assert generate_record(5, seed=3)["image"] != generate_record(6, seed=3)["image"]


def test_two_generations_write_the_same_shards(tmp_path):
    """Generated twice on several workers, a dataset has the same shard names and bytes: the read plan,
    and so a run's results, follow from the seed alone."""
    files = []
    for attempt in range(2):
        manifest = generate_dataset(120, str(tmp_path / f"ds{attempt}"), image_size=32, workers=2, chunk_size=16)
        files.append([(f["path"], f["sha256"]) for f in manifest["files"]])
    assert len(files[0]) >= 8 and files[0] == files[1]


def test_forcing_the_kind_and_the_ids_and_splits():
    """kind overrides the random choice; ids, source, license, origin and splits follow the contract."""
    fov, crop = generate_record(12, 9, 96, kind="fov"), generate_record(12, 9, 96, kind="crop")
    assert fov["boxes"] and fov["cell_class"] is None and crop["cell_class"] and not crop["boxes"]
    assert fov["id"] == crop["id"] == "syn-9-0000012"
    assert fov["origin"] == "synthetic seed=9 index=12" and fov["license"] == "CC0-1.0"
    assert fov["source"] == "synthetic"
    splits = [split_of(0, i, 0.2, 0.1) for i in range(2000)]
    assert 0.15 < splits.count("val") / 2000 < 0.25 and 0.06 < splits.count("test") / 2000 < 0.14
    assert splits == [split_of(0, i, 0.2, 0.1) for i in range(2000)]
    with pytest.raises(ValueError):
        generate_record(0, 0, kind="slide")


@pytest.mark.parametrize("size", [64, 96, 256])
def test_every_record_validates(size, records):
    """Records of every size pass validate_record with image decoding, and use the official label names."""
    recs = records if size == 256 else [generate_record(i, 1, size) for i in range(12)]
    kinds = set()
    for rec in recs:
        assert validate_record(rec, check_image=True) == [], rec["id"]
        assert _decode(rec["image"]).shape == (size, size, 3)
        assert set(rec["box_labels"]) <= set(DETECTION_CLASSES)
        kinds.add("fov" if rec["boxes"] else "crop")
        if rec["cell_class"]:
            assert rec["cell_class"] in CELL_CLASSES and set(rec["attributes"]) == set(MORPHOLOGY_ATTRIBUTES)
            assert rec["tasks"] == ["classification", "morphology", "vqa", "mlm"] and rec["mlm_text"]
    assert kinds == {"fov", "crop"}


def test_boxes_tightly_enclose_their_masks(records):
    """Each box equals the bounding box of its instance mask within a pixel; the semantic mask is their union."""
    for rec in (r for r in records if r["boxes"]):
        union = np.zeros((rec["height"], rec["width"]), bool)
        for box, png in zip(rec["boxes"], rec["masks"]):
            mask = _decode(png)
            assert set(np.unique(mask)) <= {0, 255}
            ys, xs = np.nonzero(mask)
            tight = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert np.abs(np.asarray(box) - tight).max() <= 1, (rec["id"], box, tight)
            union |= mask > 0
        semantic = _decode(rec["semantic_mask"])
        assert set(np.unique(semantic)) <= {0, 1}
        assert np.array_equal(semantic == 1, union)


def test_fov_contents_and_answers_match_the_boxes(records):
    """Field-of-view QA answers (white-cell count, parasites, sickle cells) agree with the boxes."""
    wbc = set(WBC_CLASSES)
    for rec in (r for r in records if r["boxes"]):
        labels = rec["box_labels"]
        answers = {p["question"]: p["answer"] for p in rec["qa"]}
        count = answers.get(
            "How many white blood cells are in this image?", answers.get("How many leukocytes are visible?")
        )
        assert count == str(sum(lb in wbc for lb in labels))
        assert answers["Are sickle cells present?"] == ("yes" if "Sickle Cells" in labels else "no")
        malaria = answers.get("Are malaria parasites present?", answers.get("Is this smear infected with malaria?"))
        assert malaria == ("yes" if {"ring", "trophozoite", "gametocyte"} & set(labels) else "no")
        for label, attrs in zip(labels, rec["box_attributes"]):
            assert (set(attrs) == set(MORPHOLOGY_ATTRIBUTES)) == (label in wbc)
        assert ("morphology" in rec["tasks"]) == any(lb in wbc for lb in labels)


def test_a_narrower_field_of_view_shows_fewer_larger_cells():
    """fov_width_um zooms the field: at half the width, about a quarter of the cells, each ~4x the area."""

    def stats(width):
        recs = [generate_record(i, 5, 128, kind="fov", fov_width_um=width) for i in range(12)]
        areas = [(x1 - x0) * (y1 - y0) for rec in recs for x0, y0, x1, y1 in rec["boxes"]]
        return np.mean([len(rec["boxes"]) for rec in recs]), np.median(areas)

    (wide_n, wide_area), (narrow_n, narrow_area) = stats(75.3), stats(37.6)
    assert 2.0 < wide_n / narrow_n < 6.0 and 2.5 < narrow_area / wide_area < 6.0
    assert generate_record(3, 5, 128, kind="crop", fov_width_um=37.6) == generate_record(3, 5, 128, kind="crop")
    with pytest.raises(ValueError, match="fov_width_um"):
        generate_record(0, 0, fov_width_um=2.0)


def test_crop_text_is_derived_from_the_truth(records):
    """Crop VQA answers and the MLM sentence state the record's own class and attributes."""
    for rec in (r for r in records if r["cell_class"]):
        assert rec["qa"][0]["answer"] == rec["cell_class"] and len(rec["qa"]) == 3
        a = rec["attributes"]
        for pair in rec["qa"][1:]:
            if "vacuoles" in pair["question"]:
                assert pair["answer"] == ("yes" if a["cytoplasmic_vacuoles"] == "prominent" else "no")
            if "chromatin" in pair["question"]:
                assert pair["answer"] == a["nuclear_chromatin"]
        text = rec["mlm_text"]
        assert rec["cell_class"] in text and f"{a['cytoplasm']} cytoplasm" in text
        assert f"{a['nuclear_chromatin']} chromatin" in text


@pytest.mark.parametrize("cell_class", WBC_CLASSES)
def test_each_attribute_changes_only_the_cells_pixels(cell_class):
    """Flipping one attribute of the same cell visibly changes its pixels and nothing outside it."""
    base = {name: values[0] for name, values in MORPHOLOGY_ATTRIBUTES.items()}
    seed = WBC_CLASSES.index(cell_class)
    ref, _, drawn = compose_crop(np.random.default_rng([11, seed]), 128, cell_class, base)
    p = drawn.instance.patch
    for name, values in MORPHOLOGY_ATTRIBUTES.items():
        img, wbc, _ = compose_crop(np.random.default_rng([11, seed]), 128, cell_class, {**base, name: values[1]})
        assert wbc.attributes[name] == values[1]
        diff = np.abs(img.astype(int) - ref.astype(int)).max(axis=2)
        assert (diff > 8).sum() >= 10, f"{cell_class}: {name} is not visible"
        outside = diff.copy()
        outside[p.y0 : p.y1, p.x0 : p.x1] = 0
        assert outside.max() == 0, f"{cell_class}: {name} changed pixels outside the cell"


def _hue(rgb: np.ndarray) -> float:
    # Shifted so the wrap-around sits at cyan, a colour no stain here produces.
    return (colorsys.rgb_to_hsv(*rgb)[0] + 0.5) % 1.0


def _best_threshold_balanced_accuracy(x: np.ndarray, positive: np.ndarray) -> float:
    best = 0.5
    for thr in np.unique(x):
        tpr = ((x >= thr) & positive).sum() / positive.sum()
        tnr = ((x < thr) & ~positive).sum() / (~positive).sum()
        best = max(best, 0.5 * (tpr + tnr), 1 - 0.5 * (tpr + tnr))
    return best


def test_colour_alone_does_not_identify_the_class():
    """Per-class hue of cell, cytoplasm and nucleus overlap: no hue threshold and no mean-colour classifier is near
    perfect."""
    feats, labels = [], []
    for ci, cell_class in enumerate(WBC_CLASSES):
        for j in range(20):
            img, _, drawn = compose_crop(np.random.default_rng([5, ci, j]), 96, cell_class)
            p, cell = drawn.instance.patch, drawn.instance.mask
            pixels = img[p.y0 : p.y1, p.x0 : p.x1].astype(float) / 255
            nucleus = drawn.nucleus & cell
            cytoplasm = cell & ~nucleus
            if not cytoplasm.any():
                cytoplasm = cell
            mean = pixels[cell].mean(0)
            feats.append([_hue(mean), _hue(pixels[cytoplasm].mean(0)), _hue(pixels[nucleus].mean(0)), *mean])
            labels.append(ci)
    feats, labels = np.asarray(feats), np.asarray(labels)
    for ci, cell_class in enumerate(WBC_CLASSES):
        for f, name in enumerate(("cell hue", "cytoplasm hue", "nucleus hue")):
            score = _best_threshold_balanced_accuracy(feats[:, f], labels == ci)
            assert score < 0.9, f"{cell_class} is separable by {name} alone ({score:.2f})"
    rgb = feats[:, 3:]
    means = np.stack([rgb[labels == c].mean(0) for c in range(len(WBC_CLASSES))])
    predicted = np.argmin(((rgb[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (predicted == labels).mean() < 0.65


def test_png_encoders_round_trip():
    """The fast RGB and sparse-mask PNG encoders decode to the exact arrays."""
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 3), (7, 5, 3), (64, 48, 3), (9, 13)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(_decode(encode_png(a)), a)
    for _ in range(50):
        h, w = rng.integers(1, 80, 2)
        wh, ww = rng.integers(1, h + 1), rng.integers(1, w + 1)
        y0, x0 = rng.integers(0, h - wh + 1), rng.integers(0, w - ww + 1)
        window = (rng.random((wh, ww)) < 0.5).astype(np.uint8) * 255
        full = np.zeros((h, w), np.uint8)
        full[y0 : y0 + wh, x0 : x0 + ww] = window
        img = Image.open(io.BytesIO(encode_sparse_mask_png(int(h), int(w), int(y0), int(x0), window)))
        assert img.mode == "L" and np.array_equal(np.asarray(img), full)


def _read_all(uri: str, storage=None) -> tuple[dict[str, dict], ShardReader]:
    reader = ShardReader(uri, storage=storage)
    return {rec["id"]: rec for rec in reader}, reader


def test_records_do_not_depend_on_the_worker_count(tmp_path):
    """One worker and two workers write the same records (ids, splits, bytes) and the same manifest counts."""
    m1 = generate_dataset(20, str(tmp_path / "w1"), seed=2, image_size=64, workers=1, progress=False)
    m2 = generate_dataset(20, str(tmp_path / "w2"), seed=2, image_size=64, workers=2, chunk_size=6, progress=False)
    assert m1["counts"] == m2["counts"] and m1["records"] == m2["records"] == 20
    one, _ = _read_all(str(tmp_path / "w1"))
    two, _ = _read_all(str(tmp_path / "w2"))
    assert sorted(one) == sorted(two) == [f"syn-2-{i:07d}" for i in range(20)]
    for rid, rec in one.items():
        assert rec["split"] == two[rid]["split"] and rec["image"] == two[rid]["image"]
    assert len({f["path"] for f in m2["files"]}) == len(m2["files"])  # one tag per chunk: no shard overwritten


def test_generate_dataset_to_a_local_folder_reads_back(tmp_path):
    """A small dataset (through the CLI) reads back valid, matching its manifest; reruns need --overwrite."""
    out = str(tmp_path / "syn")
    sheet = tmp_path / "sheet.png"
    assert (
        cli_main(
            [
                "--n",
                "16",
                "--out",
                out,
                "--seed",
                "4",
                "--image-size",
                "96",
                "--workers",
                "1",
                "--val-fraction",
                "0.25",
                "--no-progress",
                "--check-images",
                "--sheet",
                str(sheet),
                "--fov-width-um",
                "50",
            ]
        )
        == 0
    )
    manifest = read_manifest(out)
    assert manifest["generator"]["fov_width_um"] == 50
    recs, reader = _read_all(out)
    assert len(recs) == manifest["records"] == 16 and not manifest["rejected"] and not reader.stats.errors
    assert reader.stats.counts["split"] == manifest["counts"]["split"]
    assert manifest["generator"]["seed"] == 4 and manifest["generator"]["image_size"] == 96
    assert all(rec["split"] == split_of(4, int(rid[-7:]), 0.25) for rid, rec in recs.items())
    assert Image.open(sheet).size[0] > 96
    with pytest.raises(FileExistsError):
        generate_dataset(4, out, seed=4, image_size=96, workers=1, progress=False)
    generate_dataset(4, out, seed=4, image_size=96, workers=1, progress=False, overwrite=True)
    assert len(_read_all(out)[0]) == 4


@pytest.mark.slow
def test_generate_dataset_to_embedded_s3(embedded_s3):
    """Two workers write to the embedded S3 server; the shards read back valid and match the manifest."""
    cfg = embedded_s3.storage_config()
    uri = "s3://unihema/synthetic-test"
    manifest = generate_dataset(12, uri, cfg, seed=1, image_size=64, workers=2, progress=False)
    recs, reader = _read_all(uri, cfg)
    assert len(recs) == manifest["records"] == 12 and not reader.stats.errors
    assert reader.stats.counts["task"] == manifest["counts"]["task"]
    assert read_manifest(uri, cfg)["files"] == manifest["files"]
