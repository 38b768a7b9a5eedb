import math
from functools import partial

import numpy as np
import pytest

from ref.nn import gradcheck, layer_norm, layer_norm_backward


def test_layer_norm_gradcheck_with_bias(rng):
    x = rng.standard_normal((2, 3, 5))
    weight, bias = rng.standard_normal(5), rng.standard_normal(5)
    gradcheck(layer_norm, layer_norm_backward, {"x": x, "weight": weight, "bias": bias}, rng=rng)


def test_layer_norm_gradcheck_without_bias_and_other_eps(rng):
    x = rng.standard_normal((4, 3)) * 0.1  # small variance: eps matters
    weight = rng.standard_normal(3)
    fwd = partial(layer_norm, eps=1e-2)
    gradcheck(fwd, layer_norm_backward, {"x": x, "weight": weight}, rng=rng, name="layer_norm")
    _, cache = layer_norm(x, weight)
    assert layer_norm_backward(np.ones((4, 3)), cache)[2] is None


def test_layer_norm_forward_matches_definition(rng):
    x = rng.standard_normal((3, 4)) * 3 + 1
    weight, bias = rng.standard_normal(4), rng.standard_normal(4)
    y, _ = layer_norm(x, weight, bias)
    expected = np.empty_like(x)
    for m in range(3):
        row = [float(v) for v in x[m]]
        mu = sum(row) / 4
        var = sum((v - mu) ** 2 for v in row) / 4  # biased, as PyTorch
        for d in range(4):
            expected[m, d] = (row[d] - mu) / math.sqrt(var + 1e-5) * weight[d] + bias[d]
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (
            (np.zeros((2, 3)), np.zeros(4)),
            {},
            r"weight: expected shape \(D,\) = \(3,\) \(the last axis of x\), got \(4,\)",
        ),
        ((np.zeros((2, 3)), np.zeros(3), np.zeros((1, 3))), {}, r"bias: expected 1 axes \(D,\)"),
        ((np.zeros((2, 3)), np.zeros(3, np.float32)), {}, "weight: expected dtype float64 .*got float32"),
        ((np.zeros((2, 3), dtype=int), np.zeros(3)), {}, "x: expected dtype float32 or float64, got int64"),
        ((np.zeros((2, 3)), np.zeros(3)), {"eps": 0.0}, "eps: expected a number > 0, got 0.0"),
        ((np.zeros((2, 3)), np.zeros(3)), {"eps": "1e-5"}, "eps: expected a finite real number"),
    ],
)
def test_layer_norm_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        layer_norm(*args, **kwargs)
