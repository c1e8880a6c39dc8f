"""Every benchmark script starts: its imports resolve and it parses ``--help``.

Benchmarks are run by hand, rarely, often on a borrowed GPU machine; a script broken by a
refactor elsewhere (an import of a moved module) must fail here, not there.
"""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_script_starts(script, subprocess_env):
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "usage" in proc.stdout.lower(), proc.stderr[-2000:]
