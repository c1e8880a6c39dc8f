"""``python -m unihema.tune``: Ray Tune sweep of the per-task loss weights (and other numeric settings).

    python -m unihema.tune [--preset P] [--config FILE] [a.b=value ...] [--resume] [--preview] [--out DIR]

Searches the config paths in ``tune.search`` (default: the six ``loss.<task>`` weights; add
``data.mix.<task>`` or ``train.lr``), each trial a Ray Train run of ``tune.max_steps_per_trial``
steps, judged by the chance-normalized objective, ASHA stopping the weak ones early. Writes a
results table (CSV, markdown), the best configuration as a preset YAML for
``python -m unihema.pretrain --config`` and a plot of each task's metric against its weight.
``--resume`` continues an interrupted sweep of the same name from the run storage;
``--preview`` prints the trial configurations the seed gives, without running anything.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from unihema.config import ConfigError, add_config_arguments, config_from_args, read_yaml
from unihema.config.core import deep_merge, parse_override
from unihema.storage import StorageAccessError

DEFAULT_OUT = "outputs/tune"


def user_layer(args: argparse.Namespace) -> dict:
    """The settings the user gave on top of the preset (files, then overrides), for the best preset."""
    layer: dict = {}
    for path in args.config:
        layer = deep_merge(layer, read_yaml(path))
    for text in args.overrides:
        layer = deep_merge(layer, parse_override(text))
    return layer


def print_preview(cfg) -> None:
    from unihema.tune.search import preview

    trials = preview(cfg)
    paths = list(cfg.tune.search)
    print(f"{len(trials)} trial(s), searcher {cfg.tune.searcher}, seed {cfg.tune.seed}:")
    print("  trial  " + "  ".join(f"{p:>20s}" for p in paths))
    for i, params in enumerate(trials):
        print(f"  {i:5d}  " + "  ".join(f"{params[p]:20.4g}" for p in paths))


def run(cfg, args) -> int:
    from unihema.train.launch import IncompatibleStateError, ensure_dataset, init_ray, open_storage
    from unihema.train.run_files import upload_dir
    from unihema.tune.report import FAILED, UNFINISHED, best_row, build_rows, to_markdown, write_report
    from unihema.tune.sweep import build_tuner, can_resume, restore_tuner, sweep_name, sweep_uri

    start = time.perf_counter()
    session = open_storage(cfg)
    try:
        exists = can_resume(cfg, session.storage)
        if args.resume and not exists:
            print(f"error: no sweep to resume at {sweep_uri(cfg)} (start it without --resume)", file=sys.stderr)
            return 1
        if exists and not args.resume:
            # A second experiment in the same folder would leave --resume to pick one of the two.
            print(
                f"error: a sweep named {sweep_name(cfg)!r} already exists at {sweep_uri(cfg)}: continue it "
                f"with --resume, or name a new one with run_name=...",
                file=sys.stderr,
            )
            return 1
        manifest = ensure_dataset(cfg, session.storage)
        print(f"dataset {cfg.data.uri}: {manifest['records']} records {manifest['counts']['split']}")
        init_ray(cfg)
        tuner = restore_tuner(cfg, session.storage) if args.resume else build_tuner(cfg, session.storage)
        results = tuner.fit()
        rows = build_rows(results, cfg)
        out_dir = Path(args.out or Path(DEFAULT_OUT) / sweep_name(cfg))
        files = write_report(rows, cfg, user_layer(args), out_dir, sweep_name(cfg))
        upload_dir(out_dir, sweep_uri(cfg), "report", session.storage)
        best = best_row(rows)
        failed = sum(r["status"].startswith(FAILED) for r in rows)
        unfinished = sum(r["status"] == UNFINISHED for r in rows)
        print(
            f"\n== UniHema sweep {sweep_name(cfg)}: {len(rows)} trial(s), {failed} failed, {unfinished} unfinished "
            f"({(time.perf_counter() - start) / 60:.1f} min) ==\n"
        )
        print(to_markdown(rows))
        if best is not None:
            print(f"best: trial {best['trial']}, objective {best['objective']:.4f}")
        for kind, path in files.items():
            print(f"  {kind:9s} {path}")
        print(f"  storage   {sweep_uri(cfg)} (Tune state, trials/<id> runs and checkpoints, report/)")
        if unfinished:
            print("\nThe sweep was interrupted: continue it with the same arguments and --resume.")
            return 1
        return 0 if best is not None else 1
    except (StorageAccessError, FileNotFoundError, IncompatibleStateError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        session.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unihema.tune", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted sweep of this name (Tuner.restore from the run storage)",
    )
    parser.add_argument(
        "--preview", action="store_true", help="print the trial configurations of this seed and exit; starts nothing"
    )
    parser.add_argument(
        "--out", default=None, metavar="DIR", help=f"local folder for the report (default {DEFAULT_OUT}/<sweep name>)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from unihema.model.weights import PretrainedWeightsError, check_available
    from unihema.tune.search import MissingPackageError, build_searcher
    from unihema.tune.space import check_search

    try:
        cfg = config_from_args(args)
        check_search(cfg)
        build_searcher(cfg)  # a missing optuna fails here, before any server or cluster starts
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except MissingPackageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.preview:
        print_preview(cfg)
        return 0
    try:
        check_available(cfg.model)  # weights every trial would fail to load stop the sweep here
    except PretrainedWeightsError as err:
        print(f"weights error: {err}", file=sys.stderr)
        return 2
    return run(cfg, args)


if __name__ == "__main__":
    sys.exit(main())
