"""Template QA pairs and clinical-comment sentences from classes, attributes and box counts.

The Uni-Hema VQA and MLM tasks need text about each image; most public datasets carry only
labels. These templates turn what a record already states (its cell class, its WBCAtt or
official morphology attributes, the classes and counts of its boxes) into questions with
answers and one plain sentence, so the text never claims more than the annotation does.
Counts and "no" answers are only produced for classes a registry entry declares completely
annotated (BCCD's RBCs are not). Phrasings vary, chosen by ``random.Random(f"{seed}|{id}")``:
the same seed and record give the same text in every process. docs/DATA_PREP.md lists them.
"""

from __future__ import annotations

import random

from data_prep.wbcatt import WBCATT_NAMES
from unihema.labels import MORPHOLOGY_NAMES, NOT_ANNOTATED

_DISPLAY = {
    "RBC": "red blood cell",
    "rbc": "red blood cell",
    "WBC": "white blood cell",
    "wbc": "white blood cell",
    "Sickle Cells": "sickle cell",
    "TBbacillus": "tuberculosis bacillus",
    "Unidentified": "unidentified cell",
    "leishman_parasite": "Leishmania parasite",
    "concentrated_leishman_parasite": "cluster of Leishmania parasites",
    "difficult": "hard-to-classify object",
    "ring": "ring-stage parasite",
    "plasmodium": "Plasmodium parasite",
    "babesia": "Babesia parasite",
    "toxoplasma": "Toxoplasma parasite",
    "trichomonad": "trichomonad",
    "trypanosome": "trypanosome",
    "leishmania": "Leishmania parasite",
    "other cell": "other cell",
    "not identifiable": "unidentifiable cell",
    "thrombocyte aggregation": "thrombocyte aggregate",
}
_PLURAL = {
    "tuberculosis bacillus": "tuberculosis bacilli",
    "cluster of Leishmania parasites": "clusters of Leishmania parasites",
}


def display(name: str) -> str:
    """A label-space name as it reads in a sentence."""
    return _DISPLAY.get(name, name.replace("_", " "))


def plural(name: str) -> str:
    word = display(name)
    return _PLURAL.get(word, word + "s")


def article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


# question phrasings, answer wording, per attribute
_WBCATT_QA = {
    "cell_size": (("What is the size of the cell?", "Is the cell small or big?"), {}),
    "cell_shape": (("What is the shape of the cell?", "Is the cell round or irregular in shape?"), {}),
    "nucleus_shape": (
        ("What is the shape of the nucleus?", "Describe the shape of the nucleus."),
        {
            v: v.replace("-", " ")
            for v in (
                "unsegmented-round",
                "unsegmented-band",
                "unsegmented-indented",
                "segmented-bilobed",
                "segmented-multilobed",
            )
        },
    ),
    "nuclear_cytoplasmic_ratio": (
        ("What is the nuclear-to-cytoplasmic ratio of the cell?", "Is the nuclear-to-cytoplasmic ratio low or high?"),
        {},
    ),
    "chromatin_density": (
        ("How dense is the nuclear chromatin?", "Is the chromatin dense or loose?"),
        {"densely": "dense", "loosely": "loose"},
    ),
    "cytoplasm_vacuole": (("Does the cytoplasm contain vacuoles?", "Are there vacuoles in the cytoplasm?"), {}),
    "cytoplasm_texture": (("What is the texture of the cytoplasm?", "Is the cytoplasm clear or frosted?"), {}),
    "cytoplasm_colour": (("What colour is the cytoplasm?", "What is the colour of the cytoplasm?"), {}),
    "granule_type": (
        ("What type of granules does the cytoplasm contain?", "What kind of granules are present?"),
        {"nil": "none"},
    ),
    "granule_colour": (("What colour are the granules?", "What is the colour of the granules?"), {"nil": "none"}),
    "granularity": (("Is the cytoplasm granular?", "Does the cell show granularity?"), {}),
}
_OFFICIAL_QA = {
    "nuclear_chromatin": ("Is the nuclear chromatin open or coarse?", "What is the pattern of the nuclear chromatin?"),
    "nuclear_shape": ("Is the nuclear shape regular or irregular?", "Is the nucleus regular or irregular?"),
    "nucleolus": ("Is the nucleolus inconspicuous or prominent?", "How visible is the nucleolus?"),
    "cytoplasm": ("Is the cytoplasm scanty or abundant?", "How much cytoplasm does the cell have?"),
    "cytoplasmic_basophilia": ("Is the cytoplasmic basophilia slight or moderate?", "How basophilic is the cytoplasm?"),
    "cytoplasmic_vacuoles": ("Are cytoplasmic vacuoles absent or prominent?", "Are vacuoles seen in the cytoplasm?"),
}
_CLASS_QUESTIONS = (
    "What type of cell is this?",
    "Which cell type is shown in this image?",
    "What is the class of this cell?",
)


def rng_for(seed: int | str, record_id: str) -> random.Random:
    return random.Random(f"{seed}|{record_id}")


def _annotated(attrs: dict, names) -> dict:
    return {n: attrs[n] for n in names if attrs.get(n, NOT_ANNOTATED) != NOT_ANNOTATED}


