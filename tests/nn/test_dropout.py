import numpy as np
import pytest

from ref.nn import dropout, dropout_backward, gradcheck


def test_dropout_identity_when_p_is_zero_or_not_training(rng):
    x = rng.standard_normal((3, 4))
    for kwargs in ({"p": 0.0, "rng": rng}, {"p": 0.5, "training": False}, {"p": 0.0}):
        y, cache = dropout(x, **kwargs)
        np.testing.assert_array_equal(y, x)
        assert y is not x
        dy = rng.standard_normal(x.shape)
        np.testing.assert_array_equal(dropout_backward(dy, cache)[0], dy)


def test_dropout_same_seed_same_mask_in_both_dtypes(rng):
    x = rng.standard_normal((4, 5)) + 3.0  # no zeros, so the mask shows in y
    y1, _ = dropout(x, p=0.4, rng=np.random.default_rng(7))
    y2, _ = dropout(x, p=0.4, rng=np.random.default_rng(7))
    y3, _ = dropout(x, p=0.4, rng=np.random.default_rng(8))
    y32, _ = dropout(x.astype(np.float32), p=0.4, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1 == 0, y3 == 0)
    np.testing.assert_array_equal(y1 == 0, y32 == 0)


def test_dropout_scales_the_kept_values_and_keeps_about_1_minus_p():
    p = 0.3
    x = np.ones(200_000)
    y, _ = dropout(x, p=p, rng=np.random.default_rng(0))
    assert set(np.unique(y)) == {0.0, 1.0 / (1.0 - p)}
    assert abs((y > 0).mean() - (1 - p)) < 0.005  # 1-p = 0.7, sd of the mean ~ 0.001
    assert abs(y.mean() - 1.0) < 0.01  # inverted dropout keeps E[y] = x


def test_dropout_backward_uses_the_saved_mask(rng):
    x = rng.standard_normal((3, 6)) + 3.0
    y, cache = dropout(x, p=0.5, rng=np.random.default_rng(3))
    dy = rng.standard_normal(x.shape)
    (dx,) = dropout_backward(dy, cache)
    np.testing.assert_allclose(dx, dy * (y / x), rtol=1e-14)  # y / x is the mask: 0 or 2


def test_dropout_gradcheck(rng):
    x = rng.standard_normal((3, 4))
    # a freshly seeded generator per call, so every forward of the check draws the same mask
    fwd = lambda x: dropout(x, p=0.3, rng=np.random.default_rng(11))  # noqa: E731
    gradcheck(fwd, dropout_backward, {"x": x}, rng=rng, name="dropout")


def test_dropout_p_one_drops_everything(rng):
    x = rng.standard_normal(5)
    y, cache = dropout(x, p=1.0, rng=rng)
    np.testing.assert_array_equal(y, np.zeros(5))
    np.testing.assert_array_equal(dropout_backward(np.ones(5), cache)[0], np.zeros(5))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"p": 1.5, "rng": np.random.default_rng(0)}, r"p: expected a number in \[0, 1\], got 1.5"),
        ({"p": -0.1, "rng": np.random.default_rng(0)}, r"p: expected a number in \[0, 1\], got -0.1"),
        ({"p": 0.5}, "rng: expected a numpy.random.Generator when training with p > 0, got NoneType"),
        ({"p": 0.5, "rng": 0}, "rng: expected a numpy.random.Generator when training with p > 0, got int"),
        ({"p": 0.5, "rng": np.random.default_rng(0), "training": "yes"}, "training: expected True or False"),
    ],
)
def test_dropout_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dropout(np.zeros(3), **kwargs)
