"""The CUDA scan kernels under numba's CUDA simulator (tiny sizes; run by test_cuda_simulator.py)."""

import os

import numpy as np
import pytest
from hypothesis import given, settings

from ref.mixers.linear_scan import FORMS
from ref.nn import gradcheck
from tests.mixers.scan_cases import assert_within, bounds, make_arrays, scan_cases

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests with NUMBA_ENABLE_CUDASIM=1"

pytestmark = [pytest.mark.linear_scan, pytest.mark.cudasim]


def run(form, backend, a, b, h0, dh, dht, chunk_size):
    forward, backward = FORMS[form]
    kwargs = {"backend": backend}
    if form == "chunked":
        kwargs["chunk_size"] = chunk_size
    h, ht, cache = forward(a, b, h0, **kwargs)
    da, db, dh0 = backward(dh, dht, cache)
    return dict(h=h, ht=ht, da=da, db=db, dh0=dh0)


@settings(max_examples=12)
@given(scan_cases(max_T=24, dtypes=(np.float64, np.float32)))
def test_cuda_kernels_agree_with_numpy(case):
    a, b, h0, dh, dht = make_arrays(case)
    up = lambda x: None if x is None else x.astype(np.float64)  # noqa: E731
    want = run("recurrent", "numpy", up(a), up(b), up(h0), up(dh), up(dht), case["chunk_size"])
    tol = bounds(a, b, h0, dh, dht, case["dtype"])
    for form in ("recurrent", "chunked"):
        got = run(form, "cuda", a, b, h0, dh, dht, case["chunk_size"])
        for name in ("h", "ht", "da", "db", "dh0"):
            if got[name] is not None:
                assert got[name].dtype == case["dtype"]
            assert_within(f"{form}/cuda: {name}", got[name], want[name], tol[name])


@pytest.mark.parametrize("form", ["recurrent", "chunked"])
def test_cuda_finite_differences(form, rng):
    inputs = {
        "a": rng.uniform(-1, 1, (1, 5, 2)),
        "b": rng.standard_normal((1, 5, 2)),
        "initial_state": rng.standard_normal((1, 2)),
    }
    forward, backward = FORMS[form]
    kwargs = {"backend": "cuda"} | ({"chunk_size": 2} if form == "chunked" else {})
    gradcheck(lambda a, b, initial_state: forward(a, b, initial_state, **kwargs), backward, inputs, rng=rng)


@pytest.mark.parametrize("T", [1, 15, 16, 17, 32, 37])
def test_cuda_load_groups_at_their_boundaries(T):
    """The kernels load STEPS (16) steps at a time, the thread-per-channel backward 8: T below, at
    and past multiples of 16 and 8, and chunks that end inside a group (C = 5 and C = 21), in
    both forms, forward and backward."""
    from numba_kernels import scan_cuda

    assert (scan_cuda.STEPS, scan_cuda.STEPS_BACKWARD) == (16, 8)
    for C in (5, 21):
        case = dict(B=2, T=T, D=3, chunk_size=C, regime="mixed", with_h0=True, with_dht=True, dtype=np.float64,
                    seed=T * 100 + C)  # fmt: skip
        a, b, h0, dh, dht = make_arrays(case)
        want = run("recurrent", "numpy", a, b, h0, dh, dht, C)
        tol = bounds(a, b, h0, dh, dht, np.float64)
        for form in ("recurrent", "chunked"):
            got = run(form, "cuda", a, b, h0, dh, dht, C)
            for name in ("h", "ht", "da", "db", "dh0"):
                assert_within(f"{form}/cuda T={T} C={C}: {name}", got[name], want[name], tol[name])