def cell_qa(cell_class: str | None, attributes: dict, rng: random.Random, classes: tuple[str, ...] = ()) -> list[dict]:
    """QA pairs for a single-cell image: its class (open and yes/no) and each annotated attribute.

    Official-attribute questions are asked only when the record has no WBCAtt attributes,
    since those official values were derived from the WBCAtt ones.
    """
    qa = []
    if cell_class:
        qa.append({"question": rng.choice(_CLASS_QUESTIONS), "answer": display(cell_class)})
        others = sorted(c for c in classes if c != cell_class)
        if others:
            asked = cell_class if rng.random() < 0.5 else rng.choice(others)
            qa.append(
                {"question": f"Is this {article(display(asked))}?", "answer": "yes" if asked == cell_class else "no"}
            )
    wbcatt = _annotated(attributes, WBCATT_NAMES)
    for name, value in wbcatt.items():
        questions, wording = _WBCATT_QA[name]
        qa.append({"question": rng.choice(questions), "answer": wording.get(value, value)})
    if not wbcatt:
        for name, value in _annotated(attributes, MORPHOLOGY_NAMES).items():
            qa.append({"question": rng.choice(_OFFICIAL_QA[name]), "answer": value})
    return qa


def field_qa(box_labels: list[str], rng: random.Random, complete: tuple[str, ...] = ()) -> list[dict]:
    """QA pairs for a field of view: presence of what is annotated; counts and absence for complete classes."""
    present = sorted(set(box_labels))
    qa = []
    for name in present:
        qa.append(
            {
                "question": rng.choice(
                    (f"Are there any {plural(name)} in this image?", f"Does this field contain {plural(name)}?")
                ),
                "answer": "yes",
            }
        )
    for name in complete:
        n = box_labels.count(name)
        qa.append(
            {
                "question": rng.choice(
                    (f"How many {plural(name)} are in this image?", f"How many {plural(name)} can be seen?")
                ),
                "answer": str(n),
            }
        )
        if n == 0:
            qa.append({"question": f"Are there any {plural(name)} in this image?", "answer": "no"})
    return qa


def _wbcatt_sentence(cls: str, a: dict) -> str:
    size = {"big": "large"}.get(a.get("cell_size", ""), a.get("cell_size", ""))
    shape = {"irregular": "irregularly shaped"}.get(a.get("cell_shape", ""), a.get("cell_shape", ""))
    head = " ".join(w for w in (size, shape, cls) if w and w != NOT_ANNOTATED)
    nucleus = []
    if "nucleus_shape" in a:
        nucleus.append(f"{article(a['nucleus_shape'].replace('-', ' '))} nucleus")
    if "chromatin_density" in a:
        nucleus.append({"densely": "dense", "loosely": "loose"}[a["chromatin_density"]] + " chromatin")
    if "nuclear_cytoplasmic_ratio" in a:
        nucleus.append(f"a {a['nuclear_cytoplasmic_ratio']} nuclear-to-cytoplasmic ratio")
    text = article(head) + (" with " + _join(nucleus) if nucleus else "") + "."
    cyto = [a[k] for k in ("cytoplasm_texture", "cytoplasm_colour") if k in a]
    rest = []
    if "cytoplasm_vacuole" in a:
        rest.append("with vacuoles" if a["cytoplasm_vacuole"] == "yes" else "without vacuoles")
    if a.get("granule_type") == "nil" or a.get("granularity") == "no":
        rest.append("with no granules")
    elif a.get("granule_type") or a.get("granule_colour"):
        kind = " ".join(v for v in (a.get("granule_colour"), a.get("granule_type")) if v and v != "nil")
        rest.append(f"containing {kind} granules")
    if cyto or rest:
        text += (
            " The cytoplasm is "
            + (" and ".join(cyto) if cyto else "seen")
            + (", " + " and ".join(rest) if rest else "")
            + "."
        )
    return text


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _official_sentence(cls: str, a: dict) -> str:
    words = {
        "nuclear_chromatin": lambda v: f"{v} nuclear chromatin",
        "nuclear_shape": lambda v: f"{article(v)} nucleus",
        "nucleolus": lambda v: f"{article(v)} nucleolus",
        "cytoplasm": lambda v: f"{v} cytoplasm",
        "cytoplasmic_basophilia": lambda v: f"{v} cytoplasmic basophilia",
        "cytoplasmic_vacuoles": lambda v: "no vacuoles" if v == "absent" else "prominent vacuoles",
    }
    parts = [words[n](v) for n, v in a.items()]
    return f"{article(cls)} with {_join(parts)}."


_CELL_OPENINGS = ("Peripheral blood smear showing {c}.", "The image shows {c}.", "{C} is seen in this blood smear.")


def cell_sentence(cell_class: str, attributes: dict, rng: random.Random) -> str:
    """One clinical-comment sentence about a single cell."""
    cls = display(cell_class)
    wbcatt = _annotated(attributes, WBCATT_NAMES)
    if wbcatt:
        return "Peripheral blood smear showing " + _wbcatt_sentence(cls, wbcatt)
    official = _annotated(attributes, MORPHOLOGY_NAMES)
    if official:
        return "Peripheral blood smear showing " + _official_sentence(cls, official)
    phrase = article(cls)
    return rng.choice(_CELL_OPENINGS).format(c=phrase, C=phrase[0].upper() + phrase[1:])


def field_sentence(box_labels: list[str], rng: random.Random, complete: tuple[str, ...] = ()) -> str:
    """One sentence about a field of view: counts for complete classes, the others named only."""
    parts = []
    for name in sorted(set(box_labels) | set(complete), key=lambda n: (n not in complete, n)):
        n = box_labels.count(name)
        if name in complete:
            if n:
                parts.append(f"{n} {display(name) if n == 1 else plural(name)}")
        else:
            parts.append(plural(name))
    if not parts:
        return "The field shows no annotated cells."
    opening = rng.choice(("The field shows", "This peripheral blood smear field contains", "The smear shows"))
    return f"{opening} {_join(parts)}."


__all__ = ["article", "cell_qa", "cell_sentence", "display", "field_qa", "field_sentence", "plural", "rng_for"]
