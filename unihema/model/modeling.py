"""The export folder of a trained model, and the mixin that gives a model class ``from_pretrained``.

This module sits below the model registry and imports none of the model classes: a class
inherits :class:`PretrainedMixin` and builds itself with ``cls.from_config(cfg)``, as Hugging
Face's ``PreTrainedModel`` does, so the model module never needs the loaders that build a
model by name (those, ``load_pretrained`` and ``build_from_state``, live above the registry in
:mod:`unihema.model.pretrained`).

A folder holds everything needed to use the model with no DeepSpeed, Ray or network:

    model.safetensors   fp32 weights (tied tensors stored as copies)
    config.yaml         the resolved UniHemaConfig (secrets redacted)
    tokenizer/          the tokenizer the model was trained with
    README.md           the model card

The weights alone decide the model: names of pretrained backbones or T5 checkpoints in the
saved config are ignored on load (they only chose the initial weights), so loading never
downloads anything. Plain PyTorch: this module imports neither Ray nor DeepSpeed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from unihema.config import REDACTED, UniHemaConfig, load_config, save_config
from unihema.config.model import CHECKPOINT, loads_nothing

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
TOKENIZER_DIR = "tokenizer"
CARD_FILE = "README.md"


class PretrainedError(ValueError):
    """A folder that is not a loadable Uni-Hema export; the message names the folder and the problem."""


@dataclass
class Pretrained:
    """What a folder loads into: the model (eval mode), its full config and its tokenizer."""

    model: torch.nn.Module
    cfg: UniHemaConfig
    tokenizer: object
    path: Path


def is_pretrained_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file()


def scrub_secrets(cfg: UniHemaConfig) -> UniHemaConfig:
    """A saved config has ``***redacted***`` in place of secrets; never use that as a credential."""
    storage = cfg.storage
    changes = {k: "" for k in ("access_key_id", "secret_access_key") if getattr(storage, k) == REDACTED}
    return dataclasses.replace(cfg, storage=dataclasses.replace(storage, **changes)) if changes else cfg


def offline_model_config(cfg: UniHemaConfig, tokenizer_dir: str | Path | None = None) -> UniHemaConfig:
    """``cfg`` with the pretrained weights set to "checkpoint" (the folder's weights replace them).

    The tokenizer is another matter: a run that started from FLAN-T5 speaks its token ids, so
    without a saved tokenizer folder the pretrained text model's tokenizer stays the source.
    """
    model = cfg.model
    tokenizer = str(tokenizer_dir) if tokenizer_dir else model.text.tokenizer
    if not tokenizer and not loads_nothing(model.text.pretrained):
        tokenizer = model.text.pretrained
    text = dataclasses.replace(model.text, pretrained=CHECKPOINT, tokenizer=tokenizer)
    backbone = dataclasses.replace(model.backbone, pretrained=CHECKPOINT)
    return dataclasses.replace(cfg, model=dataclasses.replace(model, text=text, backbone=backbone))


def load_folder_config(
    path: str | Path, files: Iterable[str | Path] = (), overrides: Iterable[str] = ()
) -> UniHemaConfig:
    """The folder's config.yaml, then extra YAML files and ``a.b=value`` overrides on top."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise PretrainedError(f"{path}: no {CONFIG_FILE} (not a Uni-Hema export folder)")
    cfg = load_config(None, [path / CONFIG_FILE, *files], overrides)
    tok = path / TOKENIZER_DIR
    return scrub_secrets(offline_model_config(cfg, tok if (tok / "tokenizer.json").is_file() else None))


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly, with an error naming the missing, unexpected and mis-shaped tensors."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} with another shape (e.g. {k}: saved {tuple(state[k].shape)}, "
                f"config builds {tuple(own[k].shape)})"
            )
        raise PretrainedError(
            f"{source}: weights do not fit the model its config builds: {'; '.join(parts)}. "
            "Is the config the one the checkpoint was trained with?"
        )
    model.load_state_dict(state, strict=True)


