"""Small upstream-format fixtures written by the tests, and a one-call conversion for them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from data_prep.pipeline import ConvertSettings, convert
from data_prep.spec import DatasetSpec
from unihema.data.shards import ShardReader


def image(path: Path, size=(64, 48), color=(200, 120, 140), fmt: str | None = None, seed: int | None = None) -> Path:
    """Write an image; ``seed`` gives distinct noise so content hashes differ."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if seed is None:
        img = Image.new("RGB", size, color)
    else:
        img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8))
    img.save(path, fmt or {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[path.suffix.lower()])
    return path


def truncated_jpeg(path: Path, size=(64, 48)) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), np.uint8)).save(buf, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def mask(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def spec(converter: str, tasks=("detection",), **kw) -> DatasetSpec:
    return DatasetSpec(
        name=kw.pop("name", "fx"),
        title="fixture",
        tasks=tuple(tasks),
        diseases=(),
        annotation="",
        license="CC0-1.0",
        upstream="test",
        layout="",
        converter=converter,
        **kw,
    )


def run(ds: DatasetSpec, src: Path, out: Path, **settings):
    """Convert in-process; returns (result, records by id, error-report entries)."""
    settings.setdefault("workers", 1)
    settings.setdefault("progress", False)
    result = convert(ds, src, str(out), settings=ConvertSettings(**settings))
    records = {r["id"]: r for r in ShardReader(str(out))}
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    return result, records, errors


def reasons(errors: list[dict]) -> dict[str, str]:
    """{id: first reason code} of the error report, for compact assertions."""
    return {e["id"]: e["reasons"][0].split(":")[0] for e in errors}
