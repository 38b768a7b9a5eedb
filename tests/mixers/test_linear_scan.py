"""The linear scan h_t = a_t h_{t-1} + b_t: every form and backend, forward and backward."""

import numpy as np
import pytest
from hypothesis import given

from ref.mixers.linear_scan import FORMS, linear_scan_chunked, linear_scan_recurrent
from ref.nn import gradcheck
from tests.mixers.scan_cases import assert_within, bounds, make_arrays, scan_cases

pytestmark = pytest.mark.linear_scan

# (form, backend) pairs available without a GPU; the CUDA kernels run in tests/cudasim
CPU_VARIANTS = [
    ("recurrent", "numpy"),
    ("recurrent", "numba"),
    ("parallel", None),
    ("chunked", "numpy"),
    ("chunked", "numba"),
]


def run(form, backend, a, b, h0, dh, dht, chunk_size):
    forward, backward = FORMS[form]
    kwargs = {} if backend is None else {"backend": backend}
    if form == "chunked":
        kwargs["chunk_size"] = chunk_size
    h, ht, cache = forward(a, b, h0, **kwargs)
    da, db, dh0 = backward(dh, dht, cache)
    return dict(h=h, ht=ht, da=da, db=db, dh0=dh0)


def naive_closed_form(a, b, h0):
    """h_t = sum_{s<=t} (prod_{s<r<=t} a_r) b_s + (prod_{r<=t} a_r) h_{-1}, scalar Python loops."""
    B, T, D = a.shape
    h = np.zeros((B, T, D))
    for i in range(B):
        for d in range(D):
            for t in range(T):
                total = 0.0 if h0 is None else float(np.prod(a[i, : t + 1, d])) * h0[i, d]
                for s in range(t + 1):
                    total += float(np.prod(a[i, s + 1 : t + 1, d])) * b[i, s, d]
                h[i, t, d] = total
    return h


def test_recurrent_equals_the_closed_form(rng):
    a, b, h0 = rng.uniform(-1, 1, (2, 9, 3)), rng.standard_normal((2, 9, 3)), rng.standard_normal((2, 3))
    for with_h0 in (True, False):
        h, ht, _ = linear_scan_recurrent(a, b, h0 if with_h0 else None)
        want = naive_closed_form(a, b, h0 if with_h0 else None)
        np.testing.assert_allclose(h, want, rtol=1e-13, atol=1e-14)
        np.testing.assert_array_equal(ht, h[:, -1])


@given(scan_cases())
def test_every_form_and_cpu_backend_agree_float64(case):
    a, b, h0, dh, dht = make_arrays(case)
    want = run("recurrent", "numpy", a, b, h0, dh, dht, case["chunk_size"])
    tol = bounds(a, b, h0, dh, dht, np.float64)
    for form, backend in CPU_VARIANTS[1:]:
        got = run(form, backend, a, b, h0, dh, dht, case["chunk_size"])
        for name in ("h", "ht", "da", "db", "dh0"):
            assert_within(f"{form}/{backend}: {name}", got[name], want[name], tol[name])


@given(scan_cases(dtypes=(np.float32,)))
def test_every_form_and_cpu_backend_float32_against_float64(case):
    """float32 computations stay within the float32 error bound of the float64 result."""
    a, b, h0, dh, dht = make_arrays(case)
    up = lambda x: None if x is None else x.astype(np.float64)  # noqa: E731
    want = run("recurrent", "numpy", up(a), up(b), up(h0), up(dh), up(dht), case["chunk_size"])
    tol = bounds(a, b, h0, dh, dht, np.float32)
    for form, backend in CPU_VARIANTS:
        got = run(form, backend, a, b, h0, dh, dht, case["chunk_size"])
        for name in ("h", "ht", "da", "db", "dh0"):
            if got[name] is not None:
                assert got[name].dtype == np.float32, f"{form}/{backend}: {name} is {got[name].dtype}"
            assert_within(f"{form}/{backend}: {name}", got[name], want[name], tol[name])


@pytest.mark.parametrize("form, backend", CPU_VARIANTS)
@pytest.mark.parametrize("with_h0", [True, False])
def test_finite_differences(form, backend, with_h0, rng):
    B, T, D = 2, 7, 3
    inputs = {"a": rng.uniform(-1, 1, (B, T, D)), "b": rng.standard_normal((B, T, D))}
    if with_h0:
        inputs["initial_state"] = rng.standard_normal((B, D))
    forward, backward = FORMS[form]
    kwargs = {} if backend is None else {"backend": backend}
    if form == "chunked":
        kwargs["chunk_size"] = 3  # T = 7 is not a multiple of it

    def fwd(a, b, initial_state=None):
        return forward(a, b, initial_state, **kwargs)

    report = gradcheck(fwd, backward, inputs, rng=rng, name=f"linear_scan_{form}[{backend}]")
    assert {t.name for t in report.tensors} == set(inputs)


def test_missing_cotangents_mean_zero(rng):
    a, b = rng.uniform(-1, 1, (1, 5, 2)), rng.standard_normal((1, 5, 2))
    _, _, cache = linear_scan_recurrent(a, b)
    dh = rng.standard_normal((1, 5, 2))
    only_dh = linear_scan_recurrent_backward_all(dh, None, cache)
    explicit = linear_scan_recurrent_backward_all(dh, np.zeros((1, 2)), cache)
    for x, y in zip(only_dh, explicit):
        np.testing.assert_array_equal(x, y)


def linear_scan_recurrent_backward_all(dh, dht, cache):
    return FORMS["recurrent"][1](dh, dht, cache)[:2]


