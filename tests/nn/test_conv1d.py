import numpy as np
import pytest
from scipy.signal import correlate

from ref.nn import causal_conv1d, causal_conv1d_backward, gradcheck


def _naive(x, weight, bias, initial_state):
    """y[b, t, d] = bias[d] + sum_j weight[d, j] * (input at time t + j - (W-1)), loops only."""
    B, T, D = x.shape
    W = weight.shape[1]
    y = np.zeros((B, T, D))
    for b in range(B):
        for t in range(T):
            for d in range(D):
                acc = 0.0 if bias is None else bias[d]
                for j in range(W):
                    s = t + j - (W - 1)  # time of the input under tap j
                    if s >= 0:
                        acc += weight[d, j] * x[b, s, d]
                    elif initial_state is not None:
                        acc += weight[d, j] * initial_state[b, (W - 1) + s, d]
                y[b, t, d] = acc
    return y


@pytest.mark.parametrize("T", [1, 2, 5])
@pytest.mark.parametrize("with_state", [False, True])
def test_causal_conv1d_forward_matches_loop(rng, T, with_state):
    B, D, W = 2, 3, 4
    x = rng.standard_normal((B, T, D))
    weight, bias = rng.standard_normal((D, W)), rng.standard_normal(D)
    h0 = rng.standard_normal((B, W - 1, D)) if with_state else None
    y, final_state, _ = causal_conv1d(x, weight, bias, h0)
    np.testing.assert_allclose(y, _naive(x, weight, bias, h0), rtol=1e-13, atol=1e-14)
    previous = np.zeros((B, W - 1, D)) if h0 is None else h0
    # the last W-1 inputs, reaching into the initial state when T < W-1
    np.testing.assert_array_equal(final_state, np.concatenate([previous, x], axis=1)[:, -(W - 1) :])


def test_causal_conv1d_matches_torch_style_padded_conv_cropped(rng):
    """Conv1d(groups=D, padding=W-1) (W-1 zeros on both sides), cross-correlation, first T outputs."""
    B, T, D, W = 2, 6, 3, 4
    x = rng.standard_normal((B, T, D))
    weight, bias = rng.standard_normal((D, W)), rng.standard_normal(D)
    y, _, _ = causal_conv1d(x, weight, bias)
    for b in range(B):
        for d in range(D):
            padded = np.concatenate([np.zeros(W - 1), x[b, :, d], np.zeros(W - 1)])
            full = correlate(padded, weight[d], mode="valid") + bias[d]  # length T + W - 1
            np.testing.assert_allclose(y[b, :, d], full[:T], rtol=1e-13, atol=1e-14)


def test_causal_conv1d_in_pieces_equals_whole(rng):
    B, T, D, W = 2, 9, 3, 4
    x = rng.standard_normal((B, T, D))
    weight, bias = rng.standard_normal((D, W)), rng.standard_normal(D)
    h0 = rng.standard_normal((B, W - 1, D))
    y_whole, final_whole, _ = causal_conv1d(x, weight, bias, h0)
    pieces, state, start = [], h0, 0
    for length in (1, 2, 4, 2):  # pieces shorter than W-1 = 3 included
        y, state, _ = causal_conv1d(x[:, start : start + length], weight, bias, state)
        pieces.append(y)
        start += length
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), y_whole, rtol=1e-14, atol=1e-14)
    np.testing.assert_array_equal(state, final_whole)


@pytest.mark.parametrize(
    "T, W, with_bias, with_state",
    [
        (5, 4, True, True),
        (5, 4, False, False),
        (2, 4, True, True),  # T < W-1: the initial state reaches both y and final_state
        (1, 4, True, True),
        (1, 3, False, True),
        (3, 1, True, False),  # W = 1: an empty state
    ],
)
def test_causal_conv1d_gradcheck(rng, T, W, with_bias, with_state):
    B, D = 2, 3
    inputs = {"x": rng.standard_normal((B, T, D)), "weight": rng.standard_normal((D, W))}
    if with_bias:
        inputs["bias"] = rng.standard_normal(D)
    if with_state:
        inputs["initial_state"] = rng.standard_normal((B, W - 1, D))
    # random cotangents for y AND final_state
    report = gradcheck(causal_conv1d, causal_conv1d_backward, inputs, rng=rng)
    assert {t.name for t in report.tensors} == set(inputs)


def test_causal_conv1d_backward_none_final_state_cotangent_is_zero(rng):
    x, weight = rng.standard_normal((1, 2, 3)), rng.standard_normal((3, 4))
    h0 = rng.standard_normal((1, 3, 3))
    _, _, cache = causal_conv1d(x, weight, None, h0)
    dy = rng.standard_normal((1, 2, 3))
    a = causal_conv1d_backward(dy, None, cache)
    b = causal_conv1d_backward(dy, np.zeros((1, 3, 3)), cache)
    for ga, gb in zip(a, b):
        if ga is None:
            assert gb is None
        else:
            np.testing.assert_array_equal(ga, gb)
    assert a[2] is None  # no bias
    # T = 2 < W-1 = 3: h0[:, 2] is in final_state, its gradient must include dfinal_state
    dfinal = rng.standard_normal((1, 3, 3))
    dh0 = causal_conv1d_backward(dy, dfinal, cache)[3]
    np.testing.assert_allclose(dh0[:, 2] - a[3][:, 2], dfinal[:, 0], rtol=1e-14)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.zeros((2, 3)), np.zeros((3, 4))), r"x: expected 3 axes \(B, T, D\), got shape \(2, 3\)"),
        ((np.zeros((2, 0, 3)), np.zeros((3, 4))), "x: expected a time axis of length >= 1, got length 0"),
        ((np.zeros((2, 5, 3)), np.zeros((2, 4))), r"weight: expected shape \(D, W\) with D = 3"),
        ((np.zeros((2, 5, 3)), np.zeros((3, 0))), r"weight: expected shape \(D, W\) with D = 3 .* and W >= 1"),
        ((np.zeros((2, 5, 3)), np.zeros((3, 4), np.float32)), "weight: expected dtype float64"),
        ((np.zeros((2, 5, 3)), np.zeros((3, 4)), np.zeros(4)), r"bias: expected shape \(D,\) = \(3,\)"),
        (
            (np.zeros((2, 5, 3)), np.zeros((3, 4)), None, np.zeros((2, 4, 3))),
            r"initial_state: expected shape \(B, W-1, D\) = \(2, 3, 3\) \(from x and weight\), got \(2, 4, 3\)",
        ),
        (
            (np.zeros((2, 5, 3)), np.zeros((3, 4)), None, np.zeros((2, 3, 3), dtype=int)),
            "initial_state: expected dtype float32 or float64, got int64",
        ),
    ],
)
def test_causal_conv1d_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        causal_conv1d(*args)


def test_causal_conv1d_backward_bad_cotangent(rng):
    _, _, cache = causal_conv1d(rng.standard_normal((2, 5, 3)), rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match=r"dfinal_state: expected shape \(B, W-1, D\) = \(2, 3, 3\)"):
        causal_conv1d_backward(np.zeros((2, 5, 3)), np.zeros((2, 5, 3)), cache)
