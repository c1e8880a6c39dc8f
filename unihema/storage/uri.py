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
        key = (
            "/".join([self.key.rstrip("/"), *[p.strip("/") for p in parts if p]]).lstrip("/")
            if self.is_s3
            else str(Path(self.key, *parts))
        )
        return StorageURI(self.scheme, self.bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}".rstrip("/") if self.is_s3 else self.key


def parse_uri(uri: str) -> StorageURI:
    if not uri:
        raise ValueError("empty storage URI")
    if uri.startswith("s3://"):
        rest = uri[len("s3://") :]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ValueError(f"storage URI {uri!r} names no bucket")
        return StorageURI("s3", bucket, key.strip("/"))
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported storage URI {uri!r}: use s3://bucket/prefix or a local path")
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return StorageURI("file", "", str(Path(path).expanduser().resolve()))


def endpoint_of(cfg: StorageConfig) -> str:
    """The S3 endpoint in force: the config's, else the standard AWS_ENDPOINT_URL variables."""
    return cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")


def _default_region(cfg: StorageConfig) -> str:
    return cfg.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


# (endpoint, bucket, access key, configured region) -> the region requests to that bucket are signed for.
_REGIONS: dict[tuple[str, str, str, str], str] = {}


def _discover_region(bucket: str, cfg: StorageConfig) -> str | None:
    """The region the server says ``bucket`` is in, or None when it does not say."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = _client(cfg, _default_region(cfg), attempts=1)
    try:
        headers = client.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]
    except ClientError as err:
        # AWS names the bucket's region even when it refuses the HEAD (403 for a prefix-scoped
        # policy, 301 for another region's endpoint).
        headers = err.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    except BotoCoreError:
        raise  # unreachable: the caller leaves it to the request that follows to say so
    if headers.get("x-amz-bucket-region"):
        return headers["x-amz-bucket-region"]
    try:
        location = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except ClientError:
        return None
    if location:
        return "eu-west-1" if location == "EU" else location  # S3's legacy name for Ireland
    # AWS answers an empty constraint for us-east-1; other servers (SeaweedFS) answer it for all.
    return None if endpoint_of(cfg) else "us-east-1"


def bucket_region(bucket: str, cfg: StorageConfig) -> str:
    """The region to sign requests to ``bucket`` for: the bucket's own, found once per process.

    An explicit ``storage.region`` that differs from the bucket's is a StorageAccessError saying
    both, not requests that fail with a signature or redirect error. A server that names no
    region (SeaweedFS, most S3-compatible stores) gets ``storage.region``, else AWS_REGION,
    else us-east-1.
    """
    from botocore.exceptions import BotoCoreError

    key = (endpoint_of(cfg), bucket, cfg.access_key_id, cfg.region)
    if key not in _REGIONS:
        try:
            found = _discover_region(bucket, cfg)
        except BotoCoreError:  # not cached: a later call may reach the server
            return _default_region(cfg)
        if found and cfg.region and found != cfg.region:
            endpoint = endpoint_of(cfg) or "the AWS default endpoint"
            raise StorageAccessError(
                f"object storage at {endpoint}, bucket {bucket!r}: the bucket is in region {found}, but "
                f"storage.region={cfg.region}: set storage.region={found}, or leave storage.region empty to use "
                f"the bucket's own region"
            )
        _REGIONS[key] = found or _default_region(cfg)
    return _REGIONS[key]


def s3_filesystem(cfg: StorageConfig, bucket: str | None = None) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem; with ``bucket``, signed for that bucket's region (:func:`bucket_region`)."""
    endpoint = endpoint_of(cfg)
    kwargs: dict = {"region": bucket_region(bucket, cfg) if bucket else _default_region(cfg)}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if cfg.access_key_id and cfg.secret_access_key:
        kwargs.update(access_key=cfg.access_key_id, secret_key=cfg.secret_access_key)
    # Bounded retries: a wrong endpoint should fail in seconds, not minutes.
    kwargs.update(connect_timeout=5, request_timeout=60, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3))
    return pafs.S3FileSystem(**kwargs)


def open_filesystem(uri: str | StorageURI, cfg: StorageConfig | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a URI; S3 settings come from ``cfg`` and the AWS environment."""
    parsed = parse_uri(uri) if isinstance(uri, str) else uri
    if parsed.is_s3:
        return s3_filesystem(cfg or StorageConfig(), parsed.bucket), parsed.fs_path
    return pafs.LocalFileSystem(), parsed.fs_path


def _client(cfg: StorageConfig, region: str, attempts: int = 5):
    import boto3
    from botocore.config import Config

    kwargs: dict = {
        "region_name": region,
        "config": Config(retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=5),
    }
    endpoint = endpoint_of(cfg)
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if cfg.access_key_id and cfg.secret_access_key:
        kwargs.update(aws_access_key_id=cfg.access_key_id, aws_secret_access_key=cfg.secret_access_key)
    return boto3.client("s3", **kwargs)


def boto3_client(cfg: StorageConfig, bucket: str | None = None):
    """A boto3 S3 client with the same endpoint, credentials and region as the pyarrow filesystem."""
    return _client(cfg, bucket_region(bucket, cfg) if bucket else _default_region(cfg))


_DENIED_MARKERS = (
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "403",
    "Forbidden",
    "authentication",
    "credentials",
)


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
        reason = (
            "access denied: the credentials were refused, or do not cover this prefix "
            "(check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the policy)"
        )
    elif "nosuchbucket" in flat or "does not exist" in flat:
        reason = "the bucket does not exist"
    else:
        reason = f"request failed: {text.splitlines()[0][:300] if text else type(err).__name__}"
    return StorageAccessError(f"object storage at {endpoint}, bucket {parsed.bucket!r} ({parsed}): {reason}")


def check_access(uri: str, cfg: StorageConfig) -> None:
    """Fail fast, with a clear message, when ``uri`` cannot be listed with the given settings.

    Only the URI's own prefix is listed, so credentials scoped to that prefix pass.
    """
    parsed = parse_uri(uri)
    try:
        fs, path = open_filesystem(parsed, cfg)
        fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as err:
        raise describe_failure(parsed, cfg, err) from None


def ensure_bucket(uri: str, cfg: StorageConfig) -> None:
    """Create the URI's bucket if it is missing (no-op for local paths)."""
    parsed = parse_uri(uri)
    if not parsed.is_s3:
        Path(parsed.key).mkdir(parents=True, exist_ok=True)
        return
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = boto3_client(cfg, parsed.bucket)
        client.head_bucket(Bucket=parsed.bucket)
        return
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("403", "AccessDenied", "Forbidden"):
            # Credentials scoped to a prefix may not HEAD the bucket itself: the bucket is there
            # when they can list their prefix; if they cannot, that error names the reason.
            _list_prefix(client, parsed, cfg)
            return
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise describe_failure(parsed, cfg, err) from None
    except BotoCoreError as err:
        raise describe_failure(parsed, cfg, err) from None
    try:
        client.create_bucket(Bucket=parsed.bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise describe_failure(parsed, cfg, err) from None


def _list_prefix(client, parsed: StorageURI, cfg: StorageConfig) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    prefix = f"{parsed.key.rstrip('/')}/" if parsed.key else ""
    try:
        client.list_objects_v2(Bucket=parsed.bucket, Prefix=prefix, MaxKeys=1)
    except (ClientError, BotoCoreError) as err:
        raise describe_failure(parsed, cfg, err) from None
