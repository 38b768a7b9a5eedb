"""What machine a benchmark ran on, and its measured copy bandwidth."""

from __future__ import annotations

import os
import platform
import time

import numpy as np


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    import numba

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel function has run yet
        layer = "not initialised"
    return dict(
        cpu=cpu_model(),
        cores=cores,
        numba_threads=numba.config.NUMBA_NUM_THREADS,
        # NumPy's BLAS threads (set before NumPy starts): unset = one per core
        blas_threads=os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
        threading_layer=layer,
        python=platform.python_version(),
        numpy=np.__version__,
        numba=numba.__version__,
        platform=platform.platform(),
    )


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty where the OS has none): how shared the machine was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def copy_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Bytes per second moved by ``np.copyto`` (read + write counted), median of ``repeats``."""
    src = np.ones(n_bytes // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the pages once
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2 * src.nbytes / float(np.median(times))


def time_interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median wall time (s) of each ``fns[name]()``, the repeats interleaved (a, b, c, a, b, c, ...).

    On a shared or throttled machine speed drifts over seconds; interleaving exposes every
    implementation to the same drift, so the ratios between them stay meaningful.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def timeit(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds after ``warmup`` calls (compilation excluded)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
