"""A contact sheet of synthetic records, to see at a glance what the generator draws.

Fields of view get their boxes outlined (one colour per class family) and crops their class
and attributes written underneath: the quickest check that annotations sit on the cells.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from unihema.data.synthetic.record import generate_record

_COLOURS = {
    "RBC": (255, 80, 80),
    "Sickle Cells": (255, 160, 0),
    "platelet": (160, 0, 255),
    "ring": (0, 160, 0),
    "trophozoite": (0, 200, 120),
    "gametocyte": (0, 120, 60),
}
_WBC_COLOUR = (0, 90, 255)


def _abbrev(attrs: dict) -> str:
    return " ".join(f"{''.join(w[0] for w in k.split('_'))}={v[:4]}" for k, v in attrs.items())


def contact_sheet(
    path: str | Path,
    seed: int = 0,
    image_size: int = 256,
    fovs: int = 4,
    crops: int = 8,
    columns: int = 4,
    boxes: bool = True,
) -> Path:
    """Write a PNG grid of ``fovs`` fields of view then ``crops`` crops; returns the path."""
    tiles = []
    for i in range(fovs + crops):
        rec = generate_record(i, seed, image_size, kind="fov" if i < fovs else "crop")
        img = Image.open(io.BytesIO(rec["image"])).convert("RGB")
        draw = ImageDraw.Draw(img)
        if boxes and rec["boxes"]:
            for box, label in zip(rec["boxes"], rec["box_labels"]):
                draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=_COLOURS.get(label, _WBC_COLOUR))
        caption = rec["cell_class"] or ", ".join(sorted({lb for lb in rec["box_labels"] if lb != "RBC"}))
        note = _abbrev(rec["attributes"]) if rec["attributes"] else ""
        tile = Image.new("RGB", (image_size, image_size + 30), "white")
        tile.paste(img, (0, 0))
        text = ImageDraw.Draw(tile)
        text.text((2, image_size + 1), caption[:48], fill="black")
        text.text((2, image_size + 15), note[:60], fill=(80, 80, 80))
        tiles.append(tile)
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (image_size + 4), rows * (image_size + 34)), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * (image_size + 4), (i // columns) * (image_size + 34)))
    path = Path(path)
    sheet.save(path)
    return path
