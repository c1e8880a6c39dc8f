"""A minimal PNG encoder for uint8 arrays, because Pillow's is the generator's bottleneck.

Pillow spends most of its time choosing a row filter per line; on a noisy 256 px RGB
smear that is ~7 ms, more than drawing the whole field of view. Writing the stream
ourselves with a fixed filter takes ~1.5 ms for the image and ~0.02 ms for a sparse
instance mask, and any PNG decoder (Pillow included) reads it back.
"""

from __future__ import annotations

import functools
import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type (greyscale, truecolour)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(array: np.ndarray, level: int = 1) -> bytes:
    """PNG bytes of an HxW (mode L) or HxWx3 (RGB) uint8 array.

    Colour images are photographs with sensor noise: LZ77 matching finds little in them, so
    they get PNG's "Up" filter and Huffman-only coding (twice as fast, and smaller). Masks
    are long runs: no filter, ordinary deflate.
    """
    if array.dtype != np.uint8:
        raise TypeError(f"encode_png needs uint8, got {array.dtype}")
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    if channels not in _COLOUR_TYPE:
        raise ValueError(f"encode_png supports 1 or 3 channels, got {channels}")
    rows = array.reshape(height, -1)
    raw = np.empty((height, width * channels + 1), np.uint8)
    if channels == 3:
        raw[:, 0] = 2  # Up: each byte minus the one above, modulo 256
        raw[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])
        co = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    else:
        raw[:, 0] = 0
        raw[:, 1:] = rows
        co = zlib.compressobj(level)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    idat = co.compress(raw) + co.flush()
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


# ---------------------------------------------------------------- sparse masks
# A field of view has ~60 instance masks, each a full-size image that is zero outside a
# small window. Compressing those zeros again and again cost more than drawing the cells,
# so the zero rows are deflated once per length (independent, byte-aligned deflate blocks
# can be concatenated) and the Adler-32 checksum of a zero run is computed in closed form.

_ADLER_MOD = 65521


@functools.lru_cache(maxsize=4096)
def _deflated_zeros(nbytes: int, level: int) -> bytes:
    """Non-final deflate blocks holding ``nbytes`` zeros, ending byte-aligned with no back-references out."""
    co = zlib.compressobj(level, zlib.DEFLATED, -15)
    return co.compress(bytes(nbytes)) + co.flush(zlib.Z_FULL_FLUSH)


def _deflate_block(data: bytes, level: int) -> bytes:
    # A 512-byte window and the smallest hash: mask rows repeat within a row's length, and a
    # default compressor costs ~60 us just to set up its 256 KB of state.
    co = zlib.compressobj(level, zlib.DEFLATED, -9, 1)
    return co.compress(data) + co.flush(zlib.Z_FULL_FLUSH)


def _adler_zeros(adler: int, nbytes: int) -> int:
    """Adler-32 after ``nbytes`` more zero bytes: A is unchanged, B grows by nbytes * A."""
    a, b = adler & 0xFFFF, adler >> 16
    return (((b + nbytes * a) % _ADLER_MOD) << 16) | a


def encode_sparse_mask_png(height: int, width: int, y0: int, x0: int, window: np.ndarray, level: int = 1) -> bytes:
    """PNG (mode L) of a height x width image that is zero except ``window`` (uint8) placed at (y0, x0)."""
    h, w = window.shape
    if y0 < 0 or x0 < 0 or y0 + h > height or x0 + w > width:
        raise ValueError(f"window {h}x{w} at ({y0}, {x0}) does not fit a {height}x{width} image")
    stride = width + 1  # filter byte + pixels
    rows = np.zeros((h, stride), np.uint8)
    rows[:, 1 + x0 : 1 + x0 + w] = window
    body = rows.tobytes()
    before, after = y0 * stride, (height - y0 - h) * stride
    adler = _adler_zeros(zlib.adler32(body, _adler_zeros(1, before)), after)
    stream = (
        b"\x78\x01"
        + (_deflated_zeros(before, level) if before else b"")
        + _deflate_block(body, level)
        + (_deflated_zeros(after, level) if after else b"")
        + b"\x03\x00"
        + struct.pack(">I", adler)
    )
    head, tail = _mask_frame(height, width)
    return head + _chunk(b"IDAT", stream) + tail


@functools.lru_cache(maxsize=64)
def _mask_frame(height: int, width: int) -> tuple[bytes, bytes]:
    """Signature + IHDR, and IEND, of a greyscale PNG: the same for every mask of an image size."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", header), _chunk(b"IEND", b"")
