import math
from functools import partial

import numpy as np
import pytest

from ref.nn import gradcheck, group_norm, group_norm_backward, layer_norm


@pytest.mark.parametrize("num_groups", [1, 2, 3])
def test_group_norm_gradcheck(rng, num_groups):
    x = rng.standard_normal((2, 2, 6))  # (B, T, H*V) with H = num_groups
    weight, bias = rng.standard_normal(6), rng.standard_normal(6)
    fwd = partial(group_norm, num_groups=num_groups)
    gradcheck(fwd, group_norm_backward, {"x": x, "weight": weight, "bias": bias}, rng=rng, name="group_norm")


def test_group_norm_gradcheck_without_bias(rng):
    x = rng.standard_normal((3, 4))
    weight = rng.standard_normal(4)
    fwd = partial(group_norm, num_groups=2, eps=1e-3)
    gradcheck(fwd, group_norm_backward, {"x": x, "weight": weight}, rng=rng, name="group_norm")


def test_group_norm_forward_matches_per_head_definition(rng):
    B, T, H, V = 2, 3, 2, 3
    x = rng.standard_normal((B, T, H * V)) * 2 + 1
    weight, bias = rng.standard_normal(H * V), rng.standard_normal(H * V)
    y, _ = group_norm(x, weight, bias, num_groups=H)
    expected = np.empty_like(x)
    for b in range(B):
        for t in range(T):  # no statistics across time
            for h in range(H):
                head = [float(v) for v in x[b, t, h * V : (h + 1) * V]]
                mu = sum(head) / V
                var = sum((v - mu) ** 2 for v in head) / V
                for v in range(V):
                    c = h * V + v
                    expected[b, t, c] = (head[v] - mu) / math.sqrt(var + 1e-5) * weight[c] + bias[c]
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_group_norm_with_one_group_is_layer_norm(rng):
    x = rng.standard_normal((2, 5))
    weight, bias = rng.standard_normal(5), rng.standard_normal(5)
    np.testing.assert_allclose(group_norm(x, weight, bias, num_groups=1)[0], layer_norm(x, weight, bias)[0], rtol=1e-14)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_groups": 4}, "num_groups: expected a divisor of D = 6 .*got 4"),
        ({"num_groups": 0}, "num_groups: expected an integer >= 1, got 0"),
        ({"num_groups": True}, "num_groups: expected an integer >= 1, got True"),
        ({"num_groups": 2, "eps": 0}, "eps: expected a number > 0"),
    ],
)
def test_group_norm_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        group_norm(np.zeros((2, 6)), np.ones(6), np.zeros(6), **kwargs)


def test_group_norm_bad_shapes():
    with pytest.raises(ValueError, match=r"bias: expected shape \(D,\) = \(6,\)"):
        group_norm(np.zeros((2, 6)), np.ones(6), np.zeros(3), num_groups=2)
    with pytest.raises(ValueError, match="weight: expected dtype float32"):
        group_norm(np.zeros((2, 6), np.float32), np.ones(6), num_groups=2)
