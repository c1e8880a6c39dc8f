"""Object storage: URIs, pyarrow/boto3 access with clear errors, the embedded S3 server, the session."""

from unihema.storage.embedded_s3 import EmbeddedS3, find_weed
from unihema.storage.session import StorageSession
from unihema.storage.uri import (
    StorageAccessError,
    StorageURI,
    boto3_client,
    bucket_region,
    check_access,
    describe_failure,
    endpoint_of,
    ensure_bucket,
    open_filesystem,
    parse_uri,
    s3_filesystem,
)

__all__ = [
    "EmbeddedS3",
    "StorageAccessError",
    "StorageSession",
    "StorageURI",
    "boto3_client",
    "bucket_region",
    "check_access",
    "describe_failure",
    "endpoint_of",
    "ensure_bucket",
    "find_weed",
    "open_filesystem",
    "parse_uri",
    "s3_filesystem",
]
