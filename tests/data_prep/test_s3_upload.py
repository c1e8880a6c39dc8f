"""Shard uploads to the embedded S3 server: multipart, checksums, retries, skips and refused credentials."""

import pytest
from botocore.exceptions import ClientError

from data_prep.upload import S3Uploader, UploadError
from unihema.storage import StorageAccessError

from .helpers import spec
from .test_pipeline import _good_voc

pytestmark = pytest.mark.slow


class _Flaky:
    """A boto3 client whose first ``fail`` put_object calls fail as S3 does under load."""

    def __init__(self, real, fail=0, wrong_sha=False):
        self.real, self.fail, self.wrong_sha, self.puts = real, fail, wrong_sha, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def put_object(self, **kw):
        self.puts += 1
        if self.puts <= self.fail:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "reduce your request rate"}}, "PutObject")
        return self.real.put_object(**kw)

    def head_object(self, **kw):
        head = self.real.head_object(**kw)
        if self.wrong_sha:
            head["Metadata"] = {"sha256": "0" * 64}
        return head


def test_multipart_upload_verified_then_skipped(embedded_s3):
    """A shard larger than a part goes up in parts, its ETag checks out, and a second upload is skipped."""
    up = S3Uploader("s3://unihema/up/a", embedded_s3.storage_config(), part_size=5 << 20)
    payload = bytes(range(256)) * (11 << 12)  # 11 MiB: three parts
    up("split=train/x-00000.parquet", payload)
    head = embedded_s3.client().head_object(Bucket="unihema", Key="up/a/split=train/x-00000.parquet")
    assert head["ETag"].strip('"').endswith("-3") and head["ContentLength"] == len(payload)
    up("split=train/x-00000.parquet", payload)
    assert up.uploaded == ["split=train/x-00000.parquet"] and up.skipped == up.uploaded


def test_transient_errors_are_retried_and_mismatches_fail(embedded_s3):
    """SlowDown is retried with backoff; a stored object that never matches its checksum fails the upload."""
    cfg = embedded_s3.storage_config()
    flaky = _Flaky(embedded_s3.client(), fail=2)
    up = S3Uploader("s3://unihema/up/b", cfg, backoff_s=0.01, client=flaky)
    up("s.parquet", b"shard bytes")
    assert flaky.puts == 3 and up.uploaded == ["s.parquet"]
    bad = S3Uploader(
        "s3://unihema/up/c",
        cfg,
        backoff_s=0.01,
        attempts=2,
        skip_existing=False,
        client=_Flaky(embedded_s3.client(), wrong_sha=True),
    )
    with pytest.raises(UploadError, match="giving up after 2 attempts"):
        bad("s.parquet", b"shard bytes")


def test_refused_credentials_fail_at_once_without_the_secret(embedded_s3):
    """Wrong credentials raise the storage error naming endpoint and bucket, never the secret."""
    cfg = embedded_s3.storage_config(secret_access_key="not-the-secret-123")
    with pytest.raises(StorageAccessError, match="denied") as info:
        S3Uploader("s3://unihema/up/d", cfg)("s.parquet", b"x")
    assert "not-the-secret-123" not in str(info.value)


def test_convert_to_s3_and_rerun_skips(embedded_s3, tmp_path):
    """A conversion to S3 validates, and re-running it uploads nothing new."""
    src = _good_voc(tmp_path / "voc", n=8)
    ds = spec("voc", labels={"RBC": "RBC"})
    cfg = embedded_s3.storage_config()
    from data_prep import audit
    from data_prep.pipeline import ConvertSettings, convert

    first = convert(
        ds, src, "s3://unihema/up/voc", cfg, ConvertSettings(workers=1, progress=False, target_shard_bytes=10_000)
    )
    second = convert(
        ds, src, "s3://unihema/up/voc", cfg, ConvertSettings(workers=1, progress=False, target_shard_bytes=10_000)
    )
    assert len(first.uploaded) > 1 and second.uploaded == [] and len(second.skipped) == len(first.uploaded)
    assert audit.validate("s3://unihema/up/voc", cfg).ok
