"""The text side: a T5 encoder/decoder (FLAN-T5-base in the paper), built from config.

Three things here are easy to get wrong and are the reason this file exists:

- transformers 5.x forces ``T5Config.tie_word_embeddings = True``, so a T5 built from a
  config has its LM head tied to the input embedding even when the config says untied.
  FLAN-T5 is untied (``shared`` and ``lm_head`` are separate 24.7M-parameter tensors in the
  official checkpoint), so :func:`untie_lm_head` gives the head its own Parameter and the
  parameter count is honest (247,577,856 for FLAN-T5-base, not 222,903,552).
- T5's attention can go through the project's dispatcher: :func:`register_t5_attention`
  registers an attention function named ``"unihema"`` with transformers'
  ``AttentionInterface`` that folds T5's relative position bias and masks into one
  additive bias and calls :func:`unihema.ops.attention`.
- Pretrained weights (a hub name or a local ``save_pretrained`` folder) load through
  transformers' ``from_pretrained`` when the config names them; the config's dimensions must
  be the checkpoint's, so a meta-device build (counts, conversion) is the same model.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration
from transformers.models.t5.modeling_t5 import T5Attention

from unihema.config import TextConfig
from unihema.config.model import is_hub_id, loads_nothing
from unihema.ops import attention

from .weights import TEXT_SETTING, PretrainedWeightsError, missing_local, unavailable

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "unihema"
_registered = False


def t5_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, position_bias=None, **kwargs):
    """transformers attention-interface function: (B, H, L, D) in, (B, Lq, H, D) out."""
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    bias = position_bias
    causal = False
    if attention_mask is None:
        # sdpa-style masks come back as None when the pattern is plain causal (no padding).
        causal = bool(getattr(module, "is_causal", False)) and q.shape[1] > 1
    elif attention_mask.dtype == torch.bool:
        # The finite minimum instead of -inf: a fully padded row stays finite (uniform), no NaN.
        base = bias if bias is not None else torch.zeros((), dtype=q.dtype, device=q.device)
        bias = torch.where(attention_mask, base, torch.finfo(q.dtype).min)
    else:
        bias = attention_mask if bias is None else bias + attention_mask
    if bias is not None:
        bias = bias.to(q.dtype)
    backend = getattr(module, "unihema_attention_backend", None)  # set by TextModel.set_attention_backend
    out = attention(q, k, v, attn_bias=bias, causal=causal, dropout_p=dropout, scale=scaling, backend=backend)
    return out, None


def register_t5_attention() -> bool:
    """Make ``attn_implementation="unihema"`` known to transformers (idempotent).

    Returns False on transformers releases without the attention/mask interfaces.
    """
    global _registered
    if _registered:
        return True
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    AttentionInterface.register(ATTN_IMPLEMENTATION, t5_attention)
    # Boolean masks (True = attend) like sdpa's; t5_attention turns them into a bias.
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
    _registered = True
    return True


def t5_config(cfg: TextConfig) -> T5Config:
    return T5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        num_heads=cfg.num_heads,
        num_layers=cfg.encoder_layers,
        num_decoder_layers=cfg.decoder_layers,
        feed_forward_proj=cfg.feed_forward_proj,
        tie_word_embeddings=cfg.tie_word_embeddings,
        dropout_rate=cfg.dropout_rate,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def untie_lm_head(t5: T5ForConditionalGeneration) -> None:
    """Give the LM head its own weight if transformers tied it to ``shared``."""
    if t5.lm_head.weight is t5.shared.weight:
        weight = torch.empty_like(t5.shared.weight)
        # T5's own untied init uses std = initializer_factor, which on RMS-normalized
        # hidden states gives logits of std ~sqrt(d_model) and a first text loss of ~4x
        # log(vocab) when training from scratch; the tied head's d_model**-0.5 output
        # scaling, folded into the init, starts the loss at ~log(vocab) instead.
        std = t5.config.initializer_factor * t5.config.d_model**-0.5
        nn.init.normal_(weight, mean=0.0, std=std)
        t5.lm_head.weight = nn.Parameter(weight)
    t5.config.tie_word_embeddings = False
    tied = getattr(t5, "all_tied_weights_keys", None)
    if isinstance(tied, dict):
        tied.pop("lm_head.weight", None)


def build_t5(cfg: TextConfig) -> T5ForConditionalGeneration:
    impl = cfg.attn_implementation
    if impl == ATTN_IMPLEMENTATION and not register_t5_attention():
        logger.warning("this transformers release cannot route T5 attention through unihema.ops; using sdpa")
        impl = "sdpa"
    if loads_nothing(cfg.pretrained) or torch.get_default_device().type == "meta":
        # From the config (on the meta device too: the dimensions must be the checkpoint's).
        config = t5_config(cfg)
        config._attn_implementation = impl
        t5 = T5ForConditionalGeneration(config)
    else:
        t5 = _t5_from_pretrained(cfg, impl)
    if not cfg.tie_word_embeddings:
        untie_lm_head(t5)
    return t5


# TextConfig field -> T5Config attribute; a checkpoint must agree with the config on each.
_DIMENSIONS = {
    "d_model": "d_model",
    "d_kv": "d_kv",
    "d_ff": "d_ff",
    "num_heads": "num_heads",
    "encoder_layers": "num_layers",
    "decoder_layers": "num_decoder_layers",
    "vocab_size": "vocab_size",
    "feed_forward_proj": "feed_forward_proj",
}


def _t5_from_pretrained(cfg: TextConfig, impl: str) -> T5ForConditionalGeneration:
    """transformers' own loader, with the weights error of :mod:`unihema.model.weights`."""
    source = cfg.pretrained
    if not is_hub_id(source) and not os.path.isdir(os.path.expanduser(source)):
        raise missing_local(TEXT_SETTING, source)
    try:
        t5 = T5ForConditionalGeneration.from_pretrained(
            os.path.expanduser(source), attn_implementation=impl, dropout_rate=cfg.dropout_rate
        )
    except OSError as err:  # transformers reports unreachable, offline and missing files as OSError
        if is_hub_id(source):
            raise unavailable(TEXT_SETTING, source, f"{type(err).__name__}: {err}") from None
        raise PretrainedWeightsError(f"{TEXT_SETTING}={source!r}: {err}") from None
    differ = [
        f"model.text.{ours}={getattr(cfg, ours)!r} but the checkpoint has {getattr(t5.config, theirs)!r}"
        for ours, theirs in _DIMENSIONS.items()
        if getattr(cfg, ours) != getattr(t5.config, theirs)
    ]
    if differ:
        # Meta-device builds, parameter counts and the converter read the config, not the checkpoint.
        raise PretrainedWeightsError(f"{TEXT_SETTING}={source!r} does not fit the config: {'; '.join(differ)}")
    return t5


