"""WBCAtt's eleven attributes onto the six official morphology attributes, where meanings match.

WBCAtt (Tsutsui et al., NeurIPS 2023) describes cells in its own vocabulary; the official
Uni-Hema morphology head predicts LeukemiaAttri's six binary attributes. Records keep both:
the eleven WBCAtt values (for VQA and MLM text) and the official values derived here (the
morphology targets). Only pairs whose meaning matches are mapped:

- chromatin_density: densely -> nuclear_chromatin coarse, loosely -> open (condensed,
  clumped chromatin is "coarse"; fine, dispersed chromatin is "open").
- nucleus_shape: unsegmented-round -> nuclear_shape regular; unsegmented-band,
  unsegmented-indented, segmented-bilobed, segmented-multilobed and irregular -> irregular.
  LeukemiaAttri's "regular" is a smooth round/oval outline; bands, indentations and lobes
  all break that outline, so they count as irregular even though they are normal for the
  cell type (a segmented neutrophil has an "irregular" nucleus in this vocabulary).
- nuclear_cytoplasmic_ratio: high -> cytoplasm scanty, low -> abundant.
- cytoplasm_vacuole: yes -> cytoplasmic_vacuoles prominent, no -> absent.
- cytoplasm_colour: light blue -> cytoplasmic_basophilia slight; blue, purple blue -> moderate.
- nucleolus: WBCAtt does not annotate it, so it is written as not_annotated.

cell_size, cell_shape, cytoplasm_texture and the three granule attributes have no official
counterpart and stay WBCAtt-only.
"""

from __future__ import annotations

from data_prep.problems import SourceProblem
from unihema.labels import NOT_ANNOTATED, WBCATT_ATTRIBUTES

WBCATT_NAMES = tuple(WBCATT_ATTRIBUTES)

TO_OFFICIAL: dict[str, tuple[str, dict[str, str]]] = {
    "chromatin_density": ("nuclear_chromatin", {"densely": "coarse", "loosely": "open"}),
    "nucleus_shape": (
        "nuclear_shape",
        {
            "unsegmented-round": "regular",
            "unsegmented-band": "irregular",
            "unsegmented-indented": "irregular",
            "segmented-bilobed": "irregular",
            "segmented-multilobed": "irregular",
            "irregular": "irregular",
        },
    ),
    "nuclear_cytoplasmic_ratio": ("cytoplasm", {"high": "scanty", "low": "abundant"}),
    "cytoplasm_vacuole": ("cytoplasmic_vacuoles", {"yes": "prominent", "no": "absent"}),
    "cytoplasm_colour": (
        "cytoplasmic_basophilia",
        {"light blue": "slight", "blue": "moderate", "purple blue": "moderate"},
    ),
}
NOT_IN_WBCATT = ("nucleolus",)


def clean_wbcatt(row: dict) -> dict[str, str]:
    """The WBCAtt attributes of a table row, checked against the vocabulary in unihema.labels."""
    out: dict[str, str] = {}
    bad = []
    for name in WBCATT_NAMES:
        if name not in row:
            continue
        value = " ".join(str(row[name]).split()).lower()
        if value in ("", "nan", "none", NOT_ANNOTATED):
            out[name] = NOT_ANNOTATED
        elif value in WBCATT_ATTRIBUTES[name]:
            out[name] = value
        else:
            bad.append(f"{name}={row[name]!r} (allowed: {', '.join(WBCATT_ATTRIBUTES[name])})")
    if bad:
        raise SourceProblem("bad_attribute_value", "; ".join(bad))
    return out


def to_official(wbcatt: dict[str, str]) -> dict[str, str]:
    """The official morphology attributes implied by WBCAtt values (nucleolus: not_annotated)."""
    out = {}
    for name, (official, table) in TO_OFFICIAL.items():
        value = wbcatt.get(name, NOT_ANNOTATED)
        out[official] = table.get(value, NOT_ANNOTATED)
    for official in NOT_IN_WBCATT:
        out[official] = NOT_ANNOTATED
    return out


def with_official(wbcatt: dict[str, str]) -> dict[str, str]:
    """Both vocabularies in one attribute dict, as records carry them."""
    return {**wbcatt, **to_official(wbcatt)}


__all__ = ["TO_OFFICIAL", "WBCATT_NAMES", "clean_wbcatt", "to_official", "with_official"]