def read_folder(
    path: str | Path, files: Iterable[str | Path] = (), overrides: Iterable[str] = ()
) -> tuple[UniHemaConfig, dict[str, torch.Tensor]]:
    """The config and the weights of an export folder, with errors naming the folder and the problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise PretrainedError(f"{path}: not a folder")
    if not (path / WEIGHTS_FILE).is_file():
        raise PretrainedError(f"{path}: no {WEIGHTS_FILE} (not a Uni-Hema export folder)")
    cfg = load_folder_config(path, files, overrides)
    try:
        state = load_file(str(path / WEIGHTS_FILE))
    except (SafetensorError, OSError) as err:
        raise PretrainedError(f"{path / WEIGHTS_FILE}: unreadable weights: {err}") from None
    return cfg, state


def with_state(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> torch.nn.Module:
    """``model`` with ``state`` loaded strictly, cast to ``dtype``, on ``device``, in eval mode."""
    load_state_into(model, state, source)
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval()


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` for a model class with ``from_config(cfg)`` and ``cfg``."""

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        overrides: Iterable[str] = (),
    ):
        """The model saved in an export folder, in eval mode (see the module docstring)."""
        cfg, state = read_folder(path, (), overrides)
        return with_state(cls.from_config(cfg), state, str(path), device, dtype)

    def save_pretrained(self, out_dir: str | Path, cfg: UniHemaConfig | None = None, **kwargs) -> Path:
        """Write this model as an export folder; pass the full config so data settings travel too."""
        return save_pretrained(self, out_dir, cfg, **kwargs)


