"""StorageSession: the embedded S3 server starts only when an s3:// URI needs it, and stops on exit."""

from __future__ import annotations

import pytest

from unihema.config import StorageConfig
from unihema.storage import StorageAccessError, StorageSession
from unihema.storage import session as session_module


class FakeServer:
    started: list[str] = []

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.stopped = False

    def start(self):
        FakeServer.started.append(self.data_dir)
        return self

    def storage_config(self):
        return StorageConfig(endpoint_url="http://127.0.0.1:1", embedded=True, embedded_dir=self.data_dir)

    def stop(self):
        self.stopped = True


@pytest.fixture
def fake_server(monkeypatch):
    FakeServer.started = []
    monkeypatch.setattr(session_module, "EmbeddedS3", FakeServer)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    return FakeServer


def test_local_uris_start_nothing(fake_server, tmp_path):
    with StorageSession(StorageConfig(embedded=True, embedded_dir=str(tmp_path)), [str(tmp_path), None]) as s:
        assert s.server is None and s.storage.endpoint_url == ""
    assert fake_server.started == []


def test_s3_uri_starts_the_server_once_and_exit_stops_it(fake_server, tmp_path):
    with StorageSession(StorageConfig(embedded=True, embedded_dir=str(tmp_path)), ["s3://b/x"]) as s:
        server = s.server
        assert s.storage.endpoint_url == "http://127.0.0.1:1"
        s.ensure(["s3://b/y"])
    assert fake_server.started == [str(tmp_path)] and server.stopped and s.server is None


def test_configured_endpoint_or_no_embedded_starts_nothing(fake_server, tmp_path):
    StorageSession(StorageConfig(endpoint_url="http://s3.example:9000", embedded=True), ["s3://b/x"]).close()
    StorageSession(StorageConfig(embedded=False), ["s3://b/x"]).close()
    assert fake_server.started == []


def test_a_server_that_cannot_start_is_a_storage_error(monkeypatch, tmp_path):
    class Broken(FakeServer):
        def start(self):
            raise OSError("weed not found")

    monkeypatch.setattr(session_module, "EmbeddedS3", Broken)
    with pytest.raises(StorageAccessError, match="cannot start the embedded S3 server.*weed not found"):
        StorageSession(StorageConfig(embedded=True, embedded_dir=str(tmp_path)), ["s3://b/x"])
