"""A private Ray head for the cluster tests: loopback only, token auth on, torn down by PID.

``ray stop`` would kill every Ray process on the machine, other people's clusters included,
so the head runs as ``ray start --head --block`` in a process group of its own and the
fixture ends that group, then any straggler whose command line names its temp dir.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

VENV_BIN = Path(sys.executable).parent


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports that are free now (held open together so none repeats)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(closing(socket.socket())) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_port_range(width: int, low: int = 20000, high: int = 30000) -> tuple[int, int]:
    """A run of ``width`` consecutive loopback ports that are all free now, for Ray's workers."""
    rng = secrets.SystemRandom()
    for _ in range(50):
        start = rng.randrange(low, high - width)
        ok = True
        for port in range(start, start + width):
            with closing(socket.socket()) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return start, start + width - 1
    raise RuntimeError("no free run of worker ports found")


def loopback_env(token: str) -> dict[str, str]:
    """Environment for the head and its clients: loopback networking, token auth, this venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"))}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        GLOO_SOCKET_IFNAME="lo",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        PYTHONUNBUFFERED="1",
        # A process that finds no S3 credentials must fail, not ask 169.254.169.254 for them.
        AWS_EC2_METADATA_DISABLED="true",
        # The job's `python` must be this venv's: the head passes its PATH down to the job.
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


@dataclass
class RayHead:
    dashboard_url: str
    gcs_address: str
    temp_dir: Path
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen

    def ray(self, *args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        """Run the venv's ``ray`` CLI as a client of this head (token auth on)."""
        return subprocess.run(
            [str(VENV_BIN / "ray"), *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs
        )


def _wait_dashboard(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (401 without a token): the dashboard is up
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise RuntimeError(f"dashboard at {url} not up after {timeout}s:\n{log.read_text()[-4000:]}")


def _stop(head: RayHead) -> None:
    """End the head's process group, then every process it started (workers and the job's driver
    run in process groups of their own): its descendants, and anything naming its temp dir."""
    try:
        started = psutil.Process(head.proc.pid).children(recursive=True)
    except psutil.Error:
        started = []
    try:
        os.killpg(head.proc.pid, signal.SIGTERM)
        # On SIGTERM the head drains itself first; that can take longer than a test should wait.
        head.proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(head.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.proc.wait()
    marker = str(head.temp_dir)
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.info["cmdline"] and any(marker in part for part in p.info["cmdline"]):
                started.append(p)
        except psutil.Error:
            continue
    leftover = []
    for p in {p.pid: p for p in started}.values():
        try:
            p.terminate()
            leftover.append(p)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(leftover, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


@pytest.fixture
def ray_head(tmp_path):
    """A single-node Ray head on 127.0.0.1 with a dashboard, its own ports, token and temp dir."""
    # Unix socket paths are limited to ~107 bytes: keep the temp dir short, under /tmp.
    temp_dir = Path(tempfile.mkdtemp(prefix="uhray", dir="/tmp"))
    token = secrets.token_hex(32)
    env = loopback_env(token)
    (gcs, dashboard, agent_http, agent_grpc, runtime_env_agent, metrics, client, node_manager, object_manager) = (
        free_ports(9)
    )
    low, high = free_port_range(100)
    log = tmp_path / "ray-head.log"
    cmd = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp_dir}",
        f"--port={gcs}",
        f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env_agent}",
        f"--metrics-export-port={metrics}",
        f"--ray-client-server-port={client}",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        f"--min-worker-port={low}",
        f"--max-worker-port={high}",
        # Two training workers hold a CPU each for the whole run; Ray Data needs CPUs beside them.
        "--num-cpus=4",
    ]
    # Ray helpers that look for "the" cluster (Train's placement-group cleaner) must find this one,
    # not another Ray instance on this shared machine: the head's processes get its address.
    head_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}"}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=head_env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    head = RayHead(f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}", temp_dir, env, log, proc)
    try:
        _wait_dashboard(head.dashboard_url, proc, log)
        yield head
    finally:
        _stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
