"""The CUDA kernels of the selective scan under numba's CUDA simulator (tiny sizes; run by
test_cuda_simulator.py), with the kernel bounds of ``tests/mixers/test_selective_scan_kernels.py``."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numba_kernels import selective_scan_cuda
from ref.mixers.selective_scan import FORMS
from ref.nn import gradcheck
from tests.mixers.ss_cases import make_arrays, ss_cases
from tests.mixers.test_selective_scan_kernels import check_against_reference, run

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests with NUMBA_ENABLE_CUDASIM=1"

pytestmark = [pytest.mark.mamba, pytest.mark.cudasim]


@pytest.fixture(autouse=True)
def four_lanes(monkeypatch):
    """The forward with 4 lanes per channel instead of a warp's 32: the same code (the lane count
    is a parameter of the scan over lanes), 8x fewer simulated threads, and windows of 16 steps,
    so that short sequences already span several windows."""
    monkeypatch.setattr(selective_scan_cuda, "LANES", 4)


def check_both_forms(case, label):
    """The recurrent and time-chunked CUDA forms on ``case`` (chunks of its chunk_size) against the reference."""
    args, dout, dlast = make_arrays(case)
    for form in ("recurrent", "chunked"):
        got = run(form, "cuda", args, dout, dlast, case["chunk_size"])
        check_against_reference(f"{form}/cuda, {label}", got, args, dout, dlast, case["dtype"])


@settings(max_examples=8)
@given(ss_cases(max_L=9, dtypes=(np.float64, np.float32)), st.sampled_from([1, 2, 4]))
def test_cuda_kernels_agree_with_numpy(case, lanes):
    """Recurrent and time-chunked, forward and backward, float64 and float32, 1, 2 or 4 lanes per
    channel in the forward (windows of 4, 8 or 16 steps)."""
    args, dout, dlast = make_arrays(case)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(selective_scan_cuda, "LANES", lanes)
        for form in ("recurrent", "chunked"):
            got = run(form, "cuda", args, dout, dlast, case["chunk_size"])
            check_against_reference(f"{form}/cuda, {lanes} lanes", got, args, dout, dlast, case["dtype"])


def test_a_warp_per_channel(monkeypatch):
    """The kernels as they run on a GPU, in its dtype: 32 lanes per channel in the forward (windows
    of 128 steps; L = 150 spans two, and chunks of 130 steps end inside the second), and the
    backward's blocks of a warp, 31 of its 32 lanes idle, summing the variable dB over runs of 32
    lanes (a fixed C: each simulated warp-wide sum costs ten barriers of 32 threads; both variable
    at 4 lanes: test_backward_sums_dB_and_dC_over_runs_of_lanes)."""
    dtype = np.float32
    monkeypatch.setattr(selective_scan_cuda, "LANES", 32)
    case = dict(B=1, D=1, L=150, N=3, G=1, B_mode="variable", C_mode="fixed", with_D=True, with_z=True,
                with_bias=True, softplus=True, with_h0=True, with_dlast=True, decay="weak", chunk_size=130,
                dtype=dtype, seed=7)  # fmt: skip
    check_both_forms(case, "32 lanes")


def test_idle_lanes_of_the_last_block():
    """Five channels in blocks of four: the second block's last three lane groups have no channel,
    take part in the exchanges and write nothing."""
    case = dict(B=1, D=5, L=21, N=3, G=1, B_mode="fixed", C_mode="variable", with_D=True, with_z=False,
                with_bias=False, softplus=False, with_h0=True, with_dlast=True, decay="strong", chunk_size=8,
                dtype=np.float64, seed=11)  # fmt: skip
    check_both_forms(case, "5 channels")


@pytest.mark.parametrize("G, B_mode, C_mode", [(2, "grouped", "variable"), (3, "variable", "grouped")])
def test_backward_sums_dB_and_dC_over_runs_of_lanes(G, B_mode, C_mode):
    """The backward's lanes sum their dB and dC terms per run of channels with one (b, g) before
    one atomic add per run. Two batches of 6 channels in groups of 4 lanes: with G = 2 (runs of 3
    channels) runs cross lane groups and batches (the keys b G + g by lane group: 0 0 0 1 | 1 1 2 2 |
    2 3 3 3), with G = 3 (runs of 2) a group holds two runs; the variable C (B) has runs of 6."""
    case = dict(B=2, D=6, L=13, N=3, G=G, B_mode=B_mode, C_mode=C_mode, with_D=True, with_z=True,
                with_bias=True, softplus=True, with_h0=True, with_dlast=True, decay="weak", chunk_size=5,
                dtype=np.float64, seed=3)  # fmt: skip
    check_both_forms(case, f"G = {G}")


def test_lanes_must_be_a_power_of_two_up_to_a_warp():
    with pytest.raises(ValueError, match=r"lanes: expected a power of two from 1 to 32, got 3"):
        selective_scan_cuda.kernels(np.float32, 3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_segments_of_the_backward(dtype):
    """N = 64 = MAX_N: the backward's buffer holds BUF // 64 = 16 steps, so L = 37 makes three
    saved states per channel (recurrent; the forward saves them from three windows of 16 steps),
    and chunks of 20 steps two segments each, the second one's entering state recomputed from the
    chunk's start (time-chunked)."""
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
