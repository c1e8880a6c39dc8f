"""Red cells and platelets: the background population every field of view is made of.

A red cell is a biconcave disc: more dye at the rim than in the centre (central pallor),
a slightly darker edge, and a little eccentricity. A sickle cell is a dense crescent with
pointed ends and no pallor, so it is told apart by shape, not colour. Platelets are small
irregular purple blobs with a granular centre.
"""

from __future__ import annotations

import math

import numpy as np

from unihema.data.synthetic.shapes import F32, Canvas, Instance, Patch, arc, blob, coverage, dots, sample_inside
from unihema.data.synthetic.stains import Stain

TWO_PI = 2 * math.pi
RBC_RADIUS_UM = (3.4, 4.0)  # normal red cells are 7-8 um across
PLATELET_RADIUS_UM = (0.9, 1.6)


def draw_rbc(
    canvas: Canvas,
    stain: Stain,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    radius: float,
    *,
    elongation: float = 0.0,
    density: float = 1.0,
    pallor: bool = True,
    label: str | None = "RBC",
) -> Instance | None:
    """A red cell of ``radius`` pixels; ``label`` None draws it without an annotation."""
    # One draw for all of the cell's scalars: this runs ~50 times per image.
    u = rng.random(10)
    harmonics = ((2, elongation + 0.06 * u[0], TWO_PI * u[1]), (3, 0.03 * u[2], TWO_PI * u[3]))
    patch = canvas.patch(cx, cy, radius * (1.09 + elongation) + 1)
    if patch is None:
        return None
    sd = blob(patch.dx, patch.dy, radius, harmonics)
    cov = coverage(sd)
    dens = cov * F32(stain.rbc_density * density * (0.8 + 0.3 * u[4]))
    if pallor:
        depth, size = 0.3 + 0.4 * u[5], radius * (0.35 + 0.2 * u[6])
        dx, dy = patch.at(0.12 * radius * (u[7] - 0.5), 0.12 * radius * (u[8] - 0.5))
        dens *= 1 - F32(depth) * np.exp(-(dx * dx + dy * dy) * F32(1 / (size * size)))
    # Refraction at the membrane makes the outline a touch darker than the body.
    dens += cov * F32(0.15 * stain.rbc_density) * np.exp(-np.square(sd - F32(1.2)))
    canvas.stain(patch, [(dens, stain.cell(rng, stain.eosin))])
    return canvas.annotate(label, patch, sd > 0) if label else None


class RbcSprites:
    """Red cells drawn once per image and stamped many times: a field of view holds ~60 of them.

    Each stamp picks the sprite nearest the requested radius, one of its 8 flips/transposes
    and its own dye strength and tint, so neighbours still differ; stamping is a slice add,
    about 6x cheaper than drawing a cell afresh.
    """

    def __init__(self, stain: Stain, rng: np.random.Generator, radius: float, count: int = 8):
        count = max(count, 1)
        self.stain = stain
        radii = np.sort(radius * rng.uniform(0.86, 1.14, count))
        self.radii, self.sprites = radii, []
        for r in radii:
            half = int(math.ceil(r * 1.1)) + 2
            scratch = Canvas(2 * half + 1, 2 * half + 1)
            inst = draw_rbc(scratch, stain, rng, half + 0.5, half + 0.5, float(r), label="RBC")
            mask = np.zeros((2 * half + 1, 2 * half + 1), bool)
            mask[inst.patch.y0 : inst.patch.y1, inst.patch.x0 : inst.patch.x1] = inst.mask
            # Divide out the dye so each stamp can bring its own tint.
            self.sprites.append((scratch.od[1] / max(float(stain.eosin[1]), 1e-6), mask, half))

    def stamp(
        self, canvas: Canvas, rng: np.random.Generator, cx: float, cy: float, radius: float, label: str | None = "RBC"
    ) -> Instance | None:
        """Add the sprite nearest ``radius`` at (cx, cy); annotated unless ``label`` is None."""
        k = int(np.abs(self.radii - radius).argmin())
        dens, mask, half = self.sprites[k]
        u = rng.random(3)
        if u[0] < 0.5:
            dens, mask = dens.T, mask.T
        if u[1] < 0.5:
            dens, mask = dens[::-1], mask[::-1]
        if u[2] < 0.5:
            dens, mask = dens[:, ::-1], mask[:, ::-1]
        y0, x0 = int(round(cy)) - half, int(round(cx)) - half
        size = 2 * half + 1
        ys, xs = max(0, -y0), max(0, -x0)
        ye, xe = min(size, canvas.height - y0), min(size, canvas.width - x0)
        if ye <= ys or xe <= xs:
            return None
        patch = Patch(y0 + ys, y0 + ye, x0 + xs, x0 + xe)
        vec = self.stain.cell(rng, self.stain.eosin) * F32(rng.uniform(0.9, 1.1))
        canvas.od[:, patch.y0 : patch.y1, patch.x0 : patch.x1] += vec[:, None, None] * dens[ys:ye, xs:xe]
        return canvas.annotate(label, patch, mask[ys:ye, xs:xe]) if label else None


def draw_sickle(
    canvas: Canvas, stain: Stain, rng: np.random.Generator, cx: float, cy: float, radius: float
) -> Instance | None:
    """A crescent of about the area of a red cell, pointed at both ends, uniformly dense."""
    bend = radius * rng.uniform(1.1, 2.6)
    half_len = radius * rng.uniform(1.2, 1.6)
    half_span = min(half_len / bend, 2.3)
    half_width = radius * rng.uniform(0.28, 0.42)
    direction = rng.uniform(0, TWO_PI)
    # The circle the crescent follows is centred off the cell so the band passes through (cx, cy).
    ox, oy = -bend * math.cos(direction), -bend * math.sin(direction)
    patch = canvas.patch(cx, cy, half_len + half_width + 2)
    if patch is None:
        return None
    dx, dy = patch.at(ox, oy)
    sd = arc(dx, dy, bend, direction, half_span, half_width, taper=rng.uniform(0.55, 0.9))
    dens = coverage(sd) * F32(stain.rbc_density * rng.uniform(1.05, 1.35))
    canvas.stain(patch, [(dens, stain.cell(rng, stain.eosin))])
    return canvas.annotate("Sickle Cells", patch, sd > 0)


def draw_platelet(
    canvas: Canvas,
    stain: Stain,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    px_per_um: float,
    label: str | None = "platelet",
) -> Instance | None:
    """A small irregular purple blob: pale rim (hyalomere) and a granular centre (granulomere)."""
    radius = rng.uniform(*PLATELET_RADIUS_UM) * px_per_um
    harmonics = np.array([(k, rng.uniform(0.03, 0.18), rng.uniform(0, TWO_PI)) for k in (2, 3, 4)], F32)
    patch = canvas.patch(cx, cy, radius * 1.5 + 1)
    if patch is None:
        return None
    sd = blob(patch.dx, patch.dy, radius, harmonics)
    cov = coverage(sd)
    rows, cols = sample_inside(rng, sd > radius * 0.3, int(rng.integers(4, 14)))
    granules = dots(patch.shape, rows, cols, max(0.3 * px_per_um, 0.5), crisp=px_per_um > 4) * cov
    layers = [
        (cov * F32(rng.uniform(0.2, 0.4)), stain.cell(rng, stain.azure)),
        (cov * F32(rng.uniform(0.1, 0.3)), stain.blue),
        (granules * F32(rng.uniform(0.6, 1.0)), stain.cell(rng, stain.azure)),
    ]
    canvas.stain(patch, layers)
    return canvas.annotate(label, patch, sd > 0) if label else None
