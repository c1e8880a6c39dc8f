"""One Tune trial: a Ray Train V2 run of the usual training loop with the trial's hyperparameters.

Ray 2.60 (Train V2) no longer accepts ``Tuner(trainer)``: a trial is a function trainable
that builds a ``TorchTrainer`` (here with ``unihema.train.launch.build_trainer``, so a trial
trains exactly like ``python -m unihema.pretrain``) and calls ``fit()``. Train's reports do
not reach Tune by themselves; ``ObjectiveReportCallback`` forwards each one from the Train
controller, with the objective computed on the way, so ASHA sees every validation.

A trial's Train run is named after its trial id, under ``<sweep>/trials/``: when a restored
sweep starts an unfinished trial again, Train finds that run's latest checkpoint and resumes
it instead of starting over.
"""

from __future__ import annotations

import dataclasses

from ray.tune.integration.ray_train import TuneReportCallback

from unihema.config import StorageConfig, UniHemaConfig
from unihema.config.core import dump_yaml
from unihema.storage import parse_uri
from unihema.tune.objective import score_report
from unihema.tune.search import report_every
from unihema.tune.space import trial_config

TRIALS_DIR = "trials"


class TrialFailedError(RuntimeError):
    """The trial's training ended without completing (non-finite losses, ...); Tune marks it failed."""


class ObjectiveReportCallback(TuneReportCallback):
    """Forwards every Train report (rank 0's metrics) to Tune with the objective and task scores added."""

    def __init__(self, tune_cfg):
        super().__init__()
        self._tune_cfg = tune_cfg

    def after_report(self, run_context, metrics, checkpoint):
        scored = [score_report(metrics[0], self._tune_cfg), *metrics[1:]]
        super().after_report(run_context, scored, checkpoint)


def trial_base(cfg: UniHemaConfig, storage: StorageConfig, sweep_uri: str) -> dict:
    """The config every trial starts from: the sweep's, shortened to a trial, secrets left out.

    Checkpoints (the only reports Train sends) are aligned with validation so that each
    validation reaches the scheduler; the schedule (warmup, cosine, drops) is the configured
    one compressed to ``tune.max_steps_per_trial``.
    """
    from unihema.train.launch import worker_config

    steps = cfg.tune.max_steps_per_trial
    short = dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, max_steps=steps, checkpoint_every=report_every(cfg)),
        storage=dataclasses.replace(cfg.storage, run_uri=str(parse_uri(sweep_uri).join(TRIALS_DIR))),
    )
    return worker_config(short, storage)


def run_trial(params: dict, base: dict) -> None:
    """The function trainable: one TorchTrainer run; raises when training did not complete."""
    import ray.tune

    from unihema.data.stream import build_train_index
    from unihema.train.launch import build_trainer
    from unihema.train.run_files import read_json, write_text

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = dataclasses.replace(trial_config(base, params), run_name=trial_id)
    storage = cfg.storage  # endpoint only: credentials come from the environment, never the config
    run_uri = str(parse_uri(cfg.storage.run_uri).join(trial_id))
    write_text(run_uri, "config.yaml", dump_yaml(cfg, redact=True), storage)
    trainer = build_trainer(cfg, storage, trial_id, shard_index=build_train_index(cfg.data, storage))
    # build_trainer has no callbacks argument; its RunConfig is read again at fit() time.
    trainer.run_config.callbacks = [*(trainer.run_config.callbacks or []), ObjectiveReportCallback(cfg.tune)]
    trainer.fit()
    status = read_json(run_uri, "status.json", storage) or {}
    if status.get("status") != "completed":
        raise TrialFailedError(
            f"trial {trial_id}: training did not complete: "
            f"{status.get('status', 'no status.json written')} (run folder {run_uri})"
        )