def test_long_sequence_near_one_stays_finite_and_equal():
    """T = 65,536 with a close to 1: all forms finite and equal within the error bound."""
    rng = np.random.default_rng(3)
    a = (1 - rng.uniform(0, 1e-4, (1, 65536, 2))).astype(np.float64)
    b = rng.standard_normal((1, 65536, 2))
    h_loop, _, _ = linear_scan_recurrent(a, b, backend="numba")
    tol = bounds(a, b, None, b, None, np.float64)["h"]
    for h in (FORMS["parallel"][0](a, b)[0], linear_scan_chunked(a, b, chunk_size=256)[0]):
        assert np.isfinite(h).all()
        assert_within("h", h, h_loop, tol)


def _bad(**overrides):
    args = dict(a=np.zeros((2, 4, 3)), b=np.zeros((2, 4, 3)), initial_state=None)
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "args, match",
    [
        (_bad(b=np.zeros((2, 4, 2))), r"b: expected shape \(B, T, D\) = \(2, 4, 3\) \(the shape of a\), got \(2, 4, 2\)"),
        (_bad(a=np.zeros((2, 4))), r"a: expected 3 axes \(B, T, D\), got shape \(2, 4\)"),
        (_bad(a=np.zeros((2, 4, 3), dtype=np.int64)), "a: expected dtype float32 or float64, got int64"),
        (_bad(b=np.zeros((2, 4, 3), dtype=np.float32)), r"b: expected dtype float64 \(the dtype of a\), got float32"),
        (_bad(a=np.zeros((2, 0, 3)), b=np.zeros((2, 0, 3))), "a: expected a time axis of length >= 1, got length 0"),
        (_bad(initial_state=np.zeros((2, 4))), r"initial_state: expected shape \(B, D\) = \(2, 3\)"),
        (_bad(b=np.full((2, 4, 3), np.nan)), "b: expected finite values, got 24 non-finite"),
        (_bad(a=[[[0.0]]]), "a: expected a numpy array of float32 or float64, got list"),
    ],
)
@pytest.mark.parametrize("form", ["recurrent", "parallel", "chunked"])
def test_bad_input(form, args, match):
    with pytest.raises(ValueError, match=match):
        FORMS[form][0](args["a"], args["b"], args["initial_state"])


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True])
def test_bad_chunk_size(chunk_size):
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1"):
        linear_scan_chunked(np.zeros((1, 4, 1)), np.zeros((1, 4, 1)), chunk_size=chunk_size)


def test_bad_backend_and_cotangents():
    a = np.zeros((1, 4, 2))
    with pytest.raises(ValueError, match="backend: expected one of 'numpy', 'numba', 'cuda', 'auto', got 'gpu'"):
        linear_scan_recurrent(a, a, backend="gpu")
    _, _, cache = linear_scan_recurrent(a, a)
    with pytest.raises(ValueError, match=r"dh: expected shape \(B, T, D\) = \(1, 4, 2\)"):
        FORMS["recurrent"][1](np.zeros((1, 3, 2)), None, cache)
    with pytest.raises(ValueError, match=r"dht: expected shape \(B, D\) = \(1, 2\)"):
        FORMS["recurrent"][1](None, np.zeros((2, 2)), cache)


@pytest.mark.parametrize("form, backend", [v for v in CPU_VARIANTS if v[1] != "numpy"] + [("recurrent", "numpy")])
@pytest.mark.parametrize(
    "where, value, name",
    [((0, 0, 0), np.inf, "a"), ((1, 3, 2), np.nan, "a"), ((0, 5, 1), -np.inf, "b"), ((1, 0, 0), np.nan, "b")],
)
def test_non_finite_inputs_are_refused_by_every_backend(form, backend, where, value, name):
    """The compiled backends detect NaN/inf through the final state; the message is the same."""
    rng = np.random.default_rng(0)
    arrays = {"a": rng.uniform(0, 1, (2, 6, 3)), "b": rng.standard_normal((2, 6, 3))}
    arrays[name][where] = value
    kwargs = {} if backend is None else {"backend": backend}
    if form == "chunked":
        kwargs["chunk_size"] = 4
    with pytest.raises(ValueError, match=rf"{name}: expected finite values, got 1 non-finite \(first at index \({where[0]}, {where[1]}, {where[2]}\)"):
        FORMS[form][0](arrays["a"], arrays["b"], **kwargs)


def test_overflow_from_finite_inputs_is_not_an_input_error():
    a, b = np.full((1, 5, 1), 1e200), np.full((1, 5, 1), 1e200)
    for backend in ("numpy", "numba"):
        with np.errstate(over="ignore"):  # NumPy warns of the overflow; that is all
            h, ht, _ = linear_scan_recurrent(a, b, backend=backend)
        assert np.isinf(ht).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("form", ["recurrent", "chunked"])
def test_numba_wide_rows_split_into_blocks(form, dtype):
    """D = 300 splits each row into several blocks, the last one partial: same results."""
    from numba_kernels.scan_cpu import plan

    blk, parallel = plan(1, 300, np.dtype(dtype).itemsize)
    assert parallel and 300 % blk != 0, "the case must exercise several blocks and a partial one"
    case = dict(B=1, T=20, D=300, chunk_size=6, regime="mixed", with_h0=True, with_dht=True, dtype=dtype, seed=1)
    a, b, h0, dh, dht = make_arrays(case)
    up = lambda x: x.astype(np.float64)  # noqa: E731
    want = run("recurrent", "numpy", up(a), up(b), up(h0), up(dh), up(dht), 6)
    got = run(form, "numba", a, b, h0, dh, dht, 6)
    tol = bounds(a, b, h0, dh, dht, dtype)
    for name in ("h", "ht", "da", "db", "dh0"):
        assert_within(f"{form}/numba: {name}", got[name], want[name], tol[name])
