"""Which split a record goes to: the upstream split when the dataset gives one, else a hash.

The hash is of the source image's content (decoded pixels), not of its file name: identical
pictures land in the same split wherever they occur, in one dataset or across datasets, so
a duplicate cannot leak from train into test. It depends on nothing else (not the number of
workers, not the order of files), and a ``salt`` can reshuffle on purpose.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from unihema.data.schema import SPLITS

DEFAULT_RATIOS = (0.8, 0.1, 0.1)

# Upstream names for the three splits, as datasets spell them.
_ALIASES = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "tst": "test",
}
# When an image is listed in several upstream splits, the most held-out one wins.
_PRIORITY = {"test": 2, "val": 1, "train": 0}


def split_name(raw: str) -> str | None:
    """The schema's split for an upstream name ("Training", "valid", "TestA" -> test), or None."""
    key = raw.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    for alias, split in _ALIASES.items():
        if key.startswith(alias):
            return split
    return None


def hash_split(identity: str, ratios: tuple[float, float, float] = DEFAULT_RATIOS, salt: str = "") -> str:
    """A deterministic split for ``identity`` with the given train/val/test ratios."""
    total = sum(ratios)
    if total <= 0 or any(r < 0 for r in ratios):
        raise ValueError(f"split ratios must be non-negative and not all zero, got {ratios}")
    digest = hashlib.blake2b(f"{salt}:{identity}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    edge = 0.0
    for split, ratio in zip(SPLITS, ratios):
        edge += ratio / total
        if u < edge:
            return split
    return SPLITS[-1]


def merge_split(current: str | None, new: str) -> str:
    """The split kept when an image appears in two upstream lists (the more held-out one)."""
    if current is None or _PRIORITY[new] > _PRIORITY[current]:
        return new
    return current


def read_split_lists(folder: Path) -> tuple[dict[str, str], list[str]]:
    """VOC-style ImageSets lists ({split}.txt, one id per line) -> ({id: split}, conflicts).

    ``trainval`` is only used when there is no separate train/val list.
    """
    lists = {p.stem: p for p in sorted(folder.glob("*.txt"))}
    names = [n for n in lists if split_name(n) in SPLITS and n != "trainval"]
    if "trainval" in lists and not any(split_name(n) in ("train", "val") for n in names):
        names.append("trainval")
    table: dict[str, str] = {}
    conflicts: list[str] = []
    for name in names:
        split = "train" if name == "trainval" else split_name(name)
        for line in lists[name].read_text().splitlines():
            ident = line.split()[0] if line.split() else ""
            if not ident:
                continue
            if ident in table and table[ident] != split:
                conflicts.append(f"{ident} listed in both {table[ident]} and {split}")
            table[ident] = merge_split(table.get(ident), split)
    return table, conflicts


class SplitAssigner:
    """Upstream split when known, else the content hash; counts which rule decided."""

    def __init__(
        self, ratios: tuple[float, float, float] = DEFAULT_RATIOS, salt: str = "", test_from_train: float = 0.0
    ):
        if not 0.0 <= test_from_train < 1.0:
            raise ValueError(f"test_from_train must be in [0, 1), got {test_from_train}")
        self.ratios = tuple(ratios)
        self.salt = salt
        self.test_from_train = test_from_train

    def __call__(self, content_hash: str, upstream: str | None = None) -> tuple[str, str]:
        """(split, rule) where rule is "upstream", "test_from_train" or "hash"."""
        if upstream:
            split = split_name(upstream)
            if split is None:
                raise ValueError(f"unknown upstream split name {upstream!r}")
            if (
                split == "train"
                and self.test_from_train
                and hash_split(content_hash, (1 - self.test_from_train, 0.0, self.test_from_train), self.salt) == "test"
            ):
                return "test", "test_from_train"
            return split, "upstream"
        return hash_split(content_hash, self.ratios, self.salt), "hash"


__all__ = ["DEFAULT_RATIOS", "SplitAssigner", "hash_split", "merge_split", "read_split_lists", "split_name"]
