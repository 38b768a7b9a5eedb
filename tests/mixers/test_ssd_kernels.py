"""The numba CPU kernels of SSD's chunked form (``numba_kernels.ssd_cpu``) against the NumPy
reference, through ``ssd_chunked(backend="numba")``.

Error bound: the kernel is one more way of evaluating the same sums of products (SSD is GLA with
a scalar gate per head), with its own exp (``selective_scan_cpu.vexp``, within 1 ulp) of decay
differences accumulated within a chunk, as GLA's chunked kernels: the derived GLA bound of
``tests/mixers/gla_cases.py`` (used by ``tests/mixers/test_ssd.py`` for the NumPy forms) covers it.
float32 kernels are compared with the float64 reference on the same inputs, with that bound in
float32's unit roundoff (it allows for two computations in float32; one is in float64 here).
"""

import re

import numpy as np
import pytest
from hypothesis import given
from numba import njit
from numba.core.registry import CPUDispatcher

import numba_kernels.ssd_cpu as ssd_cpu
from ref.mixers.ssd import FORMS, ssd_chunked
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.gla_cases import bounds as gla_bounds
from tests.mixers.test_ssd import NAMES, make, run, ssd_cases

pytestmark = pytest.mark.mamba


def bounds(X, A, B, C, S0, dY, dF, dtype):
    """``tests/mixers/test_ssd.ssd_bounds`` in the unit roundoff of ``dtype``."""
    T = lambda S: None if S is None else np.swapaxes(S, -1, -2)  # noqa: E731
    up = lambda x: None if x is None else x.astype(np.float64)  # noqa: E731
    X, A, B, C, S0, dY, dF = map(up, (X, A, B, C, S0, dY, dF))
    gk = np.broadcast_to(A[..., None], C.shape)
    t = gla_bounds(C, B, X, gk, T(S0), dY, T(dF), 1.0, dtype)
    return dict(Y=t["o"], final_state=T(t["ht"]), dX=t["dv"], dA=1.5 * t["dgk"].sum(-1), dB=t["dk"], dC=t["dq"],
                dinitial_states=T(t["dh0"]))


def run_numba(X, A, B, C, S0, dY, dF, block_len):
    forward, backward = FORMS["chunked"]
    Y, F, cache = forward(X, A, B, C, initial_states=S0, block_len=block_len, backend="numba")
    assert cache.backend == "numba"
    return dict(zip(NAMES, (Y, F, *backward(dY, dF, cache))))


def cast(arrays, dtype):
    return [None if x is None else x.astype(dtype) for x in arrays]


@given(ssd_cases())
def test_numba_kernels_agree_with_numpy_float64(case):
    X, A, B, C, S0, dY, dF = make(case)
    want = run("recurrent", X, A, B, C, S0, dY, dF, None)
    tol = bounds(X, A, B, C, S0, dY, dF, np.float64)
    got = run_numba(X, A, B, C, S0, dY, dF, case["block_len"])
    for name in NAMES:
        assert_within(f"chunked/numba: {name}", got[name], want[name], tol[name])


@given(ssd_cases())
def test_numba_kernels_float32_against_float64(case):
    X, A, B, C, S0, dY, dF = cast(make(case), np.float32)
    want = run("recurrent", *cast((X, A, B, C, S0, dY, dF), np.float64), None)
    tol = bounds(X, A, B, C, S0, dY, dF, np.float32)
    got = run_numba(X, A, B, C, S0, dY, dF, case["block_len"])
    for name in NAMES:
        if got[name] is not None:
            assert got[name].dtype == np.float32, f"chunked/numba: {name} is {got[name].dtype}"
        assert_within(f"chunked/numba float32: {name}", got[name], want[name], tol[name])


def test_any_length_and_block_len_agree_with_numpy_chunked():
    """l = 37 in chunks of 1, 4, 8, 37 and 64 (longer than l): the NumPy chunked form's results."""
    case = dict(b=2, l=37, h=2, p=3, n=4, block_len=0, decay=1.0, with_init=True, with_dfinal=True, seed=5)
    X, A, B, C, S0, dY, dF = make(case)
    tol = bounds(X, A, B, C, S0, dY, dF, np.float64)
    for L in (1, 4, 8, 37, 64):
        want = run("chunked", X, A, B, C, S0, dY, dF, L)
        got = run_numba(X, A, B, C, S0, dY, dF, L)
        for name in NAMES:
            assert_within(f"block_len={L}: {name}", got[name], want[name], tol[name])


