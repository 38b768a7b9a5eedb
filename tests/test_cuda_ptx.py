"""Every CUDA kernel compiles to PTX for sm_90, float32 and float64, without a GPU.

The simulator runs kernels as Python, so it cannot catch typing errors, unsupported operations or
bugs of the real code generator; compile_ptx runs the real pipeline (it needs the NVVM and NVRTC
of the ``cuda`` extra, numba-cuda[cu13]). The PTX is then assembled for sm_90 by nvJitLink (also
in the extra), whose ptxas report must show no register spills: a kernel that spills reads and
writes local memory in its inner loop, a performance bug the simulator cannot see.
"""

import importlib
import importlib.util

import numpy as np
import pytest

from ref.bench.ptx import launch_bounds, ptxas_report, resources

CUDA_MODULES = [
    "numba_kernels.scan_cuda",
    "numba_kernels.gla_cuda",
    "numba_kernels.selective_scan_cuda",
    "numba_kernels.attention_cuda",
]


def _toolchain():
    """numba's CUDA target, provided the ``cuda`` extra (numba-cuda) is installed.

    Without numba-cuda there is nothing to check (the tests are skipped); with it, a toolchain
    that cannot compile is an error, not a skip.
    """
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed (the 'cuda' extra)")
    from numba import cuda

    return cuda


@pytest.mark.parametrize("module", CUDA_MODULES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_compile_to_ptx(module, dtype):
    cuda = _toolchain()
    mod = importlib.import_module(module)
    for kernel, argtypes, *_ in mod.kernel_signatures(dtype):
        ptx, _ = cuda.compile_ptx(kernel.py_func, argtypes, cc=(9, 0), launch_bounds=launch_bounds(kernel))
        assert ".visible .entry" in ptx, kernel.py_func.__name__
        used = resources(ptxas_report(ptx))  # ptxas's report, as bench ptx tabulates it
        assert used["registers"] is not None, kernel.py_func.__name__
        assert used["spill_stores"] == used["spill_loads"] == 0, f"{kernel.py_func.__name__}: ptxas spills ({used})"
        # float32 kernels must stay in float32: no double-precision arithmetic sneaks in
        if dtype == np.float32:
            assert "fma.rn.f64" not in ptx and "mul.rn.f64" not in ptx and "add.rn.f64" not in ptx, (
                f"{kernel.py_func.__name__}: float64 arithmetic in a float32 kernel"
            )
