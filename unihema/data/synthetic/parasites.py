"""Malaria-infected red cells: the host cell plus the parasite at one of three stages.

ring: a thin blue ring with one or two dark chromatin dots; trophozoite: a larger irregular
amoeboid body with brown pigment grains; gametocyte: a banana-shaped body stretching an
elongated host (P. falciparum) or a large round body filling an enlarged host (P. vivax),
both with pigment. The host is annotated "RBC" and the parasite with its stage, each with
its own box and mask, as malaria detection datasets do.
"""

from __future__ import annotations

import math

import numpy as np

from unihema.data.synthetic.rbc import TWO_PI, draw_rbc
from unihema.data.synthetic.shapes import (
    F32,
    Canvas,
    Instance,
    arc,
    blob,
    coverage,
    disc,
    dots,
    sample_inside,
    smooth_noise,
)
from unihema.data.synthetic.stains import Stain

STAGES = ("ring", "trophozoite", "gametocyte")


def _ring(
    canvas: Canvas, stain: Stain, rng: np.random.Generator, cx: float, cy: float, host_r: float, px: float
) -> Instance | None:
    ring_r = host_r * rng.uniform(0.22, 0.38)
    half_w = max(0.45, 0.16 * px)
    dot_r = max(0.8, 0.32 * px)
    room = max(host_r - ring_r - half_w - 1.0, 0.0)
    shift, a = rng.uniform(0, room), rng.uniform(0, TWO_PI)
    patch = canvas.patch(cx + shift * math.cos(a), cy + shift * math.sin(a), ring_r + half_w + 2 * dot_r + 1)
    if patch is None:
        return None
    dist = np.hypot(patch.dx, patch.dy)
    sd = F32(half_w) - np.abs(dist - F32(ring_r))
    theta = rng.uniform(0, TWO_PI)
    dot_sd = np.full_like(sd, -1e3)
    for k in range(1 + int(rng.random() < 0.25)):  # a quarter have two dots ("headphone" rings)
        t = theta + k * rng.uniform(0.6, 1.4)
        dot_sd = np.maximum(dot_sd, disc(*patch.at(ring_r * math.cos(t), ring_r * math.sin(t)), dot_r))
    sd = np.maximum(sd, dot_sd)
    dot_cov = coverage(dot_sd)
    body = coverage(sd)
    layers = [
        (body * F32(rng.uniform(0.6, 0.9)), stain.cell(rng, stain.blue)),
        (dot_cov * F32(rng.uniform(1.0, 1.5)), stain.cell(rng, stain.azure)),
    ]
    canvas.stain(patch, layers)
    return canvas.annotate("ring", patch, sd > 0)


def _pigment(rng: np.random.Generator, shape: tuple[int, int], where: np.ndarray, count: int, px: float):
    rows, cols = sample_inside(rng, where, count)
    return dots(shape, rows, cols, max(0.22 * px, 0.5), crisp=px > 4)


def _trophozoite(
    canvas: Canvas, stain: Stain, rng: np.random.Generator, cx: float, cy: float, host_r: float, px: float
) -> Instance | None:
    r = host_r * rng.uniform(0.38, 0.55)
    harmonics = np.array([(k, rng.uniform(0.06, 0.22), rng.uniform(0, TWO_PI)) for k in (2, 3, 4, 5)], F32)
    room = max(host_r - r * 1.3, 0.0)
    a = rng.uniform(0, TWO_PI)
    ox, oy = rng.uniform(0, room) * math.cos(a), rng.uniform(0, room) * math.sin(a)
    patch = canvas.patch(cx + ox, cy + oy, r * (1 + float(harmonics[:, 1].sum())) + 2)
    if patch is None:
        return None
    sd = blob(patch.dx, patch.dy, r, harmonics)
    body = coverage(sd)
    texture = 1 + F32(0.25) * smooth_noise(rng, patch.shape, max(0.3 * px, 0.5))
    t = rng.uniform(0, TWO_PI)
    dot = coverage(disc(*patch.at(0.5 * r * math.cos(t), 0.5 * r * math.sin(t)), max(0.9, 0.38 * px)))
    pigment = _pigment(rng, patch.shape, sd > 1, int(rng.integers(2, 9)), px) * body
    layers = [
        (body * texture * F32(rng.uniform(0.7, 1.0)), stain.cell(rng, stain.blue)),
        (body * F32(rng.uniform(0.15, 0.35)), stain.azure),
        (dot * F32(rng.uniform(1.0, 1.4)), stain.cell(rng, stain.azure)),
        (pigment * F32(rng.uniform(0.8, 1.3)), stain.pigment),
    ]
    canvas.stain(patch, layers)
    return canvas.annotate("trophozoite", patch, sd > 0)


