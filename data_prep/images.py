"""Read source images safely: fully decoded (so truncation is caught), sized, content-hashed.

PNG and JPEG bytes are kept exactly as they are (the schema never re-encodes); other formats
(BMP, TIFF, GIF) become lossless PNG because the schema only carries those two. The content
hash is over decoded pixels, so the same picture saved twice, or once as PNG and once as BMP,
hashes the same: it drives both the hash split and the duplicate report.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from data_prep.problems import SourceProblem

_KEPT_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg"}  # MPO: JPEG with extra frames (phone cameras)
# PNG can store these modes as they are; anything else is converted to RGB(A) first.
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I"}


@dataclass(frozen=True)
class LoadedImage:
    data: bytes
    format: str  # "png" or "jpeg"
    width: int
    height: int
    content_hash: str
    reencoded: bool = False


def pixel_hash(img: Image.Image) -> str:
    # sha256 runs on the CPU's SHA extensions: twice as fast as blake2b here, and this is per image.
    h = hashlib.sha256(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()[:32]


def encode_png(img: Image.Image) -> bytes:
    if img.mode not in _PNG_MODES:
        img = img.convert("RGBA" if "A" in img.mode else "RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def decode(data: bytes, what: str = "image") -> Image.Image:
    """Fully decode image bytes; a truncated or corrupt file raises SourceProblem."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # header-only opening would accept a truncated JPEG
        return img
    except Exception as err:
        raise SourceProblem(f"corrupt_{what}", f"cannot decode ({type(err).__name__}: {err})") from None


def from_bytes(data: bytes, name: str = "image") -> tuple[LoadedImage, Image.Image]:
    if not data:
        raise SourceProblem("corrupt_image", f"{name} is empty")
    img = decode(data)
    fmt = _KEPT_FORMATS.get(img.format or "")
    if fmt is None:
        loaded = from_pil(img)
        return loaded, img
    return LoadedImage(data, fmt, img.width, img.height, pixel_hash(img)), img


def from_pil(img: Image.Image) -> LoadedImage:
    """A PIL image (a crop, an array) as lossless PNG bytes."""
    return LoadedImage(encode_png(img), "png", img.width, img.height, pixel_hash(img), reencoded=True)


def from_array(array: np.ndarray) -> LoadedImage:
    return from_pil(Image.fromarray(array))


def load_image(path: Path) -> tuple[LoadedImage, Image.Image]:
    """The image at ``path`` and its decoded pixels; missing/corrupt files raise SourceProblem."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SourceProblem("missing_image", f"{path.name} does not exist") from None
    except OSError as err:
        raise SourceProblem("missing_image", f"{path.name} cannot be read ({err.strerror})") from None
    return from_bytes(data, path.name)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def find_image(folder: Path, stem: str) -> Path | None:
    """The image file named ``stem`` with any image suffix (upper or lower case) in ``folder``."""
    for suffix in IMAGE_SUFFIXES:
        for cand in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if cand.is_file():
                return cand
    return None


__all__ = [
    "IMAGE_SUFFIXES",
    "LoadedImage",
    "decode",
    "encode_png",
    "find_image",
    "from_array",
    "from_bytes",
    "from_pil",
    "is_image",
    "load_image",
    "pixel_hash",
]
