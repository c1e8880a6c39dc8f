"""Shared fixtures for the model tests: the tiny config, a tokenizer and synthetic batches."""

from __future__ import annotations

import pytest
import torch

from unihema import labels
from unihema.config import load_config
from unihema.model import build_model, build_tokenizer

ALL_TASKS = labels.TASKS
NUM_DETECTION = len(labels.DETECTION_CLASSES)
NUM_CELL = len(labels.CELL_CLASSES)
NUM_ATTRIBUTES = len(labels.MORPHOLOGY_NAMES)


def tiny_config(*overrides: str):
    return load_config("tiny", overrides=list(overrides))


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer(tiny_config())


def make_batch(tokenizer, tasks, batch_size: int = 2, size=(64, 80), seed: int = 0) -> dict:
    """A batch in the model/loss contract, with padding on the second image."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    images = torch.randn(batch_size, 3, h, w, generator=g)
    pixel_mask = torch.zeros(batch_size, h, w, dtype=torch.bool)
    if batch_size > 1:
        pixel_mask[1, :, w - 16 :] = True
    targets = []
    for i in range(batch_size):
        n = 3 if i == 0 else 1
        boxes = torch.rand(n, 4, generator=g) * 0.4 + torch.tensor([0.3, 0.3, 0.05, 0.05])
        targets.append(
            {
                "labels": torch.randint(0, NUM_DETECTION, (n,), generator=g),
                "boxes": boxes,
                "masks": torch.rand(n, h, w, generator=g) > 0.5,
                "morphology": torch.randint(0, 2, (n, NUM_ATTRIBUTES), generator=g),
            }
        )
    questions = [
        "what type of cell is this?",
        "is the nucleolus prominent?",
        "classify this blood cell.",
        "how many cells are there?",
    ][:batch_size]
    answers = ["a lymphocyte", "yes", "myeloblast", "3"][:batch_size]
    prompt_ids, prompt_mask = tokenizer.encode(questions, 24)
    text_labels, label_mask = tokenizer.encode(answers, 12)
    return {
        "images": images,
        "pixel_mask": pixel_mask,
        "tasks": list(tasks),
        "targets": targets,
        "cell_labels": torch.randint(0, NUM_CELL, (batch_size,), generator=g),
        "morphology": torch.randint(0, 2, (batch_size, NUM_ATTRIBUTES), generator=g),
        "semantic_masks": torch.randint(0, 2, (batch_size, h, w), generator=g),
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "text_labels": text_labels.masked_fill(~label_mask, -100),
    }


def tensors(obj):
    """Every tensor in a (nested) model output."""
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors(v)


def surrogate_loss(out: dict) -> torch.Tensor:
    """A loss touching every floating output, so gradients reach whatever produced them."""
    return sum((t.float() ** 2).mean() for t in tensors(out) if t.is_floating_point())


@pytest.fixture()
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_config("model.decoder.dn_enabled=true")).train()


@pytest.fixture(autouse=True)
def _default_backends(monkeypatch):
    """A developer's exported UNIHEMA_*_BACKEND must not change what the tests check."""
    monkeypatch.delenv("UNIHEMA_ATTENTION_BACKEND", raising=False)
    monkeypatch.delenv("UNIHEMA_MSDA_BACKEND", raising=False)
