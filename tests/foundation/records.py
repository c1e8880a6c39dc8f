"""Small valid records for tests, built in code (no dataset needed)."""

import io

from PIL import Image


def png(width: int, height: int, mode: str = "RGB", value: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), value).save(buf, "PNG")
    return buf.getvalue()


def make_record(index: int = 0, split: str = "train", **changes) -> dict:
    """A record serving every task, valid unless ``changes`` break it."""
    rec = {
        "id": f"rec-{index}",
        "source": "unit",
        "split": split,
        "tasks": ["detection", "segmentation", "morphology", "classification", "vqa", "mlm"],
        "image": png(40, 30),
        "image_format": "png",
        "width": 40,
        "height": 30,
        "boxes": [[2.0, 3.0, 20.0, 25.0]],
        "box_labels": ["neutrophil"],
        "box_attributes": [{"nuclear_shape": "irregular", "cytoplasm": "not_annotated"}],
        "masks": [png(40, 30, "L", 255)],
        "semantic_mask": png(40, 30, "L", 1),
        "cell_class": "neutrophil",
        "attributes": {"nuclear_chromatin": "coarse", "cell_size": "big"},
        "qa": [{"question": "What type of cell is this?", "answer": "neutrophil"}],
        "mlm_text": "a neutrophil with coarse chromatin.",
        "license": "CC0-1.0",
        "origin": "unit test",
    }
    rec.update(changes)
    return rec
