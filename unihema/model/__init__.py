"""The Uni-Hema model: image detector + T5 + Hema-Former, built from ``cfg.model``.

Public API: :func:`build_model`, :class:`UniHema` (``forward(batch)``, ``generate_text``),
:func:`build_tokenizer` / :class:`HemaTokenizer`; official checkpoint conversion in
:mod:`unihema.model.convert`, parameter summary in :mod:`unihema.model.summary`.
"""

import importlib

# Attributes resolve on first use: the Ray Data decode tasks import only the tokenizer,
# and must not pay for importing timm and transformers in every worker process.
_LAZY = {
    "MODELS": "registry",
    "build_model": "registry",
    "list_models": "registry",
    "register_model": "registry",
    "HemaTokenizer": "tokenizer",
    "build_tokenizer": "tokenizer",
    "TASKS": "uni_hema",
    "UniHema": "uni_hema",
    "from_pretrained": "pretrained",
    "load_pretrained": "pretrained",
    "save_pretrained": "pretrained",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MODELS",
    "TASKS",
    "HemaTokenizer",
    "UniHema",
    "build_model",
    "build_tokenizer",
    "list_models",
    "register_model",
]
