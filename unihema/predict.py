"""``python -m unihema.predict``: run a trained Uni-Hema on image files.

    python -m unihema.predict IMAGE [IMAGE ...] [--task T ...] [--question Q ...] [--text "the <mask> ..."]
                              [--checkpoint PATH] [--out DIR] [--threshold 0.3] [--device auto]

Per image it writes ``<name>.json`` (cell boxes with classes, scores and morphology
attributes; segmentation instances as COCO RLE; the cell class; answers; filled text) and
``<name>_overlay.png`` (boxes, masks and labels drawn on the image), plus
``<name>_mask.png`` (the semantic foreground) when segmenting. The default checkpoint is the
export ``make demo`` leaves in the embedded S3 store; any export folder, DeepSpeed
checkpoint or run folder works (see ``unihema.checkpoint.load``).

Images in any mode (grayscale, palette, RGBA, 16-bit) are converted to RGB as in training;
a file that is missing, not an image, corrupt or too large is refused with one line naming
it and the reason (exit code 2; ``--skip-bad`` carries on with the others and exits 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from unihema.config import ConfigError, add_config_arguments, load_config
from unihema.data.images import MAX_PIXELS
from unihema.errors import UserInputError, one_line, report_cli_error

TASK_CHOICES = ("detection", "segmentation", "classification", "morphology", "vqa", "mlm")
DEFAULT_TASKS = ("detection", "segmentation", "classification")
log = logging.getLogger("unihema.predict")


def default_checkpoint(preset: str | None = None) -> str:
    """Where ``make demo`` exports: <storage.run_uri>/<run name>/export of the demo preset."""
    from unihema.storage import parse_uri
    from unihema.train.launch import run_name_of

    cfg = load_config(preset or "demo")
    return str(parse_uri(cfg.storage.run_uri).join(run_name_of(cfg), "export"))


def parse_tasks(values: list[str], args) -> list[str]:
    tasks: list[str] = []
    for value in values or []:
        for t in (v.strip() for v in value.split(",")):
            if t == "all":
                tasks.extend(TASK_CHOICES)
            elif t:
                if t not in TASK_CHOICES:
                    raise UserInputError(f"unknown task {t!r}; choose from {', '.join(TASK_CHOICES)} or all")
                tasks.append(t)
    if not tasks:
        tasks = list(DEFAULT_TASKS) + (["vqa"] if args.question else []) + (["mlm"] if args.text else [])
    tasks = list(dict.fromkeys(tasks))
    if "vqa" in tasks and not args.question:
        raise UserInputError("--task vqa needs at least one --question")
    if "mlm" in tasks and not args.text:
        raise UserInputError("--task mlm needs --text with <mask> where words are missing")
    for text in args.text or []:
        from unihema.evaluation.inference import to_sentinels

        if to_sentinels(text) == text:
            raise UserInputError(f"--text {text!r} has no <mask> (or [MASK]) to fill")
    return tasks


def _rle(mask):
    import numpy as np
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def predict_image(predictor, loaded, tasks: list[str], args) -> dict:
    """Everything the asked tasks predict for one image (masks still as arrays)."""
    image = loaded.image
    result: dict = {
        "image": str(loaded.path),
        "width": image.size[0],
        "height": image.size[1],
        "mode": loaded.mode,
        "converted_to_rgb": loaded.converted,
    }
    if "detection" in tasks:
        result["detections"] = predictor.detect(image)
    if "segmentation" in tasks:
        result["segmentation"] = predictor.segment(image)
    if "classification" in tasks or "morphology" in tasks:
        cls = predictor.classify(image)
        if "morphology" in tasks:
            result["morphology"] = cls["morphology"]
        if "classification" in tasks:
            result["classification"] = cls
    if "vqa" in tasks:
        result["vqa"] = [{"question": q, "answer": predictor.answer(image, q, args.field)} for q in args.question]
    if "mlm" in tasks:
        result["mlm"] = [predictor.fill(image, t, args.field) for t in args.text]
    return result


def write_outputs(result: dict, image, out_dir: Path, stem: str) -> dict:
    """The JSON (masks as RLE / a PNG) and the overlay; returns the JSON written."""
    import numpy as np
    from PIL import Image

    from unihema.evaluation.overlay import draw_overlay

    files = {"overlay": f"{stem}_overlay.png"}
    draw_overlay(image, result).save(out_dir / files["overlay"])
    payload = {k: v for k, v in result.items() if k != "segmentation"}
    seg = result.get("segmentation")
    if seg is not None:
        files["mask"] = f"{stem}_mask.png"
        Image.fromarray(seg["semantic"].astype(np.uint8) * 255).save(out_dir / files["mask"])
        payload["segmentation"] = {
            "foreground_fraction": round(float(seg["semantic"].mean()), 4),
            "mask_png": files["mask"],
            "instances": [
                {**{k: v for k, v in inst.items() if k != "mask"}, "mask_rle": _rle(inst["mask"])}
                for inst in seg["instances"]
            ],
        }
    payload["files"] = files
    (out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    return payload


def summary_line(payload: dict, out_dir: Path) -> str:
    from collections import Counter

    parts = [Path(payload["image"]).name + ":"]
    if "detections" in payload:
        counts = Counter(d["label"] for d in payload["detections"])
        top = ", ".join(f"{k} {v}" for k, v in counts.most_common(4))
        n = len(payload["detections"])
        parts.append(f"{n} cell{'' if n == 1 else 's'}" + (f" ({top})" if top else "") + ";")
    if "segmentation" in payload:
        parts.append(f"foreground {payload['segmentation']['foreground_fraction']:.0%};")
    if "classification" in payload:
        c = payload["classification"]
        parts.append(f"cell {c['label']} ({c['score']:.2f});")
    for qa in payload.get("vqa", []):
        parts.append(f"Q {qa['question']!r} -> {qa['answer']!r};")
    for item in payload.get("mlm", []):
        parts.append(f"filled {item['filled']!r};")
    parts.append(f"-> {out_dir / payload['files']['overlay']}")
    return " ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m unihema.predict",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, TIFF, ...)")
    parser.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="T",
        help=f"task(s), repeatable or comma-separated: {', '.join(TASK_CHOICES)}, all "
        f"(default: {', '.join(DEFAULT_TASKS)}, plus vqa / mlm when --question / --text)",
    )
    parser.add_argument("--question", action="append", default=[], metavar="Q", help="a question about each image")
    parser.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="TEXT",
        help="a sentence with <mask> for each missing span, filled from the image (MLM)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="export folder, DeepSpeed checkpoint or run folder, local or s3:// (default: the export of `make demo`)",
    )
    parser.add_argument("--out", default="predictions", metavar="DIR", help="output folder (default: predictions)")
    parser.add_argument("--threshold", type=float, default=0.3, help="minimum detection score (default 0.3)")
    parser.add_argument("--max-detections", type=int, default=100)
    parser.add_argument(
        "--field",
        action="store_true",
        help="the images are fields of view: VQA/MLM use the detection geometry, not a cell crop's",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    parser.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS, help=f"refuse larger images (default {MAX_PIXELS:,})"
    )
    parser.add_argument("--skip-bad", action="store_true", help="skip unusable images (warn) instead of exit code 2")
    add_config_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from unihema.checkpoint.load import load_checkpoint, resolve_device
    from unihema.evaluation.images import read_image_file
    from unihema.evaluation.inference import Predictor
    from unihema.storage import StorageAccessError, StorageSession

    session = None
    try:
        tasks = parse_tasks(args.task, args)
        if not 0.0 <= args.threshold <= 1.0:
            raise UserInputError(f"--threshold {args.threshold} is not in [0, 1]")
        # Check every image before loading the model: a typo should not cost a model load.
        bad = 0
        good: list[Path] = []
        for path in args.images:
            try:
                read_image_file(path, args.max_pixels)
                good.append(Path(path))
            except UserInputError as err:
                bad += 1
                print(f"{'warning' if args.skip_bad else 'error'}: {one_line(err)}", file=sys.stderr)
        if not good:
            return 2
        checkpoint = args.checkpoint or default_checkpoint(args.preset)
        storage = load_config(args.preset, args.config, args.overrides).storage
        session = StorageSession(storage, [checkpoint])
        device = resolve_device(args.device)
        start = time.perf_counter()
        try:
            loaded = load_checkpoint(
                checkpoint,
                preset=args.preset,
                files=args.config,
                overrides=args.overrides,
                device=device,
                storage=session.storage,
            )
        except UserInputError as err:
            if args.checkpoint is None:
                detail = one_line(err).removeprefix(f"{checkpoint}: ")
                raise UserInputError(
                    f"no demo checkpoint at {checkpoint} ({detail}): run `make demo` first or pass --checkpoint"
                ) from None
            raise
        log.info("loaded %s (%s) in %.1fs", checkpoint, loaded.kind, time.perf_counter() - start)
        predictor = Predictor(loaded.model, loaded.cfg, loaded.tokenizer, device, args.threshold, args.max_detections)
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for path in good:
            try:
                image = read_image_file(path, args.max_pixels)
            except UserInputError as err:  # changed since the check
                bad += 1
                print(f"error: {one_line(err)}", file=sys.stderr)
                continue
            stem = path.stem
            k = 1
            while stem in used:
                k += 1
                stem = f"{path.stem}-{k}"
            used.add(stem)
            result = predict_image(predictor, image, tasks, args)
            result["checkpoint"] = loaded.source
            payload = write_outputs(result, image.image, out_dir, stem)
            print(summary_line(payload, out_dir))
        return 2 if bad and not args.skip_bad else 0
    except (ConfigError, UserInputError, StorageAccessError) as err:
        return report_cli_error(err)
    finally:
        if session is not None:
            session.close()


if __name__ == "__main__":
    sys.exit(main())
