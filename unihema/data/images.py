"""Decoding images and masks from record bytes into arrays, whatever their mode.

Real sources bring grayscale, palette, RGBA and 16-bit images; the model wants 8-bit RGB.
Conversion happens here, once, with a clear error naming the record when bytes are not an
image at all.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

# Refuse decompression bombs explicitly instead of PIL's warning; 100 MP covers whole-slide tiles.
MAX_PIXELS = 100_000_000


class ImageDecodeError(ValueError):
    """Bytes that cannot become an image; ``reason`` is a stable code for counting."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode (16-bit and float images are rescaled to their range)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))  # smears are bright-field
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def open_image(data: bytes) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:
            raise ImageDecodeError("image_too_large", f"{img.width}x{img.height} exceeds {MAX_PIXELS} pixels")
        img.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageDecodeError("image_too_large", str(err)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageDecodeError("undecodable_image", str(err) or type(err).__name__) from None
    return img


def decode_rgb(data: bytes) -> Image.Image:
    return to_rgb(open_image(data))


def decode_mask(data: bytes) -> Image.Image:
    """A mask PNG as an 8-bit single-channel image (values kept, no rescaling)."""
    img = open_image(data)
    if img.mode in ("1", "P"):
        return img.convert("L")
    if img.mode != "L":
        raise ImageDecodeError("bad_mask_mode", f"masks must be 8-bit single-channel, got mode {img.mode}")
    return img
