"""The CUDA kernels of the selective scan under numba's CUDA simulator (tiny sizes; run by
test_cuda_simulator.py), with the kernel bounds of ``tests/mixers/test_selective_scan_kernels.py``."""

import os

import numpy as np
import pytest
from hypothesis import given, settings

from numba_kernels import selective_scan_cuda
from ref.mixers.selective_scan import FORMS
from ref.nn import gradcheck
from tests.mixers.ss_cases import make_arrays, ss_cases
from tests.mixers.test_selective_scan_kernels import check_against_reference, run

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests with NUMBA_ENABLE_CUDASIM=1"

pytestmark = [pytest.mark.mamba, pytest.mark.cudasim]


@settings(max_examples=8)
@given(ss_cases(max_L=9, dtypes=(np.float64, np.float32)))
def test_cuda_kernels_agree_with_numpy(case):
    """Thread per channel (recurrent) and time-chunked, forward and backward, float64 and float32."""
    args, dout, dlast = make_arrays(case)
    for form in ("recurrent", "chunked"):
        got = run(form, "cuda", args, dout, dlast, case["chunk_size"])
        check_against_reference(f"{form}/cuda", got, args, dout, dlast, case["dtype"])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_segments_of_the_backward(dtype):
    """N = 64 = MAX_N: the backward's buffer holds BUF // 64 = 16 steps, so L = 37 makes three
    saved states per channel (thread per channel), and chunks of 20 steps two segments each, the
    second one's entering state recomputed from the chunk's start (time-chunked)."""
    assert selective_scan_cuda.segment_steps(64) == 16
    case = dict(B=1, D=2, L=37, N=64, G=1, B_mode="variable", C_mode="fixed", with_D=True, with_z=True, with_bias=True,
                softplus=True, with_h0=True, with_dlast=True, decay="weak", chunk_size=20, dtype=dtype, seed=4)
    args, dout, dlast = make_arrays(case)
    for form in ("recurrent", "chunked"):
        got = run(form, "cuda", args, dout, dlast, 20)
        check_against_reference(f"{form}/cuda, N = 64", got, args, dout, dlast, dtype)


@pytest.mark.parametrize("form", ["recurrent", "chunked"])
def test_cuda_finite_differences(form, rng):
    case = dict(B=1, D=2, L=4, N=2, G=2, B_mode="grouped", C_mode="variable", with_D=True, with_z=True, with_bias=True,
                softplus=True, with_h0=True, with_dlast=True, decay="weak", chunk_size=2, dtype=np.float64,
                seed=int(rng.integers(1 << 30)))
    args, _, _ = make_arrays(case)
    forward, backward = FORMS[form]
    extra = {"chunk_size": 3} if form == "chunked" else {}

    def fwd(u, delta, A, B, C, D, z, delta_bias, initial_state):
        return forward(u, delta, A, B, C, D, z, delta_bias, True, initial_state=initial_state, return_last_state=True,
                       backend="cuda", **extra)

    inputs = {k: args[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")}
    gradcheck(fwd, backward, inputs, rng=rng, name=f"selective_scan_{form}[cuda]")


def test_state_sizes_beyond_the_local_arrays_are_refused():
    big = selective_scan_cuda.MAX_N + 1
    u = np.zeros((1, 2, 3), np.float32)
    A, Bm = -np.ones((2, big), np.float32), np.zeros((2, big), np.float32)
    for form in ("recurrent", "chunked"):
        with pytest.raises(ValueError, match=rf"A: .* expected N <= {selective_scan_cuda.MAX_N}, got N = {big}"):
            FORMS[form][0](u, u, A, Bm, Bm, backend="cuda")
