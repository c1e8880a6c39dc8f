"""Benchmark scripts run with ``benchmarks/`` first on ``sys.path``, so a script named like an
installed package shadows it for every library that imports that package.

transformers 5.25 started importing Hugging Face's ``kernels`` package; our old
``benchmarks/kernels.py`` stood in its place and broke the model stage of the GPU session.
"""

import sys
from importlib.machinery import PathFinder
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_no_benchmark_script_shadows_an_installed_module():
    others = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCHMARKS]
    shadowing = [
        script.stem
        for script in sorted(BENCHMARKS.glob("*.py"))
        if script.stem in sys.stdlib_module_names or PathFinder.find_spec(script.stem, others) is not None
    ]
    assert not shadowing, f"benchmarks/ scripts named like installed or standard modules: {shadowing}"
