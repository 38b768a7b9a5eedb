import numpy as np
import pytest

from ref.train import clip_grad_norm, global_norm, tree_flatten


def test_global_norm_is_the_norm_of_all_entries(rng):
    grads = {"a": rng.standard_normal((3, 4)), "b": [rng.standard_normal(5), rng.standard_normal((2, 2, 2))]}
    everything = np.concatenate([g.ravel() for g in tree_flatten(grads).values()])
    assert global_norm(grads) == pytest.approx(np.linalg.norm(everything), rel=1e-15)
    assert global_norm({"a": np.array([3.0]), "b": np.array([[4.0]])}) == 5.0


def test_below_the_threshold_nothing_changes():
    grads = {"a": np.array([3.0]), "b": np.array([[4.0]])}  # norm 5
    for max_norm in (10.0, 5.0):  # at the threshold counts as below
        clipped, norm = clip_grad_norm(grads, max_norm)
        assert norm == 5.0 and clipped is grads


def test_clipping_scales_every_leaf_by_max_norm_over_norm():
    grads = {"a": np.full((1, 2), 2.0), "b": [np.array([-2.0, 2.0])]}  # 4 entries of magnitude 2: norm 4
    clipped, norm = clip_grad_norm(grads, 2.0)
    assert norm == 4.0
    np.testing.assert_array_equal(clipped["a"], [[1.0, 1.0]])  # scale 2 / 4 = 0.5, exact in binary
    np.testing.assert_array_equal(clipped["b"][0], [-1.0, 1.0])
    assert global_norm(clipped) == 2.0
    np.testing.assert_array_equal(grads["a"], [[2.0, 2.0]])  # the input is untouched


def test_clipped_norm_is_max_norm(rng):
    grads = {"W": rng.standard_normal((7, 3)) * 10, "b": rng.standard_normal(3)}
    clipped, norm = clip_grad_norm(grads, 0.3)
    assert norm > 0.3
    assert global_norm(clipped) == pytest.approx(0.3, rel=1e-15)
    # the direction is kept
    np.testing.assert_allclose(clipped["W"] / grads["W"], 0.3 / norm, rtol=1e-15)


def test_float32_keeps_its_dtype_and_the_norm_does_not_overflow():
    grads = {"W": np.full(4, 1e20, dtype=np.float32)}  # (1e20)^2 overflows float32
    clipped, norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(2e20, rel=1e-7)
    assert clipped["W"].dtype == np.float32
    np.testing.assert_allclose(clipped["W"], 0.5, rtol=1e-6)


@pytest.mark.parametrize(
    "grads, max_norm, match",
    [
        ({"a": np.array([1.0, np.inf])}, 1.0, r"grads/a: expected finite values, got 1 non-finite \(first at index \(1,\)"),
        ({"a": np.array([1.0])}, 0.0, "max_norm: expected a finite number > 0, got 0.0"),
        ({"a": np.array([1.0])}, -1.0, "max_norm: expected a finite number > 0"),
        ({"a": np.array([1.0])}, float("nan"), "max_norm: expected a finite number > 0, got nan"),
        ({"a": np.array([1])}, 1.0, "grads/a: expected dtype float32 or float64, got int64"),
    ],
)
def test_bad_inputs(grads, max_norm, match):
    with pytest.raises(ValueError, match=match):
        clip_grad_norm(grads, max_norm)
