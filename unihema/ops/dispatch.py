"""Backend selection plumbing shared by every kernel dispatcher in ``unihema.ops``.

Each fused kernel (dense attention, multi-scale deformable attention) has the same contract:
capability detection, an override that can come from a call argument (a model's modules
pass their config's backend there), a process-wide setting or an environment variable, a
PyTorch reference that always runs, and a clear error when a forced backend cannot run. The parts of that
contract that do not depend on the kernel live here so that both dispatchers resolve
overrides, report failures and log their choice the same way.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from typing import Callable, Hashable, Iterable, Sequence

AUTO = "auto"


class BackendUnavailableError(RuntimeError):
    """A backend was forced (argument, setting or env var) but cannot run the call."""


@dataclasses.dataclass(frozen=True)
class BackendCheck:
    """Whether one backend can run one call; ``reason`` says why not (empty when it can)."""

    name: str
    ok: bool
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.name}: ok" if self.ok else f"{self.name}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class Requested:
    """The backend name a call asked for and where that request came from."""

    name: str
    source: str  # "argument", "set_*_backend()", "env VAR" or "default"


class BackendSetting:
    """Process-wide backend choice for one dispatcher, with env-var and argument overrides.

    Precedence, highest first: an explicit ``backend=`` argument (what a model's attention
    modules pass when their config names a backend), the value given to the setter, the
    environment variable, then ``"auto"``. ``"auto"`` at the setter defers to the environment so a
    config left at its default can still be steered by an operator's env var, while a
    config that names a backend is not silently overridden by a stale shell variable.
    """

    def __init__(self, kind: str, env_var: str, names: Sequence[str], logger: logging.Logger):
        self.kind = kind
        self.env_var = env_var
        self.names = tuple(names)
        self._value = AUTO
        self._log_once = LogOnce(logger)

    def validate(self, name: str, source: str) -> str:
        name = name.strip().lower()
        if name != AUTO and name not in self.names:
            raise ValueError(
                f"unknown {self.kind} backend {name!r} (from {source}); choose one of {', '.join((AUTO,) + self.names)}"
            )
        return name

    def set(self, name: str | None) -> None:
        self._value = AUTO if name is None else self.validate(name, f"set_{self.kind}_backend()")

    def get(self) -> str:
        return self._value

    def resolve(self, argument: str | None) -> Requested:
        """Return the effective request for one call (``argument`` None defers)."""
        if argument is not None:
            return Requested(self.validate(argument, "argument"), "argument")
        if self._value != AUTO:
            return Requested(self._value, f"set_{self.kind}_backend()")
        env = os.environ.get(self.env_var, "").strip()
        if env:
            return Requested(self.validate(env, f"env {self.env_var}"), f"env {self.env_var}")
        return Requested(AUTO, "default")

    def choose(
        self,
        argument: str | None,
        checks: Sequence[BackendCheck],
        auto_pick: Callable[[Sequence[BackendCheck]], str],
        key: Hashable,
        described: str,
    ) -> str:
        """Resolve the request, verify a forced backend can run, log the choice once per key.

        ``checks`` covers every backend for this call; ``auto_pick`` chooses among them when
        nothing is forced; ``key`` is the shape class (logging happens once per key and request).
        """
        requested = self.resolve(argument)
        if requested.name == AUTO:
            chosen = auto_pick(checks)
        else:
            chosen = requested.name
            if not next(c for c in checks if c.name == chosen).ok:
                raise unavailable_error(self.kind, requested, checks)
        self._log_once(
            (key, requested),
            "%s backend %r for %s (requested %r by %s; cannot run: %s)",
            self.kind,
            chosen,
            described,
            requested.name,
            requested.source,
            "; ".join(str(c) for c in checks if not c.ok) or "none",
        )
        return chosen


def unavailable_error(kind: str, requested: Requested, checks: Iterable[BackendCheck]) -> BackendUnavailableError:
    """Build the error raised when a forced backend cannot run, naming the ones that would."""
    checks = list(checks)
    mine = next(c for c in checks if c.name == requested.name)
    runnable = [c.name for c in checks if c.ok]
    return BackendUnavailableError(
        f"{kind} backend {requested.name!r} (forced by {requested.source}) cannot run this call: "
        f"{mine.reason}. Backends that would run it: {', '.join(runnable) or 'none'}. "
        f"Pick one of those or 'auto'."
    )


_import_failures: dict[str, str | None] = {}


def import_failure(module: str) -> str | None:
    """Return why ``module`` cannot be imported, or None when it can (result cached).

    Optional extras (flash_attn, xformers, triton) are only ever imported through here or
    inside the functions that use them, so a CPU install never pays for or breaks on them.
    A broken install (ABI mismatch after a torch upgrade) surfaces as a reason string,
    not as an ImportError at ``import unihema``.
    """
    if module not in _import_failures:
        try:
            importlib.import_module(module)
            _import_failures[module] = None
        except Exception as exc:  # noqa: BLE001 - any import failure means "unavailable"
            _import_failures[module] = f"{module} is not importable ({type(exc).__name__}: {exc})"
    return _import_failures[module]


class LogOnce:
    """Log a dispatcher's choice once per shape class instead of once per call."""

    def __init__(self, logger: logging.Logger):
        self._logger = logger
        self._seen: set[Hashable] = set()

    def __call__(self, key: Hashable, message: str, *args: object) -> None:
        if key in self._seen:
            return
        self._seen.add(key)
        self._logger.info(message, *args)
