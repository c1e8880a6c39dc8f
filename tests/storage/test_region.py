"""The bucket's region: discovered from the server, and an explicit storage.region that disagrees is an error.

SeaweedFS keeps no region per bucket (it answers GetBucketLocation with an empty constraint
and sends no ``x-amz-bucket-region``), so the case of a bucket in another region is played by
a loopback HTTP server answering HEAD the way AWS S3 does; the rest runs against SeaweedFS.
"""

from __future__ import annotations

import http.server
import threading

import pytest

from unihema.config import StorageConfig
from unihema.storage import StorageAccessError, bucket_region, check_access, open_filesystem

pytestmark = pytest.mark.slow


class _AwsLikeHead(http.server.BaseHTTPRequestHandler):
    """Answers HEAD /<bucket> as AWS does: with the bucket's region in ``x-amz-bucket-region``."""

    def do_HEAD(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("x-amz-bucket-region", "eu-west-1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def aws_like_endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AwsLikeHead)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_region_is_discovered(aws_like_endpoint):
    """With no storage.region, requests are signed for the region the server names."""
    cfg = StorageConfig(endpoint_url=aws_like_endpoint, access_key_id="k", secret_access_key="s", region="")
    assert bucket_region("euro-bucket", cfg) == "eu-west-1"
    fs, _ = open_filesystem("s3://euro-bucket/runs", cfg)
    assert fs.region == "eu-west-1"


def test_explicit_region_mismatch_is_a_clear_error(aws_like_endpoint):
    """storage.region=us-east-1 for a bucket in eu-west-1 names both regions and the setting to change."""
    cfg = StorageConfig(endpoint_url=aws_like_endpoint, access_key_id="k", secret_access_key="s", region="us-east-1")
    with pytest.raises(StorageAccessError) as info:
        check_access("s3://euro-bucket2/runs", cfg)
    message = str(info.value)
    assert "'euro-bucket2'" in message and "eu-west-1" in message and "storage.region=us-east-1" in message


def test_seaweedfs_names_no_region_and_any_configured_one_works(scoped_s3, monkeypatch):
    """A server that names no region gets storage.region (else AWS_REGION, else us-east-1), and it signs fine."""
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert bucket_region("second", scoped_s3.storage_config(region="")) == "us-east-1"
    eu = scoped_s3.storage_config(region="eu-central-1")
    assert bucket_region("second", eu) == "eu-central-1"
    check_access("s3://second/team-b", eu)
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    assert bucket_region("unihema", scoped_s3.storage_config(region="")) == "ap-southeast-2"
