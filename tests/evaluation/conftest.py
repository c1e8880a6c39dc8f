"""Fixtures for the evaluation, inference and export tests: a tiny model saved as an export folder
and as a hand-made ZeRO-0 DeepSpeed checkpoint, a small synthetic dataset, image files of every kind."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unihema.config import load_config

from .helpers import png_with_header_size, write_zero0_checkpoint


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config("tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg):
    from unihema.model import build_model

    torch.manual_seed(0)
    return build_model(tiny_cfg).eval()


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory, tiny_model, tiny_cfg) -> Path:
    from unihema.model.pretrained import save_pretrained

    return save_pretrained(tiny_model, tmp_path_factory.mktemp("export") / "model", tiny_cfg)


@pytest.fixture(scope="session")
def zero0_run(tmp_path_factory, tiny_model, tiny_cfg) -> Path:
    run = tmp_path_factory.mktemp("runs") / "unihema-tiny"
    write_zero0_checkpoint(run, tiny_model, tiny_cfg)
    return run


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """24 synthetic records (fields of view and cell crops) split train / val."""
    from unihema.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("synthetic") / "data"
    generate_dataset(24, str(out), image_size=96, workers=1, progress=False, val_fraction=0.4)
    return out


@pytest.fixture(scope="session")
def image_files(tmp_path_factory) -> dict[str, Path]:
    """Good images in every mode (RGB, RGBA, gray, 16-bit gray) and bad files of every kind."""
    from unihema.data.synthetic import generate_record

    d = tmp_path_factory.mktemp("images")
    rgb = Image.open(io.BytesIO(generate_record(0, 0, 96, kind="fov")["image"])).convert("RGB")
    files = {name: d / f"{name}.png" for name in ("rgb", "rgba", "gray", "gray16", "corrupt", "huge", "bomb")}
    rgb.save(files["rgb"])
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(files["rgba"])
    rgb.convert("L").save(files["gray"])
    Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257).save(files["gray16"])
    files["corrupt"].write_bytes(files["rgb"].read_bytes()[:200])
    files["huge"].write_bytes(png_with_header_size(12_000, 10_000))  # 120 MP: over unihema's limit
    files["bomb"].write_bytes(png_with_header_size(30_000, 30_000))  # 900 MP: PIL's own bomb error
    files["text"] = d / "notes.txt"
    files["text"].write_text("not an image")
    files["cell"] = d / "cell.png"
    Image.open(io.BytesIO(generate_record(1, 0, 96, kind="crop")["image"])).save(files["cell"])
    return files
