"""Where the initial weights of the backbone and of T5 come from, and what happens when they cannot come.

``model.backbone.pretrained`` and ``model.text.pretrained`` each take one of three kinds of value:

- ``scratch``: random initialisation, on purpose (the ``tiny`` and ``demo`` presets);
- ``checkpoint``: nothing loads at build time, a checkpoint fills the model afterwards
  (export folders, converted official checkpoints, benchmarks' stand-ins);
- a local path (a backbone state-dict file; a T5 folder written by ``save_pretrained``);
- a hub id: a timm name (``resnet50.tv_in1k``, ``hf-hub:timm/...``) or a Hugging Face
  repository (``google/flan-t5-base``), loaded by timm / transformers themselves.

The official run starts from ImageNet weights and FLAN-T5; a run that meant to do so and
trained from random weights instead would look healthy for days. So a hub id that cannot be
fetched is an error naming the setting, the id and the ways to provide the files, never a
fallback, and :func:`check_available` lets an entry point find out before it starts Ray.
An empty value is read as ``scratch`` (older configs store it that way). Meta-device
builds never load or download anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from unihema.config.model import SCRATCH, is_hub_id, loads_nothing

BACKBONE_SETTING = "model.backbone.pretrained"
TEXT_SETTING = "model.text.pretrained"


class PretrainedWeightsError(RuntimeError):
    """Weights a config names cannot be loaded; the message says which setting and how to fix it."""


def unavailable(setting: str, hub_id: str, cause: BaseException | str) -> PretrainedWeightsError:
    """The error for hub weights that could not be fetched (offline, unreachable, unknown id)."""
    offline = "HF_HUB_OFFLINE=1 is set, so nothing is downloaded; " if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
    cache = os.environ.get("HF_HOME") or "~/.cache/huggingface"
    cause = " ".join(str(cause).split())  # one line: libraries' messages span several
    return PretrainedWeightsError(
        f"{setting}={hub_id!r}: cannot load these weights from the Hugging Face Hub ({offline}{cause}). "
        f"Provide them in one of these ways: (1) give a local copy: {setting}=/path/to/weights "
        f"(a state-dict file for the backbone, a save_pretrained folder with the tokenizer for T5); "
        f"(2) pre-download on a machine with hub access (e.g. `hf download {_repo(hub_id)}`) "
        f"and point HF_HOME at that cache (now: {cache}) on every node; "
        f"(3) train from random weights on purpose: {setting}={SCRATCH}"
        + (
            " model.backbone.frozen_stages=0 model.backbone.frozen_batchnorm=false"
            if setting == BACKBONE_SETTING
            else ""
        )
        + "."
    )


def missing_local(setting: str, path: str) -> PretrainedWeightsError:
    return PretrainedWeightsError(f"{setting}={path!r}: no such file or folder")


def _repo(hub_id: str) -> str:
    """The Hugging Face repository behind a hub id (timm names live under ``timm/``)."""
    if hub_id.startswith("hf-hub:"):
        return hub_id[len("hf-hub:") :]
    if "/" in hub_id:
        return hub_id
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(hub_id)
        if cfg is not None and cfg.hf_hub_id:
            return cfg.hf_hub_id
    except Exception:  # noqa: BLE001 - only a nicer hint; the caller's error stands either way
        pass
    return f"timm/{hub_id}"


def _probe_hub(setting: str, hub_id: str, filenames: tuple[str, ...]) -> None:
    """Raise :func:`unavailable` unless one of ``filenames`` is cached or reachable (a HEAD request)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    repo = _repo(hub_id)
    for name in filenames:
        if isinstance(try_to_load_from_cache(repo, name), str):
            return
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise unavailable(setting, hub_id, f"not in the local cache as {repo}")
    try:
        get_hf_file_metadata(hf_hub_url(repo, filenames[0]), timeout=10)
    except Exception as err:  # noqa: BLE001 - any failure to reach the file means the run cannot start
        raise unavailable(setting, hub_id, f"{type(err).__name__}: {err}") from None


def check_available(model_cfg) -> None:
    """Fail before any training starts if a pretrained setting names weights that cannot load."""
    backbone, text = model_cfg.backbone.pretrained, model_cfg.text.pretrained
    for setting, value in ((BACKBONE_SETTING, backbone), (TEXT_SETTING, text)):
        if loads_nothing(value):
            continue
        if not is_hub_id(value):
            if not os.path.exists(Path(value).expanduser()):
                raise missing_local(setting, value)
            continue
        files = ("model.safetensors", "pytorch_model.bin") if setting == BACKBONE_SETTING else ("config.json",)
        _probe_hub(setting, value, files)
