from functools import partial

import numpy as np
import pytest

from ref.nn import avg_pool2d, avg_pool2d_backward, gradcheck, max_pool2d, max_pool2d_backward


def _naive_pool(x, k, s, reduce):
    N, C, H, W = x.shape
    Ho, Wo = (H - k[0]) // s[0] + 1, (W - k[1]) // s[1] + 1
    y = np.empty((N, C, Ho, Wo))
    for n in range(N):
        for c in range(C):
            for u in range(Ho):
                for v in range(Wo):
                    y[n, c, u, v] = reduce(x[n, c, u * s[0] : u * s[0] + k[0], v * s[1] : v * s[1] + k[1]])
    return y


def _distinct(rng, shape):
    """Inputs without ties, spaced far more than the finite-difference step apart."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) / 10.0 - 1.0


@pytest.mark.parametrize("kernel, stride", [(2, None), ((2, 3), (1, 2)), (3, 1), (2, 2)])
def test_pool_forward_matches_loop(rng, kernel, stride):
    x = rng.standard_normal((2, 3, 6, 7))
    k = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    s = k if stride is None else (stride if isinstance(stride, tuple) else (stride, stride))
    np.testing.assert_array_equal(max_pool2d(x, kernel_size=kernel, stride=stride)[0], _naive_pool(x, k, s, np.max))
    np.testing.assert_allclose(
        avg_pool2d(x, kernel_size=kernel, stride=stride)[0], _naive_pool(x, k, s, np.mean), rtol=1e-14, atol=1e-15
    )


@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 1), ((2, 3), (2, 1))])
def test_max_pool_gradcheck(rng, kernel, stride):
    x = _distinct(rng, (2, 2, 5, 6))
    fwd = partial(max_pool2d, kernel_size=kernel, stride=stride)
    gradcheck(fwd, max_pool2d_backward, {"x": x}, rng=rng, name="max_pool2d")


@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 1), ((2, 3), (2, 1))])
def test_avg_pool_gradcheck(rng, kernel, stride):
    x = rng.standard_normal((2, 2, 5, 6))
    fwd = partial(avg_pool2d, kernel_size=kernel, stride=stride)
    gradcheck(fwd, avg_pool2d_backward, {"x": x}, rng=rng, name="avg_pool2d")


def test_max_pool_backward_routes_to_the_argmax():
    x = np.array([[[[1.0, 5.0, 2.0], [3.0, 4.0, 0.0], [6.0, -1.0, 7.0]]]])  # (1, 1, 3, 3)
    y, cache = max_pool2d(x, kernel_size=2, stride=1)  # overlapping windows
    np.testing.assert_array_equal(y[0, 0], [[5.0, 5.0], [6.0, 7.0]])
    (dx,) = max_pool2d_backward(np.array([[[[1.0, 10.0], [100.0, 1000.0]]]]), cache)
    # 5 wins two windows and collects both; 6 and 7 one each; the rest get nothing
    np.testing.assert_array_equal(dx[0, 0], [[0.0, 11.0, 0.0], [0.0, 0.0, 0.0], [100.0, 0.0, 1000.0]])


@pytest.mark.parametrize("fn", [max_pool2d, avg_pool2d])
@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (
            np.zeros((1, 1, 3, 3)),
            {"kernel_size": 4},
            r"kernel_size: expected a kernel no larger than the input \(H, W\) = \(3, 3\), got \(4, 4\)",
        ),
        (np.zeros((1, 1, 3, 3)), {"kernel_size": 0}, "kernel_size: expected an integer >= 1 or a pair"),
        (np.zeros((1, 1, 3, 3)), {"kernel_size": 2, "stride": 0}, "stride: expected an integer >= 1"),
        (np.zeros((1, 3, 3)), {"kernel_size": 2}, r"x: expected 4 axes \(N, C, H, W\)"),
        (np.zeros((1, 1, 3, 3), dtype=int), {"kernel_size": 2}, "x: expected dtype float32 or float64"),
    ],
)
def test_pool_bad_input(fn, x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(x, **kwargs)
