"""One download of a checkpoint per node when a run resumes, verified, shared by the node's ranks.

Ray's ``Checkpoint.as_directory()`` shares a download among the ranks of a node only while
they read at the same time: the last reader to leave deletes it, so a rank that gets there
after the others are done (its engine slower to build) fetches every
rank's files again, into the system temp folder, and nothing checks what arrived. Here the
folder is named after the checkpoint's path (``train.resume_cache_dir``, else the temp
folder); the first rank of the node to take its lock downloads it and checks sizes and
sha256 against the manifests the ranks wrote; the others find it complete. The node's local
rank 0 removes it after a barrier, once every rank has loaded. A copy left by an attempt
that failed is complete and verified, and a retry on the node reuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.fs as pafs

from unihema.storage.verify import verify_local_checkpoint

log = logging.getLogger(__name__)
_DONE = ".unihema-complete"


@dataclass
class NodeCopy:
    path: Path  # the local folder holding the checkpoint
    downloaded: bool  # whether this process fetched it (False: another rank of the node did, or it is local)
    owned: bool  # a node-local copy to remove after use (False: the checkpoint's own local folder)


def cache_dir_for(filesystem: pafs.FileSystem, path: str, base: str | Path | None = None) -> Path:
    """The node-local folder for one checkpoint: the same for every rank that resumes from it."""
    digest = hashlib.sha256(f"{filesystem.type_name}:{path}".encode()).hexdigest()[:20]
    return Path(base or tempfile.gettempdir(), f"unihema-resume-{digest}")


def fetch_once(
    filesystem: pafs.FileSystem, path: str, base: str | Path | None = None, lock_timeout_s: float = 3600.0
) -> NodeCopy:
    """A verified local copy of the checkpoint at ``path``, downloaded by one process per node."""
    if isinstance(filesystem, pafs.LocalFileSystem):
        return NodeCopy(Path(path), downloaded=False, owned=False)
    from filelock import FileLock

    target = cache_dir_for(filesystem, path, base)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock", timeout=lock_timeout_s):
        if (target / _DONE).is_file():
            return NodeCopy(target, downloaded=False, owned=True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)  # an incomplete copy from a process that died
        try:
            pafs.copy_files(
                path, str(partial), source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem()
            )
            checked = verify_local_checkpoint(partial, where=f"checkpoint {path}")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(target)
        (target / _DONE).touch()
    log.info("downloaded checkpoint %s to %s (%d files verified)", path, target, checked)
    return NodeCopy(target, downloaded=True, owned=True)


def release(copy: NodeCopy, local_rank: int) -> None:
    """Remove the node's copy; call on every rank after all of them have loaded (local rank 0 removes)."""
    if copy.owned and local_rank == 0:
        with contextlib.suppress(OSError):
            (copy.path / _DONE).unlink()
        shutil.rmtree(copy.path, ignore_errors=True)


@contextlib.contextmanager
def node_local_checkpoint(checkpoint, local_rank: int, barrier, base: str | Path | None = None) -> Iterator[NodeCopy]:
    """``fetch_once`` for a Ray Train checkpoint; ``barrier()`` (all ranks) precedes the clean-up.

    On an error the copy stays (no barrier: the other ranks may never reach it).
    """
    copy = fetch_once(checkpoint.filesystem, checkpoint.path, base)
    yield copy
    barrier()
    release(copy, local_rank)


__all__ = ["NodeCopy", "cache_dir_for", "fetch_once", "node_local_checkpoint", "release"]
