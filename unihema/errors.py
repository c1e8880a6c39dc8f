"""Errors the command-line tools turn into one line on stderr and exit code 2.

Bad input (a corrupt image, a folder that is not a checkpoint, a missing optional package)
is the user's to fix, so it gets a message naming the file or package and the reason, never
a stack trace. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys


class UserInputError(ValueError):
    """Input the tools cannot use; ``str(err)`` is the whole message, one line."""


class MissingDependencyError(UserInputError, ImportError):
    """An optional package a metric or plot needs is not installed."""


# Import name -> (pip package, what needs it).
OPTIONAL_PACKAGES = {
    "sklearn": ("scikit-learn", "classification F1, confusion matrices, the linear probe"),
    "sacrebleu": ("sacrebleu", "VQA BLEU-1..4"),
    "rouge_score": ("rouge-score", "VQA ROUGE-L"),
    "matplotlib": ("matplotlib", "the evaluation plots"),
}


def require(module: str, purpose: str | None = None):
    """Import ``module`` or raise MissingDependencyError naming its pip package and what needs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        package, default_purpose = OPTIONAL_PACKAGES.get(top, (top, "this feature"))
        raise MissingDependencyError(
            f"{purpose or default_purpose} needs the '{package}' package: pip install {package}"
        ) from None


def missing_packages(modules) -> list[str]:
    """The pip names of those ``modules`` that cannot be imported."""
    out = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            top = module.split(".")[0]
            out.append(OPTIONAL_PACKAGES.get(top, (top,))[0])
    return out


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def report_cli_error(err: BaseException) -> int:
    """Print one line for an expected failure of a CLI and return its exit code.

    2 for what the user can fix in the command (config, input files), 1 for storage refusals
    and everything else the command could not complete.
    """
    from unihema.config import ConfigError

    if isinstance(err, ConfigError):
        print(f"error: config: {one_line(err)}", file=sys.stderr)
        return 2
    if isinstance(err, UserInputError):
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    kind = "storage error" if type(err).__name__ == "StorageAccessError" else "error"
    print(f"{kind}: {one_line(err)}", file=sys.stderr)
    return 1
