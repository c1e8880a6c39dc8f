"""Model and loss hyperparameters.

Defaults are the official Uni-Hema values (../shared/reference/unihema-official/
training_args.txt); the ``tiny`` and ``demo`` presets shrink them for CPU runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

POSITIVE = {"min": 1}
NON_NEGATIVE = {"min": 0}
PROBABILITY = {"min": 0.0, "max": 1.0}

# The explicit value for "train from random weights" (see unihema.model.weights). An empty
# string means the same: exports and older run configs store it that way.
SCRATCH = "scratch"
# The ImageNet ResNet-50 the official run starts from: DINO builds torchvision's resnet50 with
# its original ImageNet weights (IMAGENET1K_V1, 76.1% top-1); timm serves exactly those as
# ``resnet50.tv_in1k``. timm's better ResNet-50s (``a1_in1k``, 80.4%) were trained with other
# recipes and have not been measured under DINO's frozen-BN, lr 1e-5 fine-tuning.
PAPER_BACKBONE_WEIGHTS = "resnet50.tv_in1k"
PAPER_TEXT_WEIGHTS = "google/flan-t5-base"


# "The weights come from a checkpoint loaded after the build" (an export folder, a converted
# official checkpoint, a benchmark's stand-in): build the structure, load nothing here.
# Freezing is allowed, as the checkpoint holds trained weights.
CHECKPOINT = "checkpoint"


def is_scratch(value: str) -> bool:
    return value in ("", SCRATCH)


def loads_nothing(value: str) -> bool:
    return is_scratch(value) or value == CHECKPOINT


def is_local(value: str) -> bool:
    """A path that exists, or one written as a path (then a missing one is an error, not a hub id)."""
    return os.path.exists(os.path.expanduser(value)) or value.startswith(("/", "./", "../", "~"))


def is_hub_id(value: str) -> bool:
    return not loads_nothing(value) and not is_local(value)


@dataclass
class BackboneConfig:
    name: str = "resnet50"
    # Initial weights: a timm hub tag (its architecture must be ``name``), a local state-dict
    # file or folder, "scratch" (random, on purpose) or "checkpoint" (loaded after the build).
    # Never silently random: see unihema.model.weights.
    pretrained: str = PAPER_BACKBONE_WEIGHTS
    # Stages frozen from the stem on: 1 = stem + layer1, as in the official run. Frozen
    # stages and FrozenBatchNorm need pretrained weights (refused with "scratch").
    frozen_stages: int = field(default=1, metadata={"min": 0, "max": 4})
    frozen_batchnorm: bool = True
    # timm feature indices of C3, C4, C5 (strides 8, 16, 32); further levels are stride-2 convs on C5.
    out_indices: tuple[int, ...] = (2, 3, 4)

    def validate(self) -> None:
        if is_scratch(self.pretrained) and (self.frozen_stages or self.frozen_batchnorm):
            # Frozen random convolutions never learn, and FrozenBatchNorm keeps identity
            # statistics, so activations grow stage by stage (random paper backbone: std 2.8
            # at C3, 19.9 at C4, 37.5 at C5).
            raise ValueError(
                f"frozen_stages={self.frozen_stages} / frozen_batchnorm={self.frozen_batchnorm} need pretrained "
                f"weights, but pretrained is {self.pretrained or SCRATCH!r}: name weights (a timm tag such as "
                f"{PAPER_BACKBONE_WEIGHTS!r} or a local file) or train every stage with "
                "model.backbone.frozen_stages=0 model.backbone.frozen_batchnorm=false"
            )
        if is_hub_id(self.pretrained) and not self.pretrained.startswith("hf-hub:"):
            arch = self.pretrained.split(".")[0]
            if arch != self.name:
                # Meta-device builds (parameter counts, the converter) read ``name``.
                raise ValueError(f"pretrained={self.pretrained!r} is a {arch} but name is {self.name!r}")


@dataclass
class EncoderConfig:
    layers: int = field(default=6, metadata=NON_NEGATIVE)
    n_points: int = field(default=4, metadata=POSITIVE)
    dim_feedforward: int = field(default=2048, metadata=POSITIVE)


@dataclass
class DecoderConfig:
    layers: int = field(default=6, metadata=POSITIVE)
    n_points: int = field(default=4, metadata=POSITIVE)
    dim_feedforward: int = field(default=2048, metadata=POSITIVE)
    num_queries: int = field(default=900, metadata=POSITIVE)
    two_stage: bool = True
    # Contrastive denoising queries (DINO); the official code configures them but never builds them.
    dn_enabled: bool = False
    dn_number: int = field(default=100, metadata=NON_NEGATIVE)
    dn_label_noise_ratio: float = field(default=0.5, metadata=PROBABILITY)
    dn_box_noise_scale: float = field(default=0.4, metadata=NON_NEGATIVE)
    # Look-forward-twice box refinement (DINO): layer i's box loss also trains layer i-1's delta.
    look_forward_twice: bool = True


@dataclass
class TextConfig:
    """T5 encoder/decoder; defaults are FLAN-T5-base dimensions."""

    d_model: int = field(default=768, metadata=POSITIVE)
    d_kv: int = field(default=64, metadata=POSITIVE)
    d_ff: int = field(default=2048, metadata=POSITIVE)
    num_heads: int = field(default=12, metadata=POSITIVE)
    encoder_layers: int = field(default=12, metadata=POSITIVE)
    decoder_layers: int = field(default=12, metadata=POSITIVE)
    vocab_size: int = field(default=32128, metadata=POSITIVE)
    feed_forward_proj: str = "gated-gelu"
    tie_word_embeddings: bool = False
    dropout_rate: float = field(default=0.1, metadata=PROBABILITY)
    # Initial weights and tokenizer: a Hugging Face hub id, a local save_pretrained folder,
    # "scratch" (random weights and the built-in tokenizer) or "checkpoint" (loaded after the build).
    # The dimensions above must be the checkpoint's (checked on load): meta-device builds read them.
    pretrained: str = PAPER_TEXT_WEIGHTS
    # Folder of a saved tokenizer; "" = the pretrained model's tokenizer, else the built-in one.
    tokenizer: str = ""
    # "unihema" routes T5's attention through unihema.ops (the dispatcher); "sdpa"/"eager" keep transformers'.
    attn_implementation: str = "unihema"
    max_length: int = field(default=64, metadata=POSITIVE)


@dataclass
class HemaFormerConfig:
    qformer_queries: int = field(default=64, metadata=POSITIVE)
    qformer_layers: int = field(default=2, metadata=POSITIVE)
    # Text-guided visual refinement (TGVR) of the object queries by the prompt:
    # "official": (1 - a) * q + a * attn(q, prompt) on every query, a = sigmoid(gate_mlp(q, attn)),
    #   as the official forward computes it (the paper preset);
    # "gated_residual": q + tanh(gate) * LayerNorm(proj(q, attn)) on the top ``refine_top_k``
    #   queries, the gate starting closed so a loaded detector is unchanged at step 0.
    refinement: Literal["official", "gated_residual"] = "official"
    # Queries the "gated_residual" refinement reads (the first K proposals, sorted by score).
    refine_top_k: int = field(default=100, metadata=POSITIVE)
    # Feed-forward width of the Q-Former layers, as a multiple of hidden_dim (official: 4).
    qformer_ffn_mult: int = field(default=4, metadata=POSITIVE)
    # Refine the top-K object queries with the prompt whenever a prompt is given.
    text_refinement: bool = True
    # Normalisation of the single-cell feature before the cell heads: "none" (the official
    # layout), "layer" (per sample) or "batch" (BatchNorm1d, running statistics at eval).
    # The official feature is a mean over GroupNorm'd projections and post-LN encoder tokens:
    # per-image normalisation leaves a vector that is nearly the same for every image (0.2% of
    # its variance differs between images at init, demo model); a per-sample LayerNorm cannot
    # remove a component every image shares, BatchNorm over the batch can (issue 16: PBC
    # classification 0.18 -> 0.50 in 120 steps). true / false mean "layer" / "none" (older configs).
    cell_feature_norm: bool | Literal["none", "layer", "batch"] = "none"
    # Add the backbone's multi-level global pool (C3-C5, where BatchNorm keeps what differs
    # between images) to the single-cell feature, through one linear layer. Off in the
    # official layout.
    cell_feature_backbone_pool: bool = False
    # Normalisation inside the mask upsampler: "batch" (BatchNorm2d, the official layout; its
    # running statistics convert) or "group" (GroupNorm, independent of the batch).
    upsampler_norm: Literal["batch", "group"] = "batch"

    def cell_norm(self) -> str:
        """``cell_feature_norm`` as one of "none", "layer", "batch"."""
        if isinstance(self.cell_feature_norm, bool):
            return "layer" if self.cell_feature_norm else "none"
        return self.cell_feature_norm


@dataclass
class ModelConfig:
    # Start training from these weights (a run folder, a checkpoint or an export; local or
    # s3://) with a fresh optimizer and schedule: tensors whose name and shape match load,
    # the rest keep their initialisation (listed in the run's init_from.json). A run that
    # resumes from its own checkpoint ignores it. "" = from the initialisation above.
    init_from: str = ""
    # A DeepSpeed init_from checkpoint loads weights only; true also unpickles what else its
    # files hold, which runs code of the file's choosing: only for a source you trust.
    trust_checkpoint: bool = False
    hidden_dim: int = field(default=256, metadata=POSITIVE)
    nheads: int = field(default=8, metadata=POSITIVE)
    num_feature_levels: int = field(default=4, metadata={"min": 1, "max": 5})
    dropout: float = field(default=0.0, metadata=PROBABILITY)
    # GroupNorm groups of the input projections and mask convolutions (reduced to a divisor when needed).
    norm_groups: int = field(default=32, metadata=POSITIVE)
    # Sine position encoding temperature (official pe_temperatureH/W).
    position_temperature: float = field(default=20.0, metadata={"min": 1.0})
    attention_backend: Literal[
        "auto", "flash", "xformers", "sdpa", "sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "math"
    ] = "auto"
    msda_backend: Literal["auto", "triton", "reference"] = "auto"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    text: TextConfig = field(default_factory=TextConfig)
    hema: HemaFormerConfig = field(default_factory=HemaFormerConfig)

    def validate(self) -> None:
        if self.hidden_dim % self.nheads:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be divisible by nheads {self.nheads}")
        if self.hema.refine_top_k > self.decoder.num_queries:
            raise ValueError("hema.refine_top_k must not exceed decoder.num_queries")
        if self.hidden_dim % 4:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be divisible by 4 (mask upsampler widths)")
        if self.num_feature_levels < len(self.backbone.out_indices):
            raise ValueError(
                f"num_feature_levels ({self.num_feature_levels}) must be >= len(backbone.out_indices) "
                f"({len(self.backbone.out_indices)}); levels beyond them are stride-2 convs on the last one"
            )


@dataclass
class LossConfig:
    """Every weight is a flat scalar so a Ray Tune sweep can address it by path."""

    # Per-task weights (the sweep's main targets).
    detection: float = field(default=1.0, metadata=NON_NEGATIVE)
    classification: float = field(default=1.0, metadata=NON_NEGATIVE)
    segmentation: float = field(default=1.0, metadata=NON_NEGATIVE)
    morphology: float = field(default=2.0, metadata=NON_NEGATIVE)
    vqa: float = field(default=1.0, metadata=NON_NEGATIVE)
    mlm: float = field(default=1.0, metadata=NON_NEGATIVE)
    # Detection terms and the Hungarian matcher's costs.
    det_cls: float = field(default=1.0, metadata=NON_NEGATIVE)
    det_bbox: float = field(default=5.0, metadata=NON_NEGATIVE)
    det_giou: float = field(default=2.0, metadata=NON_NEGATIVE)
    match_cls: float = field(default=2.0, metadata=NON_NEGATIVE)
    match_bbox: float = field(default=5.0, metadata=NON_NEGATIVE)
    match_giou: float = field(default=2.0, metadata=NON_NEGATIVE)
    focal_alpha: float = field(default=0.25, metadata=PROBABILITY)
    focal_gamma: float = field(default=2.0, metadata=NON_NEGATIVE)
    aux: bool = True
    # Morphology asymmetric loss.
    morph_gamma_neg: float = field(default=4.0, metadata=NON_NEGATIVE)
    morph_gamma_pos: float = field(default=1.0, metadata=NON_NEGATIVE)
    morph_clip: float = field(default=0.08, metadata=PROBABILITY)
    # Segmentation.
    seg_dice: float = field(default=1.0, metadata=NON_NEGATIVE)
    seg_focal: float = field(default=1.0, metadata=NON_NEGATIVE)
    # Per-query instance masks (official dice_loss_coef / mask_loss_coef), part of the segmentation task.
    mask_dice: float = field(default=1.0, metadata=NON_NEGATIVE)
    mask_focal: float = field(default=1.0, metadata=NON_NEGATIVE)
    # Segmentation batches also pay the detection loss: their instances carry classes and
    # boxes, and the detector runs on them anyway (for the instance masks), so the detection
    # heads train on every field of view at the cost of the loss alone. Off by default (each
    # batch pays for its own task); on in ``demo``, where alone it lifted detection mAP50
    # from 0.007 to 0.132 in the single-process probe (docs/TUNING.md).
    segmentation_trains_detection: bool = False