def state_for_saving(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp32 (floating tensors), contiguous, CPU, each its own storage (safetensors refuses shared ones)."""
    out = {}
    for k, v in state.items():
        v = v.detach().to("cpu")
        out[k] = (v.float() if v.is_floating_point() else v).clone().contiguous()
    return out


def save_pretrained(
    model_or_state,
    out_dir: str | Path,
    cfg: UniHemaConfig | None = None,
    *,
    tokenizer=None,
    card: str | None = None,
    card_info: dict | None = None,
) -> Path:
    """Write an export folder from a model (or a state dict) and its config.

    ``cfg`` defaults to a UniHemaConfig around the model's own ModelConfig. ``card`` replaces
    the generated model card; ``card_info`` feeds it (data, metrics, source, ...).
    """
    from safetensors.torch import save_file

    from unihema.model.tokenizer import build_tokenizer

    card_info = dict(card_info or {})
    if isinstance(model_or_state, torch.nn.Module):
        state = model_or_state.state_dict()
        card_info.setdefault("parameters", sum(p.numel() for p in model_or_state.parameters()))
        if cfg is None:
            cfg = UniHemaConfig(model=model_or_state.cfg)
    else:
        state = model_or_state
        if cfg is None:
            raise ValueError("save_pretrained needs the config when given a state dict")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or build_tokenizer(cfg.model)
    save_file(state_for_saving(state), str(out / WEIGHTS_FILE), metadata={"format": "pt", "library": "unihema"})
    # The tokenizer travels in the folder; the saved config must not point outside it.
    saved = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, text=dataclasses.replace(cfg.model.text, tokenizer=""))
    )
    save_config(saved, out / CONFIG_FILE)
    tokenizer.save(out / TOKENIZER_DIR)
    (out / CARD_FILE).write_text(card if card is not None else model_card(cfg, state, card_info))
    return out


# ----------------------------------------------------------------------------- model card

_TASK_LINES = {
    "detection": "cell detection with 29 classes (boxes, scores) and six morphology attributes per box",
    "classification": "single-cell classification (46 classes)",
    "segmentation": "cell segmentation (semantic foreground and per-detection instance masks)",
    "morphology": "six binary morphology attributes (chromatin, nuclear shape, nucleolus, cytoplasm, "
    "basophilia, vacuoles)",
    "vqa": "visual question answering about the image (generated text)",
    "mlm": "filling masked words of clinical sentences, conditioned on the image",
}


def _metrics_table(metrics: dict) -> str:
    rows = []
    for task, values in metrics.items():
        if not isinstance(values, dict):
            continue
        shown = [f"{k}={v:.3f}" for k, v in values.items() if isinstance(v, float)][:6]
        if shown:
            rows.append(f"| {task} | {', '.join(shown)} | {values.get('count', '')} |")
    if not rows:
        return "Not recorded for this checkpoint: run `python -m unihema.evaluate` on held-out data.\n"
    return "| task | metrics | n |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def model_card(cfg: UniHemaConfig, state: dict | None = None, info: dict | None = None) -> str:
    """A model card: what it is, data, tasks, metrics, how to load it, limitations."""
    info = info or {}
    params = info.get("parameters") or sum(v.numel() for v in (state or {}).values() if v.is_floating_point())
    tasks = [t for t in _TASK_LINES if getattr(cfg.data.mix, t, 0) > 0]
    metrics = info.get("metrics") or {}
    data_uri = info.get("data", cfg.data.uri)
    synthetic = "synthetic" in str(data_uri)
    lines = [
        f"# Uni-Hema ({cfg.preset or 'custom'} configuration)",
        "",
        "One model for peripheral blood smears: detection, single-cell classification, segmentation,",
        "morphology attributes, visual question answering and masked-language modelling, re-implemented",
        "from *Uni-Hema: Unified Model for Digital Hematopathology* (CVPR 2026) with the UniHema stack.",
        "",
        "## Use",
        "",
        "```python",
        "from unihema.model.pretrained import load_pretrained",
        'bundle = load_pretrained("path/to/this/folder")   # .model (eval mode), .cfg, .tokenizer',
        "```",
        "",
        "or from the command line: `python -m unihema.predict IMAGE --checkpoint path/to/this/folder`.",
        "",
        "## Model",
        "",
        f"- backbone `{cfg.model.backbone.name}`, hidden size {cfg.model.hidden_dim}, "
        f"{cfg.model.encoder.layers}+{cfg.model.decoder.layers} deformable encoder/decoder layers, "
        f"{cfg.model.decoder.num_queries} queries; T5 text model d_model {cfg.model.text.d_model}, "
        f"{cfg.model.text.encoder_layers}+{cfg.model.text.decoder_layers} layers",
        f"- parameters: {params:,}" if params else "- parameters: see model.safetensors",
        "- files: `model.safetensors` (fp32), `config.yaml` (resolved configuration, secrets redacted), `tokenizer/`",
    ]
    if info.get("source"):
        lines.append(
            f"- exported from `{info['source']}`" + (f" (step {info['step']})" if info.get("step") is not None else "")
        )
    lines.append(f"- written {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    lines += ["", "## Training data", "", f"- `{data_uri}`"]
    if synthetic:
        lines.append(
            "- synthetic blood smears from `unihema.data.synthetic` (procedural, CC0-1.0): a smoke test "
            "of the stack, not a hematology corpus"
        )
    else:
        lines.append("- converted public datasets (see `python -m data_prep list` for the sources and their licenses)")
    lines += ["", "## Tasks", ""] + [f"- **{t}**: {_TASK_LINES[t]}" for t in tasks]
    lines += ["", "## Metrics", "", _metrics_table(metrics)]
    if info.get("metrics_source"):
        lines.append(f"Source: {info['metrics_source']}.")
    lines += [
        "",
        "## Limitations",
        "",
        "- **Research software, not a medical device: not for diagnosis** or any clinical decision.",
        "- Metrics hold only for data like the evaluation data; stains, scanners, magnifications and",
        "  diseases outside it can fail silently. Metrics on synthetic data say nothing about real smears.",
        "- Class and attribute vocabularies are fixed (`unihema.labels`); anything else is forced into them.",
        "- Generated answers (VQA, MLM) can be fluent and wrong.",
        "",
    ]
    return "\n".join(lines)
