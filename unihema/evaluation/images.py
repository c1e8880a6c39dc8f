"""Image files from users: read, checked and converted to 8-bit RGB, or refused with a reason.

Built on ``unihema.data.images`` (which converts grayscale, palette, RGBA and 16-bit modes the
way training saw them) with what a file on disk adds: a missing or empty file, a folder, a
file that is no image, and sizes checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from unihema.data.images import MAX_PIXELS, ImageDecodeError, open_image, to_rgb
from unihema.errors import UserInputError

SUPPORTED = "PNG, JPEG, TIFF, BMP, WebP, GIF"


class ImageInputError(UserInputError):
    """An image file that cannot be used; names the file, a reason code and the detail."""

    def __init__(self, path: str | Path, reason: str, detail: str):
        super().__init__(f"{path}: {reason}: {detail}")
        self.path, self.reason = str(path), reason


@dataclass
class LoadedImage:
    path: Path
    image: Image.Image  # 8-bit RGB
    mode: str  # the file's own mode ("RGBA", "I;16", ...)
    format: str | None

    @property
    def converted(self) -> bool:
        return self.mode != "RGB"


def read_image_file(path: str | Path, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    path = Path(path)
    if not path.exists():
        raise ImageInputError(path, "not_found", "no such file")
    if path.is_dir():
        raise ImageInputError(path, "not_a_file", "is a folder, not an image")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageInputError(path, "unreadable", err.strerror or str(err)) from None
    if not data:
        raise ImageInputError(path, "empty_file", "the file is empty")
    with warnings.catch_warnings():
        # Sizes are checked here, against max_pixels; PIL's own bomb warning would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
        except Image.DecompressionBombError as err:
            raise ImageInputError(path, "image_too_large", str(err).split(",")[0]) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise ImageInputError(
                path, "undecodable_image", f"not an image this tool can read ({SUPPORTED}): {_short(err)}"
            ) from None
        if width * height > max_pixels:
            raise ImageInputError(
                path,
                "image_too_large",
                f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} "
                "(tile the image first)",
            )
        try:
            img = open_image(data)
            mode, fmt = img.mode, img.format
            rgb = to_rgb(img)
        except Image.DecompressionBombError as err:
            raise ImageInputError(path, "image_too_large", str(err).split(",")[0]) from None
        except ImageDecodeError as err:
            raise ImageInputError(path, err.reason, _short(err).split(": ", 1)[-1]) from None
        except (OSError, ValueError, SyntaxError) as err:  # truncated data surfaces in the mode conversion
            raise ImageInputError(path, "undecodable_image", _short(err)) from None
    return LoadedImage(path, rgb, mode, fmt)


def _short(err: BaseException) -> str:
    # PIL names the in-memory buffer ("<_io.BytesIO object at 0x...>"): noise next to the file's own name.
    text = " ".join(re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(err)).split())
    return text[:300] if text else type(err).__name__
