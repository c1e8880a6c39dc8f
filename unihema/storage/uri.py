"""One way to name storage: ``s3://bucket/prefix`` or a local path, opened as a pyarrow filesystem.

Data prep, the Ray Data pipeline and checkpointing all go through here, so endpoint
overrides, credentials and the error message for a refused request are the same everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from unihema.config import StorageConfig


class StorageAccessError(RuntimeError):
    """Object storage refused or could not be reached; the message never contains a secret."""


@dataclass(frozen=True)
class StorageURI:
    scheme: str  # "s3" or "file"
    bucket: str  # "" for local paths
    key: str  # path inside the bucket, or the absolute local path

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    @property
    def fs_path(self) -> str:
        """The path as pyarrow filesystems name it ("bucket/key" for S3)."""
        return f"{self.bucket}/{self.key}".rstrip("/") if self.is_s3 else self.key

    def join(self, *parts: str) -> StorageURI:
        key = "/".join([self.key.rstrip("/"), *[p.strip("/") for p in parts if p]]).lstrip("/") if self.is_s3 \
            else str(Path(self.key, *parts))
        return StorageURI(self.scheme, self.bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}".rstrip("/") if self.is_s3 else self.key


def parse_uri(uri: str) -> StorageURI:
    if not uri:
        raise ValueError("empty storage URI")
    if uri.startswith("s3://"):
        rest = uri[len("s3://"):]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ValueError(f"storage URI {uri!r} names no bucket")
        return StorageURI("s3", bucket, key.strip("/"))
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported storage URI {uri!r}: use s3://bucket/prefix or a local path")
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    return StorageURI("file", "", str(Path(path).expanduser().resolve()))


def endpoint_of(cfg: StorageConfig) -> str:
    """The S3 endpoint in force: the config's, else the standard AWS_ENDPOINT_URL variables."""
    return cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")


def s3_filesystem(cfg: StorageConfig) -> pafs.S3FileSystem:
    endpoint = endpoint_of(cfg)
    kwargs: dict = {"region": cfg.region}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if cfg.access_key_id and cfg.secret_access_key:
        kwargs.update(access_key=cfg.access_key_id, secret_key=cfg.secret_access_key)
    # Bounded retries: a wrong endpoint should fail in seconds, not minutes.
    kwargs.update(connect_timeout=5, request_timeout=60,
                  retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3))
    return pafs.S3FileSystem(**kwargs)


def open_filesystem(uri: str | StorageURI, cfg: StorageConfig | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a URI; S3 settings come from ``cfg`` and the AWS environment."""
    parsed = parse_uri(uri) if isinstance(uri, str) else uri
    if parsed.is_s3:
        return s3_filesystem(cfg or StorageConfig()), parsed.fs_path
    return pafs.LocalFileSystem(), parsed.fs_path


def boto3_client(cfg: StorageConfig):
    """A boto3 S3 client with the same endpoint and credentials as the pyarrow filesystem."""
    import boto3
    from botocore.config import Config

    kwargs: dict = {"region_name": cfg.region,
                    "config": Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5)}
    endpoint = endpoint_of(cfg)
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if cfg.access_key_id and cfg.secret_access_key:
        kwargs.update(aws_access_key_id=cfg.access_key_id, aws_secret_access_key=cfg.secret_access_key)
    return boto3.client("s3", **kwargs)


_DENIED_MARKERS = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden",
                   "authentication", "credentials")


def describe_failure(uri: str | StorageURI, cfg: StorageConfig, err: BaseException) -> StorageAccessError:
    """Turn a low-level S3 error into one that names the endpoint and bucket, and no secret."""
    parsed = parse_uri(uri) if isinstance(uri, str) else uri
    endpoint = endpoint_of(cfg) or "the AWS default endpoint"
    text = str(err)
    for secret in (cfg.secret_access_key, os.environ.get("AWS_SECRET_ACCESS_KEY", "")):
        if secret:
            text = text.replace(secret, "***")
    flat = text.lower().replace("_", "")  # pyarrow says SIGNATURE_DOES_NOT_MATCH, boto3 SignatureDoesNotMatch
    if any(marker.lower() in flat for marker in _DENIED_MARKERS):
        reason = "access denied: the credentials were refused (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
    elif "nosuchbucket" in flat or "does not exist" in flat:
        reason = "the bucket does not exist"
    else:
        reason = f"request failed: {text.splitlines()[0][:300] if text else type(err).__name__}"
    return StorageAccessError(f"object storage at {endpoint}, bucket {parsed.bucket!r} ({parsed}): {reason}")


def check_access(uri: str, cfg: StorageConfig) -> None:
    """Fail fast, with a clear message, when ``uri`` cannot be listed with the given settings."""
    parsed = parse_uri(uri)
    fs, path = open_filesystem(parsed, cfg)
    try:
        fs.get_file_info(pafs.FileSelector(parsed.bucket if parsed.is_s3 else path, allow_not_found=True))
    except OSError as err:
        raise describe_failure(parsed, cfg, err) from None


def ensure_bucket(uri: str, cfg: StorageConfig) -> None:
    """Create the URI's bucket if it is missing (no-op for local paths)."""
    parsed = parse_uri(uri)
    if not parsed.is_s3:
        Path(parsed.key).mkdir(parents=True, exist_ok=True)
        return
    client = boto3_client(cfg)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.head_bucket(Bucket=parsed.bucket)
        return
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise describe_failure(parsed, cfg, err) from None
    except BotoCoreError as err:
        raise describe_failure(parsed, cfg, err) from None
    try:
        client.create_bucket(Bucket=parsed.bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise describe_failure(parsed, cfg, err) from None
