"""The storage settings a command works with, and the embedded S3 server it started for them.

Every entry point that touches ``s3://`` (pretrain, tune, evaluate, predict, export) needs
the same thing: if a URI it was given is on S3, no endpoint is configured and the config
allows it, start the embedded server and use its settings; stop it when the command ends.
This is the one place that does it.
"""

from __future__ import annotations

from typing import Iterable

from unihema.config import StorageConfig
from unihema.storage.embedded_s3 import EmbeddedS3
from unihema.storage.uri import StorageAccessError, endpoint_of


class StorageSession:
    """The storage settings in force, starting the embedded S3 server when an s3:// URI needs it."""

    def __init__(self, storage: StorageConfig, uris: Iterable[str | None] = ()):
        self.storage = storage
        self.server: EmbeddedS3 | None = None
        self.ensure(uris)

    def ensure(self, uris: Iterable[str | None]) -> StorageConfig:
        """Start the embedded server if one of ``uris`` is s3:// and no endpoint is configured."""
        wants_s3 = any(str(u).startswith("s3://") for u in uris if u)
        if wants_s3 and self.server is None and self.storage.embedded and not endpoint_of(self.storage):
            try:
                self.server = EmbeddedS3(self.storage.embedded_dir).start()
            except (OSError, RuntimeError, TimeoutError) as err:
                raise StorageAccessError(
                    f"cannot start the embedded S3 server in {self.storage.embedded_dir}: {err}"
                ) from None
            self.storage = self.server.storage_config()
        return self.storage

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> StorageSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["StorageSession"]
