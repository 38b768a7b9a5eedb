from functools import partial

import numpy as np
import pytest

from ref.nn import batch_norm, batch_norm_backward, gradcheck


def _params(rng, C):
    weight, bias = rng.standard_normal(C), rng.standard_normal(C)
    running_mean = rng.standard_normal(C)
    running_var = rng.uniform(0.5, 2.0, C)
    return {"weight": weight, "bias": bias, "running_mean": running_mean, "running_var": running_var}


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 2, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck(rng, shape, training):
    """Random cotangents for y AND for the two new running statistics (all three are outputs)."""
    x = rng.standard_normal(shape) * 2 + 0.5
    fwd = partial(batch_norm, training=training, momentum=0.3)
    gradcheck(fwd, batch_norm_backward, {"x": x, **_params(rng, shape[1])}, rng=rng, name="batch_norm")


def test_batch_norm_gradcheck_without_bias_and_running_cotangents(rng):
    x = rng.standard_normal((4, 2, 3))
    inputs = {"x": x, **_params(rng, 2), "bias": None}
    dy = rng.standard_normal(x.shape)
    gradcheck(batch_norm, batch_norm_backward, inputs, cotangents=[dy, None, None], rng=rng)
    _, _, _, cache = batch_norm(**inputs)
    dx, dweight, dbias, drm, drv = batch_norm_backward(dy, None, None, cache)
    assert dbias is None
    np.testing.assert_array_equal(drm, np.zeros(2))
    zeros = np.zeros(2)
    np.testing.assert_array_equal(dx, batch_norm_backward(dy, zeros, zeros, cache)[0])


def test_batch_norm_training_forward_matches_definition(rng):
    N, C, H, W = 3, 2, 2, 2
    x = rng.standard_normal((N, C, H, W)) * 3 + 1
    p = _params(rng, C)
    y, new_mean, new_var, _ = batch_norm(x, **p)
    for c in range(C):
        values = x[:, c].ravel()  # the M = N*H*W values of channel c
        mu, var_biased, var_unbiased = values.mean(), values.var(ddof=0), values.var(ddof=1)
        expected = (x[:, c] - mu) / np.sqrt(var_biased + 1e-5) * p["weight"][c] + p["bias"][c]
        np.testing.assert_allclose(y[:, c], expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(new_mean[c], 0.9 * p["running_mean"][c] + 0.1 * mu, rtol=1e-13)
        np.testing.assert_allclose(new_var[c], 0.9 * p["running_var"][c] + 0.1 * var_unbiased, rtol=1e-13)


def test_batch_norm_eval_forward_uses_running_statistics(rng):
    x = rng.standard_normal((4, 3))
    p = _params(rng, 3)
    y, new_mean, new_var, _ = batch_norm(x, **p, training=False)
    expected = (x - p["running_mean"]) / np.sqrt(p["running_var"] + 1e-5) * p["weight"] + p["bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(new_mean, p["running_mean"])
    np.testing.assert_array_equal(new_var, p["running_var"])
    assert new_mean is not p["running_mean"] and new_var is not p["running_var"]


def test_batch_norm_is_pure(rng):
    x = rng.standard_normal((5, 2))
    p = _params(rng, 2)
    before = {k: v.copy() for k, v in p.items()}
    first = batch_norm(x, **p)
    second = batch_norm(x, **p)
    for k in p:
        np.testing.assert_array_equal(p[k], before[k])  # nothing updated in place
    for a, b in zip(first[:3], second[:3]):
        np.testing.assert_array_equal(a, b)  # no hidden state


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (np.zeros((1, 3)), {}, r"x: expected more than 1 value per channel in training mode"),
        (np.zeros(3), {}, r"x: expected at least 2 axes \(N, C\) or \(N, C, H, W\), got shape \(3,\)"),
        (np.zeros((4, 3)), {"momentum": 1.5}, r"momentum: expected a number in \[0, 1\], got 1.5"),
        (np.zeros((4, 3)), {"momentum": None}, "momentum: expected a finite real number, got None"),
        (np.zeros((4, 3)), {"training": 1}, "training: expected True or False, got 1"),
        (np.zeros((4, 3)), {"eps": -1.0}, "eps: expected a number > 0"),
        (np.zeros((4, 2)), {}, r"weight: expected shape \(C,\) = \(2,\) \(the channel axis 1 of x\), got \(3,\)"),
    ],
)
def test_batch_norm_bad_input(x, kwargs, match):
    ones, zeros = np.ones(3), np.zeros(3)
    with pytest.raises(ValueError, match=match):
        batch_norm(x, ones, zeros, zeros, ones, **kwargs)


def test_batch_norm_eval_accepts_a_single_value_per_channel(rng):
    p = _params(rng, 3)
    y, *_ = batch_norm(rng.standard_normal((1, 3)), **p, training=False)
    assert y.shape == (1, 3)


def test_batch_norm_refuses_mixed_dtypes():
    ones, zeros = np.ones(3), np.zeros(3)
    with pytest.raises(ValueError, match=r"running_var: expected dtype float64 \(the dtype of x\), got float32"):
        batch_norm(np.zeros((4, 3)), ones, zeros, zeros, ones.astype(np.float32))
