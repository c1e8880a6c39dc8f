"""Configuration: presets, files, overrides, errors and redaction."""

import pytest
import yaml

from unihema.config import (
    PRESETS,
    REDACTED,
    ConfigError,
    UniHemaConfig,
    get_path,
    load_config,
    save_config,
)
from unihema.config.__main__ import main as config_main


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_resolves(preset):
    """Each named preset builds a fully typed config."""
    cfg = load_config(preset)
    assert isinstance(cfg, UniHemaConfig) and cfg.preset == preset


def test_paper_preset_has_official_hyperparameters():
    """The paper preset carries the values of the official training run."""
    cfg = load_config("paper")
    m, t, loss = cfg.model, cfg.train, cfg.loss
    assert (m.hidden_dim, m.nheads, m.encoder.layers, m.decoder.layers, m.num_feature_levels) == (256, 8, 6, 6, 4)
    assert (m.encoder.n_points, m.decoder.num_queries, m.decoder.two_stage) == (4, 900, True)
    # lr_linear_proj_mult: the official 0.1 never reached a parameter group (param_dict_type='default').
    assert (t.lr, t.lr_backbone, t.lr_linear_proj_mult, t.weight_decay, t.clip_max_norm) == (1e-4, 1e-5, 1.0, 0.01, 0.1)
    assert (loss.det_cls, loss.det_bbox, loss.det_giou, loss.morphology) == (1.0, 5.0, 2.0, 2.0)
    assert (loss.seg_dice, loss.seg_focal) == (2.0, 1.0)  # the official weight_dict's effective wiring
    assert (loss.match_cls, loss.match_bbox, loss.match_giou) == (2.0, 5.0, 2.0)
    assert cfg.data.batch_size == 12 and m.text.d_model == 768 and m.text.vocab_size == 32128


def test_overrides_are_typed():
    """``a.b=value`` overrides are parsed and coerced to the field's type."""
    cfg = load_config(
        "tiny",
        overrides=[
            "train.lr=1e-3",
            "train.zero_stage=3",
            "loss.vqa=2",
            "train.lr_drop_steps=[10,20]",
            "train.use_gpu=true",
        ],
    )
    assert cfg.train.lr == 1e-3 and cfg.train.zero_stage == 3 and cfg.loss.vqa == 2.0
    assert cfg.train.lr_drop_steps == (10, 20) and cfg.train.use_gpu is True


def test_yaml_file_layers_over_preset_and_names_its_preset(tmp_path):
    """A YAML file may name its base preset and is applied before overrides."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"preset": "tiny", "train": {"max_steps": 11}, "loss": {"mlm": 0.5}}))
    cfg = load_config(files=[path], overrides=["train.max_steps=12"])
    assert cfg.preset == "tiny" and cfg.train.max_steps == 12 and cfg.loss.mlm == 0.5
    assert cfg.model.hidden_dim == PRESETS["tiny"]["model"]["hidden_dim"]


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.hiden_dim=3", "unknown key 'model.hiden_dim'"),
        ("nosuch.key=1", "unknown key 'nosuch'"),
        ("train.zero_stage=4", "train.zero_stage: invalid value 4; must be <= 3"),
        ("train.precision=fp8", "train.precision: invalid value 'fp8'; allowed: 'auto', 'fp32', 'bf16'"),
        ("train.max_steps=many", "train.max_steps: invalid value 'many'; expected an integer"),
        ("loss.detection=-1", "loss.detection: invalid value -1.0; must be >= 0"),
        ("train.use_gpu=maybe", "train.use_gpu: invalid value 'maybe'; expected true or false"),
    ],
)
def test_bad_keys_and_values_are_named(override, fragment):
    """Unknown keys and invalid values fail with the key's path and what is allowed."""
    with pytest.raises(ConfigError) as info:
        load_config("tiny", overrides=[override])
    assert fragment in str(info.value)


def test_unknown_key_lists_allowed_keys():
    """The error for an unknown key lists the keys that section accepts."""
    with pytest.raises(ConfigError, match="allowed keys: .*zero_stage"):
        load_config("tiny", overrides=["train.zero=1"])


def test_a_retired_key_loads_with_a_warning_that_says_why(caplog):
    """A saved run or a user's YAML that still sets a retired key (data.read_cpus) loads; the warning names it."""
    with caplog.at_level("WARNING", logger="unihema.config.core"):
        cfg = load_config("tiny", overrides=["data.read_cpus=0.25"])
    assert cfg.data == load_config("tiny").data
    assert "data.read_cpus is ignored" in caplog.text and "decode_cpus" in caplog.text


def test_cross_field_validation():
    """Constraints across fields are checked (heads must divide the hidden size)."""
    with pytest.raises(ConfigError, match="divisible"):
        load_config("tiny", overrides=["model.nheads=5"])


def test_unknown_preset_and_missing_file():
    """An unknown preset or config file is refused with its name."""
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config("huge")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(files=["/nonexistent/run.yaml"])


def test_saved_config_redacts_secrets_and_reloads(tmp_path):
    """The saved config hides secrets and loads back to the same settings."""
    cfg = load_config("tiny", overrides=["storage.secret_access_key=s3cr3t-value", "storage.access_key_id=AKIAX"])
    path = save_config(cfg, tmp_path / "config.yaml")
    text = path.read_text()
    assert "s3cr3t-value" not in text and "AKIAX" not in text and REDACTED in text
    again = load_config(files=[path], overrides=["storage.secret_access_key=", "storage.access_key_id="])
    assert again.model == cfg.model and again.train == cfg.train


def test_get_path_reads_dotted_keys():
    """Sweeps address scalars by their dotted path."""
    cfg = load_config("tiny")
    assert get_path(cfg, "loss.morphology") == 2.0
    with pytest.raises(ConfigError):
        get_path(cfg, "loss.nothing")


def test_cli_prints_config_and_exits_2_on_error(capsys):
    """``python -m unihema.config`` prints YAML, or a one-line error with exit code 2."""
    assert config_main(["--preset", "tiny", "train.max_steps=7"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["max_steps"] == 7
    assert config_main(["--preset", "tiny", "train.bogus=1"]) == 2
    assert "unknown key 'train.bogus'" in capsys.readouterr().err
