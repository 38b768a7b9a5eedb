import math
from functools import partial

import numpy as np
import pytest

from ref.nn import gradcheck, log_softmax, log_softmax_backward, softmax, softmax_backward

PAIRS = {"softmax": (softmax, softmax_backward), "log_softmax": (log_softmax, log_softmax_backward)}


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_gradcheck(rng, name, axis):
    fwd, bwd = PAIRS[name]
    x = rng.standard_normal((3, 4, 2)) * 2
    gradcheck(partial(fwd, axis=axis), bwd, {"x": x}, rng=rng, name=name)


def test_softmax_forward_matches_definition(rng):
    x = rng.standard_normal((3, 5)) * 3
    y, _ = softmax(x)
    ly, _ = log_softmax(x)
    y0, _ = softmax(x, axis=0)
    for m in range(3):
        total = sum(math.exp(v) for v in x[m])
        for i in range(5):
            assert math.isclose(y[m, i], math.exp(x[m, i]) / total, rel_tol=1e-13)
            assert math.isclose(ly[m, i], x[m, i] - math.log(total), rel_tol=1e-13, abs_tol=1e-14)
    for i in range(5):
        total = sum(math.exp(v) for v in x[:, i])
        for m in range(3):
            assert math.isclose(y0[m, i], math.exp(x[m, i]) / total, rel_tol=1e-13)


def test_softmax_large_logits(rng):
    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0], [0.0, 1.0, 2.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y, cy = softmax(x)
        ly, cly = log_softmax(x)
        dy = rng.standard_normal(x.shape)
        dx = softmax_backward(dy, cy)[0]
        dlx = log_softmax_backward(dy, cly)[0]
    np.testing.assert_allclose(y[0], y[2], rtol=1e-15)  # shift invariance
    np.testing.assert_allclose(y[1], y[2][::-1], rtol=1e-15)
    np.testing.assert_allclose(ly[0], ly[2], rtol=1e-13)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-15)
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(dlx))
    # an extreme gap: log_softmax stays finite where log(softmax) would be -inf
    ly2, _ = log_softmax(np.array([0.0, 2000.0]))
    np.testing.assert_array_equal(ly2, [-2000.0, 0.0])


def test_softmax_backward_without_a_jacobian_matches_the_jacobian(rng):
    x, dy = rng.standard_normal(4), rng.standard_normal(4)
    y, cache = softmax(x)
    J = np.diag(y) - np.outer(y, y)  # dy_i / dx_j
    np.testing.assert_allclose(softmax_backward(dy, cache)[0], J.T @ dy, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("fn", [softmax, log_softmax])
@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (np.zeros((2, 3)), {"axis": 2}, r"axis: expected an integer axis in \[-2, 2\) for 2 axes, got 2"),
        (np.zeros((2, 3)), {"axis": 1.0}, r"axis: expected an integer axis in \[-2, 2\) for 2 axes, got 1.0"),
        (np.zeros((2, 3), dtype=bool), {}, "x: expected dtype float32 or float64, got bool"),
        (np.float64(1.0), {}, "x: expected a numpy array of float32 or float64, got float64"),
    ],
)
def test_softmax_bad_input(fn, x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(x, **kwargs)
