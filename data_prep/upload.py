"""Put finished shards on storage: multipart S3 uploads with retries and checksums, or local files.

Plugged into ``ShardWriter(uploader=...)``. Each shard's sha256 travels as object metadata,
so a re-run can skip a shard that is already there with the same checksum (conversion is
deterministic, so an unchanged source gives byte-identical shards). After an upload the
object is checked: size, the sha256 metadata, and the ETag against the MD5s computed here
(single PUT: MD5 of the object; multipart: MD5 of the part MD5s, ``-N``). Where the store
uses other ETags (KMS encryption), the object is read back and hashed instead. Credentials
come from StorageConfig or the standard AWS chain and are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import time
from pathlib import Path

from unihema.config import StorageConfig
from unihema.storage import StorageURI, boto3_client, describe_failure, parse_uri

log = logging.getLogger(__name__)

_TRANSIENT_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestTimeTooSkewed",
    "500",
    "502",
    "503",
    "504",
    "BadDigest",
    "IncompleteBody",
    "NoSuchUpload",
}


class UploadError(RuntimeError):
    """A shard could not be stored and verified after every retry."""


class _Mismatch(Exception):
    """The stored object differs from what was sent (retryable)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _transient(err: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(err, _Mismatch):
        return True
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code", "")) in _TRANSIENT_CODES
    return isinstance(err, BotoCoreError)  # connection resets, timeouts, incomplete reads


class S3Uploader:
    """``uploader(name, payload)`` for s3:// URIs."""

    def __init__(
        self,
        uri: str | StorageURI,
        storage: StorageConfig | None = None,
        *,
        skip_existing: bool = True,
        part_size: int = 16 << 20,
        attempts: int = 4,
        backoff_s: float = 0.5,
        client=None,
    ):
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri
        self.storage = storage or StorageConfig()
        self.skip_existing = skip_existing
        self.part_size = max(part_size, 5 << 20)  # S3's minimum for every part but the last
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.client = client or boto3_client(self.storage, self.uri.bucket)
        self.uploaded: list[str] = []
        self.skipped: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.uri.key}/{name}".lstrip("/")

    def __call__(self, name: str, payload: bytes) -> None:
        key, sha = self.key(name), _sha256(payload)
        if self.skip_existing and self._already_there(key, sha, len(payload)):
            log.info("shard %s already present with the same sha256: skipped", name)
            self.skipped.append(name)
            return
        for attempt in range(1, self.attempts + 1):
            try:
                etag = self._upload(key, payload, sha)
                self._verify(key, payload, sha, etag)
                self.uploaded.append(name)
                return
            except Exception as err:
                if not _transient(err):
                    raise describe_failure(self.uri, self.storage, err) from None
                if attempt == self.attempts:
                    raise UploadError(
                        f"shard {name} to {self.uri}: giving up after {attempt} attempts "
                        f"({type(err).__name__}: {str(err)[:200]})"
                    ) from None
                delay = self.backoff_s * 2 ** (attempt - 1) * (1 + random.random())
                log.warning(
                    "shard %s: attempt %d failed (%s), retrying in %.1fs", name, attempt, type(err).__name__, delay
                )
                time.sleep(delay)

    def _already_there(self, key: str, sha: str, size: int) -> bool:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.uri.bucket, Key=key)
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise describe_failure(self.uri, self.storage, err) from None
        return head.get("ContentLength") == size and head.get("Metadata", {}).get("sha256") == sha

    def _upload(self, key: str, payload: bytes, sha: str) -> str:
        """Store the object; returns the ETag it should have."""
        bucket, meta = self.uri.bucket, {"sha256": sha}
        if len(payload) <= self.part_size:
            md5 = hashlib.md5(payload).digest()
            self.client.put_object(
                Bucket=bucket, Key=key, Body=payload, Metadata=meta, ContentMD5=base64.b64encode(md5).decode()
            )
            return md5.hex()
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=meta)["UploadId"]
        try:
            parts, digests = [], []
            for number, start in enumerate(range(0, len(payload), self.part_size), start=1):
                chunk = payload[start : start + self.part_size]
                md5 = hashlib.md5(chunk).digest()
                digests.append(md5)
                resp = self.client.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                    ContentMD5=base64.b64encode(md5).decode(),
                )
                parts.append({"PartNumber": number, "ETag": resp["ETag"]})
            self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception:  # the original error is the one worth reporting
                pass
            raise
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"

    def _verify(self, key: str, payload: bytes, sha: str, expected_etag: str) -> None:
        head = self.client.head_object(Bucket=self.uri.bucket, Key=key)
        if head.get("ContentLength") != len(payload):
            raise _Mismatch(f"stored size {head.get('ContentLength')} != {len(payload)}")
        if head.get("Metadata", {}).get("sha256") != sha:
            raise _Mismatch("stored sha256 metadata differs")
        etag = str(head.get("ETag", "")).strip('"')
        if etag == expected_etag:
            return
        body = self.client.get_object(Bucket=self.uri.bucket, Key=key)["Body"].read()
        if _sha256(body) != sha:
            raise _Mismatch("stored bytes differ from the shard sent")


class LocalUploader:
    """``uploader(name, payload)`` for local folders: atomic write, same skip and check."""

    def __init__(self, uri: str | StorageURI, *, skip_existing: bool = True):
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri
        self.skip_existing = skip_existing
        self.uploaded: list[str] = []
        self.skipped: list[str] = []

    def __call__(self, name: str, payload: bytes) -> None:
        path = Path(self.uri.key) / name
        sha = _sha256(payload)
        if (
            self.skip_existing
            and path.is_file()
            and path.stat().st_size == len(payload)
            and _sha256(path.read_bytes()) == sha
        ):
            self.skipped.append(name)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, path)  # readers never see half a shard
        if _sha256(path.read_bytes()) != sha:
            raise UploadError(f"shard {path} does not read back as written")
        self.uploaded.append(name)


def make_uploader(uri: str, storage: StorageConfig | None = None, *, skip_existing: bool = True, **kwargs):
    parsed = parse_uri(uri)
    if parsed.is_s3:
        return S3Uploader(parsed, storage, skip_existing=skip_existing, **kwargs)
    return LocalUploader(parsed, skip_existing=skip_existing)


__all__ = ["LocalUploader", "S3Uploader", "UploadError", "make_uploader"]
