"""UniHema: one model, six tasks, wired from the parts in this package.

    images ─ backbone (C3-C5) ─ input_proj (+ stride-2 level) ─ deformable encoder ─ memory
      memory ─ cell feature (class token + pooling) ─ cell classifier / image morphology
      memory ─ two-stage proposals ─ [text-guided refinement] ─ decoder (+ DN) ─ boxes,
               classes, per-query morphology ─ mask former (instance + semantic masks)
    prompt ─ T5 encoder ─┬─ refinement (above)
                         └─ Q-Former(image, prompt) ⧺ prompt states ─ T5 decoder ─ text logits

Batch contract (shared with the data and losses code; see README.md in this folder):

Input ``batch`` dict: ``images`` (B,3,H,W) float, ImageNet-normalised; ``pixel_mask`` (B,H,W)
bool, True = padding; ``tasks`` list[str] (subset of detection, classification,
segmentation, morphology, vqa, mlm; only the needed parts run); ``targets`` list of B dicts
{labels (n,) 0-based DETECTION_CLASSES, boxes (n,4) normalised cxcywh, masks (n,H,W) bool
optional, morphology (n,6)} (read here only for DN queries); ``prompt_ids`` / ``prompt_mask``
(B,T) long / bool (True = real token); ``text_labels`` (B,T') long, -100 on padding.
``cell_labels``, ``morphology``, ``semantic_masks`` are for the losses only.

Output dict: ``pred_logits`` (B,Q,C_det), ``pred_boxes`` (B,Q,4) cxcywh in [0,1],
``pred_morphology`` (B,Q,6), ``aux_outputs`` (one dict per earlier decoder layer),
``interm_outputs`` {pred_logits, pred_boxes} of the encoder proposals; in training with DN:
``dn_outputs`` {pred_logits, pred_boxes, pred_morphology, aux_outputs} and ``dn_meta``
{positive_idx, target_idx: lists of B LongTensors, num_groups, pad_size, single_pad};
segmentation: ``pred_masks`` (B,Q,H/8,W/8), ``semantic_logits`` (B,C_seg,H/2,W/2),
``mask_class_logits`` (B,Q,C_seg+1); classification/morphology: ``cell_logits`` (B,C_cell),
``cell_morphology`` (B,6), ``cell_feature`` (B,hidden_dim); text: ``text_logits`` (B,T',vocab)
(decoder inputs = T5 shift-right of text_labels).
"""

from __future__ import annotations

import torch
from torch import nn

from unihema import labels
from unihema.config import ModelConfig
from unihema.labels import TASKS
from unihema.ops import ATTENTION_BACKENDS, MSDA_BACKENDS, MSDeformAttn, MultiheadAttention

from .backbone import build_backbone, build_input_proj, project_levels
from .decoder import ImageDecoder
from .denoising import DenoisingQueries
from .encoder import ImageEncoder
from .heads import CellHeads
from .hemaformer import QFormer, build_text_refinement
from .layers import masked_mean
from .maskformer import MaskFormer
from .modeling import PretrainedMixin
from .position import PositionEmbeddingSine
from .proposals import TwoStageProposals
from .text import TextModel

DETECTOR_TASKS = {"detection", "segmentation"}
CELL_TASKS = {"classification", "morphology"}
TEXT_TASKS = set(labels.TEXT_TASKS)


class HemaFormer(nn.Module):
    """Container for the cross-modal parts (the single-cell extractor sits in the encoder)."""

    def __init__(self, cfg: ModelConfig, text_dim: int) -> None:
        super().__init__()
        d, h = cfg.hidden_dim, cfg.nheads
        self.qformer = QFormer(
            d, text_dim, h, cfg.hema.qformer_queries, cfg.hema.qformer_layers, cfg.hema.qformer_ffn_mult, cfg.dropout
        )
        self.refine = build_text_refinement(cfg.hema.refinement, d, text_dim, h, cfg.dropout)
        self.mask_former = MaskFormer(d, len(labels.SEGMENTATION_CLASSES), cfg.norm_groups, cfg.hema.upsampler_norm)


