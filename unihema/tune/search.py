"""Search algorithm and trial scheduler of a sweep, and a dry preview of the trial configurations.

The preview draws the trial parameters exactly as the sweep will (the same searcher, the
same seed) without starting Ray or any trial, so a person can check a sweep before paying
for it, and tests can check that a fixed ``tune.seed`` reproduces the same configurations.
"""

from __future__ import annotations

from unihema.config import UniHemaConfig
from unihema.tune.objective import OBJECTIVE
from unihema.tune.space import param_space

MODE = "max"
# The worker's report field that counts optimizer steps: ASHA's clock. Unlike Tune's own
# training_iteration it continues across a trial's resume from a checkpoint.
TIME_ATTR = "step"


class MissingPackageError(ImportError):
    """A configured searcher needs a package that is not installed."""


def report_every(cfg: UniHemaConfig) -> int:
    """Steps between two reports of a trial: each validation, at the latest the trial's last step."""
    return min(cfg.train.val_every, cfg.tune.max_steps_per_trial)


def build_scheduler(cfg: UniHemaConfig):
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    if cfg.tune.scheduler == "fifo":
        return FIFOScheduler()
    # stop_last_trials=False: a trial that reaches max_t ends by itself, writing its status,
    # instead of being killed by the scheduler right after its last report.
    return AsyncHyperBandScheduler(
        time_attr=TIME_ATTR,
        max_t=cfg.tune.max_steps_per_trial,
        grace_period=report_every(cfg),
        reduction_factor=3,
        stop_last_trials=False,
    )


def _optuna_search(seed: int):
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise MissingPackageError(
            "tune.searcher=optuna needs the 'optuna' package, which is not installed: "
            "`pip install 'optuna>=3'`, or use tune.searcher=random"
        ) from None
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=seed)


def build_searcher(cfg: UniHemaConfig, max_concurrent: int = 0):
    """The search algorithm for ``tune.searcher``, running at most ``max_concurrent`` trials (0: no cap).

    Random and grid share Tune's variant generator. The cap is applied here because Tune
    ignores TuneConfig.max_concurrent_trials for a variant generator passed in explicitly.
    """
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    if cfg.tune.searcher == "optuna":
        searcher = _optuna_search(cfg.tune.seed)
        return ConcurrencyLimiter(searcher, max_concurrent) if max_concurrent else searcher
    return BasicVariantGenerator(random_state=cfg.tune.seed, max_concurrent=max_concurrent)


def num_samples(cfg: UniHemaConfig) -> int:
    # A grid is the whole sample: repeating it would only re-run the same configurations.
    return 1 if cfg.tune.searcher == "grid" else cfg.tune.num_samples


def preview(cfg: UniHemaConfig, n: int | None = None) -> list[dict]:
    """The ``{path: value}`` parameters of the first ``n`` trials (all of them by default), in order."""
    space = param_space(cfg)
    if cfg.tune.searcher == "optuna":
        searcher = build_searcher(cfg)
        searcher.set_search_properties(OBJECTIVE, MODE, space)
        count = cfg.tune.num_samples if n is None else n
        return [searcher.suggest(f"preview_{i:05d}") for i in range(count)]
    from ray.tune.search.sample import _BackwardsCompatibleNumpyRng
    from ray.tune.search.variant_generator import generate_variants

    # The same walk as BasicVariantGenerator: one generate_variants pass per sample, all
    # drawing from one generator seeded with tune.seed.
    rng = _BackwardsCompatibleNumpyRng(cfg.tune.seed)
    out: list[dict] = []
    for _ in range(num_samples(cfg)):
        for _, spec in generate_variants({"config": space}, random_state=rng):
            out.append(dict(spec["config"]))
            if n is not None and len(out) >= n:
                return out
    return out
