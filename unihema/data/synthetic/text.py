"""Questions, answers and report sentences derived from a synthetic image's ground truth.

Answers are read off the truth, never guessed, so a model that answers well has learned
to see. Question wording and sentence order vary a little (templates picked at random)
so the text tasks do not reduce to memorising one string per answer.
"""

from __future__ import annotations

import numpy as np

from unihema.data.synthetic.scenes import FovTruth
from unihema.labels import MORPHOLOGY_ATTRIBUTES

# Per attribute: (question templates, answer: "value" for the attribute's value, else yes/no of the second value).
ATTRIBUTE_QUESTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "nuclear_chromatin": (("Is the nuclear chromatin open or coarse?", "Is the chromatin open or coarse?"), "value"),
    "nuclear_shape": (
        ("Is the nucleus regular or irregular in shape?", "Is the nuclear shape regular or irregular?"),
        "value",
    ),
    "nucleolus": (("Are nucleoli prominent?", "Is a prominent nucleolus visible?"), "yes/no"),
    "cytoplasm": (
        ("Is the cytoplasm scanty or abundant?", "How much cytoplasm does the cell have, scanty or abundant?"),
        "value",
    ),
    "cytoplasmic_basophilia": (
        ("Is the cytoplasmic basophilia slight or moderate?", "How basophilic is the cytoplasm, slight or moderate?"),
        "value",
    ),
    "cytoplasmic_vacuoles": (("Are cytoplasmic vacuoles present?", "Does the cytoplasm contain vacuoles?"), "yes/no"),
}
CLASS_QUESTIONS = ("What type of cell is this?", "Which white blood cell type is shown?", "Identify this cell.")
GRANULOCYTES = ("neutrophil", "eosinophil", "basophil")


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def attribute_answer(name: str, value: str) -> str:
    """The answer to an attribute question: the value itself, or yes/no for presence questions."""
    return value if ATTRIBUTE_QUESTIONS[name][1] == "value" else _yes(value == MORPHOLOGY_ATTRIBUTES[name][1])


def crop_qa(rng: np.random.Generator, cell_class: str, attributes: dict[str, str], count: int = 3) -> list[dict]:
    """The class question plus ``count - 1`` attribute (or granulocyte) questions, no repeats."""
    qa = [{"question": _pick(rng, CLASS_QUESTIONS), "answer": cell_class}]
    pool = [name for name in ATTRIBUTE_QUESTIONS if name in attributes] + ["granulocyte"]
    for name in rng.permutation(pool)[: max(count - 1, 0)]:
        if name == "granulocyte":
            qa.append({"question": "Is this cell a granulocyte?", "answer": _yes(cell_class in GRANULOCYTES)})
            continue
        qa.append(
            {"question": _pick(rng, ATTRIBUTE_QUESTIONS[name][0]), "answer": attribute_answer(name, attributes[name])}
        )
    return qa


def _list_words(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def fov_qa(rng: np.random.Generator, truth: FovTruth) -> list[dict]:
    """Counting and presence questions about a field of view (always 3, sometimes 4)."""
    qa = [
        {
            "question": _pick(
                rng, ("How many white blood cells are in this image?", "How many leukocytes are visible?")
            ),
            "answer": str(len(truth.wbc_classes)),
        },
        {
            "question": _pick(rng, ("Are malaria parasites present?", "Is this smear infected with malaria?")),
            "answer": _yes(bool(truth.stages)),
        },
        {"question": "Are sickle cells present?", "answer": _yes(truth.sickle > 0)},
    ]
    extra = int(rng.integers(3))
    if extra == 0 and truth.wbc_classes:
        kinds = sorted(set(truth.wbc_classes))
        qa.append({"question": "Which white blood cell types are present?", "answer": _list_words(kinds)})
    elif extra == 1 and truth.stages:
        qa.append(
            {
                "question": "Which malaria parasite stages are present?",
                "answer": _list_words([s for s in ("ring", "trophozoite", "gametocyte") if s in truth.stages]),
            }
        )
    else:
        qa.append({"question": "How many platelets are visible?", "answer": str(truth.platelets)})
    return qa


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def mlm_sentence(rng: np.random.Generator, cell_class: str, attributes: dict[str, str]) -> str:
    """A clinical-comment sentence about one cell, e.g. "a monocyte with open chromatin, ...".

    Masking happens later in the pipeline; this is plain text.
    """
    a = attributes
    shape = a["nuclear_shape"]
    nucleoli = "prominent nucleoli" if a["nucleolus"] == "prominent" else "inconspicuous nucleoli"
    vacuoles = "prominent vacuoles" if a["cytoplasmic_vacuoles"] == "prominent" else "no vacuoles"
    cytoplasm = f"{a['cytoplasm']} cytoplasm with {a['cytoplasmic_basophilia']} basophilia and {vacuoles}"
    if rng.random() < 0.5:
        nucleus = f"{a['nuclear_chromatin']} chromatin, {_article(shape)} {shape} nucleus, {nucleoli}"
        return f"{_article(cell_class)} {cell_class} with {nucleus} and {cytoplasm}."
    opening = _pick(rng, ("this", "the"))
    return (
        f"{opening} {cell_class} shows {cytoplasm}; its {shape} nucleus has "
        f"{a['nuclear_chromatin']} chromatin and {nucleoli}."
    )
