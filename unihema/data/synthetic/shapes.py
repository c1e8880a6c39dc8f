"""Render primitives: approximate signed-distance fields drawn in small local patches.

Every cell is drawn in a window just larger than itself, never over the full image, which
keeps a field of view with ~60 cells at a few milliseconds. Shapes are signed distances in
pixels (positive inside), so unions are ``max``, cut-outs are ``min(a, -b)``, an outline can
be roughened by adding noise, and one function turns any of them into anti-aliased coverage
(for density) and a hard mask (for the annotation) that agree on the 0.5 level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

F32 = np.float32


@dataclass
class Patch:
    """An image window around a point, clipped to the image, with pixel-centre offsets from the point."""

    y0: int
    y1: int
    x0: int
    x1: int
    dx: np.ndarray | None = None  # (1, w): x of each pixel centre minus the anchor's x
    dy: np.ndarray | None = None  # (h, 1); both None for a bare window (stamped sprites)

    @classmethod
    def around(cls, cx: float, cy: float, radius: float, height: int, width: int) -> Patch | None:
        """The window covering a disc of ``radius`` at (cx, cy); None when it misses the image."""
        x0, x1 = max(0, math.floor(cx - radius) - 1), min(width, math.ceil(cx + radius) + 2)
        y0, y1 = max(0, math.floor(cy - radius) - 1), min(height, math.ceil(cy + radius) + 2)
        if x1 - x0 < 1 or y1 - y0 < 1:
            return None
        dx = (np.arange(x0, x1, dtype=F32) + F32(0.5 - cx))[None, :]
        dy = (np.arange(y0, y1, dtype=F32) + F32(0.5 - cy))[:, None]
        return cls(y0, y1, x0, x1, dx, dy)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def at(self, ox: float, oy: float) -> tuple[np.ndarray, np.ndarray]:
        """Offsets of the pixel centres from a point given relative to the anchor."""
        return self.dx - F32(ox), self.dy - F32(oy)


# ---------------------------------------------------------------- signed distances (pixels, > 0 inside)


def disc(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    return F32(r) - np.hypot(dx, dy)


def ellipse(dx: np.ndarray, dy: np.ndarray, a: float, b: float, angle: float = 0.0) -> np.ndarray:
    """Ellipse with semi-axes a (along ``angle``) and b; first-order distance, exact on the outline."""
    c, s = F32(math.cos(angle)), F32(math.sin(angle))
    u = dx * c + dy * s
    v = dy * c - dx * s
    ua, vb = u / F32(a), v / F32(b)
    rho = np.sqrt(ua * ua + vb * vb)
    grad = np.sqrt((ua / F32(a)) ** 2 + (vb / F32(b)) ** 2)
    # rho / |grad rho| is the distance scale along each ray; at the centre both vanish.
    scale = np.divide(rho, grad, out=np.full_like(rho, min(a, b)), where=grad > 1e-9)
    return (1 - rho) * scale


def blob(dx: np.ndarray, dy: np.ndarray, r: float, harmonics=None) -> np.ndarray:
    """A disc whose radius varies with angle: r * (1 + sum a_k cos(k phi + p_k)); rows of (k, a_k, p_k)."""
    dist = np.hypot(dx, dy)
    if harmonics is None or len(harmonics) == 0:
        return F32(r) - dist
    phi = np.arctan2(dy, dx)
    rad = np.ones_like(phi)
    for k, amp, phase in harmonics:
        rad += F32(amp) * np.cos(phi * F32(k) + F32(phase))
    return rad * F32(r) - dist


def capsule(
    dx: np.ndarray, dy: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], half_width: float
) -> np.ndarray:
    """A segment from p0 to p1 thickened by ``half_width`` (nuclear lobe bridges, filaments)."""
    px, py = dx - F32(p0[0]), dy - F32(p0[1])
    bx, by = F32(p1[0] - p0[0]), F32(p1[1] - p0[1])
    t = np.clip((px * bx + py * by) / max(float(bx * bx + by * by), 1e-6), 0, 1)
    return F32(half_width) - np.hypot(px - t * bx, py - t * by)


def arc(
    dx: np.ndarray,
    dy: np.ndarray,
    radius: float,
    direction: float,
    half_span: float,
    half_width: float,
    taper: float = 0.5,
) -> np.ndarray:
    """A curved band along a circle of ``radius`` around the origin, centred on angle ``direction``.

    Its half width shrinks towards the ends as (1 - t^2)^taper: taper ~0.7 gives the pointed ends
    of a sickle cell, ~0.2 the blunt ends of a gametocyte or a horseshoe nucleus.
    """
    rho = np.hypot(dx, dy)
    theta = np.mod(np.arctan2(dy, dx) - F32(direction) + F32(math.pi), F32(2 * math.pi)) - F32(math.pi)
    t = np.abs(theta) / F32(half_span)
    inside = np.clip(1 - t * t, 0, 1) ** F32(taper)
    sd = inside * F32(half_width) - np.abs(rho - F32(radius))
    beyond = (t - 1) * F32(half_span * radius)  # arc length past the tip
    return np.where(t <= 1, sd, -beyond - np.abs(rho - F32(radius)))


# ---------------------------------------------------------------- coverage, noise, dots


def coverage(sd: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a signed distance: one pixel of soft edge, 0.5 on the outline."""
    return np.clip(sd + F32(0.5), 0, 1)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with spatial correlation ``sigma`` pixels."""
    # Uniform draws are 3x cheaper than normal ones, and blurring makes them Gaussian anyway.
    noise = rng.random(shape, dtype=F32)
    noise -= F32(0.5)
    if sigma >= 0.3:
        noise = gaussian_filter(noise, sigma, mode="nearest", truncate=2.0)  # texture needs no long tails
    std = float(noise.std())
    return noise / F32(std if std > 1e-6 else 1.0)


def _gauss_peak(sigma: float, truncate: float = 3.0) -> float:
    """Centre weight of scipy's 2-D Gaussian kernel, to rescale a blurred impulse to peak 1."""
    half = int(truncate * sigma + 0.5)
    x = np.arange(-half, half + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return float((1.0 / w.sum()) ** 2)


def dots(
    shape: tuple[int, int],
    rows: np.ndarray,
    cols: np.ndarray,
    radius: float,
    weights: np.ndarray | None = None,
    crisp: bool = True,
) -> np.ndarray:
    """Round dots of ``radius`` pixels at integer positions, as one field (granules, pigment, stippling).

    Splatting impulses and blurring once costs the same for 5 or 500 granules; ``crisp``
    turns each blurred impulse into a flat-topped disc, otherwise dots stay soft (fine dust).
    """
    field = np.zeros(shape, F32)
    if len(rows) == 0:
        return field
    np.add.at(field, (rows, cols), 1.0 if weights is None else weights.astype(F32))
    sigma = max(radius / (1.2 if crisp else 1.0), 0.45)
    field = gaussian_filter(field, sigma, mode="constant", truncate=3.0) * F32(1.0 / _gauss_peak(sigma))
    if crisp:
        field = np.clip((field - F32(0.3)) * F32(2.5), 0, 1)
    return field


def sample_inside(rng: np.random.Generator, allowed: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` random pixel positions where ``allowed`` is true (with repeats if few)."""
    rows, cols = np.nonzero(allowed)
    if len(rows) == 0 or count <= 0:
        return rows[:0], cols[:0]
    pick = rng.integers(0, len(rows), size=count)
    return rows[pick], cols[pick]


def packed_inside(
    rng: np.random.Generator, allowed: np.ndarray, spacing: float, keep: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions on a jittered hexagonal lattice where ``allowed``: packed granules that do not merge."""
    h, w = allowed.shape
    ys = np.arange(rng.uniform(0, spacing), h, spacing * 0.866)
    xs = np.arange(rng.uniform(-spacing, 0), w + spacing, spacing)
    yy = np.repeat(ys, len(xs))
    xx = (xs[None, :] + (np.arange(len(ys)) % 2)[:, None] * spacing * 0.5).ravel()
    jitter = rng.uniform(-0.2 * spacing, 0.2 * spacing, (2, len(yy)))
    rows = np.rint(yy + jitter[0]).astype(np.int64)
    cols = np.rint(xx + jitter[1]).astype(np.int64)
    ok = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w) & (rng.random(len(rows)) < keep)
    rows, cols = rows[ok], cols[ok]
    inside = allowed[rows, cols]
    return rows[inside], cols[inside]


# ---------------------------------------------------------------- the canvas


@dataclass
class Instance:
    """One annotated object: its class name, hard mask inside its patch, optional attributes."""

    label: str
    patch: Patch
    mask: np.ndarray  # bool, patch.shape
    attributes: dict = field(default_factory=dict)

    def box(self) -> list[float] | None:
        """Tight xyxy box of the mask in image pixels, or None when the mask is empty."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        if len(rows) == 0:
            return None
        cols = np.flatnonzero(self.mask.any(axis=0))
        return [
            float(self.patch.x0 + cols[0]),
            float(self.patch.y0 + rows[0]),
            float(self.patch.x0 + cols[-1] + 1),
            float(self.patch.y0 + rows[-1] + 1),
        ]


class Canvas:
    """Optical density per channel (3, H, W): stains add, so overlapping cells darken like real ones.

    Channels first: cell patches are small, and numpy adds a 33x33 patch twice as fast when
    its inner loop runs along a row rather than over 3 channels.
    """

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self.od = np.zeros((3, height, width), F32)
        self.instances: list[Instance] = []

    def patch(self, cx: float, cy: float, radius: float) -> Patch | None:
        return Patch.around(cx, cy, radius, self.height, self.width)

    def stain(self, patch: Patch, layers: list[tuple[np.ndarray, np.ndarray]], clear: np.ndarray | None = None) -> None:
        """Add density layers, each (density map, OD per unit density); ``clear`` in [0, 1] bleaches holes."""
        (dens, vec), rest = layers[0], layers[1:]
        od = vec[:, None, None] * dens
        for dens, vec in rest:
            od += vec[:, None, None] * dens
        if clear is not None:
            od *= 1 - clear
        self.od[:, patch.y0 : patch.y1, patch.x0 : patch.x1] += od

    def annotate(self, label: str, patch: Patch, mask: np.ndarray, attributes: dict | None = None) -> Instance | None:
        if not mask.any():
            return None
        inst = Instance(label, patch, mask, dict(attributes or {}))
        self.instances.append(inst)
        return inst
