"""T5 span corruption (unihema.data.text.span_corrupt), the one the MLM task trains on."""

import numpy as np
import pytest

from unihema.data.text import TASK_PROMPTS, prompt_and_target, span_corrupt

SENTENCE = (
    "Peripheral blood smear showing a small round basophil with an irregular nucleus, dense chromatin "
    "and a low nuclear-to-cytoplasmic ratio."
)


def unmask(inputs: str, target: str) -> str:
    """The text ``span_corrupt`` corrupted, rebuilt from its input and target."""
    spans: dict[str, list[str]] = {}
    current = None
    for word in target.split():
        if word.startswith("<extra_id_"):
            current = word
            spans[current] = []
        else:
            spans[current].append(word)
    out: list[str] = []
    for word in inputs.split():
        out.extend(spans[word] if word.startswith("<extra_id_") else [word])
    return " ".join(out)


def corrupt(text: str, seed: int, **kwargs) -> tuple[str, str]:
    return span_corrupt(text, np.random.default_rng(seed), **kwargs)


def test_span_corrupt_is_deterministic_and_reversible():
    """Same seed, same pair; seeds differ; input + target rebuild the text; sentinels are numbered in order."""
    pairs = {seed: corrupt(SENTENCE, seed) for seed in range(20)}
    assert corrupt(SENTENCE, 3) == pairs[3]
    assert len(set(pairs.values())) > 5
    for inputs, target in pairs.values():
        assert unmask(inputs, target) == SENTENCE
        k = inputs.count("<extra_id_")
        assert k >= 1 and target.endswith(f"<extra_id_{k}>")
        assert [w for w in inputs.split() if w.startswith("<extra")] == [f"<extra_id_{i}>" for i in range(k)]
        assert [w for w in target.split() if w.startswith("<extra")] == [f"<extra_id_{i}>" for i in range(k + 1)]


def test_span_corrupt_density_and_edge_cases():
    """noise_density of the words are masked in spans of about mean_span_length; at least one word stays."""
    text = " ".join(f"w{i}" for i in range(100))
    inputs, target = corrupt(text, 1, noise_density=0.15, mean_span_length=3)
    masked = [w for w in target.split() if not w.startswith("<extra")]
    assert len(masked) == 15 and inputs.count("<extra_id_") == 5
    assert "<extra_id_0> <extra_id_1>" not in inputs  # with words to spare, spans are separated
    assert corrupt("cell", 0) == ("<extra_id_0>", "<extra_id_0> cell <extra_id_1>")
    two = corrupt("large cell", 0, noise_density=0.9)
    assert len([w for w in two[0].split() if not w.startswith("<extra")]) == 1  # never every word
    with pytest.raises(ValueError):
        corrupt("  ", 0)
    for bad in ({"noise_density": 1.0}, {"noise_density": 0.0}, {"mean_span_length": 0}):
        with pytest.raises(ValueError):
            corrupt(text, 0, **bad)


def test_mlm_prompt_carries_the_corrupted_sentence():
    """The MLM prompt is the task prompt then the corrupted sentence; the target is its spans."""
    prompt, target = prompt_and_target({"mlm_text": SENTENCE}, "mlm", np.random.default_rng(0))
    head = TASK_PROMPTS["mlm"] + " "
    assert prompt.startswith(head)
    assert unmask(prompt[len(head) :], target) == SENTENCE
    assert prompt_and_target({}, "detection", np.random.default_rng(0)) == (TASK_PROMPTS["detection"], "")
