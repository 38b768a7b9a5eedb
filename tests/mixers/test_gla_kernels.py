"""The numba CPU kernels of GLA (``numba_kernels.gla_cpu``) against the NumPy reference.

Through the ``backend="numba"`` of ``gla_recurrent`` and ``gla_chunked``, with the error bounds
of ``tests/mixers/gla_cases.py``; the sub-chunks of the chunked kernels through the kernel
functions themselves. The CUDA kernels run under the simulator in ``tests/cudasim``.
"""

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit
from numba.core.registry import CPUDispatcher

import numba_kernels.gla_cpu as gla_cpu
from ref.mixers.gla import FORMS, gla_chunked, gla_recurrent
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.gla_cases import bounds, gla_cases, log_sigmoid, make_arrays

pytestmark = pytest.mark.gla

NAMES = ("o", "ht", "dq", "dk", "dv", "dgk", "dh0")
FORMS_WITH_KERNELS = ("recurrent", "chunked")


def run(form, backend, q, k, v, gk, h0, do, dht, scale, chunk_size):
    forward, backward = FORMS[form]
    kwargs = {"scale": scale, "initial_state": h0, "backend": backend}
    if form == "chunked":
        kwargs["chunk_size"] = chunk_size
    o, ht, cache = forward(q, k, v, gk, **kwargs)
    return dict(zip(NAMES, (o, ht, *backward(do, dht, cache))))


def run_chunked_kernel(q, k, v, gk, h0, do, dht, scale, chunk_size, sub_size):
    """The chunked kernels called directly, with a chosen sub-chunk size."""
    scale = q.shape[3] ** -0.5 if scale is None else scale
    o, states = gla_cpu.gla_cpu_chunked(q, k, v, gk, scale, h0, chunk_size, sub_size)
    grads = gla_cpu.gla_cpu_chunked_backward(q, k, v, gk, scale, h0, states, do, dht, chunk_size, sub_size)
    return dict(zip(NAMES, (o, states[:, -1], *grads)))


def up(x):
    return None if x is None else x.astype(np.float64)


