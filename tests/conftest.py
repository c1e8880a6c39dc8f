"""Test-wide settings: loopback-only networking, the embedded S3 server, the shared datasets.

The environment variables are set at import time, before any test imports Ray, so Ray and
its gloo groups bind to 127.0.0.1 and never advertise the machine's network address.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("UNIHEMA_SHARED_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def embedded_s3(tmp_path_factory):
    """A loopback SeaweedFS S3 server shared by the session's tests, with a ``unihema`` bucket."""
    from unihema.storage import EmbeddedS3

    server = EmbeddedS3(tmp_path_factory.mktemp("s3"))
    server.start()
    server.create_bucket("unihema")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real datasets in ../shared/datasets; skips the test when they are absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS} (set UNIHEMA_SHARED_DATASETS)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def subprocess_env() -> dict:
    """Environment for CLI subprocesses: nothing inherited from AWS or a Ray address, Ray on loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        GLOO_SOCKET_IFNAME="lo",
        RAY_USAGE_STATS_ENABLED="0",
        TORCH_EXTENSIONS_DIR=str(REPO_ROOT / ".cache" / "torch_extensions"),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="session")
def start_cli(subprocess_env):
    """Start ``python -m MODULE ARGS`` in its own session, output to a log file, as a user would."""
    import subprocess
    import sys

    def start(module: str, args: list[str], log: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env=subprocess_env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    return start
