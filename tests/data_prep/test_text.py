"""Span corruption, template QA/MLM text and the WBCAtt -> official morphology mapping."""

import pytest

from data_prep import templates, wbcatt
from data_prep.text import mask_spans, unmask

SENTENCE = ("Peripheral blood smear showing a small round basophil with an irregular nucleus, dense chromatin "
            "and a low nuclear-to-cytoplasmic ratio.")


def test_mask_spans_is_deterministic_and_reversible():
    """Same seed, same pair; input + target rebuild the text; sentinels are numbered in order."""
    pairs = {seed: mask_spans(SENTENCE, seed) for seed in range(20)}
    assert mask_spans(SENTENCE, 3) == pairs[3]
    assert len(set(pairs.values())) > 5
    for inputs, target in pairs.values():
        assert unmask(inputs, target) == SENTENCE
        k = inputs.count("<extra_id_")
        assert k >= 1 and target.endswith(f"<extra_id_{k}>")
        assert [w for w in inputs.split() if w.startswith("<extra")] == [f"<extra_id_{i}>" for i in range(k)]


def test_mask_spans_density_and_edge_cases():
    """About noise_density of the words are masked; one-word and empty texts are handled; bad args refused."""
    text = " ".join(f"w{i}" for i in range(100))
    inputs, target = mask_spans(text, "epoch-1", noise_density=0.15, mean_span_length=3)
    masked = [w for w in target.split() if not w.startswith("<extra")]
    assert len(masked) == 15 and 3 <= inputs.count("<extra_id_") <= 6
    assert mask_spans("cell", 0) == ("<extra_id_0>", "<extra_id_0> cell <extra_id_1>")
    assert mask_spans("  ", 0) == ("", "")
    with pytest.raises(ValueError):
        mask_spans(text, 0, noise_density=1.0)


def test_wbcatt_mapping_to_official():
    """Each mapped WBCAtt value gives the documented official value; nucleolus is not annotated."""
    attrs = wbcatt.clean_wbcatt({"chromatin_density": "densely", "nucleus_shape": "unsegmented-round",
                                 "nuclear_cytoplasmic_ratio": "low", "cytoplasm_vacuole": "no",
                                 "cytoplasm_colour": "Light  Blue", "granule_type": "nil"})
    assert wbcatt.to_official(attrs) == {"nuclear_chromatin": "coarse", "nuclear_shape": "regular",
                                         "cytoplasm": "abundant", "cytoplasmic_vacuoles": "absent",
                                         "cytoplasmic_basophilia": "slight", "nucleolus": "not_annotated"}
    assert wbcatt.to_official({"nucleus_shape": "segmented-multilobed", "cytoplasm_colour": "purple blue",
                               "nuclear_cytoplasmic_ratio": "high", "cytoplasm_vacuole": "yes",
                               "chromatin_density": "loosely"}) == {
        "nuclear_chromatin": "open", "nuclear_shape": "irregular", "cytoplasm": "scanty",
        "cytoplasmic_vacuoles": "prominent", "cytoplasmic_basophilia": "moderate", "nucleolus": "not_annotated"}
    with pytest.raises(Exception, match="bad_attribute_value"):
        wbcatt.clean_wbcatt({"cell_size": "gigantic"})


def test_templates_are_deterministic_per_seed_and_grounded():
    """Cell and field text depend only on (seed, id) and state only what the annotation says."""
    attrs = wbcatt.with_official(wbcatt.clean_wbcatt({"cell_size": "big", "nucleus_shape": "segmented-bilobed",
                                                      "granule_type": "coarse", "granule_colour": "red"}))
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
    assert templates.field_sentence(["WBC", "platelet", "platelet"], templates.rng_for(1, "f"),
                                    ("WBC", "platelet")).endswith("1 white blood cell and 2 platelets.")
