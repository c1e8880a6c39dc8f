"""Fake model outputs and batches for the loss tests, built directly as tensors (no model).

A plain module imported relatively (the suite runs with --import-mode=importlib).
"""

from __future__ import annotations

import torch

from unihema.config import load_config
from unihema.labels import CELL_CLASSES, DETECTION_CLASSES, SEGMENTATION_CLASSES

C_DET = len(DETECTION_CLASSES)
C_CELL = len(CELL_CLASSES)
S_SEG = len(SEGMENTATION_CLASSES)
VOCAB = 17


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    """n valid normalized cxcywh boxes inside the image."""
    wh = torch.rand(n, 2, generator=generator) * 0.3 + 0.05
    c = torch.rand(n, 2, generator=generator) * (1 - wh) + wh / 2
    return torch.cat([c, wh], dim=1)


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def make_outputs(batch=2, queries=6, aux_layers=2, seed=0, hm=4, hs=4, text_len=5, dn=None) -> dict:
    """Every output of the model contract, each a leaf that requires grad."""
    g = torch.Generator().manual_seed(seed)

    def level(with_morph=True):
        out = {
            "pred_logits": leaf(torch.randn(batch, queries, C_DET, generator=g)),
            "pred_boxes": leaf(torch.stack([random_boxes(queries, g) for _ in range(batch)])),
        }
        if with_morph:
            out["pred_morphology"] = leaf(torch.randn(batch, queries, 6, generator=g))
        return out

    outputs = level()
    outputs["aux_outputs"] = [level() for _ in range(aux_layers)]
    outputs["interm_outputs"] = level(with_morph=False)
    outputs["pred_masks"] = leaf(torch.randn(batch, queries, hm, hm, generator=g))
    outputs["semantic_logits"] = leaf(torch.randn(batch, S_SEG, hs, hs, generator=g))
    outputs["cell_logits"] = leaf(torch.randn(batch, C_CELL, generator=g))
    outputs["cell_morphology"] = leaf(torch.randn(batch, 6, generator=g))
    outputs["text_logits"] = leaf(torch.randn(batch, text_len, VOCAB, generator=g))
    if dn is not None:
        num_dn = dn
        outputs["dn_outputs"] = {
            "pred_logits": leaf(torch.randn(batch, num_dn, C_DET, generator=g)),
            "pred_boxes": leaf(torch.stack([random_boxes(num_dn, g) for _ in range(batch)])),
            "aux_outputs": [
                {
                    "pred_logits": leaf(torch.randn(batch, num_dn, C_DET, generator=g)),
                    "pred_boxes": leaf(torch.stack([random_boxes(num_dn, g) for _ in range(batch)])),
                }
                for _ in range(aux_layers)
            ],
        }
    return outputs


def make_batch(tasks, batch=2, counts=(3, 0), seed=1, mask_size=8, text_len=5, with_masks=True) -> dict:
    """A batch of the data contract holding labels for every task; ``tasks`` says which count."""
    g = torch.Generator().manual_seed(seed)
    targets = []
    for n in counts:
        morph = torch.randint(0, 2, (n, 6), generator=g)
        morph[:, 0] = 4  # one attribute never annotated
        t = {
            "labels": torch.randint(0, C_DET, (n,), generator=g),
            "boxes": random_boxes(n, g),
            "morphology": morph,
        }
        if with_masks:
            t["masks"] = torch.rand(n, mask_size, mask_size, generator=g) > 0.5
        targets.append(t)
    morphology = torch.randint(0, 2, (batch, 6), generator=g)
    morphology[0, :3] = 4
    semantic = torch.randint(0, S_SEG, (batch, mask_size, mask_size), generator=g)
    semantic[:, 0, :] = 255
    text = torch.randint(0, VOCAB, (batch, text_len), generator=g)
    text[:, -2:] = -100
    return {
        "tasks": list(tasks),
        "targets": targets,
        "cell_labels": torch.tensor([3, -100] + [1] * (batch - 2))[:batch],
        "morphology": morphology,
        "semantic_masks": semantic,
        "text_labels": text,
    }


def all_leaves(outputs: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flat {path: tensor} of every tensor in a (nested) outputs dict."""
    found = {}
    for key, value in outputs.items():
        path = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            found[path] = value
        elif isinstance(value, dict):
            found.update(all_leaves(value, path + "."))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    found.update(all_leaves(item, f"{path}.{i}."))
    return found


def loss_cfg(*overrides: str):
    """The tiny preset's LossConfig, with ``loss.x=y`` overrides."""
    return load_config("tiny", overrides=overrides).loss
