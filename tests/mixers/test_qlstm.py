"""The quasi-LSTM cell: sequential and block-parallel forms, every CPU backend, forward and backward
(error bounds derived in tests/mixers/qlstm_cases.py)."""

import numpy as np
import pytest
from hypothesis import given

from ref.mixers.qlstm import FORMS, qlstm_block_parallel, qlstm_recurrent
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.qlstm_cases import NAMES, bounds, make_arrays, qlstm_cases, run

pytestmark = pytest.mark.rnn

# (form, backend) pairs available without a GPU; the CUDA backend (the linear-scan kernels of
# numba_kernels.scan_cuda) runs in tests/cudasim/test_qlstm_cuda.py
CPU_VARIANTS = [
    ("recurrent", "numpy"),
    ("recurrent", "numba"),
    ("block_parallel", "numpy"),
    ("block_parallel", "numba"),
]


def naive_loop(xs, c0, forget_bias=1.0):
    """(1)-(4) with scalar Python loops."""
    fx, ix, zx, ox = xs
    B, T, D = fx.shape
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    h = np.zeros((B, T, D))
    ct = np.zeros((B, D))
    for b in range(B):
        for d in range(D):
            c = 0.0 if c0 is None else c0[b, d]
            for t in range(T):
                c = sig(fx[b, t, d] + forget_bias) * c + sig(ix[b, t, d]) * np.tanh(zx[b, t, d])
                h[b, t, d] = sig(ox[b, t, d]) * np.tanh(c)
            ct[b, d] = c
    return h, ct


