"""Single-image inference for every task, with inputs prepared the way evaluation prepares them.

Each task sees the geometry it was trained on: detection a short-side resize
(``data.detection_scales`` max, capped by ``data.detection_max_size``), classification and
segmentation a square resize, VQA / MLM the square ``data.text_image_size`` (or the
detection geometry for a field of view, ``field=True``). Every task also gets its prompt,
since the Hema-Former conditions the image queries on it. Outputs are mapped back to the
original image: boxes in its pixels, masks at its size.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image

from unihema import labels
from unihema.config import UniHemaConfig
from unihema.data.text import TASK_PROMPTS
from unihema.data.transforms import IMAGENET_MEAN, IMAGENET_STD, size_for_short_side
from unihema.ops.boxes import box_cxcywh_to_xyxy

MASK_TOKEN = re.compile(r"<mask>|\[MASK\]|<extra_id_\d+>", re.IGNORECASE)
SENTINEL = re.compile(r"<extra_id_(\d+)>")


def input_size(task: str, width: int, height: int, cfg: UniHemaConfig, field: bool = False) -> tuple[int, int]:
    """(width, height) the model sees for ``task``, as the evaluation transforms resize."""
    data = cfg.data
    if task == "detection" or (field and task in ("morphology", "vqa", "mlm")):
        return size_for_short_side(width, height, max(data.detection_scales), data.detection_max_size)
    size = {
        "segmentation": data.segmentation_size,
        "classification": data.classification_size,
        "morphology": data.classification_size,
    }.get(task, data.text_image_size)
    return size, size


def to_tensor(image: Image.Image, size: tuple[int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet-normalised (1, 3, H, W) and its all-False pixel mask."""
    resized = image.resize(size, Image.Resampling.BILINEAR) if image.size != size else image
    arr = (np.asarray(resized, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    pixels = torch.from_numpy(arr.transpose(2, 0, 1).copy()).unsqueeze(0).to(device)
    return pixels, torch.zeros(1, size[1], size[0], dtype=torch.bool, device=device)


def morphology_dict(logits: torch.Tensor) -> dict:
    """Six attribute logits -> {attribute: {value, score}} with score the chosen value's probability."""
    out = {}
    for name, p in zip(labels.MORPHOLOGY_NAMES, logits.float().sigmoid().tolist()):
        values = labels.MORPHOLOGY_ATTRIBUTES[name]
        positive = p >= 0.5
        out[name] = {"value": values[int(positive)], "score": round(p if positive else 1 - p, 4)}
    return out


def upsample_mask(logits: torch.Tensor, size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """(h', w') mask logits -> bool (H, W) at the original size (nearest from the input size)."""
    at_input = (
        torch.nn.functional.interpolate(
            logits[None, None].float(), size=(size[1], size[0]), mode="bilinear", align_corners=False
        )[0, 0]
        > 0
    )
    img = Image.fromarray(at_input.cpu().numpy().astype(np.uint8) * 255)
    return np.asarray(img.resize(out_size, Image.Resampling.NEAREST)) > 127


def to_sentinels(text: str) -> str:
    """``<mask>`` / ``[MASK]`` (or explicit ``<extra_id_N>``) -> T5 sentinels numbered in order."""
    counter = iter(range(10_000))
    return MASK_TOKEN.sub(lambda _: f"<extra_id_{next(counter)}>", text)


def fill_sentinels(masked: str, generated: str) -> tuple[str, dict[int, str]]:
    """Put the generated spans (``<extra_id_0> w1 <extra_id_1> w2 ...``) into the masked text."""
    parts = SENTINEL.split(generated)
    spans = {int(parts[i]): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2) if parts[i + 1].strip()}
    filled = SENTINEL.sub(lambda m: spans.get(int(m.group(1))) or "?", masked)
    return " ".join(filled.split()), spans


class Predictor:
    """Per-image predictions of a loaded model; every method takes an 8-bit RGB PIL image."""

    def __init__(
        self, model, cfg: UniHemaConfig, tokenizer, device="cpu", threshold: float = 0.3, max_detections: int = 100
    ):
        self.model, self.cfg, self.tokenizer = model.eval(), cfg, tokenizer
        self.device = torch.device(device)
        self.threshold, self.max_detections = threshold, max_detections

    def _prompt(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenizer.encode([text], self.cfg.model.text.max_length)
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def _forward(self, image: Image.Image, task: str, tasks: list[str]) -> tuple[dict, tuple[int, int]]:
        size = input_size(task, *image.size, self.cfg)
        pixels, pixel_mask = to_tensor(image, size, self.device)
        ids, mask = self._prompt(TASK_PROMPTS[task])
        out = self.model(
            {"images": pixels, "pixel_mask": pixel_mask, "tasks": tasks, "prompt_ids": ids, "prompt_mask": mask}
        )
        return out, size

    def _objects(self, out: dict, width: int, height: int) -> tuple[list[dict], torch.Tensor]:
        """Detections above the threshold (best class per query), highest score first, and their queries."""
        probs = out["pred_logits"][0].float().sigmoid()
        scores, classes = probs.max(-1)
        order = scores.argsort(descending=True)[: self.max_detections]
        order = order[scores[order] >= self.threshold]
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        boxes = box_cxcywh_to_xyxy(out["pred_boxes"][0].float().cpu()[order.cpu()]) * scale
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        objects = []
        for k, q in enumerate(order.tolist()):
            c = int(classes[q])
            obj = {
                "box_xyxy": [round(float(v), 2) for v in boxes[k]],
                "label": labels.DETECTION_CLASSES[c],
                "class_id": c,
                "score": round(float(scores[q]), 4),
            }
            if "pred_morphology" in out:
                obj["morphology"] = morphology_dict(out["pred_morphology"][0, q])
            objects.append(obj)
        return objects, order

    def detect(self, image: Image.Image) -> list[dict]:
        """Boxes (original pixels, xyxy), class, score and the six attributes of each detected cell."""
        out, _ = self._forward(image, "detection", ["detection"])
        return self._objects(out, *image.size)[0]

    def segment(self, image: Image.Image) -> dict:
        """Semantic foreground (bool H x W) and instance masks of the cells found in the segmentation pass."""
        out, size = self._forward(image, "segmentation", ["segmentation"])
        width, height = image.size
        semantic_logits = out["semantic_logits"][0].float()
        # Foreground where any cell class beats background.
        fg = semantic_logits[1:].max(0).values - semantic_logits[0]
        semantic = upsample_mask(fg, size, (width, height))
        instances, queries = self._objects(out, width, height)
        for inst, q in zip(instances, queries.tolist()):
            inst["mask"] = upsample_mask(out["pred_masks"][0, q], size, (width, height))
        return {"semantic": semantic, "instances": instances}

    def classify(self, image: Image.Image, top_k: int = 5) -> dict:
        """The single-cell class (with the top-k), and the cell's six attributes."""
        out, _ = self._forward(image, "classification", ["classification", "morphology"])
        probs = out["cell_logits"][0].float().softmax(-1)
        top = probs.topk(min(top_k, probs.numel()))
        ranked = [
            {"label": labels.CELL_CLASSES[int(i)], "score": round(float(p), 4)} for p, i in zip(top.values, top.indices)
        ]
        return {
            "label": ranked[0]["label"],
            "score": ranked[0]["score"],
            "top": ranked,
            "morphology": morphology_dict(out["cell_morphology"][0]),
        }

    @torch.no_grad()
    def _generate(self, image: Image.Image, task: str, prompt: str, field: bool) -> str:
        size = input_size(task, *image.size, self.cfg, field)
        pixels, pixel_mask = to_tensor(image, size, self.device)
        ids, mask = self._prompt(prompt)
        seq = self.model.generate_text(pixels, pixel_mask, ids, mask, max_new_tokens=self.cfg.model.text.max_length)
        return self.tokenizer.decode(seq)[0]

    def answer(self, image: Image.Image, question: str, field: bool = False) -> str:
        """The generated answer to ``question`` about the image."""
        return self._generate(image, "vqa", question, field)

    def fill(self, image: Image.Image, text: str, field: bool = False) -> dict:
        """``text`` with its ``<mask>`` spans filled in by the model, conditioned on the image."""
        masked = to_sentinels(text)
        if masked == text:
            raise ValueError("the text to fill has no <mask> (or [MASK]) in it")
        generated = self._generate(image, "mlm", f"{TASK_PROMPTS['mlm']} {masked}", field)
        filled, spans = fill_sentinels(masked, generated)
        return {
            "input": text,
            "generated": generated,
            "spans": [spans.get(i, "") for i in range(len(SENTINEL.findall(masked)))],
            "filled": filled,
        }
