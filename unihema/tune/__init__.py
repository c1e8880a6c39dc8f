"""Ray Tune sweeps of the per-task loss weights: each trial a Ray Train run, judged per task.

- ``objective``: chance-normalized per-task scores, their weighted mean and the floor.
- ``space``: searched config paths and their ranges; a trial's parameters as config overrides.
- ``search``: searcher (random, grid, Optuna) and ASHA scheduler; a dry preview of the trials.
- ``trial``: the function trainable that runs one TorchTrainer and forwards its reports to Tune.
- ``sweep``: the Tuner: resources, concurrency, run storage, ``Tuner.restore``.
- ``cleanup``: gives a stopped trial's Train workers' resources back to the cluster.
- ``report`` / ``plot``: results table, best preset YAML, metric-vs-weight PNG.

Entry point: ``python -m unihema.tune``. Importing this package does not import Ray.
"""

from unihema.tune.objective import OBJECTIVE, normalize, score

__all__ = ["OBJECTIVE", "normalize", "score"]