def _gametocyte(
    canvas: Canvas,
    stain: Stain,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    host_r: float,
    px: float,
    banana: bool,
    direction: float,
) -> Instance | None:
    if banana:
        bend = host_r * rng.uniform(1.8, 3.5)
        half_len = host_r * rng.uniform(1.05, 1.25)
        half_w = host_r * rng.uniform(0.3, 0.4)
        ox, oy = -bend * math.cos(direction + math.pi / 2), -bend * math.sin(direction + math.pi / 2)
        patch = canvas.patch(cx, cy, half_len + half_w + 2)
        if patch is None:
            return None
        dx, dy = patch.at(ox, oy)
        sd = arc(dx, dy, bend, direction + math.pi / 2, half_len / bend, half_w, taper=rng.uniform(0.15, 0.3))
        reach = half_w
    else:
        r = host_r * rng.uniform(0.72, 0.86)
        patch = canvas.patch(cx, cy, r + 2)
        if patch is None:
            return None
        sd = blob(patch.dx, patch.dy, r, np.array([(2, rng.uniform(0, 0.06), rng.uniform(0, TWO_PI))], F32))
        reach = r
    body = coverage(sd)
    texture = 1 + F32(0.2) * smooth_noise(rng, patch.shape, max(0.4 * px, 0.5))
    core = coverage(disc(patch.dx, patch.dy, reach * 0.6))  # chromatin and pigment gather centrally
    pigment = _pigment(rng, patch.shape, (sd > 1) & (core > 0.5), int(rng.integers(4, 14)), px) * body
    layers = [
        (body * texture * F32(rng.uniform(0.6, 0.9)), stain.cell(rng, stain.blue)),
        (body * core * F32(rng.uniform(0.3, 0.6)), stain.cell(rng, stain.azure)),
        (pigment * F32(rng.uniform(0.9, 1.4)), stain.pigment),
    ]
    canvas.stain(patch, layers)
    return canvas.annotate("gametocyte", patch, sd > 0)


def draw_infected(
    canvas: Canvas, stain: Stain, rng: np.random.Generator, cx: float, cy: float, radius: float, px: float, stage: str
) -> list[Instance]:
    """The host red cell ("RBC") and its parasite (``stage``), both annotated."""
    if stage not in STAGES:
        raise ValueError(f"unknown parasite stage {stage!r}; allowed: {', '.join(STAGES)}")
    out: list[Instance] = []
    if stage == "gametocyte":
        banana = rng.random() < 0.6
        direction = rng.uniform(0, TWO_PI)
        if banana:  # the crescent stretches its host into an oval along its own axis
            host = _draw_stretched_host(canvas, stain, rng, cx, cy, radius, direction)
        else:
            radius *= rng.uniform(1.15, 1.35)  # vivax enlarges its host
            host = draw_rbc(canvas, stain, rng, cx, cy, radius, density=0.6, pallor=False)
        out.append(host)
        out.append(_gametocyte(canvas, stain, rng, cx, cy, radius, px, banana, direction))
    else:
        enlarge = rng.uniform(1.0, 1.2) if stage == "trophozoite" else 1.0
        out.append(draw_rbc(canvas, stain, rng, cx, cy, radius * enlarge, density=0.85))
        draw = _ring if stage == "ring" else _trophozoite
        out.append(draw(canvas, stain, rng, cx, cy, radius * enlarge, px))
    return [inst for inst in out if inst is not None]


def _draw_stretched_host(
    canvas: Canvas, stain: Stain, rng: np.random.Generator, cx: float, cy: float, radius: float, direction: float
) -> Instance | None:
    stretch = rng.uniform(0.22, 0.32)
    patch = canvas.patch(cx, cy, radius * (1 + stretch) + 2)
    if patch is None:
        return None
    harmonics = np.array([(2, stretch, -2 * direction)], F32)  # long axis along ``direction``
    sd = blob(patch.dx, patch.dy, radius, harmonics)
    dens = coverage(sd) * F32(stain.rbc_density * rng.uniform(0.45, 0.65))
    canvas.stain(patch, [(dens, stain.cell(rng, stain.eosin))])
    return canvas.annotate("RBC", patch, sd > 0)
