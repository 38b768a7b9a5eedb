"""Choosing where an op runs: ``backend="numpy" | "numba" | "cuda" | "auto"``.

* ``numpy``: the readable reference, always available.
* ``numba``: the jitted CPU kernels of ``numba_kernels`` (parallel over batch x channels).
* ``cuda``: the numba-cuda kernels; needs a CUDA GPU, or numba's CUDA simulator
  (``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported; slow, for tests at tiny sizes).
* ``auto``: ``cuda`` when a real GPU is present, else ``numba``.

Inputs of the ``cuda`` backend may be host arrays (copied to the device and back) or device
arrays (results stay on the device).
"""

from __future__ import annotations

import functools
import os

BACKENDS = ("numpy", "numba", "cuda", "auto")


@functools.cache
def cuda_available() -> bool:
    """True when numba's CUDA target can run kernels here (a GPU, or the simulator)."""
    try:
        from numba import cuda
    except Exception:  # numba-cuda missing or broken: no CUDA backend
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def cuda_simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def resolve(backend: str, supported: tuple[str, ...], op: str) -> str:
    """Turn a user's ``backend`` argument into a concrete backend that ``op`` supports."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "auto":
        if "cuda" in supported and cuda_available() and not cuda_simulated():
            return "cuda"
        return "numba" if "numba" in supported else "numpy"
    if backend not in supported:
        raise ValueError(f"backend: {op} supports {', '.join(map(repr, supported))}, got {backend!r}")
    if backend == "cuda" and not cuda_available():
        raise ValueError(
            "backend: 'cuda' needs numba-cuda and a CUDA GPU (or NUMBA_ENABLE_CUDASIM=1 for the simulator); "
            "none is available here"
        )
    return backend
