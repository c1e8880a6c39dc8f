"""Object storage through the embedded SeaweedFS server: real S3 protocol, real signatures."""

import pytest

from unihema.config import StorageConfig
from unihema.data.shards import ShardReader, ShardWriter, read_manifest, write_manifest
from unihema.storage import StorageAccessError, check_access, ensure_bucket, open_filesystem, parse_uri

from .records import make_record

pytestmark = pytest.mark.slow


def test_parse_uri():
    """S3 and local URIs parse into bucket/key or a resolved path; others are refused."""
    uri = parse_uri("s3://bucket/a/b/")
    assert (uri.bucket, uri.key, uri.fs_path, str(uri.join("c"))) == (
        "bucket",
        "a/b",
        "bucket/a/b",
        "s3://bucket/a/b/c",
    )
    assert parse_uri("relative/dir").key.endswith("relative/dir")
    with pytest.raises(ValueError, match="unsupported storage URI"):
        parse_uri("gs://bucket/x")


def test_object_round_trip(embedded_s3):
    """Bytes written through pyarrow read back through boto3 and the other way round."""
    cfg = embedded_s3.storage_config()
    fs, path = open_filesystem("s3://unihema/roundtrip/a.bin", cfg)
    with fs.open_output_stream(path) as out:
        out.write(b"blood smear")
    client = embedded_s3.client()
    assert client.get_object(Bucket="unihema", Key="roundtrip/a.bin")["Body"].read() == b"blood smear"
    client.put_object(Bucket="unihema", Key="roundtrip/b.bin", Body=b"cells")
    with fs.open_input_stream("unihema/roundtrip/b.bin") as f:
        assert f.read() == b"cells"


def test_shards_round_trip_on_s3(embedded_s3):
    """Shards and manifest written to S3 read back valid with matching counts."""
    cfg = embedded_s3.storage_config()
    uri = "s3://unihema/unit-shards"
    with ShardWriter(uri, cfg) as writer:
        for i in range(5):
            writer.write(make_record(i, split="val" if i == 0 else "train"))
    manifest = write_manifest(uri, writer.stats, cfg)
    assert read_manifest(uri, cfg)["counts"] == manifest["counts"]
    reader = ShardReader(uri, "train", cfg)
    assert sorted(r["id"] for r in reader) == [f"rec-{i}" for i in range(1, 5)]
    assert reader.stats.errors == []


def test_wrong_credentials_name_endpoint_and_bucket_without_secret(embedded_s3):
    """Refused credentials give an error naming endpoint and bucket, and never the secret."""
    secret = "definitely-wrong-secret-4711"
    bad = embedded_s3.storage_config(secret_access_key=secret)
    for action in (
        lambda: check_access("s3://unihema/x", bad),
        lambda: ensure_bucket("s3://unihema", bad),
        lambda: list(ShardReader("s3://unihema/unit-shards", storage=bad)),
    ):
        with pytest.raises(StorageAccessError) as info:
            action()
        message = str(info.value)
        assert embedded_s3.endpoint_url in message and "'unihema'" in message
        assert "denied" in message and secret not in message


def test_wrong_credentials_on_write_are_reported(embedded_s3):
    """A shard upload refused by the server raises the storage error at flush time."""
    bad = embedded_s3.storage_config(secret_access_key="nope-nope-nope")
    writer = ShardWriter("s3://unihema/z", bad)
    writer.write(make_record())
    with pytest.raises(StorageAccessError, match="denied"):
        writer.close()


def test_unreachable_endpoint_fails_fast():
    """An endpoint nobody listens on fails with a message naming it."""
    cfg = StorageConfig(endpoint_url="http://127.0.0.1:9", access_key_id="a", secret_access_key="b")
    with pytest.raises(StorageAccessError, match="127.0.0.1:9"):
        check_access("s3://unihema/x", cfg)
