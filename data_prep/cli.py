"""The data_prep command line: list, info, convert, validate, stats, dedup.

``convert`` takes a built-in dataset by name or a user's YAML spec (``--spec``); both are
the same ``DatasetSpec``, and ``info NAME --yaml`` prints a built-in one as a spec file to
start from. ``--dry-run`` converts everything in memory and prints what a run would write,
the classes found and where the label map sends them, and every problem, writing nothing.

S3 settings come from the project config like every entry point's: ``--config FILE`` and
``storage.*=value`` overrides anywhere on the command line (``storage.endpoint_url=...``,
``storage.region=...``); ``--endpoint-url`` / ``--region`` win over both. Unlike training,
data_prep writes where the endpoint points (else AWS_ENDPOINT_URL, else AWS) and starts the
embedded S3 server only when the config says ``storage.embedded: true``. Credentials come
from the config or the standard AWS chain (environment, ~/.aws, instance roles); they are
never printed. Exit codes: 0 done,
1 a check failed or the conversion passed its error threshold, 2 bad usage or missing data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys

import yaml

from data_prep import audit, registry
from data_prep import spec as spec_file
from data_prep.classmap import SPACES, UNKNOWN, normalize
from data_prep.pipeline import ConversionFailed, ConvertSettings, DatasetNotFound, convert
from data_prep.upload import UploadError
from unihema.config import StorageConfig, UniHemaConfig, load_config
from unihema.config.core import ConfigError, closest
from unihema.data.schema import TASKS
from unihema.storage import StorageAccessError, StorageSession

# An override is a bare `a.b=value` whose first key is a config section (storage.region=eu-west-1).
_SECTIONS = "|".join(f.name for f in dataclasses.fields(UniHemaConfig))
_OVERRIDE = re.compile(rf"^({_SECTIONS})(\.[A-Za-z0-9_]+)+=")


def split_overrides(p: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """(arguments for argparse, ``a.b=value`` config overrides); an option's own value is never an override."""
    takes_value = {
        opt for sub in _subparsers(p) for action in sub._actions if action.nargs != 0 for opt in action.option_strings
    }
    rest, overrides = [], []
    for i, token in enumerate(argv):
        after_option = i > 0 and argv[i - 1] in takes_value
        (overrides if _OVERRIDE.match(token) and not after_option else rest).append(token)
    return rest, overrides


def _subparsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return [p, *(q for a in subs for q in a.choices.values())]


def _storage(args) -> StorageConfig:
    """The resolved config's storage, with --endpoint-url / --region on top."""
    defaults = ["storage.embedded=false"]  # data_prep writes where the endpoint points unless told otherwise
    # No region given: the bucket's own (unihema.storage.bucket_region), not a guess that would
    # sign every request for us-east-1 or make AWS_REGION an explicit choice that may contradict it.
    storage = load_config(None, getattr(args, "config", []), args.overrides, defaults).storage
    changes = {
        k: v
        for k, v in (("endpoint_url", getattr(args, "endpoint_url", None)), ("region", getattr(args, "region", None)))
        if v
    }
    return dataclasses.replace(storage, **changes)


def _uris(args) -> list[str]:
    return [u for u in (getattr(args, "out", None), getattr(args, "uri", None), *getattr(args, "uris", ())) if u]


