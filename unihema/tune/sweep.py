"""The Tuner of a sweep: trial resources, concurrency, storage, and resume with ``Tuner.restore``.

Everything a sweep writes goes under ``<storage.run_uri>/<sweep name>/`` on the run storage
(S3 or a local folder): Tune's experiment state (what ``--resume`` restores), each trial's
Train run with its checkpoints (``trials/<trial id>/``), and the final report. A trial's own
process is only the driver of its Train run: it asks for almost nothing, while its Train
workers reserve ``num_workers x resources_per_worker`` when they start; how many trials run
at once is therefore capped from those worker resources, not from the trial's own, and
when the scheduler stops a trial, ``cleanup.ReleaseStoppedTrainRuns`` gives its workers'
resources back.
"""

from __future__ import annotations

import logging
import math

from unihema.config import StorageConfig, UniHemaConfig
from unihema.storage import open_filesystem, parse_uri
from unihema.tune.cleanup import ReleaseStoppedTrainRuns
from unihema.tune.objective import OBJECTIVE
from unihema.tune.search import MODE, build_scheduler, build_searcher, num_samples, report_every
from unihema.tune.space import param_space
from unihema.tune.trial import run_trial, trial_base

log = logging.getLogger(__name__)
# What the trial process (the Train driver) reserves: a token share of a CPU so Tune can
# place it; the real work runs in the Train workers' own placement group.
TRIAL_DRIVER_RESOURCES = {"CPU": 0.01}


def sweep_name(cfg: UniHemaConfig) -> str:
    return cfg.run_name or f"tune-{cfg.preset or 'custom'}"


def sweep_uri(cfg: UniHemaConfig) -> str:
    return str(parse_uri(cfg.storage.run_uri).join(sweep_name(cfg)))


def trial_worker_resources(cfg: UniHemaConfig) -> dict[str, float]:
    """What one trial's Train workers reserve together."""
    out = {"CPU": cfg.train.num_workers * cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        out["GPU"] = cfg.train.num_workers * cfg.train.gpus_per_worker
    return out


def max_concurrent(cfg: UniHemaConfig, cluster: dict[str, float]) -> int:
    """tune.max_concurrent_trials, or (0 = auto) as many trials as the cluster holds at once.

    On GPUs the GPUs decide. On CPUs each trial is budgeted twice its workers' CPUs: Ray Data's
    decode tasks need CPUs beside the workers', and trials starved of them would stall, not fail.
    """
    if cfg.tune.max_concurrent_trials:
        return cfg.tune.max_concurrent_trials
    need = trial_worker_resources(cfg)
    if cfg.train.use_gpu and need["GPU"] > 0:
        fits = cluster.get("GPU", 0.0) / need["GPU"]
    else:
        fits = cluster.get("CPU", 0.0) / max(2 * need["CPU"], 1e-9)
    return max(1, math.floor(fits))


def _trainable(cfg: UniHemaConfig, storage: StorageConfig):
    from ray import tune

    base = trial_base(cfg, storage, sweep_uri(cfg))
    return tune.with_resources(tune.with_parameters(run_trial, base=base), TRIAL_DRIVER_RESOURCES)


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _storage(cfg: UniHemaConfig, storage: StorageConfig):
    return open_filesystem(parse_uri(cfg.storage.run_uri), storage)


def build_tuner(cfg: UniHemaConfig, storage: StorageConfig):
    """A fresh Tuner for the sweep described by ``cfg.tune`` (Ray must be initialized)."""
    import ray
    from ray import tune

    fs, root = _storage(cfg, storage)
    if cfg.tune.scheduler == "asha" and report_every(cfg) >= cfg.tune.max_steps_per_trial:
        log.warning(
            "ASHA cannot stop a trial early: trials validate only at their last step "
            "(train.val_every=%d >= tune.max_steps_per_trial=%d)",
            cfg.train.val_every,
            cfg.tune.max_steps_per_trial,
        )
    concurrency = max_concurrent(cfg, ray.cluster_resources())
    log.info(
        "sweep %s: up to %d trial(s) at once, each with Train workers reserving %s",
        sweep_name(cfg),
        concurrency,
        trial_worker_resources(cfg),
    )
    return tune.Tuner(
        _trainable(cfg, storage),
        param_space=param_space(cfg),
        tune_config=tune.TuneConfig(
            metric=OBJECTIVE,
            mode=MODE,
            search_alg=build_searcher(cfg, concurrency),
            scheduler=build_scheduler(cfg),
            num_samples=num_samples(cfg),
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=sweep_name(cfg),
            storage_path=root,
            storage_filesystem=fs,
            # Train already retries failed workers (train.max_failures); a trial that still
            # fails is reported as failed while the sweep goes on.
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            callbacks=[ReleaseStoppedTrainRuns()],
            verbose=1,
        ),
    )


def can_resume(cfg: UniHemaConfig, storage: StorageConfig) -> bool:
    from ray.tune import Tuner

    fs, root = _storage(cfg, storage)
    return Tuner.can_restore(f"{root}/{sweep_name(cfg)}", storage_filesystem=fs)


def restore_tuner(cfg: UniHemaConfig, storage: StorageConfig):
    """The interrupted sweep's Tuner: finished trials kept, unfinished ones continued from their checkpoints."""
    from ray.tune import Tuner

    fs, root = _storage(cfg, storage)
    return Tuner.restore(
        f"{root}/{sweep_name(cfg)}",
        trainable=_trainable(cfg, storage),
        resume_unfinished=True,
        resume_errored=False,
        storage_filesystem=fs,
    )
