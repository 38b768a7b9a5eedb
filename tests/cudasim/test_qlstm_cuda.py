"""The quasi-LSTM's CUDA backend (the linear-scan kernels of numba_kernels.scan_cuda) under numba's
CUDA simulator, at tiny sizes; run by tests/test_cuda_simulator.py."""

import os

import numpy as np
import pytest
from hypothesis import given, settings

from tests.compare import assert_within
from tests.mixers.qlstm_cases import NAMES, bounds, make_arrays, qlstm_cases, run

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests with NUMBA_ENABLE_CUDASIM=1"

pytestmark = [pytest.mark.rnn, pytest.mark.cudasim]


@settings(max_examples=10)
@given(qlstm_cases(max_T=20, dtypes=(np.float64, np.float32)))
def test_cuda_backend_agrees_with_numpy(case):
    xs, c0, dh, dct = make_arrays(case)
    up = lambda x: None if x is None else x.astype(np.float64)  # noqa: E731
    want = run("recurrent", "numpy", tuple(map(up, xs)), up(c0), up(dh), up(dct), case["block_length"])
    tol = bounds(xs, c0, dh, dct, case["block_length"], case["dtype"])
    for form in ("recurrent", "block_parallel"):
        got = run(form, "cuda", xs, c0, dh, dct, case["block_length"])
        for name in NAMES:
            if got[name] is not None:
                assert got[name].dtype == case["dtype"], f"{form}/cuda: {name} is {got[name].dtype}"
            assert_within(f"{form}/cuda: {name}", got[name], want[name], tol[name])
