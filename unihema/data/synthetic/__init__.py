"""The synthetic hematology dataset: procedural blood smears with exact annotations.

It is the embedded default dataset of the demo and the tests, so a small model must be
able to learn every task from it in a few CPU minutes, and it must be learnable only by
morphology: stain colours vary per image and per cell, and classes differ by nucleus
shape, size, N:C ratio, granules and inclusions. Modules, bottom up:

    png        fast PNG encoding (images, sparse instance masks)
    shapes     signed-distance primitives drawn in local patches, the optical-density canvas
    stains     per-image dyes and light; OD -> RGB
    rbc, parasites, wbc_types, wbc    the cells
    scenes     field-of-view and single-cell-crop composition
    text       VQA pairs and MLM sentences from the truth
    record     one schema record from (seed, index)
    dataset    parallel, streaming shard writing; ``python -m unihema.data.synthetic``
    preview    a contact sheet for eyeballing
"""

from unihema.data.synthetic.dataset import generate_dataset
from unihema.data.synthetic.record import generate_record, record_id, split_of

__all__ = ["generate_dataset", "generate_record", "record_id", "split_of"]
