"""T5-style span corruption of a sentence, deterministic per seed, for the MLM task.

Records store plain sentences (``mlm_text``); the pipeline masks them per seed with
``mask_spans`` so that each epoch can see different spans without re-preparing data. As in
T5, about ``noise_density`` of the words are masked in spans of mean length
``mean_span_length``; each span becomes a sentinel ``<extra_id_N>`` in the input and the
target lists the sentinels with the words they replaced, closed by one more sentinel.
Unlike T5, a span may start at the first word (T5 always keeps the first word and masks
the last): unmasked words are spread over the gaps before, between and after the spans.
Words are whitespace-separated, so the input and target use single spaces.
"""

from __future__ import annotations

import random

MAX_SENTINELS = 100  # T5 tokenizers define <extra_id_0> ... <extra_id_99>


def sentinel(i: int) -> str:
    return f"<extra_id_{i}>"


def _partition(rng: random.Random, total: int, parts: int, minimum: int) -> list[int]:
    """``total`` split into ``parts`` non-negative integers, each at least ``minimum``."""
    spare = total - parts * minimum
    cuts = sorted(rng.randint(0, spare) for _ in range(parts - 1))
    edges = [0, *cuts, spare]
    return [minimum + b - a for a, b in zip(edges, edges[1:])]


def mask_spans(text: str, seed: int | str, noise_density: float = 0.15,
               mean_span_length: float = 3.0) -> tuple[str, str]:
    """(input with sentinels, target) for ``text``; the same text and seed always give the same pair."""
    if not 0 < noise_density < 1:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
    if mean_span_length <= 0:
        raise ValueError(f"mean_span_length must be positive, got {mean_span_length}")
    words = text.split()
    n = len(words)
    if n == 0:
        return "", ""
    rng = random.Random(seed)
    num_noise = min(max(1, round(n * noise_density)), max(1, n - 1))
    num_spans = max(1, min(round(num_noise / mean_span_length), num_noise, MAX_SENTINELS))
    num_keep = n - num_noise
    # Interior gaps need a kept word each, or two spans would merge into one.
    num_spans = min(num_spans, num_keep + 1)
    noise = _partition(rng, num_noise, num_spans, 1)
    if num_keep == 0:  # a one-word text: that word is the span
        keep = [0, 0]
    else:
        gaps = _partition(rng, num_keep - (num_spans - 1), num_spans + 1, 0)
        keep = [g + (1 if 0 < i < num_spans else 0) for i, g in enumerate(gaps)]
    inputs, targets, pos = [], [], 0
    for i in range(num_spans):
        inputs += words[pos:pos + keep[i]]
        pos += keep[i]
        inputs.append(sentinel(i))
        targets += [sentinel(i), *words[pos:pos + noise[i]]]
        pos += noise[i]
    inputs += words[pos:]
    targets.append(sentinel(num_spans))
    return " ".join(inputs), " ".join(targets)


def unmask(inputs: str, target: str) -> str:
    """The text that ``mask_spans`` corrupted, rebuilt from its input and target."""
    spans: dict[str, list[str]] = {}
    current = None
    for word in target.split():
        if word.startswith("<extra_id_") and word.endswith(">"):
            current = word
            spans[current] = []
        elif current is not None:
            spans[current].append(word)
    out: list[str] = []
    for word in inputs.split():
        out.extend(spans.get(word, [word]) if word.startswith("<extra_id_") else [word])
    return " ".join(out)


__all__ = ["mask_spans", "sentinel", "unmask"]
