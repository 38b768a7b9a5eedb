"""The hot loops of ``ref``, JIT-compiled with numba: the same math, arguments and layouts.

Each op has ``<op>_cpu`` (``@njit(parallel=True, cache=True, fastmath={"contract"})``,
sequential over time, parallel over batch x channels) in ``<op>_cpu.py`` and ``<op>_cuda``
(``numba.cuda.jit``) in ``<op>_cuda.py``. Modules are imported lazily by ``ref`` so that the
NumPy reference works without compiling anything, and so that the CUDA simulator can be switched
on (``NUMBA_ENABLE_CUDASIM=1``) before numba is first imported. ``vecmath.py`` holds the scalar
math the CPU kernels share (exp, softplus, sigmoid and lane-wise sums that LLVM vectorises).
"""
