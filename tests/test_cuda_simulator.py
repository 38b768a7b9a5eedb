"""Runs tests/cudasim in a separate pytest process under numba's CUDA simulator.

NUMBA_ENABLE_CUDASIM must be set before numba is first imported, which this process has already
done; hence the subprocess. It starts when collection ends and runs beside the other tests
(tests/background.py). Its output is shown when it fails.
"""

import os
import sys
from pathlib import Path

import pytest

from tests import background

ROOT = Path(__file__).resolve().parents[1]
KEY = "cudasim"


def simulator_suite():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "cudasim")]
    return background.run(cmd, timeout=900, cwd=ROOT, env=env)


def background_jobs(items):
    return {KEY: simulator_suite} if items else {}


@pytest.mark.cudasim
def test_cuda_kernels_under_the_simulator():
    proc = background.result(KEY, simulator_suite)
    assert proc.returncode == 0, f"CUDA-simulator tests failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