@pytest.mark.parametrize("with_init", [True, False])
def test_finite_differences_through_numba(with_init, rng):
    X, A, B, C = (rng.standard_normal(s) for s in ((1, 7, 2, 2), (1, 7, 2), (1, 7, 2, 3), (1, 7, 2, 3)))
    inputs = {"X": X, "A": -np.abs(A), "B": B, "C": C}
    if with_init:
        inputs["initial_states"] = rng.standard_normal((1, 2, 2, 3))

    def fwd(X, A, B, C, initial_states=None):
        return ssd_chunked(X, A, B, C, initial_states=initial_states, block_len=3, backend="numba")

    gradcheck(fwd, FORMS["chunked"][1], inputs, rng=rng, name="ssd_chunked[numba]")


def test_stable_at_65536_with_strong_decays():
    """Strong decays (dt A down to about -60 per step) at l = 65,536: finite, and within 1e-6
    relative of the NumPy recurrence."""
    case = dict(b=1, l=65536, h=1, p=2, n=3, block_len=64, decay=10.0, with_init=True, with_dfinal=True, seed=7)
    X, A, B, C, S0, dY, dF = make(case)
    want = run("recurrent", X, A, B, C, S0, dY, dF, None)
    got = run_numba(X, A, B, C, S0, dY, dF, 64)
    for name in NAMES:
        assert np.isfinite(got[name]).all(), name
        rel = np.abs(got[name] - want[name]).max() / np.abs(want[name]).max()
        assert rel < 1e-6, f"{name}: relative error {rel:.2e} at l = 65,536"


FLOAT64_OPS = re.compile(r"\b(?:fadd|fsub|fmul|fdiv|fneg)\b[^\n=]*\bdouble\b|call [^\n]*double @(?:llvm\.)?(?:exp|fma)")


@pytest.mark.slow
def test_float32_kernels_do_no_float64_arithmetic(monkeypatch):
    """No double-precision arithmetic in the LLVM IR of any function of the module compiled for
    float32 (uncached serial copies, run through the wrappers)."""
    fresh = {}
    for name, fn in list(vars(ssd_cpu).items()):
        if isinstance(fn, CPUDispatcher) and fn.py_func.__module__ == ssd_cpu.__name__:
            options = {k: v for k, v in fn.targetoptions.items() if k not in ("cache", "nopython", "parallel")}
            fresh[name] = njit(**options)(fn.py_func)
            monkeypatch.setattr(ssd_cpu, name, fresh[name])
    case = dict(b=1, l=10, h=2, p=3, n=2, block_len=4, decay=1.0, with_init=True, with_dfinal=True, seed=0)
    X, A, B, C, S0, dY, dF = cast(make(case), np.float32)
    Y, states = ssd_cpu.ssd_cpu_chunked(X, A, B, C, S0, 4)
    ssd_cpu.ssd_cpu_chunked_backward(X, A, B, C, states, dY, dF, 4)
    for name, fn in fresh.items():
        irs = fn.inspect_llvm()
        assert irs, f"{name} was never compiled: the test must run every jitted function"
        for sig, ir in irs.items():
            match = FLOAT64_OPS.search(ir)
            assert match is None, f"{name}{sig}: float64 arithmetic in a float32 kernel: {match.group(0)!r}"


def test_bad_backend_and_block_len():
    x = np.zeros((1, 4, 1, 2))
    a, bc = np.zeros((1, 4, 1)), np.zeros((1, 4, 1, 3))
    with pytest.raises(ValueError, match=r"backend: ssd_chunked supports 'numpy', 'numba', got 'cuda'"):
        ssd_chunked(x, a, bc, bc, backend="cuda")
    with pytest.raises(ValueError, match="block_len: expected an integer >= 1, got 0"):
        ssd_chunked(x, a, bc, bc, block_len=0, backend="numba")
    with pytest.raises(ValueError, match="block_len: expected an integer >= 1, got 0"):
        ssd_cpu.ssd_cpu_chunked(x, a, bc, bc, None, 0)
