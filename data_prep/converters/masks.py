"""Mask images beside the images: binary, multi-value (e.g. 0/128/255) or per-instance.

Modes: ``binary`` (foreground = pixel >= threshold), ``values`` (each pixel value maps to a
segmentation class, None = background; unmapped values are an error unless ``snap`` moves
them to the nearest mapped value, for JPEG-compressed masks), ``colours`` (the same with
RGB colours written ``"#rrggbb"``: colour-coded masks would collide once made grey, red and
green can share a grey level), ``instances`` (a label image:
each non-zero value is one instance) and ``instance_files`` (a folder of binary masks per
image, one file per instance). The record gets the semantic mask; with ``instance_label``
it also gets one box and mask per instance (connected components in the first two modes),
so a segmentation set also feeds detection. ``images``/``masks`` may contain ``*`` folders
(MP-IDB: ``*/img`` and ``*/gt``), matched position by position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.context import Context
from data_prep.converters.base import Converter, Plan, key_of, rel
from data_prep.geometry import Annotations, components, mask_box, semantic_png
from data_prep.images import decode, is_image, load_image
from data_prep.problems import Outcome, SourceProblem
from unihema.labels import SEGMENTATION_CLASSES

_MODES = ("binary", "values", "colours", "instances", "instance_files")


def colour_value(key: object) -> int:
    """``"#rrggbb"`` as the 24-bit integer a colour mask pixel is packed into."""
    text = str(key).strip()
    if len(text) != 7 or not text.startswith("#"):
        raise ValueError(f"values: colour {key!r} is not written as '#rrggbb' (e.g. '#ff0000' for red)")
    try:
        return int(text[1:], 16)
    except ValueError:
        raise ValueError(f"values: colour {key!r} is not written as '#rrggbb' (e.g. '#ff0000' for red)") from None


def _rgb(packed: np.ndarray) -> np.ndarray:
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], -1).astype(np.int64)


def _pairs(ctx: Context) -> list[tuple[Path, Path]]:
    """(image folder, mask folder) pairs; a wildcard folder of ``masks`` takes the matched image folder's name."""
    images, masks = ctx.options["images"], ctx.options["masks"]
    if "*" not in images:
        return [(ctx.src / images, ctx.src / masks)]
    pairs = []
    for img_dir in sorted(p for p in ctx.src.glob(images) if p.is_dir()):
        parts = img_dir.relative_to(ctx.src).parts
        mask_parts = [parts[i] if "*" in m and i < len(parts) else m for i, m in enumerate(Path(masks).parts)]
        pairs.append((img_dir, ctx.src.joinpath(*mask_parts)))
    return pairs


def _read_mask(path: Path, mode: str) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError:
        raise SourceProblem("missing_mask", f"no mask file {path.name}") from None
    img = decode(data, "mask")
    if mode == "instances":
        return np.asarray(img if img.mode in ("I", "I;16", "L") else img.convert("L")).astype(np.int64)
    if mode == "colours":
        rgb = np.asarray(img.convert("RGB")).astype(np.int64)
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return np.asarray(img.convert("L"))


