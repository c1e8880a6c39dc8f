"""``python -m unihema.evaluate``: every task's metrics for a checkpoint on a dataset split.

    python -m unihema.evaluate --checkpoint PATH --data URI [--out DIR] [--split val]
                               [--tasks detection,vqa] [--max-batches N] [--no-probe] [--no-plots]
                               [--trust-checkpoint]
                               [--preset P] [--config FILE] [a.b=value ...]

PATH is an export folder, a DeepSpeed / Ray Train checkpoint folder or a run folder
(local or ``s3://``; see ``unihema.checkpoint.load``); URI holds Parquet shards
(``split=<name>/``) written by ``data_prep`` or the synthetic generator. The config comes
from the export's ``config.yaml`` or the run's, then ``--config`` files and overrides
(``data.batch_size=4``, ...); a bare DeepSpeed checkpoint needs ``--preset`` or ``--config``.
DeepSpeed files are loaded weights only; one that holds other pickled objects is refused,
named, unless ``--trust-checkpoint`` says its source is trusted.

Metrics: detection COCO mAP / mAP50 / mAP75 and per-class AP (pycocotools); classification
accuracy, weighted and macro F1, confusion matrix (scikit-learn); segmentation Dice and IoU;
morphology per-attribute F1 and macro F1 ("not annotated" left out); VQA exact match,
BLEU-1..4 (sacrebleu) and ROUGE-L (rouge-score); MLM token accuracy; the DinoBloom linear
probe on the frozen cell feature. Writes ``metrics.json``, ``report.md`` and PNG plots
(confusion matrices, precision-recall curves) into DIR.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from unihema.config import TASKS, ConfigError, add_config_arguments, load_config
from unihema.errors import UserInputError, missing_packages, report_cli_error

log = logging.getLogger("unihema.evaluate")


def parse_tasks(text: str | None) -> list[str]:
    if not text or text == "all":
        return list(TASKS)
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise UserInputError(f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)} or all")
    return list(dict.fromkeys(tasks))


def check_packages(tasks: list[str], probe: bool, plots: bool) -> None:
    """Fail before any work when an optional package the asked metrics need is missing."""
    from unihema.evaluation.run import NEEDS

    parts = list(tasks) + (["linear_probe"] if probe else []) + (["plots"] if plots else [])
    modules = list(dict.fromkeys(m for p in parts for m in NEEDS.get(p, [])))
    missing = missing_packages(modules)
    if missing:
        raise UserInputError(
            f"evaluation needs {', '.join(missing)}: pip install {' '.join(missing)} "
            "(or leave out what needs them: --tasks, --no-probe, --no-plots)"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m unihema.evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="export folder, DeepSpeed/Ray checkpoint folder or run folder (local or s3://)",
    )
    parser.add_argument(
        "--data",
        default=None,
        metavar="URI",
        help="dataset (local folder or s3://bucket/prefix); default: the config's data.uri",
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default: eval-<split>)")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--tasks", default="all", help=f"comma-separated subset of {', '.join(TASKS)} (default all)")
    parser.add_argument("--max-batches", type=int, default=None, metavar="N", help="at most N batches per task")
    parser.add_argument("--no-probe", action="store_true", help="skip the linear probe")
    parser.add_argument(
        "--probe-max-batches",
        type=int,
        default=None,
        metavar="N",
        help="at most N train batches of cells for the linear probe",
    )
    parser.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load a DeepSpeed checkpoint in full (unpickling arbitrary objects) when it holds more "
        "than weights: only for files from a source you trust",
    )
    add_config_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from unihema.checkpoint.load import load_checkpoint, resolve_device
    from unihema.evaluation.run import evaluate, now, write_results
    from unihema.storage import StorageAccessError, StorageSession

    session = None
    start = time.perf_counter()
    try:
        tasks = parse_tasks(args.tasks)
        if args.max_batches is not None and args.max_batches < 1:
            raise UserInputError("--max-batches must be at least 1")
        check_packages(tasks, not args.no_probe, not args.no_plots)
        storage = load_config(args.preset, args.config, args.overrides).storage
        session = StorageSession(storage, [args.checkpoint, args.data])
        device = resolve_device(args.device)
        loaded = load_checkpoint(
            args.checkpoint,
            preset=args.preset,
            files=args.config,
            overrides=list(args.overrides) + ([f"data.uri={args.data}"] if args.data else []),
            device=device,
            storage=session.storage,
            trust=args.trust_checkpoint,
        )
        cfg = loaded.cfg
        session.ensure([cfg.data.uri])  # the dataset named by the checkpoint's own config
        print(f"[evaluate] {loaded.kind} checkpoint {loaded.source} on {cfg.data.uri} split {args.split}", flush=True)
        metrics, artifacts = evaluate(
            loaded.model,
            cfg,
            loaded.tokenizer,
            session.storage,
            split=args.split,
            tasks=tasks,
            max_batches=args.max_batches,
            probe=not args.no_probe,
            probe_max_batches=args.probe_max_batches,
            device=device,
        )
        metrics = {
            "checkpoint": loaded.source,
            "checkpoint_kind": loaded.kind,
            **metrics,
            "preset": cfg.preset,
            "parameters": sum(p.numel() for p in loaded.model.parameters()),
            "device": str(device),
            "torch": torch.__version__,
            "max_batches": args.max_batches,
            "created": now(),
            "seconds": round(time.perf_counter() - start, 2),
        }
        out_dir = Path(args.out or f"eval-{args.split}")
        written = write_results(metrics, artifacts, out_dir, plots=not args.no_plots)
        if not metrics["tasks"]:
            print(f"warning: nothing was evaluated: {metrics['skipped']}", file=sys.stderr)
        print(
            f"[evaluate] wrote {written['metrics']}, {written['report']} and {len(written['plots'])} plots "
            f"in {time.perf_counter() - start:.1f}s"
        )
        return 0 if metrics["tasks"] else 1
    except (ConfigError, UserInputError, StorageAccessError) as err:
        return report_cli_error(err)
    finally:
        if session is not None:
            session.close()


if __name__ == "__main__":
    sys.exit(main())