@pytest.mark.parametrize("form, backend", CPU_VARIANTS)
@pytest.mark.parametrize("forget_bias", [1.0, -0.5])
def test_equals_the_naive_loop(form, backend, forget_bias, rng):
    xs = tuple(rng.standard_normal((2, 9, 3)) for _ in range(4))
    c0 = rng.standard_normal((2, 3))
    kwargs = {"block_length": 4} if form == "block_parallel" else {}
    for init in (c0, None):
        h, ct, _ = FORMS[form][0](*xs, init, forget_bias=forget_bias, backend=backend, **kwargs)
        want_h, want_ct = naive_loop(xs, init, forget_bias)
        np.testing.assert_allclose(h, want_h, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(ct, want_ct, rtol=1e-13, atol=1e-14)


@given(qlstm_cases())
def test_every_form_and_cpu_backend_agree_float64(case):
    xs, c0, dh, dct = make_arrays(case)
    want = run("recurrent", "numpy", xs, c0, dh, dct, case["block_length"])
    tol = bounds(xs, c0, dh, dct, case["block_length"], np.float64)
    for form, backend in CPU_VARIANTS[1:]:
        got = run(form, backend, xs, c0, dh, dct, case["block_length"])
        for name in NAMES:
            assert_within(f"{form}/{backend}: {name}", got[name], want[name], tol[name])


@given(qlstm_cases(dtypes=(np.float32,)))
def test_every_form_and_cpu_backend_float32_against_float64(case):
    """float32 computations stay within the float32 bound of the float64 result."""
    xs, c0, dh, dct = make_arrays(case)
    up = lambda x: None if x is None else x.astype(np.float64)  # noqa: E731
    want = run("recurrent", "numpy", tuple(map(up, xs)), up(c0), up(dh), up(dct), case["block_length"])
    tol = bounds(xs, c0, dh, dct, case["block_length"], np.float32)
    for form, backend in CPU_VARIANTS:
        got = run(form, backend, xs, c0, dh, dct, case["block_length"])
        for name in NAMES:
            if got[name] is not None:
                assert got[name].dtype == np.float32, f"{form}/{backend}: {name} is {got[name].dtype}"
            assert_within(f"{form}/{backend}: {name}", got[name], want[name], tol[name])


@pytest.mark.parametrize("form, backend", CPU_VARIANTS)
@pytest.mark.parametrize("with_c0", [True, False])
def test_finite_differences(form, backend, with_c0, rng):
    # the compiled backends at a smaller size: each of the ~2 B T D evaluations starts a kernel
    B, T, D = (2, 7, 3) if backend == "numpy" else (1, 5, 2)
    inputs = {name: rng.standard_normal((B, T, D)) for name in ("fx", "ix", "zx", "ox")}
    if with_c0:
        inputs["initial_state"] = rng.standard_normal((B, D))
    forward, backward = FORMS[form]
    kwargs = {"backend": backend, "forget_bias": 0.7}
    if form == "block_parallel":
        kwargs["block_length"] = 3  # T = 7 or 5 is not a multiple of it

    def fwd(fx, ix, zx, ox, initial_state=None):
        return forward(fx, ix, zx, ox, initial_state, **kwargs)

    report = gradcheck(fwd, backward, inputs, rng=rng, name=f"qlstm_{form}[{backend}]")
    assert {t.name for t in report.tensors} == set(inputs)


def test_missing_cotangents_mean_zero(rng):
    xs = tuple(rng.standard_normal((1, 5, 2)) for _ in range(4))
    dh = rng.standard_normal((1, 5, 2))
    for form in FORMS:
        forward, backward = FORMS[form]
        _, _, cache = forward(*xs)
        for got, want in zip(backward(dh, None, cache), backward(dh, np.zeros((1, 2)), cache)):
            np.testing.assert_array_equal(got, want)
        for got, want in zip(backward(None, None, cache), backward(np.zeros((1, 5, 2)), None, cache)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mean", [-5.0, 8.0])
def test_long_sequence_stays_finite_and_equal(mean):
    """T = 8192 with strong and weak forgetting: both forms finite, equal within the bound."""
    rng = np.random.default_rng(5)
    T = 8192
    xs = (mean + rng.standard_normal((1, T, 2)), *rng.standard_normal((3, 1, T, 2)))
    dh = rng.standard_normal((1, T, 2))
    want = run("recurrent", "numba", xs, None, dh, None, 0)
    tol = bounds(xs, None, dh, None, 128, np.float64)
    got = run("block_parallel", "numpy", xs, None, dh, None, 128)
    for name in ("h", "ct", "dfx", "dix", "dzx", "dox"):
        assert np.isfinite(got[name]).all(), name
        assert_within(name, got[name], want[name], tol[name])


def _bad(**overrides):
    args = dict(fx=np.zeros((2, 4, 3)), ix=np.zeros((2, 4, 3)), zx=np.zeros((2, 4, 3)), ox=np.zeros((2, 4, 3)))
    args["initial_state"] = None
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "args, match",
    [
        (_bad(ix=np.zeros((2, 4, 2))), r"ix: expected shape \(B, T, D\) = \(2, 4, 3\) \(the shape of fx\), got \(2, 4, 2\)"),
        (_bad(fx=np.zeros((2, 4))), r"fx: expected 3 axes \(B, T, D\), got shape \(2, 4\)"),
        (_bad(zx=np.zeros((2, 4, 3), dtype=np.int64)), "zx: expected dtype float32 or float64, got int64"),
        (_bad(ox=np.zeros((2, 4, 3), dtype=np.float32)), r"ox: expected dtype float64 \(the dtype of fx\), got float32"),
        (_bad(**{k: np.zeros((2, 0, 3)) for k in ("fx", "ix", "zx", "ox")}), "fx: expected a time axis of length >= 1"),
        (_bad(initial_state=np.zeros((2, 4))), r"initial_state: expected shape \(B, D\) = \(2, 3\)"),
        (_bad(initial_state=np.full((2, 3), np.inf)), "initial_state: expected finite values"),
        (_bad(zx=np.full((2, 4, 3), np.nan)), "zx: expected finite values, got 24 non-finite"),
        (_bad(fx=[[[0.0]]]), "fx: expected a numpy array of float32 or float64, got list"),
    ],
)
@pytest.mark.parametrize("form, backend", CPU_VARIANTS)
def test_bad_input(form, backend, args, match):
    with pytest.raises(ValueError, match=match):
        FORMS[form][0](**args, backend=backend)


@pytest.mark.parametrize("forget_bias", [np.nan, "1", None, True])
def test_bad_forget_bias(forget_bias):
    xs = [np.zeros((1, 3, 2))] * 4
    with pytest.raises(ValueError, match="forget_bias: expected a finite number"):
        qlstm_recurrent(*xs, forget_bias=forget_bias)


@pytest.mark.parametrize("block_length", [0, -3, 2.5, True])
def test_bad_block_length(block_length):
    xs = [np.zeros((1, 3, 2))] * 4
    with pytest.raises(ValueError, match="block_length: expected an integer >= 1"):
        qlstm_block_parallel(*xs, block_length=block_length)


def test_bad_backend_and_cotangents():
    xs = [np.zeros((1, 4, 2))] * 4
    with pytest.raises(ValueError, match="backend: expected one of 'numpy', 'numba', 'cuda', 'auto', got 'gpu'"):
        qlstm_recurrent(*xs, backend="gpu")
    for form in FORMS:
        forward, backward = FORMS[form]
        _, _, cache = forward(*xs)
        with pytest.raises(ValueError, match=r"dh: expected shape \(B, T, D\) = \(1, 4, 2\)"):
            backward(np.zeros((1, 3, 2)), None, cache)
        with pytest.raises(ValueError, match=r"dct: expected shape \(B, D\) = \(1, 2\)"):
            backward(None, np.zeros((2, 2)), cache)
        with pytest.raises(ValueError, match=r"dh: expected dtype float64 \(the dtype of the output\), got float32"):
            backward(np.zeros((1, 4, 2), np.float32), None, cache)
