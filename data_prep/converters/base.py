"""The converter interface: plan the work in the main process, convert one unit in a worker.

``plan`` lists the source once (cheap: file names, index files) and returns picklable units
in a fixed order, so output does not depend on the number of workers; problems found while
planning (an unreadable index, a table row with no image) come back as outcomes too.
``convert`` turns one unit into outcomes, one per source record, and never raises for bad
data: it reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_prep.context import Context
from data_prep.problems import Outcome


@dataclass
class Plan:
    units: list
    problems: list[Outcome] = field(default_factory=list)


class Converter:
    name = ""
    space = "detection"  # the label space its class names map into
    primary = "detection"  # the task a record must serve to be written
    OPTIONS: dict = {}  # every option it accepts, with its default

    def label_space(self, options: dict) -> str:
        """The label space class names map into (a converter's options may change it)."""
        return self.space

    def check(self, options: dict) -> None:
        """Refuse option values this converter cannot use (ValueError naming the option), before any file is read."""

    def plan(self, ctx: Context) -> Plan:
        raise NotImplementedError

    def convert(self, unit, ctx: Context) -> list[Outcome]:
        raise NotImplementedError


def rel(path: Path, ctx: Context) -> str:
    """``path`` relative to --src, as origins name files."""
    try:
        return path.relative_to(ctx.src).as_posix()
    except ValueError:
        return str(path)


def by_split(value: str | dict) -> dict:
    """A ``{split: path}`` option; one path alone (a user's single file) has no upstream split."""
    return {"": value} if isinstance(value, str) else dict(value)


def key_of(path: Path, root: Path) -> str:
    """A record key: the path under ``root`` without its suffix."""
    return path.relative_to(root).with_suffix("").as_posix()


__all__ = ["Converter", "Plan", "by_split", "key_of", "rel"]
