"""A corpus: several converted datasets in subfolders of one URI read as one dataset."""

import shutil

import pytest

from unihema.data.shards import UnfinishedDatasetError, list_shards, read_manifest
from unihema.data.synthetic import generate_dataset


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for name, n, seed in (("alpha", 12, 1), ("beta", 20, 2)):
        generate_dataset(n, str(root / name), seed=seed, image_size=32, workers=1, progress=False)
    return root


def test_manifest_and_shards_are_the_datasets_merged(corpus):
    alpha, beta = read_manifest(str(corpus / "alpha")), read_manifest(str(corpus / "beta"))
    merged = read_manifest(str(corpus))
    assert set(merged["corpus"]) == {"alpha", "beta"}
    assert merged["records"] == alpha["records"] + beta["records"] == 32
    assert merged["counts"]["split"] == {
        s: alpha["counts"]["split"].get(s, 0) + beta["counts"]["split"].get(s, 0)
        for s in set(alpha["counts"]["split"]) | set(beta["counts"]["split"])
    }
    assert {f["path"].split("/")[0] for f in merged["files"]} == {"alpha", "beta"}
    train = list_shards(str(corpus), "train")
    assert train == sorted(list_shards(str(corpus / "alpha"), "train") + list_shards(str(corpus / "beta"), "train"))
    assert list_shards(str(corpus / "alpha"), "test") == []  # a dataset without the split has no shards of it


def test_a_dataset_whose_conversion_did_not_finish_is_named(corpus, tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy)
    (copy / "beta" / "manifest.json").unlink()
    with pytest.raises(UnfinishedDatasetError, match="beta has shards but no manifest.json"):
        read_manifest(str(copy))
    assert read_manifest(str(tmp_path / "empty")) is None
