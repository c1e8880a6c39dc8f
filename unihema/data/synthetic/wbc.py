"""Drawing one white cell, with each morphology attribute rendered visibly and on its own.

    nuclear_chromatin   open: light, finely stippled   coarse: dark, clumped with pale gaps
    nuclear_shape       regular: smooth outline        irregular: bumpy outline with a cleft
    nucleolus           prominent: 1-3 pale round spots with a bluish tint
    cytoplasm           scanty: thin rim (nucleus ~0.8 of the cell)   abundant: wide rim (~0.6)
    cytoplasmic_basophilia  moderate: the cytoplasm takes much more of the image's blue dye
    cytoplasmic_vacuoles    prominent: several round clear holes

Every feature draws from its own generator seeded by (cell seed, feature), so flipping one
attribute changes that feature's pixels and leaves the rest of the cell as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from unihema.data.synthetic.shapes import (
    F32,
    Canvas,
    Instance,
    blob,
    coverage,
    disc,
    dots,
    packed_inside,
    sample_inside,
    smooth_noise,
)
from unihema.data.synthetic.stains import Stain
from unihema.data.synthetic.wbc_types import (
    DIAMETER_UM,
    GRANULES,
    NUCLEAR_FRACTION,
    NUCLEUS,
    WBC_CLASSES,
    sample_attributes,
)

TWO_PI = 2 * math.pi
# Feature streams: each a separate generator so the features are independent of each other.
_OUTLINE, _NUCLEUS, _FRACTION, _IRREGULAR, _CHROMATIN, _NUCLEOLI, _CYTOPLASM, _GRANULES, _VACUOLES, _DYES = range(10)


@dataclass
class WBC:
    """A white cell to draw: its class, attributes, size and the seed of its feature streams."""

    cell_class: str
    attributes: dict[str, str]
    diameter_um: float
    angle: float
    seed: int


@dataclass
class DrawnWBC:
    instance: Instance
    nucleus: np.ndarray  # bool mask in the instance's patch, for tests and colour statistics


def sample_wbc(
    rng: np.random.Generator, cell_class: str | None = None, attributes: dict[str, str] | None = None
) -> WBC:
    """A random white cell; a given class or attributes override the draws but consume the same randomness."""
    drawn = WBC_CLASSES[int(rng.integers(len(WBC_CLASSES)))]
    cell_class = cell_class or drawn
    if cell_class not in WBC_CLASSES:
        raise ValueError(f"unknown white-cell class {cell_class!r}; allowed: {', '.join(WBC_CLASSES)}")
    attrs = sample_attributes(rng, cell_class)
    attrs.update(attributes or {})
    lo, hi = DIAMETER_UM[cell_class]
    return WBC(
        cell_class, attrs, float(rng.uniform(lo, hi)), float(rng.uniform(0, TWO_PI)), int(rng.integers(0, 2**62))
    )


def _stream(wbc: WBC, feature: int) -> np.random.Generator:
    return np.random.default_rng([wbc.seed, feature])


def _nucleus(wbc: WBC, patch, radius: float, sd_cell: np.ndarray) -> np.ndarray:
    lo, hi = NUCLEAR_FRACTION[wbc.attributes["cytoplasm"]]
    ext = radius * _stream(wbc, _FRACTION).uniform(lo, hi)
    sd = NUCLEUS[wbc.cell_class](patch.dx, patch.dy, ext, wbc.angle, _stream(wbc, _NUCLEUS))
    if wbc.attributes["nuclear_shape"] == "irregular":
        rng = _stream(wbc, _IRREGULAR)
        sd = sd + smooth_noise(rng, sd.shape, max(1.0, 0.12 * ext)) * F32(0.09 * ext)
        # One or two clefts cut in from the outline.
        rows, cols = sample_inside(rng, np.abs(sd) < 1.0, int(rng.integers(1, 3)))
        for r, c in zip(rows, cols):
            notch = disc(patch.dx - patch.dx[0, c], patch.dy - patch.dy[r, 0], ext * rng.uniform(0.12, 0.2))
            sd = np.minimum(sd, -notch)
    return np.minimum(sd, sd_cell - F32(1.5))  # the nucleus stays inside the membrane


def _chromatin(wbc: WBC, shape: tuple[int, int], px: float) -> np.ndarray:
    """Density multiplier of the nucleus: fine and light (open) or clumped and dark (coarse)."""
    rng = _stream(wbc, _CHROMATIN)
    fine = smooth_noise(rng, shape, max(0.12 * px, 0.4))
    if wbc.attributes["nuclear_chromatin"] == "open":
        return F32(rng.uniform(0.62, 0.75)) * (1 + F32(0.1) * fine)
    clumps = smooth_noise(rng, shape, max(0.32 * px, 0.7))
    return F32(rng.uniform(0.95, 1.1)) * np.clip(1 + F32(0.4) * clumps + F32(0.1) * fine, 0.35, 1.8)


def draw_wbc(canvas: Canvas, stain: Stain, wbc: WBC, cx: float, cy: float, px_per_um: float) -> DrawnWBC | None:
    """Draw ``wbc`` centred at (cx, cy) and annotate it with its class and attributes."""
    radius = wbc.diameter_um / 2 * px_per_um
    shape_rng = _stream(wbc, _OUTLINE)
    wobble = 0.06 if wbc.cell_class == "monocyte" else 0.025
    harmonics = np.array(
        [(k, shape_rng.uniform(0, wobble / k**0.5), shape_rng.uniform(0, TWO_PI)) for k in (2, 3, 4, 5)], F32
    )
    patch = canvas.patch(cx, cy, radius * (1 + float(harmonics[:, 1].sum())) + 1)
    if patch is None:
        return None
    attrs = wbc.attributes
    sd_cell = blob(patch.dx, patch.dy, radius, harmonics)
    cell = coverage(sd_cell)
    sd_nuc = _nucleus(wbc, patch, radius, sd_cell)
    nucleus = coverage(sd_nuc)
    dye_rng = _stream(wbc, _DYES)
    azure, blue, pale, eosin = (stain.cell(dye_rng, v) for v in (stain.azure, stain.blue, stain.pale, stain.eosin))

    nuc_density = nucleus * _chromatin(wbc, patch.shape, px_per_um)
    if wbc.cell_class == "lymphocyte":
        nuc_density *= F32(1.1)
    layers = []
    if attrs["nucleolus"] == "prominent":
        rng = _stream(wbc, _NUCLEOLI)
        spot_r = max(rng.uniform(0.65, 1.0) * px_per_um, 1.2)
        inner = sd_nuc > spot_r + 1
        if not inner.any():
            inner = sd_nuc >= sd_nuc.max() - 0.5
        rows, cols = sample_inside(rng, inner, int(rng.integers(1, 4)))
        spots = dots(patch.shape, rows, cols, spot_r) * nucleus
        # A pale body with a rim of condensed chromatin around it.
        rim = np.clip(dots(patch.shape, rows, cols, spot_r + max(0.25 * px_per_um, 1.0)) - spots, 0, 1) * nucleus
        nuc_density *= 1 - F32(0.75) * spots + F32(0.35) * rim
        layers.append((spots * F32(0.3), blue))

    rng = _stream(wbc, _CYTOPLASM)
    # The nucleus displaces most of the cytoplasm beneath it (nucleoli would drown in blue otherwise).
    texture = cell * (1 + F32(0.08) * smooth_noise(rng, patch.shape, max(0.5 * px_per_um, 0.6)))
    texture *= 1 - F32(0.6) * nucleus
    pale_w, slight, moderate = rng.uniform(0.5, 0.9), rng.uniform(0.05, 0.22), rng.uniform(0.65, 1.05)
    blue_w = moderate if attrs["cytoplasmic_basophilia"] == "moderate" else slight
    layers += [(nuc_density, azure), (texture * F32(pale_w), pale), (texture * F32(blue_w), blue)]
    layers += _granules(wbc, patch, sd_cell, nucleus, px_per_um, azure, blue, eosin)

    clear = None
    if attrs["cytoplasmic_vacuoles"] == "prominent":
        clear = _vacuoles(wbc, patch.shape, sd_cell, sd_nuc, px_per_um)
    canvas.stain(patch, layers, clear)
    inst = canvas.annotate(wbc.cell_class, patch, sd_cell > 0, attrs)
    return DrawnWBC(inst, sd_nuc > 0) if inst is not None else None


def _granules(wbc: WBC, patch, sd_cell, nucleus, px, azure, blue, eosin) -> list:
    """The class's granule layer: fine dust, packed round granules, or coarse dark ones over the nucleus."""
    style = GRANULES[wbc.cell_class]
    rng = _stream(wbc, _GRANULES)
    radius = rng.uniform(*style.radius_um) * px
    inside = sd_cell > max(radius, 1.0)
    if style.packed:
        rows, cols = packed_inside(rng, inside, max(2.9 * radius, 1.5), style.packed * rng.uniform(0.85, 1.0))
    else:
        if style.per_um2:
            count = int(style.per_um2 * math.pi * (wbc.diameter_um / 2) ** 2 * rng.uniform(0.8, 1.2))
        else:
            count = int(rng.integers(style.count[0], style.count[1] + 1))
        rows, cols = sample_inside(rng, inside, count)
    if len(rows) == 0:
        return []
    crisp = style.crisp and radius >= 0.8
    if wbc.cell_class == "basophil":  # coarse granules of mixed sizes: half of them a third larger
        field = np.maximum(
            dots(patch.shape, rows[::2], cols[::2], max(radius, 0.45), crisp=crisp),
            dots(patch.shape, rows[1::2], cols[1::2], max(radius * 1.35, 0.45), crisp=crisp),
        )
    else:
        field = dots(patch.shape, rows, cols, max(radius, 0.45), crisp=crisp)
    field *= 1 - F32(1 - style.over_nucleus) * nucleus
    azure_w = rng.uniform(*style.azure) if isinstance(style.azure, tuple) else style.azure
    vec = style.eosin * eosin + azure_w * azure + style.blue * blue
    return [(field * F32(rng.uniform(*style.density)), vec.astype(F32))]


def _vacuoles(wbc: WBC, shape, sd_cell, sd_nuc, px) -> np.ndarray:
    """How much each pixel is bleached by round clear holes, in the cytoplasm where there is room."""
    rng = _stream(wbc, _VACUOLES)
    count = int(rng.integers(3, 10))
    radius = max(rng.uniform(0.5, 0.85) * px, 1.0)
    allowed = (sd_cell > radius + 1) & (sd_nuc < 0.3 * radius)
    if allowed.sum() < count:  # scanty cytoplasm: let vacuoles overlap the nuclear edge
        allowed = (sd_cell > radius + 1) & (sd_nuc < radius)
    if not allowed.any():
        allowed = sd_cell > 1
    rows, cols = sample_inside(rng, allowed, count)
    holes = np.maximum(dots(shape, rows[::2], cols[::2], radius), dots(shape, rows[1::2], cols[1::2], radius * 0.7))
    return holes * F32(0.85)
