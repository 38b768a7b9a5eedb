"""Runs tests/cudasim in a separate pytest process under numba's CUDA simulator.

NUMBA_ENABLE_CUDASIM must be set before numba is first imported, which this process has already
done; hence the subprocess. Its output is shown when it fails.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.cudasim
def test_cuda_kernels_under_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "cudasim")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"CUDA-simulator tests failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
