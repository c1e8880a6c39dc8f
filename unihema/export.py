"""``python -m unihema.export``: a DeepSpeed checkpoint (any ZeRO stage) -> a shareable model folder.

    python -m unihema.export --checkpoint PATH --out DIR [--metrics metrics.json] [--no-verify] [--trust-checkpoint]
                             [--preset P] [--config FILE] [a.b=value ...]

PATH is a Ray Train ``checkpoint_*`` folder (holding the DeepSpeed tag folder), the tag
folder itself, a run folder (its latest checkpoint) or an export folder, locally or under
``s3://``; DIR is a local folder or ``s3://`` prefix. The folder gets consolidated fp32
``model.safetensors``, ``config.yaml`` (the run's config, found next to the checkpoint or
given with --preset/--config), ``tokenizer/`` and a model card (``README.md``: data, tasks,
metrics, limitations), and loads with ``unihema.model.pretrained.from_pretrained(DIR)``.

DeepSpeed files are loaded weights only; one that holds other pickled objects is refused,
named, unless ``--trust-checkpoint`` says its source is trusted. An ``s3://`` DIR is checked
after the upload: every file must be there with its local size.

Unless ``--no-verify``, the folder is loaded back and run on a fixed input for every task:
its outputs must equal the checkpoint's, or the export fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from unihema.checkpoint.export import ExportMismatchError, export_checkpoint, upload_folder
from unihema.config import ConfigError, add_config_arguments, load_config
from unihema.errors import UserInputError, report_cli_error

log = logging.getLogger("unihema.export")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unihema.export",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="DeepSpeed/Ray checkpoint folder, tag folder, run folder or export folder (or s3://)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (local or s3://)")
    parser.add_argument(
        "--metrics",
        default=None,
        metavar="FILE",
        help="metrics.json of `python -m unihema.evaluate` for the model card",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip reloading the folder and comparing outputs")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load a DeepSpeed checkpoint in full (unpickling arbitrary objects) when it holds more "
        "than weights: only for files from a source you trust",
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from unihema.storage import StorageAccessError, StorageSession

    session = None
    try:
        storage = load_config(args.preset, args.config, args.overrides).storage
        session = StorageSession(storage, [args.checkpoint, args.out])
        remote = args.out.startswith("s3://")
        with tempfile.TemporaryDirectory(prefix="unihema-export-") as tmp:
            local_out = Path(tmp, "export") if remote else Path(args.out)
            if not remote and local_out.exists() and not local_out.is_dir():
                raise UserInputError(f"{local_out}: exists and is not a folder")
            report = export_checkpoint(
                args.checkpoint,
                local_out,
                preset=args.preset,
                files=args.config,
                overrides=args.overrides,
                metrics_file=args.metrics,
                verify=not args.no_verify,
                storage=session.storage,
                trust=args.trust_checkpoint,
            )
            if remote:
                upload_folder(local_out, args.out, session.storage)
                report["out"] = args.out
        verified = (
            f"; verified: outputs identical (max |difference| {report['max_abs_difference']:g})"
            if "max_abs_difference" in report
            else ""
        )
        print(
            f"exported {report['kind']} checkpoint {report['checkpoint']} -> {report['out']} "
            f"({report['parameters']:,} parameters){verified}"
        )
        return 0
    except (ConfigError, UserInputError, StorageAccessError, ExportMismatchError) as err:
        return report_cli_error(err)
    finally:
        if session is not None:
            session.close()


if __name__ == "__main__":
    sys.exit(main())
