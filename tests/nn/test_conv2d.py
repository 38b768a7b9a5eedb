from functools import partial

import numpy as np
import pytest
from scipy.signal import correlate

from ref.nn import conv2d, conv2d_backward, gradcheck


def _scipy_conv2d(x, weight, bias, stride, padding):
    """Cross-correlate each (output, input) channel pair with scipy, sum over inputs, subsample."""
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    N, C_out = x.shape[0], weight.shape[0]
    out = []
    for n in range(N):
        maps = []
        for o in range(C_out):
            full = sum(correlate(xp[n, c], weight[o, c], mode="valid") for c in range(x.shape[1]))
            maps.append(full[::sh, ::sw] + (0.0 if bias is None else bias[o]))
        out.append(maps)
    return np.array(out)


@pytest.mark.parametrize(
    "kernel, stride, padding",
    [
        ((3, 3), 1, 0),
        ((3, 3), 2, 1),
        ((2, 3), (2, 1), (0, 2)),
        ((1, 1), 1, 0),
        ((3, 2), 3, (1, 0)),
    ],
)
def test_conv2d_forward_matches_scipy(rng, kernel, stride, padding):
    x = rng.standard_normal((2, 3, 7, 6))
    weight, bias = rng.standard_normal((4, 3) + kernel), rng.standard_normal(4)
    y, _ = conv2d(x, weight, bias, stride=stride, padding=padding)
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    expected = _scipy_conv2d(x, weight, bias, pair(stride), pair(padding))
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kernel, stride, padding, with_bias",
    [
        ((3, 3), 2, 1, True),  # stride 2 and padding 1: windows overlap the border
        ((3, 3), 1, 0, False),
        ((2, 3), (1, 2), (1, 0), True),
        ((2, 2), 1, 1, True),  # stride < kernel: overlapping windows add up in col2im
    ],
)
def test_conv2d_gradcheck(rng, kernel, stride, padding, with_bias):
    inputs = {"x": rng.standard_normal((2, 2, 5, 4)), "weight": rng.standard_normal((3, 2) + kernel)}
    if with_bias:
        inputs["bias"] = rng.standard_normal(3)
    fwd = partial(conv2d, stride=stride, padding=padding)
    gradcheck(fwd, conv2d_backward, inputs, rng=rng, name="conv2d")


def test_conv2d_without_bias_returns_none(rng):
    _, cache = conv2d(rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((2, 2, 2, 2)))
    assert conv2d_backward(np.ones((1, 2, 2, 2)), cache)[2] is None


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((np.zeros((1, 2, 5, 5)), np.zeros((3, 4, 3, 3))), {}, r"weight: expected shape .* with C_in = 2"),
        ((np.zeros((2, 5, 5)), np.zeros((3, 2, 3, 3))), {}, r"x: expected 4 axes \(N, C_in, H, W\)"),
        (
            (np.zeros((1, 2, 2, 2)), np.zeros((3, 2, 3, 3))),
            {},
            r"weight: expected a kernel .* = \(2, 2\), got \(3, 3\)",
        ),
        ((np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))), {"stride": 0}, "stride: expected an integer >= 1 or a pair"),
        ((np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))), {"stride": (1, 2, 3)}, "stride: expected an integer >= 1"),
        ((np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))), {"padding": -1}, "padding: expected an integer >= 0"),
        ((np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))), {"padding": 1.5}, "padding: expected an integer >= 0"),
        (
            (np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3)), np.zeros(2)),
            {},
            r"bias: expected shape \(C_out,\) = \(3,\)",
        ),
        ((np.zeros((1, 2, 5, 5), np.float32), np.zeros((3, 2, 3, 3))), {}, "weight: expected dtype float32"),
    ],
)
def test_conv2d_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv2d(*args, **kwargs)
