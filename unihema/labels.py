"""The label spaces: one place where class and attribute names live.

They start from the official release (29 detection classes with ids from 1, 45 single-cell
classes with ids from 0, 6 binary morphology attributes with "not annotated" = 4) and are
extended here, at the end of each list, when a dataset brings names the official model
does not know. Appending keeps every official id stable, so official checkpoints still load.
"""

from __future__ import annotations

# The tasks, in the order configs, datasets, losses and reports list them.
TASKS = ("detection", "classification", "segmentation", "morphology", "vqa", "mlm")
TEXT_TASKS = ("vqa", "mlm")  # answered by the T5 decoder

# Semantic-mask value for "no label here": written by the data path, skipped by the loss and the metrics.
IGNORE_INDEX = 255

# Official: detection classes, ids from 1 (0 is unused by DINO's focal head).
OFFICIAL_DETECTION_CLASSES = (
    "myeloblast",
    "lymphoblast",
    "neutrophil",
    "atypical lymphocyte",
    "promonocyte",
    "monoblast",
    "lymphocyte",
    "myelocyte",
    "abnormal promyelocyte",
    "monocyte",
    "metamyelocyte",
    "eosinophil",
    "basophil",
    "Unidentified",
    "gametocyte",
    "schizont",
    "trophozoite",
    "ring",
    "concentrated_leishman_parasite",
    "leishman_parasite",
    "platelet",
    "Sickle Cells",
    "RBC",
    "WBC",
    "parasite",
    "plasmodium",
    "TBbacillus",
    "leukocyte",
    "difficult",
)
# Extensions, appended so official ids stay put.
EXTRA_DETECTION_CLASSES: tuple[str, ...] = ()
DETECTION_CLASSES = OFFICIAL_DETECTION_CLASSES + EXTRA_DETECTION_CLASSES

# Official: single-cell classification classes, ids from 0.
OFFICIAL_CELL_CLASSES = (
    "abnormal eosinophil",
    "artefact",
    "basophil",
    "blast",
    "erythroblast",
    "eosinophil",
    "faggot cell",
    "hairy cell",
    "smudge cell",
    "immature lymphocyte",
    "lymphocyte",
    "metamyelocyte",
    "monocyte",
    "myelocyte",
    "band neutrophil",
    "segmented neutrophil",
    "not identifiable",
    "other cell",
    "proerythroblast",
    "plasma cell",
    "promyelocyte",
    "myeloblast",
    "monoblast",
    "atypical lymphocyte",
    "neutrophil",
    "lymphocyte variant",
    "giant thrombocyte",
    "blast no lineage",
    "promonocyte",
    "thrombocyte aggregation",
    "unidentified",
    "normoblast",
    "prolymphocyte",
    "wbc",
    "rbc",
    "platelet",
    "lymphoblast",
    "neutrophil band",
    "babesia",
    "leishmania",
    "leukocyte",
    "plasmodium",
    "toxoplasma",
    "trichomonad",
    "trypanosome",
)
# PBC brings "immature granulocyte" (its "ig" folder: promyelocytes, myelocytes, metamyelocytes).
EXTRA_CELL_CLASSES: tuple[str, ...] = ("immature granulocyte",)
CELL_CLASSES = OFFICIAL_CELL_CLASSES + EXTRA_CELL_CLASSES

# Official: six binary morphology attributes predicted on every query; value index 0/1.
MORPHOLOGY_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "nuclear_chromatin": ("open", "coarse"),
    "nuclear_shape": ("regular", "irregular"),
    "nucleolus": ("inconspicuous", "prominent"),
    "cytoplasm": ("scanty", "abundant"),
    "cytoplasmic_basophilia": ("slight", "moderate"),
    "cytoplasmic_vacuoles": ("absent", "prominent"),
}
MORPHOLOGY_NAMES = tuple(MORPHOLOGY_ATTRIBUTES)
# Official integer for "not annotated" in morphology targets; losses and metrics skip it.
MORPHOLOGY_NOT_ANNOTATED = 4
NOT_ANNOTATED = "not_annotated"

# WBCAtt attributes (Tsutsui et al.), kept with their own vocabulary for VQA and MLM text.
WBCATT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "cell_size": ("small", "big"),
    "cell_shape": ("round", "irregular"),
    "nucleus_shape": (
        "unsegmented-round",
        "unsegmented-band",
        "unsegmented-indented",
        "segmented-bilobed",
        "segmented-multilobed",
        "irregular",
    ),
    "nuclear_cytoplasmic_ratio": ("low", "high"),
    "chromatin_density": ("densely", "loosely"),
    "cytoplasm_vacuole": ("no", "yes"),
    "cytoplasm_texture": ("clear", "frosted"),
    "cytoplasm_colour": ("light blue", "blue", "purple blue"),
    "granule_type": ("nil", "small", "round", "coarse"),
    "granule_colour": ("nil", "pink", "purple", "red"),
    "granularity": ("no", "yes"),
}

# Every attribute a record may carry and the values it may take.
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {**MORPHOLOGY_ATTRIBUTES, **WBCATT_ATTRIBUTES}

# Semantic segmentation classes (official: 2).
SEGMENTATION_CLASSES = ("background", "cell")

DETECTION_INDEX = {name: i for i, name in enumerate(DETECTION_CLASSES)}
CELL_INDEX = {name: i for i, name in enumerate(CELL_CLASSES)}


def detection_id(name: str) -> int:
    """Official-style detection id (from 1) of a class name; KeyError names the class."""
    if name not in DETECTION_INDEX:
        raise KeyError(f"unknown detection class {name!r}")
    return DETECTION_INDEX[name] + 1


def morphology_targets(attributes: dict[str, str]) -> list[int]:
    """The six official binary targets (0/1, or MORPHOLOGY_NOT_ANNOTATED) of an attribute dict."""
    out = []
    for name, values in MORPHOLOGY_ATTRIBUTES.items():
        value = attributes.get(name, NOT_ANNOTATED)
        out.append(MORPHOLOGY_NOT_ANNOTATED if value == NOT_ANNOTATED else values.index(value))
    return out
