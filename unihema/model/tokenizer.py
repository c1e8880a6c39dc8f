"""Tokenizer for prompts, questions, answers and MLM spans, usable with no network.

Nothing may be downloaded at run time, yet the T5 side needs a vocabulary. The built-in
tokenizer is a byte-pair encoding trained, deterministically and in well under a second,
on a fixed corpus of hematology vocabulary (every label and attribute name), the task
prompts and question/answer templates, with SentencePiece-style word boundaries (``▁``)
and every printable ASCII character in its alphabet so no ordinary text is ``<unk>``.
It follows T5's conventions: ``<pad>`` = 0, ``</s>`` = 1 appended to every sequence,
``<unk>`` = 2 and 100 ``<extra_id_N>`` sentinels for span corruption.

With ``cfg.model.text.pretrained`` set, the real T5 tokenizer of that model is loaded
instead (``transformers.AutoTokenizer``), behind the same interface. Either kind saves to
and loads from a folder (``tokenizer.json`` + ``unihema_tokenizer.json``).
"""

from __future__ import annotations

import functools
import json
import string
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from unihema import labels
from unihema.config.model import loads_nothing

if TYPE_CHECKING:
    import torch

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
NUM_SENTINELS = 100
# Beyond this the fixed corpus has no more merges worth learning; a larger T5 vocabulary
# (paper: 32128) simply leaves embedding rows unused.
BUILTIN_MAX_VOCAB = 4096
META_FILE = "unihema_tokenizer.json"


def sentinel(i: int) -> str:
    return f"<extra_id_{i}>"


# ----------------------------------------------------------------------------- corpus

_PROMPTS = (
    "detect and classify every cell in this blood smear.",
    "segment the cells in this blood smear.",
    "classify this blood cell.",
    "describe the morphology of this blood cell.",
    "fill in the masked words about this blood cell:",
    "answer the question about this blood smear.",
)
_DISEASES = (
    "leukemia",
    "acute myeloid leukemia",
    "acute lymphoblastic leukemia",
    "acute promyelocytic leukemia",
    "chronic myeloid leukemia",
    "chronic lymphocytic leukemia",
    "malaria",
    "anemia",
    "iron deficiency anemia",
    "sickle cell disease",
    "sickle cell anemia",
    "thalassemia",
    "leishmaniasis",
    "babesiosis",
    "trypanosomiasis",
    "tuberculosis",
    "normal",
    "healthy",
    "infection",
    "parasite",
)
_WORDS = (
    "cell",
    "cells",
    "blood",
    "smear",
    "image",
    "nucleus",
    "nuclear",
    "cytoplasm",
    "cytoplasmic",
    "chromatin",
    "nucleolus",
    "nucleoli",
    "granule",
    "granules",
    "vacuole",
    "vacuoles",
    "membrane",
    "shape",
    "size",
    "colour",
    "color",
    "texture",
    "ratio",
    "stain",
    "staining",
    "magnification",
    "microscope",
    "peripheral",
    "bone marrow",
    "white",
    "red",
    "platelets",
    "erythrocyte",
    "leukocytes",
    "lymphocytes",
    "neutrophils",
    "monocytes",
    "eosinophils",
    "basophils",
    "blasts",
    "parasites",
    "present",
    "absent",
    "visible",
    "count",
    "number",
    "diagnosis",
    "disease",
    "patient",
    "sample",
    "slide",
    "field",
    "stage",
    "species",
    "falciparum",
    "vivax",
    "malariae",
    "ovale",
    "infected",
    "uninfected",
    "mature",
    "immature",
    "abnormal",
    "normal",
    "large",
    "small",
)
_TEMPLATES = (
    "what is the type of this cell?",
    "what type of cell is this?",
    "which cell type is shown?",
    "what is the {a} of this cell?",
    "is the {a} {v}?",
    "does this cell have {v} {a}?",
    "is there a {c} in this image?",
    "how many {c} cells are there?",
    "how many cells are in this image?",
    "is this cell a {c}?",
    "which disease is suggested by this smear?",
    "is this smear {d}?",
    "this is a {c}.",
    "the cell is a {c} with {v} {a}.",
    "the {a} is {v}.",
    "the {c} has a {v} {a}.",
    "this blood smear shows {d}.",
    "there are {n} cells in this image.",
    "the answer is {n}.",
)


def builtin_corpus() -> list[str]:
    """The fixed training text, in a fixed order (the tokenizer depends on nothing else)."""
    classes = sorted(set(labels.DETECTION_CLASSES) | set(labels.CELL_CLASSES) | set(labels.SEGMENTATION_CLASSES))
    attrs = {k.replace("_", " "): v for k, v in labels.ATTRIBUTE_VALUES.items()}
    lines = list(_PROMPTS) + list(_DISEASES) + list(_WORDS) + classes
    lines += [c.lower() for c in classes] + [c.replace("_", " ") for c in classes]
    lines += ["yes", "no", "Yes", "No", "yes.", "no."] + [str(n) for n in range(101)]
    for name, values in sorted(attrs.items()):
        lines.append(name)
        lines += list(values)
    for t in _TEMPLATES:
        for i, c in enumerate(classes):
            a, vals = sorted(attrs.items())[i % len(attrs)]
            lines.append(t.format(a=a, v=vals[i % len(vals)], c=c, d=_DISEASES[i % len(_DISEASES)], n=i))
    return lines


def _train_builtin(vocab_size: int) -> Tokenizer:
    specials = [PAD, EOS, UNK] + [sentinel(i) for i in range(NUM_SENTINELS)]
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    alphabet = [c for c in string.printable if not c.isspace()] + ["▁"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(builtin_corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 1)])
    return tok