def _options(pairs: list[str]) -> dict:
    """--option key=value (value read as YAML: numbers, lists, mappings)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option wants key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_list(args) -> int:
    specs = list(registry.registry().values())
    if args.task:
        specs = [s for s in specs if args.task in s.tasks]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "title": s.title,
                        "tasks": s.tasks,
                        "converter": s.converter,
                        "license": s.license,
                        "upstream": s.upstream,
                        "verified": s.verified,
                    }
                    for s in specs
                ],
                indent=1,
            )
        )
        return 0
    print(f"{'name':<26} {'format':<15} {'tasks':<44} license")
    for s in specs:
        mark = "*" if s.verified else " "
        print(f"{s.name:<25}{mark} {s.converter:<15} {','.join(s.tasks):<44} {s.license}")
    print(
        f"\n{len(specs)} datasets; * = converted here from the real files. "
        "`python -m data_prep info NAME` says where to get one and where to put it."
    )
    return 0


def cmd_info(args) -> int:
    spec = registry.get(args.dataset)
    if args.yaml:
        print(spec_file.spec_to_yaml(spec), end="")
        return 0
    print(spec.where_to_get(args.src))
    print(f"  tasks: {', '.join(spec.tasks)} | diseases: {', '.join(spec.diseases) or '-'}")
    print(f"  annotation: {spec.annotation}\n  converter: {spec.converter} {json.dumps(spec.options)}")
    print(f"  splits: {spec.split}")
    if spec.labels:
        print(f"  label map: {json.dumps(spec.labels)}")
    if spec.notes:
        print(f"  notes: {spec.notes}")
    print(f"  convert: python -m data_prep convert {spec.name} --src {args.src or spec.default_src()} --out URI")
    return 0


def _spec(args):
    if bool(args.dataset) == bool(args.spec):
        raise ValueError("give a registered dataset NAME or --spec FILE (one of them)")
    return spec_file.load_spec(args.spec) if args.spec else registry.get(args.dataset)


def _dry_run_report(spec, result) -> str:
    """What a run would write, the classes found and where they go, and the problems, in words."""
    report, prep = result.manifest, result.manifest["prep"]
    counts = report["counts"]
    lines = [
        f"{spec.name}: dry run, nothing written",
        f"  source records: {prep['source_records']} ({prep['units']} units); would write {prep['written']} "
        f"{counts['split']}; rejected {prep['rejected_records']}",
        f"  tasks: {counts['task']}",
        f"  annotations: {prep['annotations']}, dropped {prep['dropped_annotations']}",
    ]
    for key in ("detection_class", "cell_class"):
        if counts[key]:
            lines.append(f"  {key.replace('_', ' ')}es written: {counts[key]}")
    classes = prep["source_classes"]
    if classes:
        lines.append("  classes found in the source -> label space:")
        space = spec.label_space()
        for c in classes:
            if c["to"] == UNKNOWN:
                near = closest(c["name"], SPACES[space])
                where = f"UNKNOWN (closest: {', '.join(near)})" if near else "UNKNOWN (nothing close)"
            else:
                where = "left out (null in labels)" if c["to"] is None else c["to"]
            lines.append(f"    {c['name']!r} -> {where}  x{c['count']}")
    met = {normalize(c["name"]) for c in classes}
    unused = [raw for raw in spec.labels if normalize(raw) not in met]
    if unused:
        lines.append(f"  label map entries no source class used: {', '.join(map(repr, unused))}")
    if prep["problems"]:
        lines.append(f"  problems by reason: {prep['problems']}")
        for entry in report["errors"][:20]:
            lines.append(f"    {entry['action']}: {entry['id']} ({entry['origin']}): {'; '.join(entry['reasons'])}")
        if len(report["errors"]) > 20:
            lines.append(f"    ... and {len(report['errors']) - 20} more")
    lines.append(
        f"  a real run would FAIL: {result.failure}"
        if result.failure
        else "  a real run would pass the error threshold"
    )
    return "\n".join(lines)


def cmd_convert(args) -> int:
    spec = _spec(args)
    if not args.out and not args.dry_run:
        raise ValueError("--out is required (or --dry-run to check without writing)")
    settings = ConvertSettings(
        workers=args.workers,
        target_shard_bytes=int(args.shard_mb * (1 << 20)),
        max_records_per_shard=args.max_records_per_shard,
        max_error_rate=args.max_error_rate,
        seed=args.seed,
        split_salt=args.split_salt,
        skip_existing=not args.no_skip_existing,
        progress=not args.no_progress,
        options=_options(args.option),
        split_ratios=tuple(float(x) for x in args.split_ratios.split(",")) if args.split_ratios else None,
        dry_run=args.dry_run,
    )
    result = convert(spec, args.src or spec.default_src(), args.out, args.storage, settings)
    if result.dry_run:
        print(_dry_run_report(spec, result))
        return 1 if result.failure else 0
    prep = result.manifest["prep"]
    print(
        f"{spec.name}: {prep['written']} of {prep['source_records']} source records written to {args.out} "
        f"({result.manifest['counts']['split']}); {prep['rejected_records']} rejected, "
        f"{prep['dropped_annotations']} annotations dropped, {prep['error_entries']} entries in errors.jsonl; "
        f"{prep['images_per_s']} images/s; shards uploaded {len(result.uploaded)}, "
        f"skipped (already there) {len(result.skipped)}"
    )
    print(f"train on it: {_train_command(args.out, result.manifest['counts']['task'])}")
    return 0


def _train_command(uri: str, task_counts: dict) -> str:
    """The pretrain command for these shards alone: a task with no records must get no share of the steps."""
    absent = [t for t in TASKS if not task_counts.get(t)]
    return " ".join(["python -m unihema.pretrain", f"data.uri={uri}", *(f"data.mix.{t}=0" for t in absent)])


def cmd_validate(args) -> int:
    report = audit.validate(args.uri, args.storage, progress=not args.no_progress)
    for problem in report.problems[:200]:
        print(f"PROBLEM {problem}")
    if len(report.problems) > 200:
        print(f"... and {len(report.problems) - 200} more")
    status = "OK" if report.ok else "FAILED"
    print(f"{status}: {args.uri}: {report.records} records {dict(report.splits)}, {len(report.problems)} problems")
    return 0 if report.ok else 1


def cmd_stats(args) -> int:
    text, manifest = audit.stats(args.uri, args.storage)
    if args.json:
        print(json.dumps({k: manifest.get(k) for k in ("records", "counts", "rejected", "prep", "dataset")}, indent=1))
    else:
        print(text)
    return 0


def cmd_dedup(args) -> int:
    report = audit.dedup(args.uris, args.storage)
    print(json.dumps(report, indent=1))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def storage_args(q):
        q.add_argument(
            "--endpoint-url", help="S3 endpoint (default: storage.endpoint_url, else AWS_ENDPOINT_URL, else AWS)"
        )
        q.add_argument(
            "--region",
            help="S3 region (default: storage.region, else the bucket's own; where the "
            "server does not say, AWS_REGION, else us-east-1)",
        )
        q.add_argument(
            "--config",
            action="append",
            default=[],
            metavar="FILE",
            help="YAML config file(s) (its storage section); storage.*=value overrides may follow anywhere",
        )

    q = sub.add_parser("list", help="the registered datasets")
    q.add_argument("--task", help="only datasets serving this task")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)

    q = sub.add_parser("info", help="where to get a dataset, where to put it, how it converts")
    q.add_argument("dataset")
    q.add_argument("--src")
    q.add_argument("--yaml", action="store_true", help="print the entry as a spec file for convert --spec")
    q.set_defaults(func=cmd_info)

    q = sub.add_parser("convert", help="convert a dataset into shards + manifest + errors.jsonl")
    q.add_argument("dataset", nargs="?", help="a registered dataset (or give --spec)")
    q.add_argument("--spec", help="a YAML dataset spec file instead of a registered name (see info NAME --yaml)")
    q.add_argument("--src", help="the downloaded dataset (default: $UNIHEMA_RAW_DATA/<name> or data/raw/<name>)")
    q.add_argument("--out", help="local folder or s3://bucket/prefix")
    q.add_argument(
        "--dry-run",
        action="store_true",
        help="read and convert everything, report counts, classes, mapping and problems; write nothing",
    )
    q.add_argument("--workers", type=int, default=0, help="worker processes (0: one per core)")
    q.add_argument("--shard-mb", type=float, default=64, help="target shard size in MiB")
    q.add_argument("--max-records-per-shard", type=int, default=10_000)
    q.add_argument(
        "--max-error-rate",
        type=float,
        default=0.05,
        help="fail when more than this fraction of records (or annotations) is lost",
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the template text phrasings")
    q.add_argument("--split-ratios", help="train,val,test for hash splits (default 0.8,0.1,0.1)")
    q.add_argument("--split-salt", default="", help="change to draw different hash splits")
    q.add_argument("--option", action="append", default=[], help="converter option override key=value")
    q.add_argument("--no-skip-existing", action="store_true", help="upload shards even when already present")
    q.add_argument("--no-progress", action="store_true")
    storage_args(q)
    q.set_defaults(func=cmd_convert)

    q = sub.add_parser("validate", help="re-read and check every shard of a converted dataset")
    q.add_argument("uri")
    q.add_argument("--no-progress", action="store_true")
    storage_args(q)
    q.set_defaults(func=cmd_validate)

    q = sub.add_parser("stats", help="counts from a converted dataset's manifest")
    q.add_argument("uri")
    q.add_argument("--json", action="store_true")
    storage_args(q)
    q.set_defaults(func=cmd_stats)

    q = sub.add_parser("dedup", help="identical images across converted datasets")
    q.add_argument("uris", nargs="+")
    storage_args(q)
    q.set_defaults(func=cmd_dedup)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    rest, overrides = split_overrides(p, list(sys.argv[1:] if argv is None else argv))
    args = p.parse_args(rest)
    args.overrides = overrides
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    session = None
    try:
        if hasattr(args, "config"):  # the commands that touch storage
            session = StorageSession(_storage(args), _uris(args))
            args.storage = session.storage
        elif overrides:
            raise ValueError(f"{args.command} takes no config overrides (got {overrides[0]!r})")
        return args.func(args)
    except ConfigError as err:
        print(f"error: config: {err}", file=sys.stderr)
        return 2
    except (KeyError, DatasetNotFound, FileNotFoundError, ValueError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    except (ConversionFailed, StorageAccessError, UploadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if session is not None:
            session.close()


__all__ = ["main", "parser"]