class UniHema(PretrainedMixin, nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.hidden_dim
        self.num_classes = len(labels.DETECTION_CLASSES)
        self.num_cell_classes = len(labels.CELL_CLASSES)
        self.num_attributes = len(labels.MORPHOLOGY_ATTRIBUTES)
        self.num_queries = cfg.decoder.num_queries
        levels = cfg.num_feature_levels

        self.backbone = build_backbone(cfg)
        self.input_proj = build_input_proj(self.backbone.channels, levels, d, cfg.norm_groups)
        self.position = PositionEmbeddingSine(d // 2, cfg.position_temperature)
        self.level_embed = nn.Parameter(torch.empty(levels, d))
        nn.init.normal_(self.level_embed)
        self.encoder = ImageEncoder(
            d,
            cfg.nheads,
            cfg.encoder.layers,
            cfg.encoder.dim_feedforward,
            levels,
            cfg.encoder.n_points,
            cfg.dropout,
            cfg.hema.cell_norm(),
            self.backbone.channels if cfg.hema.cell_feature_backbone_pool else None,
        )
        self.proposals = TwoStageProposals(d, self.num_classes, self.num_queries)
        self.decoder = ImageDecoder(
            d,
            cfg.nheads,
            cfg.decoder.layers,
            cfg.decoder.dim_feedforward,
            levels,
            cfg.decoder.n_points,
            self.num_classes,
            self.num_attributes,
            cfg.dropout,
            cfg.decoder.look_forward_twice,
        )
        self.denoising = None
        if cfg.decoder.dn_enabled:
            self.denoising = DenoisingQueries(
                self.num_classes,
                d,
                cfg.decoder.dn_number,
                cfg.decoder.dn_label_noise_ratio,
                cfg.decoder.dn_box_noise_scale,
            )
        self.text = TextModel(cfg.text)
        self.hema = HemaFormer(cfg, self.text.d_model)
        self.heads = CellHeads(d, self.num_cell_classes, self.num_attributes, cfg.dropout)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, cfg) -> UniHema:
        """Build from a UniHemaConfig or ModelConfig, its attention modules on the config's backends."""
        model = cls(getattr(cfg, "model", cfg))
        model.set_attention_backend()
        return model

    def set_attention_backend(self, attention: str | None = None, msda: str | None = None) -> None:
        """Put this model's dense and deformable attention on a backend (default: from the config).

        The choice is an attribute of each attention module, not process state: two models
        in one process can run different kernels. ``"auto"`` leaves the modules deferring to
        the capability-based choice, which ``UNIHEMA_ATTENTION_BACKEND`` / ``UNIHEMA_MSDA_BACKEND``
        can still steer; a named backend wins over those variables.
        """
        dense = _pinned(attention or self.cfg.attention_backend, ATTENTION_BACKENDS, "attention")
        deform = _pinned(msda or self.cfg.msda_backend, MSDA_BACKENDS, "ms_deform_attn")
        for module in self.modules():
            if isinstance(module, MultiheadAttention):
                module.backend = dense
            elif isinstance(module, MSDeformAttn):
                module.backend = deform
        self.text.set_attention_backend(dense)

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute encoder/decoder layers and T5 blocks in backward (memory for compute)."""
        self.encoder.checkpointing = enabled
        self.decoder.checkpointing = enabled
        t5 = self.text.t5
        kwargs = {"use_reentrant": False}
        if enabled and hasattr(t5, "activation_checkpointing_enable"):  # transformers >= 5
            t5.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif enabled:
            t5.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            getattr(t5, "activation_checkpointing_disable", t5.gradient_checkpointing_disable)()

    # ------------------------------------------------------------------ image side

    def encode_image(self, images: torch.Tensor, pixel_mask: torch.Tensor | None) -> dict:
        """Backbone + projections + deformable encoder; everything later stages read."""
        if pixel_mask is None:
            pixel_mask = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool, device=images.device)
        features = self.backbone(images)
        srcs, masks = project_levels(self.input_proj, features, pixel_mask)
        flat_src, flat_pos, flat_mask, shapes, ratios = [], [], [], [], []
        for lvl, (src, mask) in enumerate(zip(srcs, masks)):
            shapes.append(src.shape[-2:])
            pos = self.position(mask).to(src.dtype)
            flat_src.append(src.flatten(2).transpose(1, 2))
            flat_pos.append(pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
            flat_mask.append(mask.flatten(1))
            valid_h = (~mask[:, :, 0]).sum(1).to(torch.float32) / mask.shape[1]
            valid_w = (~mask[:, 0, :]).sum(1).to(torch.float32) / mask.shape[2]
            ratios.append(torch.stack([valid_w, valid_h], -1))
        spatial_shapes = torch.as_tensor([tuple(s) for s in shapes], dtype=torch.long, device=images.device)
        level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
        src = torch.cat(flat_src, 1)
        pos = torch.cat(flat_pos, 1)
        mask = torch.cat(flat_mask, 1)
        valid_ratios = torch.stack(ratios, 1)
        memory = self.encoder(src, pos, mask, spatial_shapes, level_start_index, valid_ratios)
        return {
            "memory": memory,
            "pos": pos,
            "mask": mask,
            "spatial_shapes": spatial_shapes,
            "level_start_index": level_start_index,
            "valid_ratios": valid_ratios,
            "src_fine": srcs[0],
            "backbone_pool": (
                torch.cat(
                    [masked_mean(f.flatten(2).transpose(1, 2), m.flatten(1)) for f, m in zip(features, masks)], dim=-1
                )
                if self.cfg.hema.cell_feature_backbone_pool
                else None
            ),
        }

    def cell_features(self, images: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The (B, hidden_dim) single-cell feature (for linear probing)."""
        img = self.encode_image(images, pixel_mask)
        return self.encoder.cell_feature(img["memory"], img["pos"], img["mask"], img["backbone_pool"])

    # ------------------------------------------------------------------ detector

    def _detect(self, img: dict, targets, text_states, text_pad, with_masks: bool, denoise: bool = True) -> dict:
        memory, mask = img["memory"], img["mask"]
        tgt, refs, interm = self.proposals(memory, mask, img["spatial_shapes"])
        if text_states is not None and self.cfg.hema.text_refinement:
            if self.cfg.hema.refinement == "official":
                tgt = self.hema.refine(tgt, text_states, text_pad)
            else:
                # Proposals are sorted by score, so the first K queries are the top-K objects.
                k = self.cfg.hema.refine_top_k
                tgt = torch.cat([self.hema.refine(tgt[:, :k], text_states, text_pad), tgt[:, k:]], dim=1)
        dn = None
        if self.training and self.denoising is not None and targets is not None:
            # Only batches that pay a box loss get DN queries: on a morphology batch the
            # detector runs for the per-query attributes and nothing would read DN boxes.
            dn = self.denoising(targets, self.num_queries) if denoise else None
            if dn is None:
                # No boxes to denoise (or no box loss) in this batch. Keep the DN embedding in the graph with a
                # zero contribution: under ZeRO-2 the gradient buckets must hold the same
                # parameters on every rank, and another rank's batch may have boxes (a crash
                # "Received data size doesn't match expected size" in gloo otherwise).
                tgt = tgt + 0.0 * self.denoising.label_enc.weight.sum().to(tgt.dtype)
        attn_mask, pad = None, 0
        if dn is not None:
            content, dn_refs, attn_mask, meta = dn
            pad = meta["pad_size"]
            tgt = torch.cat([content.to(tgt.dtype), tgt], dim=1)
            refs = torch.cat([dn_refs.to(refs.dtype), refs], dim=1)
        layers = self.decoder(
            tgt, refs, memory, mask, img["spatial_shapes"], img["level_start_index"], img["valid_ratios"], attn_mask
        )
        keys = ("pred_logits", "pred_boxes", "pred_morphology")
        match = [{k: o[k][:, pad:] for k in keys} for o in layers]
        out = dict(match[-1])
        out["aux_outputs"] = match[:-1]
        out["interm_outputs"] = interm
        if dn is not None:
            dn_layers = [{k: o[k][:, :pad] for k in keys} for o in layers]
            out["dn_outputs"] = dict(dn_layers[-1], aux_outputs=dn_layers[:-1])
            out["dn_meta"] = meta
        if with_masks:
            b, _, d = memory.shape
            h0, w0 = img["src_fine"].shape[-2:]
            level0 = memory[:, : h0 * w0].transpose(1, 2).reshape(b, d, h0, w0)
            pixel = self.encoder.pixel_features(
                memory, img["spatial_shapes"], img["level_start_index"], img["src_fine"]
            )
            out.update(self.hema.mask_former(layers[-1]["hs"][:, pad:], pixel, level0))
        return out

    # ------------------------------------------------------------------ text

    def _text_context(self, img: dict, text_states, prompt_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """T5 decoder's encoder states: Q-Former(image, prompt) then the prompt's own states."""
        text_pad = None if prompt_mask is None else ~prompt_mask.bool()
        fused = self.hema.qformer(img["memory"], img["pos"], img["mask"], text_states, text_pad)
        fused_mask = torch.ones(fused.shape[:2], dtype=torch.bool, device=fused.device)
        if text_states is None:
            return fused, fused_mask
        return torch.cat([fused, text_states], 1), torch.cat([fused_mask, prompt_mask.bool()], 1)

    # ------------------------------------------------------------------ forward

    def forward(self, batch: dict) -> dict:
        tasks = set(batch.get("tasks") or _infer_tasks(batch))
        unknown = tasks - set(TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; allowed: {', '.join(TASKS)}")
        targets = batch.get("targets")
        run_detector = bool(tasks & DETECTOR_TASKS) or ("morphology" in tasks and targets is not None)
        run_cell = bool(tasks & CELL_TASKS)
        run_text = bool(tasks & TEXT_TASKS)

        img = self.encode_image(batch["images"], batch.get("pixel_mask"))
        prompt_ids, prompt_mask = batch.get("prompt_ids"), batch.get("prompt_mask")
        text_states = text_pad = None
        if prompt_ids is not None and (run_text or (run_detector and self.cfg.hema.text_refinement)):
            if prompt_mask is None:
                prompt_mask = prompt_ids.ne(self.text.t5.config.pad_token_id)
            text_states = self.text.encode(prompt_ids, prompt_mask)
            text_pad = ~prompt_mask.bool()

        out: dict = {}
        if run_cell:
            feature = self.encoder.cell_feature(img["memory"], img["pos"], img["mask"], img["backbone_pool"])
            out.update(self.heads(feature))
        if run_detector:
            out.update(
                self._detect(
                    img, targets, text_states, text_pad, "segmentation" in tasks, denoise=bool(tasks & DETECTOR_TASKS)
                )
            )
        if run_text and batch.get("text_labels") is not None:
            states, states_mask = self._text_context(img, text_states, prompt_mask)
            decoder_ids = self.text.shift_right(batch["text_labels"])
            out["text_logits"] = self.text.decode(decoder_ids, states, states_mask)
        return out

    def _answer_context(self, images, pixel_mask, prompt_ids, prompt_mask):
        """The T5 decoder's encoder states and mask for answering the prompt about the images."""
        img = self.encode_image(images, pixel_mask)
        if prompt_mask is None:
            prompt_mask = prompt_ids.ne(self.text.t5.config.pad_token_id)
        return self._text_context(img, self.text.encode(prompt_ids, prompt_mask), prompt_mask)

    @torch.no_grad()
    def answer_log_likelihoods(
        self, images, pixel_mask, prompt_ids, prompt_mask, labels: torch.Tensor, owner: torch.Tensor
    ) -> torch.Tensor:
        """Summed log-likelihood (N,) of each candidate answer ``labels`` (N, T', -100 = padding)
        given the image and prompt of batch row ``owner`` (N,): the image side runs once per row."""
        was_training = self.training
        self.eval()
        try:
            states, states_mask = self._answer_context(images, pixel_mask, prompt_ids, prompt_mask)
            logits = self.text.decode(self.text.shift_right(labels), states[owner], states_mask[owner])
        finally:
            self.train(was_training)
        logp = logits.float().log_softmax(-1)
        valid = labels != -100
        picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (picked * valid).sum(-1)

    def generate_text(
        self,
        images,
        pixel_mask,
        prompt_ids,
        prompt_mask,
        max_new_tokens: int = 32,
        num_beams: int = 1,
        return_scores: bool = False,
    ):
        """Answer the prompt about the image: greedy (num_beams=1) or beam search.

        The T5 decoder attends to the Q-Former's image-and-prompt summary and the prompt
        states, exactly as in training, so the answer depends on the image. Returns token ids
        (B, T) starting with the decoder start token; with ``return_scores``, also each
        sequence's summed token log-probabilities (B,).
        """
        from transformers.modeling_outputs import BaseModelOutput

        # Decoding is deterministic: no dropout even when called from a training loop.
        was_training = self.training
        self.eval()
        try:
            states, states_mask = self._answer_context(images, pixel_mask, prompt_ids, prompt_mask)
            gen = self.text.t5.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                attention_mask=states_mask.long(),
                # At least one token: an untrained end-of-sequence logit otherwise ends most
                # answers before they start (30 of 31 validation answers were empty, issue 16).
                max_new_tokens=max_new_tokens,
                min_new_tokens=1,
                num_beams=num_beams,
                do_sample=False,
                return_dict_in_generate=True,
                output_scores=True,
            )
        finally:
            self.train(was_training)
        if not return_scores:
            return gen.sequences
        # Beam scores are already log-softmaxed; greedy scores are raw logits.
        steps = self.text.t5.compute_transition_scores(
            gen.sequences, gen.scores, getattr(gen, "beam_indices", None), normalize_logits=num_beams == 1
        )
        # Steps after </s> (padding of finished sequences) score 0 or -inf: leave them out.
        scores = steps.masked_fill(~torch.isfinite(steps), 0.0).sum(-1)
        return gen.sequences, scores


def _pinned(name: str, backends: tuple[str, ...], kind: str) -> str | None:
    """The backend attention modules are pinned to: None for "auto" (decide per call)."""
    name = name.strip().lower()
    if name == "auto":
        return None
    if name not in backends:
        raise ValueError(f"unknown {kind} backend {name!r}; choose one of {', '.join(('auto', *backends))}")
    return name


def _infer_tasks(batch: dict) -> set[str]:
    """Tasks implied by the keys present, for callers that do not say."""
    tasks = set()
    if batch.get("targets") is not None:
        tasks.add("detection")
    if batch.get("cell_labels") is not None:
        tasks.add("classification")
    if batch.get("semantic_masks") is not None:
        tasks.add("segmentation")
    if batch.get("morphology") is not None:
        tasks.add("morphology")
    if batch.get("text_labels") is not None:
        tasks.add("vqa")
    return tasks