@functools.lru_cache(maxsize=4)
def _builtin_json(vocab_size: int) -> str:
    return _train_builtin(vocab_size).to_str()


# ----------------------------------------------------------------------------- interface


class HemaTokenizer:
    """Batch encode/decode with T5 conventions over a ``tokenizers.Tokenizer``.

    ``encode`` returns ``(ids long (B, T), mask bool (B, T))`` with mask True on real tokens
    (transformers' attention-mask convention), padded to the longest sequence and truncated
    to ``max_length`` with ``</s>`` kept last.
    """

    def __init__(self, tokenizer: Tokenizer, source: str = "builtin") -> None:
        self.tokenizer = tokenizer
        self.source = source
        self.pad_id = self._id(PAD)
        self.eos_id = self._id(EOS)
        self.unk_id = self._id(UNK)
        self.sentinel_ids = [self._id(sentinel(i)) for i in range(NUM_SENTINELS)]

    def _id(self, token: str) -> int:
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise ValueError(f"tokenizer has no {token!r} token")
        return i

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def encode_arrays(self, texts: str | list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (B, T) int64 and mask (B, T) bool as numpy arrays.

        The Ray Data decode tasks tokenize through this: it needs no torch, whose import
        would cost each data worker process ~0.5 GB and seconds of CPU.
        """
        if isinstance(texts, str):
            texts = [texts]
        encs = self.tokenizer.encode_batch(list(texts))
        rows = []
        for enc in encs:
            ids = list(enc.ids)
            if len(ids) > max_length:
                # Truncate the text, not the end marker.
                ids = ids[: max_length - 1] + [self.eos_id] if max_length > 1 else ids[:max_length]
            rows.append(ids)
        width = max((len(r) for r in rows), default=0)
        out = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=bool)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
            mask[i, : len(r)] = True
        return out, mask

    def encode(self, texts: str | list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, T) long and mask (B, T) bool tensors, padded to the longest text."""
        import torch

        ids, mask = self.encode_arrays(texts, max_length)
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def decode(self, ids) -> list[str]:
        """Token ids (B, T) or one sequence -> strings, stopping at ``</s>``; sentinels are kept."""
        if hasattr(ids, "tolist"):  # a tensor or an array
            ids = ids.tolist()
        if ids and isinstance(ids[0], int):
            ids = [ids]
        texts = []
        for row in ids:
            keep = []
            for i in row:
                if i == self.eos_id:
                    break
                if i >= 0 and i != self.pad_id:
                    # A T5 embedding larger than the vocabulary can emit ids the tokenizer lacks.
                    keep.append(int(i) if i < self.vocab_size else self.unk_id)
            texts.append(self.tokenizer.decode(keep, skip_special_tokens=False).strip())
        return texts

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(folder / "tokenizer.json"))
        (folder / META_FILE).write_text(json.dumps({"source": self.source, "vocab_size": self.vocab_size}, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> HemaTokenizer:
        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(f"no tokenizer.json in {folder}")
        source = str(folder)  # a Hugging Face tokenizer folder (ours write META_FILE)
        if (folder / META_FILE).is_file():
            source = json.loads((folder / META_FILE).read_text()).get("source", source)
        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")), source=source)

    @classmethod
    def builtin(cls, vocab_size: int) -> HemaTokenizer:
        return cls(Tokenizer.from_str(_builtin_json(min(vocab_size, BUILTIN_MAX_VOCAB))), source="builtin")

    @classmethod
    def from_pretrained(cls, name: str) -> HemaTokenizer:
        """The T5 tokenizer of a hub model or local folder (its fast backend, which appends ``</s>``)."""
        from transformers import AutoTokenizer

        from unihema.config.model import is_hub_id

        from .weights import TEXT_SETTING, PretrainedWeightsError, unavailable

        try:
            hf = AutoTokenizer.from_pretrained(name)
        except OSError as err:  # unreachable, offline or missing files
            if is_hub_id(name):
                raise unavailable(TEXT_SETTING, name, f"tokenizer: {type(err).__name__}: {err}") from None
            raise PretrainedWeightsError(f"{TEXT_SETTING}={name!r}: no tokenizer there: {err}") from None
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(f"{name}: need a fast tokenizer (tokenizer.json) to wrap")
        return cls(backend, source=name)


def build_tokenizer(cfg) -> HemaTokenizer:
    """The tokenizer for a config (UniHemaConfig, ModelConfig or TextConfig).

    Order: ``text.tokenizer`` (a saved folder or a T5 model's name), then ``text.pretrained``'s tokenizer, then
    the built-in one sized to fit ``text.vocab_size``.
    """
    text = getattr(getattr(cfg, "model", cfg), "text", getattr(cfg, "model", cfg))
    if text.tokenizer:
        # A saved folder, or (for checkpoints of runs that started from one) a T5 model's name.
        saved = (Path(text.tokenizer) / "tokenizer.json").is_file()
        tok = HemaTokenizer.load(text.tokenizer) if saved else HemaTokenizer.from_pretrained(text.tokenizer)
    elif not loads_nothing(text.pretrained):
        tok = HemaTokenizer.from_pretrained(text.pretrained)
    else:
        if text.vocab_size < len([PAD, EOS, UNK]) + NUM_SENTINELS + len(string.printable):
            raise ValueError(f"text.vocab_size {text.vocab_size} is too small for the built-in tokenizer")
        tok = HemaTokenizer.builtin(text.vocab_size)
    if tok.vocab_size > text.vocab_size:
        raise ValueError(
            f"tokenizer has {tok.vocab_size} tokens but the T5 embedding has text.vocab_size={text.vocab_size}"
        )
    return tok
