"""Model and loss hyperparameters.

Defaults are the official Uni-Hema values (../shared/reference/unihema-official/
training_args.txt); the ``tiny`` and ``demo`` presets shrink them for CPU runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

POSITIVE = {"min": 1}
NON_NEGATIVE = {"min": 0}
PROBABILITY = {"min": 0.0, "max": 1.0}


@dataclass
class BackboneConfig:
    name: str = "resnet50"
    # "" builds from the config; a timm pretrained tag ("resnet50.a1_in1k") or a local file loads weights.
    pretrained: str = ""
    # Stages frozen from the stem on: 1 = stem + layer1, as in the official run.
    frozen_stages: int = field(default=1, metadata={"min": 0, "max": 4})
    frozen_batchnorm: bool = True
    # timm feature indices of C3, C4, C5 (strides 8, 16, 32); further levels are stride-2 convs on C5.
    out_indices: tuple[int, ...] = (2, 3, 4)


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
    # "" builds from the config; a hub name ("google/flan-t5-base") or local folder loads weights.
    pretrained: str = ""
    # Folder of a saved tokenizer; "" = the pretrained model's tokenizer, else the built-in one.
    tokenizer: str = ""
    # "unihema" routes T5's attention through unihema.ops (the dispatcher); "sdpa"/"eager" keep transformers'.
    attn_implementation: str = "unihema"
    max_length: int = field(default=64, metadata=POSITIVE)


@dataclass
class HemaFormerConfig:
    qformer_queries: int = field(default=64, metadata=POSITIVE)
    qformer_layers: int = field(default=2, metadata=POSITIVE)
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
    hidden_dim: int = field(default=256, metadata=POSITIVE)
    nheads: int = field(default=8, metadata=POSITIVE)
    num_feature_levels: int = field(default=4, metadata={"min": 1, "max": 5})
    dropout: float = field(default=0.0, metadata=PROBABILITY)
    # GroupNorm groups of the input projections and mask convolutions (reduced to a divisor when needed).
    norm_groups: int = field(default=32, metadata=POSITIVE)
    # Sine position encoding temperature (official pe_temperatureH/W).
    position_temperature: float = field(default=20.0, metadata={"min": 1.0})
    attention_backend: Literal["auto", "flash", "xformers", "sdpa", "sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "math"] = "auto"
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