class MasksConverter(Converter):
    name = "masks"
    primary = "segmentation"
    OPTIONS = {
        "images": "images",
        "image_pattern": "*",
        "masks": "masks",
        "mask_name": "{stem}.png",
        "mode": "binary",
        "threshold": 128,
        "values": {},
        "snap": False,
        "instance_label": None,
        "min_instance_pixels": 10,
    }

    def check(self, options: dict) -> None:
        if options["mode"] not in _MODES:
            raise ValueError(f"mode: invalid value {options['mode']!r}; allowed: {', '.join(_MODES)}")
        if options["mode"] in ("values", "colours") and not options["values"]:
            raise ValueError(
                f"values: mode {options['mode']!r} needs a mapping of mask "
                f"{'colours' if options['mode'] == 'colours' else 'values'} to segmentation classes"
            )
        for key in options["values"] if options["mode"] == "colours" else ():
            colour_value(key)
        bad = [v for v in options["values"].values() if v is not None and v not in SEGMENTATION_CLASSES]
        if bad:
            raise ValueError(
                f"values: {bad[0]!r} is not a segmentation class; allowed: "
                f"{', '.join(SEGMENTATION_CLASSES)} or null (background)"
            )

    def plan(self, ctx: Context) -> Plan:
        if ctx.options["mode"] not in _MODES:
            raise ValueError(f"masks converter: mode must be one of {_MODES}, got {ctx.options['mode']!r}")
        pairs = _pairs(ctx)
        if not pairs or not pairs[0][0].is_dir():
            raise FileNotFoundError(f"no image folder {ctx.options['images']!r} under {ctx.src}")
        units = []
        for img_dir, mask_dir in pairs:
            # image_pattern tells images from masks when both share a folder ("*.bmp" beside "*.png").
            for img in sorted(p for p in img_dir.rglob(ctx.options["image_pattern"]) if is_image(p)):
                sub = img.relative_to(img_dir)
                mask = mask_dir / sub.parent / ctx.options["mask_name"].format(stem=img.stem, name=img.name)
                units.append((str(img), str(mask), key_of(img, ctx.src)))
        return Plan(units)

    def _instances(self, path: Path, semantic: np.ndarray, ctx: Context, shape) -> list[np.ndarray]:
        mode, min_px = ctx.options["mode"], ctx.options["min_instance_pixels"]
        if mode == "instance_files":
            if not path.is_dir():
                raise SourceProblem("missing_mask", f"no instance mask folder {path.name}")
            out = []
            for f in sorted(p for p in path.iterdir() if is_image(p)):
                m = _read_mask(f, "binary")
                if m.shape != shape:
                    raise SourceProblem(
                        "mask_size_mismatch", f"{f.name} is {m.shape[1]}x{m.shape[0]}, image {shape[1]}x{shape[0]}"
                    )
                out.append(m >= ctx.options["threshold"])
            return out
        return components(semantic > 0, min_px)

    def _semantic(self, raw: np.ndarray, ctx: Context) -> np.ndarray:
        mode = ctx.options["mode"]
        if mode == "binary":
            return (raw >= ctx.options["threshold"]).astype(np.uint8)
        if mode == "instances":
            return (raw > 0).astype(np.uint8)
        colours = mode == "colours"
        table = {(colour_value(k) if colours else int(k)): v for k, v in ctx.options["values"].items()}
        keys = np.array(sorted(table))
        present = np.unique(raw)
        unknown = [int(v) for v in present if int(v) not in table]
        if unknown and not ctx.options["snap"]:
            shown = (lambda v: f"#{v:06x}") if colours else int
            raise SourceProblem(
                "unknown_mask_value",
                f"{'colours' if colours else 'values'} "
                f"{[shown(v) for v in unknown[:10]]} are not in the mapping "
                f"{[shown(v) for v in sorted(table)]}",
            )
        if unknown and colours:  # nearest colour in RGB, not nearest packed integer
            raw = keys[((_rgb(raw)[..., None, :] - _rgb(keys)) ** 2).sum(-1).argmin(-1)]
        elif unknown:
            raw = keys[np.abs(raw[..., None].astype(int) - keys).argmin(-1)]
        out = np.zeros(raw.shape, np.uint8)
        for value, name in table.items():
            if name is not None:
                out[raw == value] = SEGMENTATION_CLASSES.index(name)
        return out

    def convert(self, unit, ctx: Context) -> list[Outcome]:
        img_path, mask_path, key = unit
        mask_path = Path(mask_path)
        rid, out = ctx.record_id(key), Outcome()
        origin = f"{rel(Path(img_path), ctx)} + {rel(mask_path, ctx)}"
        mode = ctx.options["mode"]
        try:
            image, _ = load_image(Path(img_path))
            shape = (image.height, image.width)
            if mode == "instance_files":
                instances = self._instances(mask_path, None, ctx, shape)
                semantic = np.zeros(shape, np.uint8)
                for m in instances:
                    semantic[m] = 1
            else:
                raw = _read_mask(mask_path, mode)
                if raw.shape != shape:
                    raise SourceProblem(
                        "mask_size_mismatch",
                        f"mask is {raw.shape[1]}x{raw.shape[0]}, image {image.width}x{image.height}",
                    )
                semantic = self._semantic(raw, ctx)
                instances = [raw == v for v in np.unique(raw) if v != 0] if mode == "instances" else None
        except SourceProblem as problem:
            return [out.reject(rid, origin, [problem.reason])]
        fields: dict = {"semantic_mask": semantic_png(semantic)}
        if ctx.options["instance_label"]:
            if instances is None:
                instances = components(semantic > 0, ctx.options["min_instance_pixels"])
            boxes = Annotations(rid, origin, image.width, image.height, ctx.labels, out)
            for i, m in enumerate(instances):
                boxes.add(mask_box(m) or [0, 0, 0, 0], ctx.options["instance_label"], f"instance {i}", mask=m)
            fields.update(boxes.fields())
            fields["semantic_mask"] = semantic_png(semantic)  # keep multi-class values, not the instance union
        return [ctx.finish(out, key=key, origin=origin, image=image, primary="segmentation", **fields)]


__all__ = ["MasksConverter"]