class TextModel(nn.Module):
    """T5 as two calls: encode the prompt; decode answer tokens against given encoder states."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.t5 = build_t5(cfg)
        self.d_model = self.t5.config.d_model

    def set_attention_backend(self, backend: str | None) -> None:
        """Pin T5's attention (when routed through unihema.ops) to ``backend``; None decides per call."""
        for module in self.t5.modules():
            if isinstance(module, T5Attention):
                module.unihema_attention_backend = backend

    @property
    def vocab_size(self) -> int:
        return self.t5.config.vocab_size

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.t5.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state

    def decode(self, decoder_input_ids, encoder_states, encoder_mask, decoder_mask=None) -> torch.Tensor:
        """Teacher-forced logits (B, T', vocab)."""
        out = self.t5.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_mask,
            encoder_hidden_states=encoder_states,
            encoder_attention_mask=encoder_mask.long(),
            use_cache=False,
        )
        hidden = out.last_hidden_state
        if getattr(self.t5.config, "scale_decoder_outputs", False):
            hidden = hidden * (self.d_model**-0.5)
        return self.t5.lm_head(hidden)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """T5 decoder inputs: start token, then the labels with -100 replaced by pad."""
        start = self.t5.config.decoder_start_token_id
        pad = self.t5.config.pad_token_id
        shifted = labels.new_full(labels.shape, pad)
        shifted[:, 1:] = labels[:, :-1]
        shifted[:, 0] = start
        return shifted.masked_fill(shifted == -100, pad)
