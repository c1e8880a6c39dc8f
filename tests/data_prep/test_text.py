"""Template QA/MLM text and the WBCAtt -> official morphology mapping."""

import pytest

from data_prep import templates, wbcatt


def test_wbcatt_mapping_to_official():
    """Each mapped WBCAtt value gives the documented official value; nucleolus is not annotated."""
    attrs = wbcatt.clean_wbcatt(
        {
            "chromatin_density": "densely",
            "nucleus_shape": "unsegmented-round",
            "nuclear_cytoplasmic_ratio": "low",
            "cytoplasm_vacuole": "no",
            "cytoplasm_colour": "Light  Blue",
            "granule_type": "nil",
        }
    )
    assert wbcatt.to_official(attrs) == {
        "nuclear_chromatin": "coarse",
        "nuclear_shape": "regular",
        "cytoplasm": "abundant",
        "cytoplasmic_vacuoles": "absent",
        "cytoplasmic_basophilia": "slight",
        "nucleolus": "not_annotated",
    }
    assert wbcatt.to_official(
        {
            "nucleus_shape": "segmented-multilobed",
            "cytoplasm_colour": "purple blue",
            "nuclear_cytoplasmic_ratio": "high",
            "cytoplasm_vacuole": "yes",
            "chromatin_density": "loosely",
        }
    ) == {
        "nuclear_chromatin": "open",
        "nuclear_shape": "irregular",
        "cytoplasm": "scanty",
        "cytoplasmic_vacuoles": "prominent",
        "cytoplasmic_basophilia": "moderate",
        "nucleolus": "not_annotated",
    }
    with pytest.raises(Exception, match="bad_attribute_value"):
        wbcatt.clean_wbcatt({"cell_size": "gigantic"})


def test_templates_are_deterministic_per_seed_and_grounded():
    """Cell and field text depend only on (seed, id) and state only what the annotation says."""
    attrs = wbcatt.with_official(
        wbcatt.clean_wbcatt(
            {
                "cell_size": "big",
                "nucleus_shape": "segmented-bilobed",
                "granule_type": "coarse",
                "granule_colour": "red",
            }
        )
    )
    qa1 = templates.cell_qa("eosinophil", attrs, templates.rng_for(0, "x"), ("eosinophil", "basophil"))
    assert qa1 == templates.cell_qa("eosinophil", attrs, templates.rng_for(0, "x"), ("eosinophil", "basophil"))
    answers = {p["answer"] for p in qa1}
    assert {"eosinophil", "big", "segmented bilobed", "coarse", "red"} <= answers
    assert not any("nucleolus" in p["question"] for p in qa1)  # derived official values are not re-asked
    sentence = templates.cell_sentence("eosinophil", attrs, templates.rng_for(0, "x"))
    assert "large eosinophil" in sentence and "red coarse granules" in sentence
    field = templates.field_qa(["RBC", "RBC", "WBC"], templates.rng_for(1, "f"), complete=("WBC", "platelet"))
    assert {(p["question"].split()[0], p["answer"]) for p in field} >= {("How", "1"), ("How", "0"), ("Are", "no")}
    assert not any("red blood cells" in p["question"] and p["question"].startswith("How") for p in field)
    assert templates.field_sentence(
        ["WBC", "platelet", "platelet"], templates.rng_for(1, "f"), ("WBC", "platelet")
    ).endswith("1 white blood cell and 2 platelets.")
