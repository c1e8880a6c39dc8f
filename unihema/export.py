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
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch

from unihema.config import ConfigError, add_config_arguments, load_config
from unihema.evaluation.errors import UserInputError, one_line, report_cli_error

log = logging.getLogger("unihema.export")


class ExportMismatchError(RuntimeError):
    """The exported folder does not reproduce the checkpoint's outputs."""


def probe_batch(cfg, tokenizer, seed: int = 0, size: int = 64) -> dict:
    """A fixed input that exercises every head: one image, a prompt and text labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(1, 3, size, size, generator=g)
    ids, mask = tokenizer.encode(["what type of cell is this?"], cfg.model.text.max_length)
    labels, label_mask = tokenizer.encode(["a lymphocyte"], cfg.model.text.max_length)
    return {"images": images, "pixel_mask": torch.zeros(1, size, size, dtype=torch.bool),
            "tasks": ["detection", "classification", "segmentation", "morphology", "vqa"],
            "prompt_ids": ids, "prompt_mask": mask, "text_labels": labels.masked_fill(~label_mask, -100)}


def _flat(out, prefix: str = "") -> dict[str, torch.Tensor]:
    if torch.is_tensor(out):
        return {prefix: out}
    items = out.items() if isinstance(out, dict) else enumerate(out) if isinstance(out, (list, tuple)) else ()
    flat: dict[str, torch.Tensor] = {}
    for k, v in items:
        flat.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return flat


@torch.no_grad()
def output_difference(model_a, model_b, cfg, tokenizer) -> tuple[float, bool]:
    """(max |a - b| over every output tensor, generated answers equal) on :func:`probe_batch`."""
    batch = probe_batch(cfg, tokenizer)
    device_a = next(model_a.parameters()).device
    device_b = next(model_b.parameters()).device
    outs = []
    gens = []
    for model, device in ((model_a, device_a), (model_b, device_b)):
        model.eval()
        b = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        outs.append(_flat(model(b)))
        gens.append(model.generate_text(b["images"], b["pixel_mask"], b["prompt_ids"], b["prompt_mask"],
                                        max_new_tokens=8).cpu())
    if outs[0].keys() != outs[1].keys():
        return float("inf"), False
    diff = max((float((outs[0][k].float().cpu() - outs[1][k].float().cpu()).abs().max())
                if outs[0][k].numel() else 0.0) for k in outs[0])
    return diff, bool(torch.equal(gens[0], gens[1]))


def card_info(loaded, metrics_file: str | None) -> dict:
    status = loaded.info.get("status") or {}
    info = {"source": loaded.source, "step": status.get("step"), "data": loaded.cfg.data.uri}
    if metrics_file:
        try:
            metrics = json.loads(Path(metrics_file).read_text())
        except (OSError, ValueError) as err:
            raise UserInputError(f"{metrics_file}: cannot read metrics: {one_line(err)}") from None
        info["metrics"] = metrics.get("tasks", metrics)
        info["metrics_source"] = f"`python -m unihema.evaluate` on `{metrics.get('data', '?')}` " \
                                 f"split `{metrics.get('split', '?')}`"
    elif status.get("validation"):
        info["metrics"] = status["validation"]
        info["metrics_source"] = "the run's last validation (a few held-out batches per task)"
    return info


def export_checkpoint(checkpoint: str, out: str | Path, *, preset=None, files=(), overrides=(), metrics_file=None,
                      verify: bool = True, storage=None, trust: bool = False) -> dict:
    """Write the export folder for ``checkpoint`` into ``out`` (local); returns what happened."""
    from unihema.evaluation.checkpoint import load_checkpoint
    from unihema.model.pretrained import load_pretrained, save_pretrained

    loaded = load_checkpoint(checkpoint, preset=preset, files=files, overrides=overrides, device="cpu",
                             storage=storage, trust=trust)
    folder = save_pretrained(loaded.model, out, loaded.cfg, tokenizer=loaded.tokenizer,
                             card_info=card_info(loaded, metrics_file))
    report = {"checkpoint": loaded.source, "kind": loaded.kind, "out": str(folder),
              "tensors": len(loaded.model.state_dict()),
              "parameters": sum(p.numel() for p in loaded.model.parameters())}
    if verify:
        reloaded = load_pretrained(folder)
        diff, same_text = output_difference(loaded.model, reloaded.model, loaded.cfg, loaded.tokenizer)
        report.update(max_abs_difference=diff, same_generation=same_text)
        if diff != 0.0 or not same_text:
            raise ExportMismatchError(f"the exported model does not reproduce the checkpoint: "
                                      f"max |difference| {diff:g}, "
                                      f"generated text {'equal' if same_text else 'different'}")
    return report


def upload_folder(local: Path, uri: str, storage) -> None:
    import pyarrow.fs as pafs

    from unihema.storage import describe_failure, ensure_bucket, open_filesystem, parse_uri
    from unihema.storage.verify import verify_upload

    ensure_bucket(uri, storage)
    fs, root = open_filesystem(parse_uri(uri), storage)
    try:
        pafs.copy_files(str(local), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    except OSError as err:
        raise describe_failure(uri, storage, err) from None
    verify_upload(local, fs, root, uri)  # every file there, full size, before the export is reported


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unihema.export", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="DeepSpeed/Ray checkpoint folder, tag folder, run folder or export folder (or s3://)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (local or s3://)")
    parser.add_argument("--metrics", default=None, metavar="FILE",
                        help="metrics.json of `python -m unihema.evaluate` for the model card")
    parser.add_argument("--no-verify", action="store_true", help="skip reloading the folder and comparing outputs")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a DeepSpeed checkpoint in full (unpickling arbitrary objects) when it holds more "
                             "than weights: only for files from a source you trust")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from unihema.storage import StorageSession
    from unihema.storage import StorageAccessError

    session = None
    try:
        storage = load_config(args.preset, args.config, args.overrides).storage
        session = StorageSession(storage, [args.checkpoint, args.out])
        remote = args.out.startswith("s3://")
        with tempfile.TemporaryDirectory(prefix="unihema-export-") as tmp:
            local_out = Path(tmp, "export") if remote else Path(args.out)
            if not remote and local_out.exists() and not local_out.is_dir():
                raise UserInputError(f"{local_out}: exists and is not a folder")
            report = export_checkpoint(args.checkpoint, local_out, preset=args.preset, files=args.config,
                                       overrides=args.overrides, metrics_file=args.metrics,
                                       verify=not args.no_verify, storage=session.storage,
                                       trust=args.trust_checkpoint)
            if remote:
                upload_folder(local_out, args.out, session.storage)
                report["out"] = args.out
        verified = (f"; verified: outputs identical (max |difference| {report['max_abs_difference']:g})"
                    if "max_abs_difference" in report else "")
        print(f"exported {report['kind']} checkpoint {report['checkpoint']} -> {report['out']} "
              f"({report['parameters']:,} parameters){verified}")
        return 0
    except (ConfigError, UserInputError, StorageAccessError, ExportMismatchError) as err:
        return report_cli_error(err)
    finally:
        if session is not None:
            session.close()


if __name__ == "__main__":
    sys.exit(main())
