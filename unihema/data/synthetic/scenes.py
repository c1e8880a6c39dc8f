"""Composing images: a field of view of a smear, or a single-cell crop centred on one white cell.

A field of view is a monolayer of red cells (mostly side by side, some overlapping in small
clumps) with a few white cells, platelets, and in some images malaria parasites or sickle
cells; every object is annotated. A crop is zoomed in about 2.4x on one white cell with
red cells cut by the image edges around it, like the single-cell datasets (PBC, Raabin).
Scale is set in micrometres, so sizes stay true at any image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from unihema.data.synthetic.parasites import STAGES, draw_infected
from unihema.data.synthetic.rbc import RBC_RADIUS_UM, RbcSprites, draw_platelet, draw_sickle
from unihema.data.synthetic.shapes import Canvas, Instance
from unihema.data.synthetic.stains import develop, sample_stain
from unihema.data.synthetic.wbc import WBC, DrawnWBC, draw_wbc, sample_wbc

FOV_WIDTH_UM = 256 / 3.4  # a field of view is ~75 um wide at any image size
CROP_PX_PER_UM = 8.0 / 256  # a 256 px crop is ~32 um wide


@dataclass
class FovTruth:
    """What a field of view contains, for its questions and answers."""

    wbc_classes: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    sickle: int = 0
    platelets: int = 0
    rbc: int = 0


def scatter(
    rng: np.random.Generator,
    count: int,
    radius: float,
    size: int,
    blockers: list[tuple[float, float, float]],
    clump: float = 0.15,
    spacing: float = 0.92,
    outside: float = 0.0,
) -> np.ndarray:
    """Up to ``count`` red-cell discs (x, y, r), rows of an array, by random sequential placement.

    Cells keep ``spacing`` x (r1 + r2) apart, except clump members: each is dropped next to
    the candidate before it at 0.55-0.85 x (r1 + r2) and may overlap any cell down to 0.5 x.
    ``blockers`` (white cells) are never overlapped; centres may lie ``outside`` x r beyond
    the image edge. All candidates are compared at once; only the greedy accept loop is
    Python, over each candidate's short list of clashing predecessors.
    """
    tries = count * 3
    lo, hi = -outside * radius, size + outside * radius
    xy = rng.uniform(lo, hi, (tries, 2))
    radii = radius * rng.uniform(0.88, 1.12, tries)
    clumpy = rng.random(tries) < clump
    clumpy[0] = False
    angle, reach = rng.uniform(0, 2 * math.pi, tries), rng.uniform(0.55, 0.85, tries)
    step = reach * (radii + np.roll(radii, 1))
    offsets = np.stack([np.cos(angle) * step, np.sin(angle) * step], 1)
    # A clump member sits beside its predecessor; runs of members chain, so accumulate along each run.
    for i in np.flatnonzero(clumpy).tolist():
        xy[i] = xy[i - 1] + offsets[i]
    ok = ((xy >= lo) & (xy <= hi)).all(axis=1)
    blocks = np.asarray(blockers, dtype=np.float64).reshape(-1, 3)
    if len(blocks):
        dist = np.hypot(xy[:, None, 0] - blocks[None, :, 0], xy[:, None, 1] - blocks[None, :, 1])
        ok &= (dist >= blocks[None, :, 2] + 0.8 * radii[:, None]).all(axis=1)
    pts, rad = xy.astype(np.float32), radii.astype(np.float32)
    gap = np.where(clumpy, 0.5, spacing).astype(np.float32)
    ddx, ddy = pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1]
    # clash[i, j]: candidate i may not join if earlier candidate j was accepted.
    clash = np.tril(ddx * ddx + ddy * ddy < np.square(gap[:, None] * (rad[:, None] + rad[None, :])), k=-1)
    rows, cols = np.nonzero(clash)
    starts = np.searchsorted(rows, np.arange(tries + 1)).tolist()
    earlier = cols.tolist()
    accepted = bytearray(tries)
    taken: list[int] = []
    for i in np.flatnonzero(ok).tolist():
        if not any(accepted[j] for j in earlier[starts[i] : starts[i + 1]]):
            accepted[i] = 1
            taken.append(i)
            if len(taken) == count:
                break
    return np.column_stack([xy[taken], radii[taken]])


def _place_wbcs(rng: np.random.Generator, wbcs: list[WBC], size: int, px: float) -> list[tuple[WBC, float, float]]:
    placed: list[tuple[WBC, float, float]] = []
    for wbc in wbcs:
        r = wbc.diameter_um / 2 * px
        xy = rng.uniform(0.3 * r, size - 0.3 * r, (20, 2))  # partly cut by the edge now and then
        for x, y in xy:
            if all(math.hypot(x - ox, y - oy) > r + o.diameter_um / 2 * px for o, ox, oy in placed):
                placed.append((wbc, float(x), float(y)))
                break
    return placed


def compose_fov(
    rng: np.random.Generator, size: int, width_um: float = FOV_WIDTH_UM
) -> tuple[np.ndarray, list[Instance], FovTruth]:
    """A smear field of view: uint8 RGB image, its annotated instances and a summary.

    ``width_um``: how wide the field is (a narrower field shows fewer, larger cells).
    """
    stain = sample_stain(rng)
    px = size / width_um * rng.uniform(0.88, 1.12)
    canvas = Canvas(size, size)
    truth = FovTruth()
    n_wbc = int(rng.choice(4, p=[0.15, 0.45, 0.28, 0.12]))
    placed = _place_wbcs(rng, [sample_wbc(rng) for _ in range(n_wbc)], size, px)
    blockers = [(x, y, w.diameter_um / 2 * px) for w, x, y in placed]

    rbc_r = rng.uniform(*RBC_RADIUS_UM) * px
    target = int(rng.uniform(0.3, 0.6) * size * size / (math.pi * rbc_r * rbc_r))
    cells = scatter(rng, target, rbc_r, size, blockers, clump=rng.uniform(0.05, 0.3))
    roles = np.zeros(len(cells), np.int64)  # 0 normal, 1 sickle, 2 infected
    order = rng.permutation(len(cells))
    n_sickle = int(rng.integers(1, 9)) if rng.random() < 0.22 else 0
    n_infected = int(rng.integers(1, 6)) if rng.random() < 0.28 else 0
    roles[order[:n_sickle]] = 1
    roles[order[n_sickle : n_sickle + n_infected]] = 2
    stage_mix = rng.dirichlet([1.0, 0.7, 0.5])  # some smears mostly rings, others later stages
    sprites = RbcSprites(stain, rng, rbc_r)

    for (x, y, r), role in zip(cells, roles):
        if role == 1:
            truth.sickle += draw_sickle(canvas, stain, rng, x, y, r) is not None
        elif role == 2:
            stage = STAGES[int(rng.choice(3, p=stage_mix))]
            insts = draw_infected(canvas, stain, rng, x, y, r, px, stage)
            truth.stages += [i.label for i in insts if i.label in STAGES]
            truth.rbc += sum(i.label == "RBC" for i in insts)
        else:
            truth.rbc += sprites.stamp(canvas, rng, x, y, r) is not None
    for wbc, x, y in placed:
        if draw_wbc(canvas, stain, wbc, x, y, px) is not None:
            truth.wbc_classes.append(wbc.cell_class)
    for x, y in rng.uniform(0, size, (int(rng.integers(0, 8)), 2)):
        if all(math.hypot(x - bx, y - by) > br for bx, by, br in blockers):
            truth.platelets += draw_platelet(canvas, stain, rng, x, y, px) is not None
    return develop(canvas.od, stain, rng), canvas.instances, truth


def compose_crop(
    rng: np.random.Generator, size: int, cell_class: str | None = None, attributes: dict[str, str] | None = None
) -> tuple[np.ndarray, WBC, DrawnWBC | None]:
    """A single-cell image: one white cell near the centre, red-cell fragments around it."""
    stain = sample_stain(rng)
    px = size * CROP_PX_PER_UM * rng.uniform(0.92, 1.08)
    wbc = sample_wbc(rng, cell_class, attributes)
    cx, cy = size / 2 + rng.normal(0, 0.03 * size, 2)
    radius = wbc.diameter_um / 2 * px
    canvas = Canvas(size, size)
    rbc_r = rng.uniform(*RBC_RADIUS_UM) * px
    cells = scatter(rng, int(rng.integers(3, 10)), rbc_r, size, [(cx, cy, radius)], clump=0.1, outside=0.6)
    sprites = RbcSprites(stain, rng, rbc_r, count=min(4, len(cells)))
    for x, y, r in cells:
        sprites.stamp(canvas, rng, x, y, r, label=None)
    if rng.random() < 0.3:
        a = rng.uniform(0, 2 * math.pi)
        d = radius + rng.uniform(0.3, 0.45) * size * 0.5
        draw_platelet(canvas, stain, rng, cx + d * math.cos(a), cy + d * math.sin(a), px, label=None)
    drawn = draw_wbc(canvas, stain, wbc, cx, cy, px)
    return develop(canvas.od, stain, rng), wbc, drawn
