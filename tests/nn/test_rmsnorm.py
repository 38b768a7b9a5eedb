import math
from functools import partial

import numpy as np
import pytest

from ref.nn import gradcheck, rms_norm, rms_norm_backward


def test_rms_norm_gradcheck(rng):
    x = rng.standard_normal((2, 3, 5))
    weight = rng.standard_normal(5)
    gradcheck(rms_norm, rms_norm_backward, {"x": x, "weight": weight}, rng=rng)


def test_rms_norm_gradcheck_large_eps(rng):
    x = rng.standard_normal((3, 4)) * 0.1
    weight = rng.standard_normal(4)
    gradcheck(partial(rms_norm, eps=1e-2), rms_norm_backward, {"x": x, "weight": weight}, rng=rng, name="rms_norm")


def test_rms_norm_forward_matches_definition(rng):
    x = rng.standard_normal((3, 4)) * 2 + 0.5
    weight = rng.standard_normal(4)
    y, _ = rms_norm(x, weight)
    expected = np.empty_like(x)
    for m in range(3):
        ms = sum(float(v) ** 2 for v in x[m]) / 4
        for d in range(4):
            expected[m, d] = x[m, d] / math.sqrt(ms + 1e-6) * weight[d]
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((np.zeros((2, 3)), np.zeros(2)), {}, r"weight: expected shape \(D,\) = \(3,\)"),
        ((np.zeros((2, 3), np.float32), np.zeros(3)), {}, "weight: expected dtype float32"),
        ((np.zeros((2, 3), dtype=np.int32), np.zeros(3)), {}, "x: expected dtype float32 or float64, got int32"),
        ((np.zeros((2, 3)), np.zeros(3)), {"eps": -1e-6}, "eps: expected a number > 0"),
    ],
)
def test_rms_norm_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        rms_norm(*args, **kwargs)
