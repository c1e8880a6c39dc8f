"""The six white-cell types: what makes each one itself, in shape rather than colour.

Per type: a size range, the prior of each morphology attribute (correlated with the type,
never fixed by it), the nucleus outline, and the granules. Everything here is geometry
in pixels around the cell centre; colour comes later from the image's stain. Nucleus
builders draw the same number of random values whatever their inputs, so changing one
attribute (which changes the nuclear extent) leaves every other random choice in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from unihema.data.synthetic.shapes import F32, arc, capsule, disc, ellipse
from unihema.labels import MORPHOLOGY_ATTRIBUTES

TWO_PI = 2 * math.pi
WBC_CLASSES = ("neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte", "myeloblast")

# Cell diameter in micrometres (red cells are 7-8).
DIAMETER_UM = {
    "neutrophil": (11.0, 13.5),
    "eosinophil": (12.0, 14.5),
    "basophil": (10.0, 12.5),
    "lymphocyte": (7.5, 10.0),
    "monocyte": (14.0, 18.0),
    "myeloblast": (12.5, 16.0),
}

# P(second value) of each official attribute, in MORPHOLOGY_ATTRIBUTES order:
# chromatin coarse, shape irregular, nucleolus prominent, cytoplasm abundant, basophilia moderate, vacuoles prominent.
ATTRIBUTE_PRIORS = {
    "neutrophil": (0.85, 0.80, 0.05, 0.80, 0.10, 0.12),
    "eosinophil": (0.80, 0.70, 0.05, 0.75, 0.10, 0.08),
    "basophil": (0.75, 0.55, 0.08, 0.55, 0.30, 0.10),
    "lymphocyte": (0.85, 0.15, 0.08, 0.15, 0.50, 0.06),
    "monocyte": (0.30, 0.85, 0.10, 0.85, 0.55, 0.55),
    "myeloblast": (0.10, 0.25, 0.85, 0.20, 0.75, 0.15),
}


def sample_attributes(rng: np.random.Generator, cell_class: str) -> dict[str, str]:
    """The six official attributes drawn from the class priors (always six draws, in order)."""
    u = rng.random(len(MORPHOLOGY_ATTRIBUTES))
    priors = ATTRIBUTE_PRIORS[cell_class]
    return {name: values[int(u[i] < priors[i])] for i, (name, values) in enumerate(MORPHOLOGY_ATTRIBUTES.items())}


# ---------------------------------------------------------------- nuclei: signed distance around the cell centre

NucleusBuilder = Callable[[np.ndarray, np.ndarray, float, float, np.random.Generator], np.ndarray]


def _rot(x: float, y: float, angle: float) -> tuple[float, float]:
    c, s = math.cos(angle), math.sin(angle)
    return x * c - y * s, x * s + y * c


def _lobe_chain(dx, dy, centres, radii, aspects, tilts, bridge) -> np.ndarray:
    """Oval lobes joined by thin chromatin bridges, as in segmented granulocytes."""
    sd = None
    for (x, y), r, asp, tilt in zip(centres, radii, aspects, tilts):
        lobe = ellipse(dx - F32(x), dy - F32(y), r * asp, r, tilt)
        sd = lobe if sd is None else np.maximum(sd, lobe)
    for p0, p1 in zip(centres[:-1], centres[1:]):
        sd = np.maximum(sd, capsule(dx, dy, p0, p1, bridge))
    return sd


def neutrophil_nucleus(dx, dy, ext, angle, rng):
    """3-5 lobes strung along a C, joined by filaments."""
    n = int(rng.integers(3, 6))
    r = ext * rng.uniform(0.32, 0.38)
    span = rng.uniform(0.9, 1.4) * math.pi
    jitter = rng.normal(0, 0.12, 5)
    reach = rng.uniform(0.8, 1.0, 5)
    aspects, tilts = rng.uniform(1.0, 1.35, 5), rng.normal(0, 0.4, 5)
    sizes = rng.uniform(0.85, 1.1, 5)
    angles = angle + np.linspace(-span / 2, span / 2, n) + jitter[:n]
    arm = ext - r * 1.05
    centres = [(arm * reach[i] * math.cos(a), arm * reach[i] * math.sin(a)) for i, a in enumerate(angles)]
    return _lobe_chain(
        dx, dy, centres, r * sizes[:n], aspects[:n], angles + math.pi / 2 + tilts[:n], bridge=max(0.5, 0.07 * ext)
    )


def eosinophil_nucleus(dx, dy, ext, angle, rng):
    """Two round lobes (spectacles), sometimes three, joined by a thin bridge."""
    three = rng.random() < 0.15
    r = ext * rng.uniform(0.4, 0.48)
    bend = rng.uniform(-0.35, 0.35)
    aspects, tilts = rng.uniform(1.0, 1.2, 3), rng.normal(0, 0.3, 3)
    d = ext - r
    if three:
        r *= 0.85
        angles = angle + np.array([-1.1, 0.0, 1.1]) + bend
        centres = [(0.9 * d * math.cos(a), 0.9 * d * math.sin(a)) for a in angles]
    else:
        centres = [_rot(-d, d * bend, angle), _rot(d, d * bend, angle)]
    tilt = angle + math.pi / 2
    return _lobe_chain(dx, dy, centres, [r] * len(centres), aspects, tilt + tilts, bridge=max(0.5, 0.06 * ext))


def basophil_nucleus(dx, dy, ext, angle, rng):
    """A compact, vaguely bilobed nucleus; the granules on top hide most of it."""
    r = ext * rng.uniform(0.55, 0.66)
    off = ext * rng.uniform(0.2, 0.4)
    a0, a1 = rng.uniform(0.95, 1.1, 2)
    p = _rot(off, 0, angle)
    return np.maximum(
        ellipse(dx - F32(p[0]), dy - F32(p[1]), r * a0, r * 0.9, angle),
        ellipse(dx + F32(p[0]), dy + F32(p[1]), r * a1, r * 0.9, angle),
    )


def lymphocyte_nucleus(dx, dy, ext, angle, rng):
    """Round, dense, slightly eccentric: fills most of a small cell."""
    b = ext * rng.uniform(0.86, 0.97)
    off = _rot(ext * rng.uniform(0.0, 0.12), 0, angle)
    return ellipse(dx - F32(off[0]), dy - F32(off[1]), ext * 0.98, b, angle)


def monocyte_nucleus(dx, dy, ext, angle, rng):
    """Folded: a kidney (oval with a notch) or a horseshoe."""
    horseshoe = rng.random() < 0.45
    b = ext * rng.uniform(0.75, 0.9)
    cut_r, cut_d = ext * rng.uniform(0.35, 0.5), ext * rng.uniform(0.85, 1.05)
    arm, span, half_w = ext * rng.uniform(0.52, 0.6), rng.uniform(1.4, 1.9), ext * rng.uniform(0.4, 0.47)
    shift = _rot(0, -ext * rng.uniform(0.0, 0.15), angle)
    dx, dy = dx - F32(shift[0]), dy - F32(shift[1])
    if horseshoe:
        return arc(dx, dy, arm, angle - math.pi / 2, span, half_w, taper=0.15)
    cx, cy = _rot(0, cut_d, angle)
    return np.minimum(ellipse(dx, dy, ext, b, angle), -disc(dx - F32(cx), dy - F32(cy), cut_r))


def myeloblast_nucleus(dx, dy, ext, angle, rng):
    """Large, round to oval, central."""
    b = ext * rng.uniform(0.88, 1.0)
    off = _rot(ext * rng.uniform(0.0, 0.08), 0, angle)
    return ellipse(dx - F32(off[0]), dy - F32(off[1]), ext, b, angle)


NUCLEUS: dict[str, NucleusBuilder] = {
    "neutrophil": neutrophil_nucleus,
    "eosinophil": eosinophil_nucleus,
    "basophil": basophil_nucleus,
    "lymphocyte": lymphocyte_nucleus,
    "monocyte": monocyte_nucleus,
    "myeloblast": myeloblast_nucleus,
}

# Nuclear extent as a fraction of the cell radius, by the "cytoplasm" attribute (scanty / abundant).
NUCLEAR_FRACTION = {"scanty": (0.78, 0.86), "abundant": (0.52, 0.64)}


@dataclass(frozen=True)
class Granules:
    """Granule style: how many per square micrometre (or a fixed count), size, sharpness, dyes."""

    per_um2: float = 0.0  # random positions; or, when packed > 0, lattice sites kept with this chance
    packed: float = 0.0
    count: tuple[int, int] = (0, 0)  # used instead of per_um2 when per_um2 == 0
    radius_um: tuple[float, float] = (0.2, 0.2)
    crisp: bool = True
    eosin: float = 0.0  # OD weights of the image's dyes in one granule
    azure: float | tuple[float, float] = 0.0  # a range varies the hue of granules from cell to cell
    blue: float = 0.0
    density: tuple[float, float] = (1.0, 1.0)
    over_nucleus: float = 0.0  # 0: only in the cytoplasm; 1: on top of the nucleus as well


GRANULES = {
    "neutrophil": Granules(
        per_um2=3.0, radius_um=(0.14, 0.18), crisp=False, eosin=0.4, azure=0.15, density=(0.25, 0.4)
    ),
    "eosinophil": Granules(
        packed=0.85, radius_um=(0.3, 0.36), eosin=1.0, azure=(0.05, 0.45), density=(0.7, 1.0), over_nucleus=0.3
    ),
    "basophil": Granules(
        packed=0.45, radius_um=(0.32, 0.45), azure=1.1, blue=0.3, density=(1.0, 1.4), over_nucleus=1.0
    ),
    "lymphocyte": Granules(count=(0, 4), radius_um=(0.22, 0.28), eosin=0.2, azure=0.9, density=(0.8, 1.0)),
    "monocyte": Granules(per_um2=0.6, radius_um=(0.14, 0.16), crisp=False, eosin=0.1, azure=0.3, density=(0.3, 0.45)),
    "myeloblast": Granules(count=(0, 3), radius_um=(0.18, 0.22), eosin=0.2, azure=0.8, density=(0.7, 0.9)),
}
