"""What machine a benchmark ran on, its measured copy bandwidth, and the process settings of
``bench train`` (``OPENBLAS_THREAD_TIMEOUT``, ``keep_freed_memory``)."""

from __future__ import annotations

import ctypes
import ctypes.util
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


# OpenBLAS (NumPy's BLAS) keeps its idle threads spinning for 2^28 cycles (about 0.1 s) after
# every call before they sleep. A numba parallel kernel that follows a matrix product then shares
# the cores with spinning threads: on the 2-core reference machine a (4096, 512) x (512, 128)
# product made the next attention forward 1.7x slower. 2^16 cycles (about 25 us) keeps the threads
# awake through a burst of products and frees the cores for the kernels. OpenBLAS reads the
# variable when NumPy loads it, so ``python -m ref bench`` sets it (unless set) before importing
# NumPy (``ref/__main__.py``); elsewhere set it in the environment.
OPENBLAS_THREAD_TIMEOUT = "16"

# glibc's malloc returns a large block (above 128 KiB at first) to the OS when it is freed, so the
# next array of that size is fresh memory, and the first write of each 4 KiB page is a page fault
# (about 10 us on the reference VM). A training step allocates and frees its activations every
# step: about 10,000 faults a step, a third of a GLA step's time. Raising the thresholds keeps the freed
# memory in the process for the next step (the peak resident memory did not change).
MMAP_THRESHOLD = 256 * 2**20  # blocks below it come from the heap, not a fresh mapping
TRIM_THRESHOLD = 2**30  # free memory kept at the top of the heap before it is returned


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (``mallopt``), so freed arrays are
    reused instead of returned to the OS and faulted in again. Returns False where there is no
    glibc (nothing changed)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


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
        # 2^n cycles that idle OpenBLAS threads spin (unset: OpenBLAS's default, 2^28)
        openblas_thread_timeout=os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset"),
        threading_layer=layer,
        python=platform.python_version(),
        numpy=np.__version__,
        numba=numba.__version__,
        platform=platform.platform(),
    )


def target_lines(targets: dict, smoke: bool, unit: str = "") -> list[str]:
    """A Markdown line per target of a result: its value (with ``unit``) against its limit, met
    or **missed**, and flagged as not meaningful at smoke sizes."""
    lines = []
    for name, t in targets.items():
        status = "met" if t["met"] else "**missed**"
        if smoke:
            status += " (smoke sizes: not meaningful)"
        lines.append(f"- {name}: {t['value']:.2f}{unit} (limit {t['limit']:g}): {status}")
    return lines


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
