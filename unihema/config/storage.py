"""Object-storage settings shared by data prep, the input pipeline and checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StorageConfig:
    # Where runs (checkpoints, TensorBoard logs, metrics) go: a local folder or s3://bucket/prefix.
    run_uri: str = "s3://unihema/runs"
    # S3 endpoint override for S3-compatible stores; "" uses AWS's own endpoints.
    endpoint_url: str = ""
    # "" = the bucket's own region, asked of the server once per process (AWS_REGION, else
    # us-east-1, where the server does not say); a region given here that differs from the
    # bucket's is an error naming both.
    region: str = ""
    # Empty means the standard AWS credential chain; never printed or saved.
    access_key_id: str = field(default="", metadata={"secret": True})
    secret_access_key: str = field(default="", metadata={"secret": True})
    # Start the embedded SeaweedFS server when no endpoint is given and a URI is s3://.
    embedded: bool = True
    embedded_dir: str = ".cache/unihema/s3"