@given(gla_cases())
def test_numba_kernels_agree_with_numpy_float64(case):
    q, k, v, gk, h0, do, dht = make_arrays(case)
    want = run("recurrent", "numpy", q, k, v, gk, h0, do, dht, case["scale"], case["chunk_size"])
    tol = bounds(q, k, v, gk, h0, do, dht, case["scale"], np.float64)
    for form in FORMS_WITH_KERNELS:
        got = run(form, "numba", q, k, v, gk, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            assert_within(f"{form}/numba: {name}", got[name], want[name], tol[name])


@given(gla_cases(dtypes=(np.float32,)))
def test_numba_kernels_float32_against_float64(case):
    """float32 kernels compute in float32 and stay within the float32 bound of the float64 result."""
    q, k, v, gk, h0, do, dht = make_arrays(case)
    want = run("recurrent", "numpy", *map(up, (q, k, v, gk, h0, do, dht)), case["scale"], case["chunk_size"])
    tol = bounds(q, k, v, gk, h0, do, dht, case["scale"], np.float32)
    for form in FORMS_WITH_KERNELS:
        got = run(form, "numba", q, k, v, gk, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            if got[name] is not None:
                assert got[name].dtype == np.float32, f"{form}/numba: {name} is {got[name].dtype}"
            assert_within(f"{form}/numba: {name}", got[name], want[name], tol[name])


@given(gla_cases(max_T=40, dtypes=(np.float64, np.float32)), st.integers(1, 9))
def test_chunked_kernel_any_sub_chunk_size(case, sub_size):
    """The factorisation exp(bl_i - bl_j) = exp(bl_i - bl_f) exp(bl_f - bl_j) at sub-chunk starts
    gives the same result for every sub-chunk size (8 by default)."""
    q, k, v, gk, h0, do, dht = make_arrays(case)
    want = run("recurrent", "numpy", *map(up, (q, k, v, gk, h0, do, dht)), case["scale"], case["chunk_size"])
    tol = bounds(q, k, v, gk, h0, do, dht, case["scale"], case["dtype"])
    got = run_chunked_kernel(q, k, v, gk, h0, do, dht, case["scale"], case["chunk_size"], sub_size)
    for name in NAMES:
        assert_within(f"chunked kernel, sub_size={sub_size}: {name}", got[name], want[name], tol[name])


@pytest.mark.parametrize("form", FORMS_WITH_KERNELS)
@pytest.mark.parametrize("gates", ["none", "mid"])
def test_finite_differences_through_numba(form, gates, rng):
    B, T, H, K, V = 1, 5, 2, 3, 2
    inputs = {
        "q": rng.standard_normal((B, T, H, K)),
        "k": rng.standard_normal((B, T, H, K)),
        "v": rng.standard_normal((B, T, H, V)),
        "gk": log_sigmoid(rng.standard_normal((B, T, H, K))),
        "initial_state": rng.standard_normal((B, H, K, V)),
    }
    forward, backward = FORMS[form]
    extra = {"chunk_size": 2} if form == "chunked" else {}

    def fwd(q, k, v, initial_state, gk=None):
        return forward(q, k, v, gk, scale=0.7, initial_state=initial_state, backend="numba", **extra)

    def bwd(do, dht, cache):
        dq, dk, dv, dgk, dh0 = backward(do, dht, cache)
        assert cache.backend == "numba"
        return {"q": dq, "k": dk, "v": dv, "initial_state": dh0} | ({} if gates == "none" else {"gk": dgk})

    if gates == "none":
        inputs.pop("gk")
    gradcheck(fwd, bwd, inputs, rng=rng, name=f"gla_{form}[numba]")


def test_finite_differences_through_the_sub_chunks(rng):
    """Chunks of 5 steps cut into sub-chunks of 2: every path of the factorised weights."""
    B, T, H, K, V = 1, 7, 1, 3, 2
    inputs = {
        "q": rng.standard_normal((B, T, H, K)),
        "k": rng.standard_normal((B, T, H, K)),
        "v": rng.standard_normal((B, T, H, V)),
        "gk": log_sigmoid(rng.standard_normal((B, T, H, K))),
        "initial_state": rng.standard_normal((B, H, K, V)),
    }

    def fwd(q, k, v, gk, initial_state):
        o, states = gla_cpu.gla_cpu_chunked(q, k, v, gk, 0.7, initial_state, 5, 2)
        return o, states[:, -1].copy(), (q, k, v, gk, initial_state, states)

    def bwd(do, dht, cache):
        q, k, v, gk, initial_state, states = cache
        return gla_cpu.gla_cpu_chunked_backward(q, k, v, gk, 0.7, initial_state, states, do, dht, 5, 2)

    gradcheck(fwd, bwd, inputs, rng=rng, name="gla_cpu_chunked(sub_size=2)")


def test_chunked_kernel_is_stable_at_65536():
    """Near-total forgetting (logsigmoid / 0.1): finite, and within 1e-6 relative of the recurrence."""
    rng = np.random.default_rng(7)
    B, T, H, K, V = 1, 65536, 1, 4, 3
    q, k = rng.standard_normal((B, T, H, K)), rng.standard_normal((B, T, H, K))
    v = rng.standard_normal((B, T, H, V))
    gk = log_sigmoid(rng.standard_normal((B, T, H, K))) / 0.1
    h0 = rng.standard_normal((B, H, K, V))
    do, dht = rng.standard_normal((B, T, H, V)), rng.standard_normal((B, H, K, V))
    want = run("recurrent", "numba", q, k, v, gk, h0, do, dht, None, 64)
    got = run("chunked", "numba", q, k, v, gk, h0, do, dht, None, 64)
    for name in NAMES:
        assert np.isfinite(got[name]).all(), name
        rel = np.abs(got[name] - want[name]).max() / np.abs(want[name]).max()
        assert rel < 1e-6, f"{name}: relative error {rel:.2e} at T = 65,536 with logsigmoid/0.1 gates"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_several_parallel_tasks(dtype):
    """The recurrent kernels split V = 37 into column blocks (the last one partial) and add up the
    shares of dq and dk; the chunked kernels run B * H * n_chunks = 2 * 3 * 7 tasks, sub-chunks of 5."""
    blk, parallel = gla_cpu.plan(1, 37)
    assert parallel and 37 % blk != 0, "the case must make several column blocks and a partial one"
    for B, H, V in ((1, 1, 37), (2, 3, 6)):
        case = dict(B=B, T=100, H=H, K=7, V=V, chunk_size=16, gates="mid", scale=None, with_h0=True, with_dht=True)
        case.update(dtype=dtype, seed=3)
        q, k, v, gk, h0, do, dht = make_arrays(case)
        want = run("recurrent", "numpy", *map(up, (q, k, v, gk, h0, do, dht)), None, 16)
        tol = bounds(q, k, v, gk, h0, do, dht, None, dtype)
        got_rec = run("recurrent", "numba", q, k, v, gk, h0, do, dht, None, 16)
        got_chunk = run_chunked_kernel(q, k, v, gk, h0, do, dht, None, 16, 5)
        for label, got in (("recurrent", got_rec), ("chunked", got_chunk)):
            for name in NAMES:
                assert_within(f"{label} (B={B}, H={H}, V={V}): {name}", got[name], want[name], tol[name])


FLOAT64_OPS = re.compile(r"\b(?:fadd|fsub|fmul|fdiv|fneg)\b[^\n=]*\bdouble\b|call [^\n]*double @(?:llvm\.)?(?:exp|fma)")


@pytest.mark.slow
def test_float32_kernels_do_no_float64_arithmetic(monkeypatch):
    """No float64 literal sneaks into float32 arithmetic: the LLVM IR of every function of the
    module compiled for float32 arrays has no double-precision add, multiply, exp or FMA.

    Code loaded from numba's cache cannot be inspected, so the test compiles uncached serial
    copies of every jitted function of the module (about 15 s) and runs the wrappers through them.
    """

    @njit
    def planted(x):
        return x[0] * 0.5  # a float64 literal: float32 * float64 is float64

    planted(np.ones(1, np.float32))
    assert FLOAT64_OPS.search(next(iter(planted.inspect_llvm().values()))), "the pattern must catch a float64 op"

    fresh = {}
    for name, fn in list(vars(gla_cpu).items()):
        if isinstance(fn, CPUDispatcher):
            dropped = ("cache", "nopython", "parallel")
            options = {key: val for key, val in fn.targetoptions.items() if key not in dropped}
            fresh[name] = njit(**options)(fn.py_func)
            monkeypatch.setattr(gla_cpu, name, fresh[name])  # the copies call each other

    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((2, 2, 20, 3, 6)).astype(np.float32)  # (B, T, H, K) each
    v = rng.standard_normal((2, 20, 3, 4)).astype(np.float32)
    gk = -np.abs(q)
    o, ht = gla_cpu.gla_cpu(q, k, v, gk, 0.5)
    gla_cpu.gla_cpu_backward(q, k, v, gk, 0.5, None, ht, o, ht)
    one = lambda x: x[:1, :, :1]  # noqa: E731  B = H = 1: the serial twins
    o1, ht1 = gla_cpu.gla_cpu(one(q), one(k), one(v), one(gk), 0.5)
    gla_cpu.gla_cpu_backward(one(q), one(k), one(v), one(gk), 0.5, None, ht1, o1, ht1)
    o, states = gla_cpu.gla_cpu_chunked(q, k, v, gk, 0.5, None, 8, 3)
    gla_cpu.gla_cpu_chunked_backward(q, k, v, gk, 0.5, None, states, o, ht, 8, 3)

    for name, fn in fresh.items():
        irs = fn.inspect_llvm()
        assert irs, f"{name} was never compiled: the test must run every jitted function"
        for sig, ir in irs.items():
            match = FLOAT64_OPS.search(ir)
            assert match is None, f"{name}{sig}: float64 arithmetic in a float32 kernel: {match.group(0)!r}"


def test_bad_backend_and_sizes():
    x = np.zeros((1, 4, 1, 2))
    with pytest.raises(ValueError, match="backend: expected one of 'numpy', 'numba', 'cuda', 'auto', got 'gpu'"):
        gla_recurrent(x, x, x, backend="gpu")
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1, got 0"):
        gla_chunked(x, x, x, chunk_size=0, backend="numba")
    with pytest.raises(ValueError, match="sub_size: expected an integer >= 1, got 0"):
        gla_cpu.gla_cpu_chunked(x, x, x, None, 1.0, None, 4, 0)
    with pytest.raises(ValueError, match=r"gk: expected natural-log gates <= 0"):
        gla_chunked(x, x, x, np.ones_like(x), backend="numba")
