"""The VQA and MLM losses: token cross-entropy of the T5 decoder, split by the sample's task.

Both tasks train the same decoder with the same teacher-forced logits; they are separate
losses only so each has its own weight (LossConfig.vqa / mlm) and its own curve. A batch
may mix them: ``text_task`` names each sample's task. Each loss is the mean over its own
non-padding tokens (-100 marks padding, as Hugging Face does), so a task's value does not
depend on how many samples of the other task share the batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from unihema.labels import TEXT_TASKS
from unihema.losses.functional import connected_zero, cross_entropy


def text_losses(
    text_logits: Tensor,
    text_labels: Tensor,
    tasks: Sequence[str],
    text_task: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """{task: mean token CE} for each of "vqa"/"mlm" present in ``tasks``.

    Without ``text_task`` every sample belongs to the one text task in ``tasks``; with both
    present the split is ambiguous and this raises rather than guessing.
    """
    if text_logits.shape[:2] != text_labels.shape:
        raise ValueError(f"text_logits {tuple(text_logits.shape)} do not fit text_labels {tuple(text_labels.shape)}")
    wanted = [t for t in TEXT_TASKS if t in tasks]
    text_labels = text_labels.to(text_logits.device)
    if text_task is None:
        if len(wanted) != 1:
            raise ValueError(f"batch holds tasks {wanted}: text_task is needed to split the text loss")
        return {wanted[0]: cross_entropy(text_logits, text_labels)}
    if len(text_task) != text_logits.shape[0]:
        raise ValueError(f"text_task names {len(text_task)} samples for {text_logits.shape[0]} text rows")
    out = {}
    for task in wanted:
        rows = [i for i, name in enumerate(text_task) if name == task]
        if not rows:
            out[task] = connected_zero(text_logits)
            continue
        # Index rows instead of masking labels: log-softmax then runs over this task's rows
        # only, which matters with a 32K vocabulary.
        index = torch.as_tensor(rows, device=text_logits.device)
        out[task] = cross_entropy(text_logits[index], text_labels[index])
    return out
