"""Overlay PNGs: boxes, masks and labels drawn on the image (PIL only, no plotting library)."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def class_color(index: int) -> tuple[int, int, int]:
    """A stable, well-separated colour per class index (golden-ratio hue steps)."""
    h = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def blend_mask(image: Image.Image, mask: np.ndarray, color, alpha: float = 0.4) -> Image.Image:
    arr = np.asarray(image, dtype=np.float32).copy()
    m = mask.astype(bool)
    arr[m] = arr[m] * (1 - alpha) + np.asarray(color, np.float32) * alpha
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def draw_overlay(image: Image.Image, result: dict, max_side: int = 2048, min_side: int = 512) -> Image.Image:
    """The image with the result of :mod:`unihema.predict` drawn on it (long side scaled into
    [min_side, max_side] so labels stay legible), text answers in a strip below."""
    width, height = image.size
    long_side = max(width, height)
    scale = max_side / long_side if long_side > max_side else min_side / long_side if long_side < min_side else 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = image.convert("RGB")
    if scale != 1.0:
        canvas = canvas.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR)

    def fit(mask: np.ndarray) -> np.ndarray:
        if scale == 1.0:
            return mask
        return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 127

    seg = result.get("segmentation") or {}
    if seg.get("semantic") is not None:
        canvas = blend_mask(canvas, fit(seg["semantic"]), (0, 200, 255), 0.25)
    for inst in seg.get("instances", []):
        if inst.get("mask") is not None:
            canvas = blend_mask(canvas, fit(inst["mask"]), class_color(inst["class_id"]), 0.35)

    draw = ImageDraw.Draw(canvas)
    font = _font(max(11, min(size) // 45))
    line = max(1, min(size) // 300)
    for det in result.get("detections", []):
        color = class_color(det["class_id"])
        box = [v * scale for v in det["box_xyxy"]]
        draw.rectangle(box, outline=color, width=line)
        text = f"{det['label']} {det['score']:.2f}"
        height_text = draw.textbbox((0, 0), text, font=font)[3]
        tx, ty = box[0], max(0, box[1] - height_text - 2)
        bbox = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle(bbox, fill=color)
        draw.text((tx, ty), text, fill=(0, 0, 0), font=font)

    captions = []
    cls = result.get("classification")
    if cls:
        captions.append(f"cell: {cls['label']} ({cls['score']:.2f})")
    for qa in result.get("vqa", []):
        captions.append(f"Q: {qa['question']}  A: {qa['answer']}")
    for item in result.get("mlm", []):
        captions.append(f"MLM: {item['filled']}")
    if not captions:
        return canvas
    line_h = draw.textbbox((0, 0), "Ag", font=font)[3] + 4
    framed = Image.new("RGB", (size[0], size[1] + line_h * len(captions) + 4), (0, 0, 0))
    framed.paste(canvas, (0, 0))
    strip = ImageDraw.Draw(framed)
    for i, text in enumerate(captions):
        strip.text((4, size[1] + 2 + i * line_h), text, fill=(255, 255, 255), font=font)
    return framed
