"""The evaluation report: ``report.md`` over ``metrics.json``, and its PNG plots (matplotlib).

Plots use matplotlib's object API with the Agg canvas (no pyplot, no global backend
switch), so importing this module changes nothing for the rest of the process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unihema.errors import require
from unihema.evaluation.evaluators import CHANCE, HEADLINE


def _figure(width: float, height: float):
    require("matplotlib", "the evaluation plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_confusion(cm, names, path: Path, title: str) -> Path:
    cm = np.asarray(cm, np.float64)
    n = len(names)
    side = min(14.0, 3.0 + 0.45 * n)
    fig = _figure(side + 1.5, side)
    ax = fig.add_subplot(1, 1, 1)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        int(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_pr(curves: dict, path: Path, title: str) -> Path:
    """``curves``: name -> {precision, recall, ap?}, or the detection form {recall, precision: {name: [...]}}."""
    fig = _figure(6.5, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    if "recall" in curves and isinstance(curves.get("precision"), dict):  # COCO: one recall grid
        recall = np.asarray(curves["recall"])
        per = curves["precision"]
        for name, precision in sorted(per.items(), key=lambda kv: -np.mean(kv[1]))[:10]:
            ax.plot(recall, precision, lw=1.2, label=f"{name} (AP50 {np.mean(precision):.2f})")
        if per:
            ax.plot(recall, np.mean(list(per.values()), axis=0), "k--", lw=2, label="mean")
    else:
        for name, c in curves.items():
            style = {"color": "k", "ls": "--", "lw": 2} if name == "micro-average" else {"lw": 1.2}
            ax.plot(c["recall"], c["precision"], label=f"{name} (AP {c.get('ap', float('nan')):.2f})", **style)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_plots(metrics: dict, artifacts: dict, out_dir: Path) -> list[str]:
    tasks = metrics.get("tasks", {})
    written = []
    cls = tasks.get("classification")
    if cls and cls.get("confusion_matrix"):
        written.append(
            plot_confusion(
                cls["confusion_matrix"], cls["labels"], out_dir / "confusion_matrix.png", "single-cell classification"
            ).name
        )
    probe = tasks.get("linear_probe")
    if probe and probe.get("confusion_matrix"):
        written.append(
            plot_confusion(
                probe["confusion_matrix"],
                probe["labels"],
                out_dir / "linear_probe_confusion_matrix.png",
                "linear probe",
            ).name
        )
    det_curves = (artifacts.get("detection") or {}).get("pr_curves")
    if det_curves and det_curves.get("precision"):
        written.append(plot_pr(det_curves, out_dir / "pr_detection.png", "detection precision-recall (IoU 0.5)").name)
    cls_curves = (artifacts.get("classification") or {}).get("pr_curves")
    if cls_curves:
        written.append(
            plot_pr(cls_curves, out_dir / "pr_classification.png", "classification precision-recall (one-vs-rest)").name
        )
    return written


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    # A table cell: pipes and line breaks in generated text would break the row.
    return "" if v is None else " ".join(str(v).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return out + [""]


def render_markdown(metrics: dict, artifacts: dict, plots: list[str]) -> str:
    tasks = metrics.get("tasks", {})
    lines = [
        f"# Uni-Hema evaluation: `{metrics.get('checkpoint')}`",
        "",
        f"- data: `{metrics.get('data')}`, split `{metrics.get('split')}`"
        + (f", at most {metrics['max_batches']} batches per task" if metrics.get("max_batches") else ""),
        f"- model: preset `{metrics.get('preset')}`, {metrics.get('parameters', 0):,} parameters, "
        f"device {metrics.get('device')}",
        f"- written {metrics.get('created')} in {metrics.get('seconds', 0):.1f} s",
        "",
    ]
    rows = []
    for task, values in tasks.items():
        key, chance = HEADLINE.get(task), CHANCE.get(task)
        if key and key in values:
            rows.append([task, key, values[key], values.get(chance) if chance else None, values.get("count")])
    lines += ["## Summary", ""] + _table(["task", "metric", "value", "chance", "n"], rows)

    det = tasks.get("detection")
    if det:
        lines += [
            "## Detection",
            "",
            f"COCO mAP@[.50:.95] {det['map']:.3f}, mAP50 {det['map50']:.3f}, "
            f"mAP75 {det['map75']:.3f} over {det['count']} images ({det['boxes']} boxes, pycocotools).",
            "",
        ]
        per = sorted(det.get("per_class", {}).items(), key=lambda kv: -kv[1]["ground_truth"])
        lines += _table(["class", "AP", "AP50", "boxes"], [[k, v["ap"], v["ap50"], v["ground_truth"]] for k, v in per])
    cls = tasks.get("classification")
    if cls:
        lines += [
            "## Single-cell classification",
            "",
            f"accuracy {cls['accuracy']:.3f} (chance {cls['chance_accuracy']:.3f}), weighted F1 "
            f"{cls['weighted_f1']:.3f}, macro F1 {cls['macro_f1']:.3f}, balanced accuracy "
            f"{cls['balanced_accuracy']:.3f} over {cls['count']} cells and {len(cls['labels'])} classes.",
            "",
        ]
    seg = tasks.get("segmentation")
    if seg:
        lines += [
            "## Segmentation",
            "",
            f"foreground Dice {seg['dice']:.3f}, IoU {seg['iou']:.3f}, mean IoU over "
            f"classes {seg['miou']:.3f}, pixel accuracy {seg['pixel_accuracy']:.3f} ({seg['count']} images, "
            f"{seg['pixels']:,} pixels).",
            "",
        ]
        lines += _table(
            ["class", "Dice", "IoU", "pixels"],
            [[k, v["dice"], v["iou"], v["pixels"]] for k, v in seg["per_class"].items()],
        )
    morph = tasks.get("morphology")
    if morph:
        lines += [
            "## Morphology attributes",
            "",
            f"macro F1 {morph['macro_f1']:.3f} (chance {morph['chance_macro_f1']:.3f}), mean positive-value F1 "
            f'{morph["mean_f1"]:.3f}; "not annotated" left out.',
            "",
        ]
        lines += _table(
            ["attribute", "F1 (positive)", "macro F1", "accuracy", "n", "positives"],
            [
                [k, v["f1"], v["macro_f1"], v["accuracy"], v["count"], v["positives"]]
                for k, v in morph["per_attribute"].items()
            ],
        )
        for source, v in morph.get("sources", {}).items():
            extra = (
                f"; {v['matched']}/{v['annotated']} annotated cells matched to a detection (IoU >= 0.5)"
                if "annotated" in v
                else ""
            )
            score = f"macro F1 {v['macro_f1']:.3f} over {v['count']} labels" if "macro_f1" in v else "no labels scored"
            lines.append(f"- {source}: {score}{extra}")
        lines.append("")
    vqa = tasks.get("vqa")
    if vqa:
        lines += [
            "## Visual question answering",
            "",
            f"exact match {vqa['exact_match']:.3f} (most frequent answer {vqa['chance_exact_match']:.3f}), "
            + ", ".join(f"BLEU-{n} {vqa[f'bleu{n}']:.3f}" for n in range(1, 5))
            + f", ROUGE-L {vqa['rouge_l']:.3f} over {vqa['count']} questions."
            + (
                f" Closed-vocabulary accuracy (each question's answer set ranked by likelihood) "
                f"{vqa['closed_accuracy']:.3f} (most frequent answer per question "
                f"{vqa['chance_closed_accuracy']:.3f})."
                if "closed_accuracy" in vqa
                else ""
            ),
            "",
        ]
        examples = (artifacts.get("vqa") or {}).get("examples") or []
        if examples:
            lines += _table(
                ["question", "reference", "prediction"],
                [[e["question"], e["reference"], e["prediction"]] for e in examples],
            )
    mlm = tasks.get("mlm")
    if mlm:
        lines += [
            "## Masked language modelling",
            "",
            f"token accuracy {mlm['token_accuracy']:.3f} (most frequent token "
            f"{mlm['chance_token_accuracy']:.3f}) over {mlm['count']} masked tokens "
            "(teacher forcing, sentinels excluded).",
            "",
        ]
    probe = tasks.get("linear_probe")
    if probe:
        lines += [
            "## Linear probe (DinoBloom protocol)",
            "",
            f"logistic regression on the frozen cell feature ({probe['feature_dim']}-d) of "
            f"{probe['train_count']} train cells: accuracy {probe['accuracy']:.3f}, "
            f"macro F1 {probe['macro_f1']:.3f}, weighted F1 "
            f"{probe['weighted_f1']:.3f} on {probe['count']} cells.",
            "",
        ]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    if metrics.get("skipped"):
        lines += ["## Not evaluated", ""] + [f"- {t}: {why}" for t, why in metrics["skipped"].items()] + [""]
    if metrics.get("data_errors"):
        lines += ["## Records left out", "", f"{metrics['data_errors']}", ""]
    lines += ["---", "Research software: these numbers describe this data only and are not evidence for clinical use."]
    return "\n".join(lines) + "\n"
