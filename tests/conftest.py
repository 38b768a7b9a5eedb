"""Shared test configuration.

Hypothesis profiles: ``ci`` (the default: no deadline, since the first call of a numba kernel
compiles it; bounded examples so the suite fits the CI budget) and ``thorough`` (more examples,
for local runs: ``HYPOTHESIS_PROFILE=thorough pytest``).
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=30,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The CUDA-simulator tests need NUMBA_ENABLE_CUDASIM=1 set before numba is first imported, so
# they run in their own pytest process (tests/test_cuda_simulator.py starts it).
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore = ["cudasim"]


@pytest.fixture
def rng():
    """A fresh, seeded generator per test: the same seed gives the same numbers."""
    return np.random.default_rng(20261127)


def pytest_collection_finish(session):
    """Start the selected tests' subprocess checks beside the in-process tests (tests/background.py)."""
    from tests import background

    if session.config.option.collectonly:
        return
    by_module = {}
    for item in session.items:
        by_module.setdefault(getattr(item, "module", None), []).append(item)
    jobs, in_process = {}, False
    for module, items in by_module.items():
        hook = getattr(module, "background_jobs", None)
        if hook is None:
            in_process = True
            continue
        module_jobs = hook(items)
        jobs.update(module_jobs)
        in_process |= len(module_jobs) < len(items)
    background.start(jobs, threads=background.workers(in_process))


def pytest_sessionfinish(session):
    from tests import background

    background.stop()
