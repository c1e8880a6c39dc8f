"""The text side of every record: the task prompt the T5 encoder reads and the target it decodes.

Every task gets a prompt, because Hema-Former's text-guided refinement conditions the
image queries on it; VQA uses the question; MLM corrupts the record's sentence with
T5-style sentinel spans (``<extra_id_0>`` ...), deterministically for a given seed, so
the same sentence is masked differently across epochs but reproducibly across runs.
This is the project's one span corruption; the sentinel spelling is the tokenizer's.
"""

from __future__ import annotations

import numpy as np

from unihema.model.tokenizer import NUM_SENTINELS, sentinel

TASK_PROMPTS = {
    "detection": "detect and classify every cell in this blood smear.",
    "segmentation": "segment the cells in this blood smear.",
    "classification": "classify this blood cell.",
    "morphology": "describe the morphology of this blood cell.",
    "mlm": "fill in the masked words about this blood cell:",
}


def span_corrupt(
    text: str,
    rng: np.random.Generator,
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    max_sentinels: int = NUM_SENTINELS,
) -> tuple[str, str]:
    """T5 span corruption on words: (input with sentinels, target of sentinel + span pairs).

    At least one span is masked so every MLM example teaches something, and never every
    word, so the model always sees context.
    """
    if not 0 < noise_density < 1:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
    if mean_span_length <= 0:
        raise ValueError(f"mean_span_length must be positive, got {mean_span_length}")
    words = text.split()
    n = len(words)
    if n == 0:
        raise ValueError("cannot mask an empty sentence")
    n_noise = int(np.clip(round(n * noise_density), 1, max(1, n - 1)))
    n_spans = int(np.clip(round(n_noise / mean_span_length), 1, min(n_noise, max_sentinels)))
    # Pick span starts among non-adjacent positions, then spread the noise words over the spans.
    lengths = np.ones(n_spans, dtype=int)
    for _ in range(n_noise - n_spans):
        lengths[rng.integers(n_spans)] += 1
    free = n - n_noise
    gaps = np.ones(n_spans + 1, dtype=int) if free >= n_spans + 1 else np.zeros(n_spans + 1, dtype=int)
    for _ in range(free - gaps.sum()):
        gaps[rng.integers(n_spans + 1)] += 1
    inp, tgt, pos = [], [], 0
    for k in range(n_spans):
        inp.extend(words[pos : pos + gaps[k]])
        pos += gaps[k]
        inp.append(sentinel(k))
        tgt.append(sentinel(k))
        tgt.extend(words[pos : pos + lengths[k]])
        pos += lengths[k]
    inp.extend(words[pos:])
    tgt.append(sentinel(n_spans))
    return " ".join(inp), " ".join(tgt)


def prompt_and_target(rec: dict, task: str, rng: np.random.Generator) -> tuple[str, str]:
    """The encoder prompt and decoder target (empty for non-text tasks) of a record for ``task``."""
    if task == "vqa":
        qa = rec["qa"]
        pair = qa[int(rng.integers(len(qa)))]
        return pair["question"], pair["answer"]
    if task == "mlm":
        masked, target = span_corrupt(rec["mlm_text"], rng)
        return f"{TASK_PROMPTS['mlm']} {masked}", target
    return TASK_PROMPTS[task], ""
