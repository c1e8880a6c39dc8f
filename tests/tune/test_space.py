"""Search space, searchers, scheduler, trial resources and the seeded preview of trial configurations."""

import itertools
import sys

import pytest

from unihema.config import ConfigError, load_config
from unihema.tune.search import MissingPackageError, build_scheduler, build_searcher, preview
from unihema.tune.space import apply_params, check_search, grid_size, grid_values, param_space, trial_config
from unihema.tune.sweep import max_concurrent, trial_worker_resources
from unihema.tune.trial import trial_base

LOSSES = ("loss.detection", "loss.classification", "loss.segmentation", "loss.morphology", "loss.vqa", "loss.mlm")


def test_default_space_searches_the_six_loss_weights_log_uniformly():
    """By default every loss.<task> weight is a log-uniform Domain over [weight_min, weight_max]."""
    from ray.tune.search.sample import Float, LogUniform

    space = param_space(load_config("tiny"))
    assert tuple(space) == LOSSES
    for domain in space.values():
        assert isinstance(domain, Float) and isinstance(domain.get_sampler(), LogUniform)
        assert (domain.lower, domain.upper) == (0.25, 4.0)


def test_mix_ratios_are_weights_and_lr_scales_its_configured_value():
    """data.mix.<task> uses the weight range; train.lr is its configured value times that range."""
    cfg = load_config("tiny", overrides=["tune.search=[data.mix.vqa, train.lr]", "train.lr=1e-4"])
    space = param_space(cfg)
    assert (space["data.mix.vqa"].lower, space["data.mix.vqa"].upper) == (0.25, 4.0)
    assert space["train.lr"].lower == pytest.approx(2.5e-5) and space["train.lr"].upper == pytest.approx(4e-4)


def test_zero_minimum_falls_back_to_uniform():
    """A range starting at 0 (a task may be switched off) cannot be log-uniform: it is uniform."""
    from ray.tune.search.sample import Uniform

    space = param_space(load_config("tiny", overrides=["tune.search=[loss.vqa]", "tune.weight_min=0"]))
    assert isinstance(space["loss.vqa"].get_sampler(), Uniform)


@pytest.mark.parametrize(
    "search, message",
    [
        ("[model.backbone.name]", "not a number"),
        ("[loss.nothing]", "unknown key"),
        ("[tune.seed]", "sweep setting"),
        ("[loss.vqa, loss.vqa]", "listed twice"),
        ("[]", "at least one"),
    ],
)
def test_bad_search_paths_are_rejected_with_the_path(search, message):
    """Unknown, non-numeric, sweep-level or repeated paths fail before anything starts."""
    with pytest.raises(ConfigError, match=message):
        check_search(load_config("tiny", overrides=[f"tune.search={search}"]))


def test_grid_covers_every_combination_within_the_budget():
    """The grid takes as many points per path as num_samples allows (at least 2), geometric from min to max."""
    assert grid_size(9, 2) == 3 and grid_size(8, 2) == 2 and grid_size(1, 6) == 2
    assert grid_values(0.25, 4.0, 3) == [0.25, 1.0, 4.0]
    assert grid_values(0.0, 1.0, 3) == [0.0, 0.5, 1.0]
    cfg = load_config(
        "tiny", overrides=["tune.searcher=grid", "tune.search=[loss.vqa, loss.mlm]", "tune.num_samples=9"]
    )
    trials = preview(cfg)
    assert len(trials) == 9
    assert {(t["loss.vqa"], t["loss.mlm"]) for t in trials} == set(itertools.product([0.25, 1.0, 4.0], repeat=2))


def test_fixed_seed_reproduces_the_trial_configurations():
    """The same tune.seed gives the same trials, in order; another seed gives others; all within range."""
    cfg = load_config("tiny", overrides=["tune.num_samples=5", "tune.seed=7"])
    first, again = preview(cfg), preview(cfg)
    assert first == again and len(first) == 5
    assert all(0.25 <= t[p] <= 4.0 for t in first for p in LOSSES)
    other = preview(load_config("tiny", overrides=["tune.num_samples=5", "tune.seed=8"]))
    assert other != first


def test_optuna_preview_is_seeded_when_installed():
    """The model-based searcher draws the same first configurations for the same seed."""
    pytest.importorskip("optuna")
    cfg = load_config("tiny", overrides=["tune.searcher=optuna", "tune.num_samples=3", "tune.seed=3"])
    assert preview(cfg) == preview(cfg)


def test_missing_optuna_fails_clearly(monkeypatch):
    """tune.searcher=optuna without the package raises an error naming the package and the fix."""
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    with pytest.raises(MissingPackageError, match="'optuna' package.*pip install"):
        build_searcher(load_config("tiny", overrides=["tune.searcher=optuna"]))


def test_asha_decides_at_each_validation():
    """ASHA's clock is the reported step, its first rung the first validation, its end the trial length."""
    cfg = load_config("tiny", overrides=["tune.max_steps_per_trial=12", "train.val_every=3"])
    asha = build_scheduler(cfg)
    assert (asha._time_attr, asha._max_t, asha._stop_last_trials) == ("step", 12, False)
    assert [rung for rung, _ in asha._brackets[0]._rungs][-1] == 3
    assert type(build_scheduler(load_config("tiny", overrides=["tune.scheduler=fifo"]))).__name__ == "FIFOScheduler"


def test_concurrency_follows_the_train_workers_resources():
    """Auto concurrency: GPUs decide on GPU runs; on CPUs each trial is budgeted twice its workers' CPUs."""
    cpu = load_config("tiny")  # 2 workers x 1 CPU
    assert trial_worker_resources(cpu) == {"CPU": 2.0}
    assert max_concurrent(cpu, {"CPU": 4.0}) == 1 and max_concurrent(cpu, {"CPU": 9.0}) == 2
    assert max_concurrent(cpu, {"CPU": 1.0}) == 1
    gpu = load_config("paper", overrides=["train.num_workers=4", "train.gpus_per_worker=1"])
    assert max_concurrent(gpu, {"CPU": 256.0, "GPU": 8.0}) == 2
    fixed = load_config("tiny", overrides=["tune.max_concurrent_trials=3"])
    assert max_concurrent(fixed, {"CPU": 1.0}) == 3


def test_trial_config_is_the_shortened_sweep_config_without_secrets():
    """Trials run max_steps_per_trial steps, report at every validation, store under the sweep, carry no secret."""
    cfg = load_config(
        "tiny",
        overrides=[
            "tune.max_steps_per_trial=8",
            "train.val_every=2",
            "train.checkpoint_every=5",
            "storage.secret_access_key=s3cr3t",
            "storage.access_key_id=AKIA",
        ],
    )
    base = trial_base(cfg, cfg.storage, "s3://unihema/runs-tiny/my-sweep")
    trial = trial_config(base, {"loss.vqa": 3.5, "data.mix.mlm": 0.5})
    assert (trial.train.max_steps, trial.train.checkpoint_every, trial.train.val_every) == (8, 2, 2)
    assert trial.storage.run_uri == "s3://unihema/runs-tiny/my-sweep/trials"
    assert trial.loss.vqa == 3.5 and trial.data.mix.mlm == 0.5 and trial.loss.mlm == cfg.loss.mlm
    assert "s3cr3t" not in repr(base) and "AKIA" not in repr(base)
    assert apply_params({"a": {"b": 1, "c": 2}}, {"a.b": 5.0}) == {"a": {"b": 5.0, "c": 2}}
