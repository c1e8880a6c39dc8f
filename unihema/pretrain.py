"""``python -m unihema.pretrain``: distributed multi-task pretraining of Uni-Hema.

    python -m unihema.pretrain [--preset P] [--config FILE] [a.b=value ...]

With no arguments it runs the embedded default (preset ``demo``): an embedded S3 server,
synthetic blood smears generated into it if the bucket is empty, 2 Ray Train workers with
DeepSpeed ZeRO-2 on CPU, validation of every task, a consolidated export, and a summary of
where the checkpoint, the TensorBoard logs and the metrics are. On a cluster, submit it
with ``ray job submit -- python -m unihema.pretrain --preset paper ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from unihema.config import ConfigError, add_config_arguments, config_from_args
from unihema.evaluation.evaluators import CHANCE, HEADLINE
from unihema.storage import StorageAccessError


def print_summary(outcome, export_uri: str | None, elapsed: float) -> None:
    status = outcome.status
    print(
        f"\n== UniHema pretraining: {status.get('status')} after step {status.get('step')} ({elapsed / 60:.1f} min) =="
    )
    validation = status.get("validation") or {}
    for task, values in validation.items():
        headline, chance = HEADLINE[task], CHANCE[task]
        print(
            f"  {task:15s} {headline} = {values.get(headline, float('nan')):.3f}   "
            f"(chance {values.get(chance, 0.0):.3f}, n={values.get('count', 0)})"
        )
    if status.get("data_errors"):
        print(f"  records skipped by reason: {status['data_errors']}")
    if status.get("nonfinite_steps"):
        print(f"  steps skipped for a non-finite loss: {status['nonfinite_steps']}")
    print(f"  run folder:   {outcome.run_uri}")
    checkpoint = outcome.checkpoint_path
    if checkpoint and outcome.run_uri.startswith("s3://") and not checkpoint.startswith("s3://"):
        checkpoint = f"s3://{checkpoint}"  # Ray reports the filesystem path, without the scheme
    print(f"  checkpoint:   {checkpoint}")
    print(f"  tensorboard:  {outcome.run_uri}/tensorboard")
    print(f"  metrics:      {outcome.run_uri}/metrics_summary.json")
    if export_uri:
        print(f"  export:       {export_uri}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unihema.pretrain", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--no-export", action="store_true", help="skip the consolidated safetensors export")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    from unihema.model.weights import PretrainedWeightsError, check_available

    try:
        # Before storage, Ray and the data: weights the workers could not load stop the run here.
        check_available(cfg.model)
    except PretrainedWeightsError as err:
        print(f"weights error: {err}", file=sys.stderr)
        return 2

    from unihema.train.launch import keep_local_ray_on_loopback

    keep_local_ray_on_loopback()  # before anything below imports ray
    from unihema.checkpoint.export import export_run
    from unihema.errors import UserInputError
    from unihema.train.device import ClusterCapacityError
    from unihema.train.launch import IncompatibleStateError, ensure_dataset, init_ray, open_storage, run_training
    from unihema.train.run_files import write_json

    start = time.perf_counter()
    try:
        session = open_storage(cfg)
    except StorageAccessError as err:
        print(f"storage error: {err}", file=sys.stderr)
        return 1
    try:
        manifest = ensure_dataset(cfg, session.storage)
        print(f"dataset {cfg.data.uri}: {manifest['records']} records {manifest['counts']['split']}")
        init_ray(cfg, embedded_env=session.server is not None)
        outcome = run_training(cfg, session.storage)
        export_uri = None
        if outcome.checkpoint_path and not args.no_export:
            export_uri = export_run(cfg, outcome, session.storage)
        write_json(
            outcome.run_uri,
            "metrics_summary.json",
            {
                **outcome.status,
                "checkpoint": outcome.checkpoint_path,
                "export": export_uri,
                "elapsed_s": time.perf_counter() - start,
            },
            session.storage,
        )
        print_summary(outcome, export_uri, time.perf_counter() - start)
        return 0 if outcome.status.get("status") == "completed" else 1
    except (
        StorageAccessError,
        FileNotFoundError,
        IncompatibleStateError,
        ClusterCapacityError,
        UserInputError,
    ) as err:  # UserInputError: a model.init_from checkpoint it cannot (or may not) load
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        session.close()


if __name__ == "__main__":
    sys.exit(main())
