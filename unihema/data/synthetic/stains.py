"""Stains and light: why a class can never be told apart by colour alone.

Cells are drawn as optical density (Beer-Lambert: transmitted = light * exp(-OD)), one OD
vector per dye. Each image draws its own dye vectors (hue, saturation and strength vary
like between labs, staining batches and scanners) and each cell jitters them again, so the
same cell type is pink in one smear and purple in the next; what stays constant across
images is the morphology. The illumination adds a gradient, vignetting and sensor noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unihema.data.synthetic.shapes import F32

# Reference OD per unit density, from typical May-Gruenwald-Giemsa colours on a ~245 background.
_EOSIN = (0.07, 0.50, 0.38)  # RBC pink, eosinophil granules
_AZURE = (0.80, 1.20, 0.45)  # nuclear chromatin purple, platelet granules, parasite chromatin
_BLUE = (0.55, 0.30, 0.08)  # methylene blue: cytoplasmic basophilia, parasite cytoplasm
_PALE = (0.10, 0.20, 0.13)  # neutral lilac-grey cytoplasm
_PIGMENT = (0.75, 0.95, 1.30)  # hemozoin, golden brown to black


@dataclass
class Stain:
    """The dyes and light of one image; arrays are OD per unit density (3,) in RGB order."""

    eosin: np.ndarray
    azure: np.ndarray
    blue: np.ndarray
    pale: np.ndarray
    pigment: np.ndarray
    light: np.ndarray  # white point, 0..255 per channel
    plasma: float  # background density of eosin (plasma and glass)
    rbc_density: float  # how thick/strongly stained this smear's red cells are
    noise: float  # sensor noise, grey levels

    def cell(self, rng: np.random.Generator, vec: np.ndarray, spread: float = 0.07) -> np.ndarray:
        """One cell's variant of a dye: a small per-channel shift on top of the image's own."""
        return (vec * np.exp(rng.normal(0.0, spread, 3))).astype(F32)


def _vary(rng: np.random.Generator, ref: tuple[float, float, float], hue: float, strength: tuple[float, float]):
    return (np.asarray(ref) * np.exp(rng.normal(0.0, hue, 3)) * rng.uniform(*strength)).astype(F32)


def sample_stain(rng: np.random.Generator) -> Stain:
    """A new lab/batch/scanner: every dye's hue and strength drawn afresh."""
    eosin = _vary(rng, _EOSIN, 0.18, (0.75, 1.3))
    azure = _vary(rng, _AZURE, 0.15, (0.7, 1.25))
    blue = _vary(rng, _BLUE, 0.2, (0.75, 1.3))
    pale = _vary(rng, _PALE, 0.2, (0.7, 1.4))
    # Over- or under-differentiated smears: the red dye drifts towards purple or the blue towards grey.
    eosin = eosin + F32(rng.uniform(0, 0.2)) * azure * F32(0.5)
    blue = blue + F32(rng.uniform(0, 0.25)) * azure * F32(0.4)
    light = (rng.uniform(232, 252) * np.exp(rng.normal(0, 0.025, 3))).astype(F32)
    return Stain(
        eosin=eosin,
        azure=azure,
        blue=blue,
        pale=pale,
        pigment=_vary(rng, _PIGMENT, 0.1, (0.8, 1.2)),
        light=light,
        plasma=float(rng.uniform(0.02, 0.08)),
        rbc_density=float(rng.uniform(0.8, 1.2)),
        noise=float(rng.uniform(0.8, 2.0)),
    )


def develop(od: np.ndarray, stain: Stain, rng: np.random.Generator) -> np.ndarray:
    """The uint8 RGB image (H, W, 3) of an optical-density canvas (3, H, W), which it consumes.

    Runs once per image on ~200k values, so it works in place: fresh arrays of that size
    cost as much in page faults as the arithmetic.
    """
    _, h, w = od.shape
    y = (np.arange(h, dtype=F32) / F32(h) - F32(0.5))[:, None]
    x = (np.arange(w, dtype=F32) / F32(w) - F32(0.5))[None, :]
    gx, gy, vignette = rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08), rng.uniform(0.0, 0.15)
    illum = F32(1) + F32(gx) * x + F32(gy) * y - F32(vignette) * (x * x + y * y)
    # Plasma is a uniform film: fold its absorption into the light instead of adding it per pixel.
    light = stain.light * np.exp(-stain.eosin * F32(stain.plasma))
    img = np.exp(np.negative(od, out=od), out=od)
    img *= illum
    img *= light[:, None, None]
    # Triangular noise from two random bytes: Gaussian enough for a sensor, 5x cheaper to draw.
    raw = np.frombuffer(rng.bytes(2 * img.size), np.uint8).reshape(2, *img.shape)
    noise = raw[0].astype(F32)
    noise += raw[1]
    scale = F32(stain.noise / 104.5)
    noise *= scale
    img += noise
    img -= F32(255) * scale
    np.clip(img, 0, 255, out=img)
    out = np.empty((h, w, 3), np.uint8)
    np.copyto(out, img.transpose(1, 2, 0), casting="unsafe")
    return out
