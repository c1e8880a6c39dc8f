"""A PNG of each task's validation metric against that task's searched weight, one panel per task.

The point of a loss-weight sweep is the trade-off between tasks, which a single objective
hides: each panel shows one task's headline metric (with its chance level dashed) against
``loss.<task>`` (or ``data.mix.<task>`` when only the sampling ratio was searched), the best
trial ringed. matplotlib draws it when installed; otherwise a plain PIL drawing of the same
panels, so the report never depends on an optional package.
"""

from __future__ import annotations

import math
from pathlib import Path

from unihema.config import TASKS, UniHemaConfig
from unihema.evaluation.evaluators import HEADLINE

PANEL_W, PANEL_H, COLS, LEGEND_H = 380, 280, 3, 28


def weight_path(task: str, cfg: UniHemaConfig) -> str | None:
    for path in (f"loss.{task}", f"data.mix.{task}"):
        if path in cfg.tune.search:
            return path
    return None


def panel_points(rows: list[dict], task: str, path: str | None) -> list[tuple[float, float, bool]]:
    """(weight, metric, not completed) of each trial that reported the task.

    Without a searched weight for the task, x is the trial's rank in the table.
    """
    out = []
    for i, row in enumerate(rows):
        y = row.get(f"{task}.{HEADLINE[task]}")
        x = row.get(path) if path else float(i + 1)
        if isinstance(y, (int, float)) and isinstance(x, (int, float)) and math.isfinite(y):
            out.append((float(x), float(y), row.get("status") != "completed"))
    return out


def _chance(rows: list[dict], task: str) -> float | None:
    values = [r[f"{task}.chance"] for r in rows if isinstance(r.get(f"{task}.chance"), (int, float))]
    return sum(values) / len(values) if values else None


def plot_metrics_vs_weights(rows: list[dict], cfg: UniHemaConfig, path: str | Path, best: dict | None = None) -> Path:
    path = Path(path)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _draw_pil(rows, cfg, path, best)
    else:
        _draw_matplotlib(rows, cfg, path, best)
    return path


def _draw_matplotlib(rows, cfg, path: Path, best) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_n = math.ceil(len(TASKS) / COLS)
    fig, axes = plt.subplots(rows_n, COLS, figsize=(4.2 * COLS, 3.2 * rows_n), squeeze=False)
    for ax, task in zip(axes.flat, TASKS):
        wpath = weight_path(task, cfg)
        pts = panel_points(rows, task, wpath)
        for done in (False, True):
            sel = [(x, y) for x, y, stopped in pts if stopped == done]
            if sel:
                ax.scatter(*zip(*sel), marker="x" if done else "o", label="stopped/failed" if done else "completed")
        if best is not None and pts:
            bx = best.get(wpath) if wpath else float(rows.index(best) + 1)
            by = best.get(f"{task}.{HEADLINE[task]}")
            if isinstance(bx, (int, float)) and isinstance(by, (int, float)):
                ax.scatter([bx], [by], s=160, facecolors="none", edgecolors="red", label="best")
        chance = _chance(rows, task)
        if chance is not None:
            ax.axhline(chance, linestyle="--", color="grey", linewidth=1, label="chance")
        if wpath and pts and min(p[0] for p in pts) > 0:
            ax.set_xscale("log")
        ax.set_xlabel(wpath or "trial (weight not searched)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{task}: {HEADLINE[task]}")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _draw_pil(rows, cfg, path: Path, best) -> None:
    from PIL import Image, ImageDraw, ImageFont

    rows_n = math.ceil(len(TASKS) / COLS)
    img = Image.new("RGB", (PANEL_W * COLS, PANEL_H * rows_n + LEGEND_H), "white")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        font = ImageFont.load_default()
    for i, task in enumerate(TASKS):
        ox, oy = (i % COLS) * PANEL_W, (i // COLS) * PANEL_H
        _pil_panel(draw, font, ox, oy, rows, task, weight_path(task, cfg), best, _chance(rows, task))
    draw.text(
        (PANEL_W * COLS // 2, PANEL_H * rows_n + LEGEND_H // 2),
        "blue dot: completed    orange x: stopped early or failed    red ring: best    dashed: chance level",
        fill="black",
        font=font,
        anchor="mm",
    )
    img.save(path, format="PNG")


def _pil_panel(draw, font, ox, oy, rows, task, wpath, best, chance) -> None:
    left, top, right, bottom = ox + 50, oy + 30, ox + PANEL_W - 25, oy + PANEL_H - 50
    draw.text((ox + PANEL_W // 2, oy + 8), f"{task}: {HEADLINE[task]}", fill="black", font=font, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(
        ((left + right) // 2, bottom + 26), wpath or "trial (weight not searched)", fill="black", font=font, anchor="mt"
    )
    pts = panel_points(rows, task, wpath)
    if not pts:
        draw.text(((left + right) // 2, (top + bottom) // 2), "no data", fill="grey", font=font, anchor="mm")
        return
    log_x = bool(wpath) and min(p[0] for p in pts) > 0
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    lo, hi = min(p[0] for p in pts), max(p[0] for p in pts)
    x0, x1 = fx(lo), fx(hi)
    pad = 0.5 if x1 - x0 < 1e-12 else 0.08 * (x1 - x0)
    x0, x1 = x0 - pad, x1 + pad
    # Every headline metric and chance level lies in [0, 1]: a fixed axis keeps panels comparable.
    y0, y1 = 0.0, 1.0

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (fx(x) - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))

    for value in (0.0, 0.5, 1.0):
        draw.text((left - 4, px(lo, value)[1]), f"{value:g}", fill="black", font=font, anchor="rm")
    for value in sorted({lo, hi}):
        x = px(value, 0.0)[0]
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.text((x, bottom + 6), f"{value:.3g}", fill="black", font=font, anchor="mt")
    if chance is not None:
        cy = px(lo, chance)[1]
        for x in range(left, right, 10):
            draw.line([(x, cy), (min(x + 5, right), cy)], fill="grey")
    for x, y, stopped in pts:
        cx, cy = px(x, y)
        if stopped:
            draw.line([(cx - 4, cy - 4), (cx + 4, cy + 4)], fill="darkorange", width=2)
            draw.line([(cx - 4, cy + 4), (cx + 4, cy - 4)], fill="darkorange", width=2)
        else:
            draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill="royalblue")
    if best is not None:
        bx = best.get(wpath) if wpath else float(rows.index(best) + 1)
        by = best.get(f"{task}.{HEADLINE[task]}")
        if isinstance(bx, (int, float)) and isinstance(by, (int, float)):
            cx, cy = px(bx, by)
            draw.ellipse([cx - 9, cy - 9, cx + 9, cy + 9], outline="red", width=2)
