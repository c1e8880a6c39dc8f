"""Credentials scoped to a prefix of a shared bucket: the access checks ask only for that prefix."""

from __future__ import annotations

import pytest

from unihema.storage import StorageAccessError, check_access, ensure_bucket

SCOPED_PREFIX = "second/team-a"  # the scoped_s3 fixture's (tests/storage/conftest.py)

pytestmark = pytest.mark.slow


def test_scoped_key_is_really_scoped(scoped_s3):
    """The server itself refuses the scoped key outside its prefix (so the tests below mean something)."""
    from botocore.exceptions import ClientError

    from unihema.storage import boto3_client

    client = boto3_client(scoped_s3.scoped_config(SCOPED_PREFIX))
    client.put_object(Bucket="second", Key="team-a/mine.txt", Body=b"ok")
    for call in (
        lambda: client.list_objects_v2(Bucket="second"),
        lambda: client.get_object(Bucket="second", Key="team-b/other-team.txt"),
        lambda: client.head_bucket(Bucket="second"),
    ):
        with pytest.raises(ClientError):
            call()


def test_access_check_lists_only_the_prefix(scoped_s3):
    """check_access and ensure_bucket pass for the key's prefix, even one not written yet."""
    cfg = scoped_s3.scoped_config(SCOPED_PREFIX)
    for uri in ("s3://second/team-a", "s3://second/team-a/runs/new-run"):
        ensure_bucket(uri, cfg)  # HEAD bucket is refused to this key: the prefix listing decides
        check_access(uri, cfg)


def test_outside_the_prefix_is_a_clear_error(scoped_s3):
    """Another prefix of the same bucket is refused with the bucket and URI named, no secret."""
    cfg = scoped_s3.scoped_config(SCOPED_PREFIX)
    for action in (lambda: check_access("s3://second/team-b", cfg), lambda: ensure_bucket("s3://second/team-b", cfg)):
        with pytest.raises(StorageAccessError) as info:
            action()
        message = str(info.value)
        assert "'second'" in message and "s3://second/team-b" in message and "do not cover this prefix" in message
        assert cfg.secret_access_key not in message


def test_open_storage_and_run_files_with_a_scoped_key(scoped_s3, tmp_path):
    """A run whose data and run folder sit in the scoped prefix passes open_storage and writes its files."""
    from unihema.config import load_config
    from unihema.train.launch import open_storage
    from unihema.train.run_files import read_json, write_json

    scoped = scoped_s3.scoped_config(SCOPED_PREFIX)
    cfg = load_config(
        "tiny",
        overrides=[
            "data.uri=s3://second/team-a/data",
            "storage.run_uri=s3://second/team-a/runs",
            f"storage.endpoint_url={scoped.endpoint_url}",
            f"storage.access_key_id={scoped.access_key_id}",
            f"storage.secret_access_key={scoped.secret_access_key}",
            "storage.embedded=false",
        ],
    )
    session = open_storage(cfg)
    try:
        assert session.server is None
        write_json("s3://second/team-a/runs/r1", "status.json", {"status": "completed"}, session.storage)
        assert read_json("s3://second/team-a/runs/r1", "status.json", session.storage) == {"status": "completed"}
    finally:
        session.close()
    outside = load_config(
        "tiny",
        overrides=[
            "data.uri=s3://second/team-a/data",
            "storage.run_uri=s3://second/team-b/runs",
            f"storage.endpoint_url={scoped.endpoint_url}",
            f"storage.access_key_id={scoped.access_key_id}",
            f"storage.secret_access_key={scoped.secret_access_key}",
            "storage.embedded=false",
        ],
    )
    with pytest.raises(StorageAccessError, match="s3://second/team-b/runs"):
        open_storage(outside)
