"""Hash and upstream splits, and the dataset registry as users see it (list, info, missing data)."""

from pathlib import Path

import pytest

from data_prep import cli, registry
from data_prep.converters import CONVERTERS
from data_prep.pipeline import ConvertSettings, DatasetNotFound, _build, convert
from data_prep.splits import hash_split, read_split_lists, split_name

NAMED = [
    "malaria_detection_2019",
    "nuclick",
    "krd_wbc_seg",
    "wbc_image_dataset",
    "raabin_wbc_seg",
    "erythrocytesidb",
    "anerbc_ii",
    "mp_idb",
    "elsafty_rbc",
    "bbbc041_seg",
    "ssl_seg",
    "leukemiaattri",
    "m5_malaria",
    "txl_pbc",
    "bccd",
    "sickle_cell_tushabe",
    "plasmodium",
    "plasmodium_phone",
    "tuberculosis_phone",
    "bbbc041",
    "nih_nlm_thick_pf",
    "nih_nlm_thick_pv",
    "parasite",
    "acevedo_det",
    "bio_net",
    "raabin_m1",
    "raabin_m2",
    "bmc_matek",
    "aml_matek",
    "raabin_wbc",
    "warty_pig",
    "lisc",
    "krd_wbc_cls",
    "bccd_cls",
    "hrls",
    "apl_aml",
    "white_blood_cell_dataset",
    "pbc",
    "rv_pbs",
    "pbc_8_da",
    "c_nmc_2019",
    "bloodmnist",
    "aml_hehr",
    "pbc_wbcatt",
    "wbcatt",
    "custom_vqa",
]


def test_hash_split_deterministic_with_ratios():
    """The split depends only on the identity (and salt), and follows the ratios."""
    splits = [hash_split(f"img{i}") for i in range(4000)]
    assert splits == [hash_split(f"img{i}") for i in range(4000)]
    share = {s: splits.count(s) / 4000 for s in ("train", "val", "test")}
    assert abs(share["train"] - 0.8) < 0.03 and abs(share["test"] - 0.1) < 0.02
    assert hash_split("x", (0, 0, 1)) == "test" and [hash_split(f"img{i}", salt="b") for i in range(50)] != splits[:50]
    assert (split_name("TestA"), split_name("Training"), split_name("valid"), split_name("basophil")) == (
        "test",
        "train",
        "val",
        None,
    )


def test_split_lists_conflicts_go_to_the_held_out_split(tmp_path):
    """An id in two upstream lists lands in the more held-out split, and the conflict is reported."""
    (tmp_path / "train.txt").write_text("a\nb\n")
    (tmp_path / "val.txt").write_text("b\nc\n")
    (tmp_path / "trainval.txt").write_text("a\nb\nc\n")
    table, conflicts = read_split_lists(tmp_path)
    assert table == {"a": "train", "b": "val", "c": "val"} and len(conflicts) == 1


def test_registry_covers_the_release_with_valid_entries():
    """Every named dataset is registered; options, label maps and layouts are usable as written."""
    specs = registry.registry()
    assert set(NAMED) <= set(specs) and len(specs) >= 46
    for spec in specs.values():
        converter, ctx = _build(spec, "/nonexistent", ConvertSettings())  # checks option names and label targets
        assert spec.converter in CONVERTERS and spec.upstream and spec.layout and spec.license
        if spec.converter == "masks" and ctx.options["instance_label"]:
            ctx.labels(ctx.options["instance_label"])
    assert specs["bccd"].verified and specs["pbc_wbcatt"].verified


def test_cli_list_info_and_missing_dataset(tmp_path, capsys):
    """`list` and `info` say where to get data; converting from a missing folder says where to put it."""
    assert cli.main(["list", "--task", "segmentation"]) == 0
    out = capsys.readouterr().out
    assert "mp_idb" in out and "bccd " not in out
    assert cli.main(["info", "bccd"]) == 0
    assert "github.com/Shenggan/BCCD_Dataset" in capsys.readouterr().out
    assert cli.main(["convert", "bccd", "--src", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Annotations/*.xml" in err
    with pytest.raises(DatasetNotFound, match="JPEGImages"):
        (tmp_path / "empty").mkdir()
        convert(registry.get("bccd"), tmp_path / "empty", str(tmp_path / "o"))
    assert cli.main(["info", "no-such-set"]) == 2
    assert Path(registry.get("pbc").default_src()).name == "pbc"


def test_test_from_train_moves_a_share_of_upstream_train_only():
    """test_from_train sends ~that share of upstream-train records to test; upstream val and test stay put."""
    from data_prep.splits import SplitAssigner

    assign = SplitAssigner(test_from_train=0.1)
    hashes = [f"{i:064x}" for i in range(2000)]
    train = [assign(h, "train") for h in hashes]
    moved = sum(split == "test" for split, _ in train)
    assert 140 < moved < 260 and {rule for split, rule in train if split == "test"} == {"test_from_train"}
    assert all(assign(h, "val") == ("val", "upstream") for h in hashes[:50])
    assert assign(hashes[0], "train") == train[0]  # deterministic
    assert SplitAssigner()(hashes[0], "train") == ("train", "upstream")
    with pytest.raises(ValueError, match="test_from_train"):
        SplitAssigner(test_from_train=1.0)


def test_storage_comes_from_config_overrides_and_flags(tmp_path, monkeypatch, capsys):
    """--config, then storage.*=value anywhere, then --endpoint-url/--region; never the embedded server by default."""
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    config = tmp_path / "cfg.yaml"
    config.write_text("storage:\n  endpoint_url: http://from-file:9000\n  region: eu-west-1\n")
    argv = ["stats", "storage.region=us-west-2", "s3://b/d", "--config", str(config), "--option", "storage.x=1"]
    rest, overrides = cli.split_overrides(cli.parser(), argv)
    assert overrides == ["storage.region=us-west-2"]
    assert rest == ["stats", "s3://b/d", "--config", str(config), "--option", "storage.x=1"]
    args = cli.parser().parse_args(["stats", "s3://b/d", "--config", str(config)])
    args.overrides = overrides
    storage = cli._storage(args)
    assert (storage.endpoint_url, storage.region, storage.embedded) == ("http://from-file:9000", "us-west-2", False)
    args = cli.parser().parse_args(["stats", "s3://b/d", "--endpoint-url", "http://flag:1", "--region", "r1"])
    args.overrides = ["storage.endpoint_url=http://override:2"]
    storage = cli._storage(args)
    assert (storage.endpoint_url, storage.region) == ("http://flag:1", "r1")
    args.overrides, args.endpoint_url, args.region = [], None, None
    # Nothing says: left empty, so the bucket's own region is asked of the server (AWS_REGION is
    # only the fallback where the server does not say, in unihema.storage.bucket_region).
    assert cli._storage(args).region == ""


def test_bad_config_override_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["stats", str(tmp_path), "storage.endpoint=x"]) == 2
    assert "error: config:" in capsys.readouterr().err
    assert cli.main(["list", "storage.region=x"]) == 2
