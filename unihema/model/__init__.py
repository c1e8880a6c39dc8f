"""The Uni-Hema model: image detector + T5 + Hema-Former, built from ``cfg.model``.

Public API: :func:`build_model`, :class:`UniHema` (``forward(batch)``, ``generate_text``),
:func:`build_tokenizer` / :class:`HemaTokenizer`; official checkpoint conversion in
:mod:`unihema.model.convert`, parameter summary in :mod:`unihema.model.summary`.
"""

from .registry import MODELS, build_model, list_models, register_model
from .tokenizer import HemaTokenizer, build_tokenizer
from .uni_hema import TASKS, UniHema

__all__ = [
    "MODELS", "TASKS", "HemaTokenizer", "UniHema", "build_model", "build_tokenizer", "list_models",
    "register_model",
]
