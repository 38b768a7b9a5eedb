import math
import warnings
from functools import partial

import numpy as np
import pytest

from ref.nn import cross_entropy, cross_entropy_backward, gradcheck, mse, mse_backward


def _naive_cross_entropy(logits, targets, ignore_index, eps, reduction):
    """PyTorch's definition written out per position with the math module."""
    V = logits.shape[-1]
    rows, tgts = logits.reshape(-1, V), targets.reshape(-1)
    losses, count = [], 0
    for row, t in zip(rows, tgts):
        if t == ignore_index:
            losses.append(0.0)
            continue
        count += 1
        log_z = math.log(sum(math.exp(v) for v in row))
        logp = [v - log_z for v in row]
        q = [(1 - eps) * (v == t) + eps / V for v in range(V)]  # smoothed target
        losses.append(-sum(qv * lv for qv, lv in zip(q, logp)))
    if reduction == "none":
        return np.array(losses).reshape(targets.shape)
    return sum(losses) / count if reduction == "mean" else sum(losses)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_forward_matches_definition(rng, reduction, label_smoothing):
    logits = rng.standard_normal((2, 5, 4)) * 2
    targets = rng.integers(0, 4, size=(2, 5))
    targets[0, 1] = targets[1, 3] = -100
    loss, _ = cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction=reduction)
    expected = _naive_cross_entropy(logits, targets, -100, label_smoothing, reduction)
    np.testing.assert_allclose(loss, expected, rtol=1e-13)
    assert isinstance(loss, np.ndarray) and loss.dtype == np.float64


def test_cross_entropy_of_uniform_logits_is_log_v():
    loss, _ = cross_entropy(np.zeros((3, 7)), np.array([0, 3, 6]))
    assert math.isclose(float(loss), math.log(7), rel_tol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_cross_entropy_gradcheck(rng, reduction, label_smoothing, ignore_index):
    logits = rng.standard_normal((2, 3, 4))
    targets = np.array([[0, 2, 1], [3, ignore_index, 2]])  # with ignore_index = 2, class 2 is ignored
    fwd = partial(cross_entropy, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction)
    gradcheck(fwd, cross_entropy_backward, {"logits": logits, "targets": targets}, rng=rng, name="cross_entropy")


def test_cross_entropy_ignored_positions_get_no_gradient(rng):
    logits = rng.standard_normal((4, 3))
    targets = np.array([0, -100, 2, -100])
    _, cache = cross_entropy(logits, targets, label_smoothing=0.3)
    dlogits, dtargets = cross_entropy_backward(1.0, cache)  # a Python float upstream gradient is fine
    assert dtargets is None
    np.testing.assert_array_equal(dlogits[[1, 3]], 0.0)
    # mean over the 2 kept positions: each row of (softmax - q) / 2 sums to zero
    np.testing.assert_allclose(dlogits.sum(axis=-1), 0.0, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_all_ignored_is_zero_not_nan(rng, reduction):
    """PyTorch gives NaN (0/0) for "mean"; we document and return 0 with a zero gradient."""
    logits = rng.standard_normal((2, 3, 5))
    targets = np.full((2, 3), -100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'invalid value' RuntimeWarning either
        loss, cache = cross_entropy(logits, targets, label_smoothing=0.1, reduction=reduction)
        dloss = np.ones(loss.shape)
        dlogits, _ = cross_entropy_backward(dloss, cache)
    np.testing.assert_array_equal(loss, np.zeros(loss.shape))
    np.testing.assert_array_equal(dlogits, np.zeros_like(logits))


def test_cross_entropy_large_logits_are_finite():
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, cache = cross_entropy(logits, np.array([1, 2]), reduction="none")
        dlogits, _ = cross_entropy_backward(np.ones(2), cache)
    np.testing.assert_allclose(loss, [2000.0, 1.0 + math.log1p(math.exp(-1.0))], rtol=1e-15)
    assert np.all(np.isfinite(dlogits))


@pytest.mark.parametrize(
    "logits, targets, kwargs, match",
    [
        (np.zeros((2, 3)), np.array([0.0, 1.0]), {}, "targets: expected an integer dtype, got float64"),
        (
            np.zeros((2, 3)),
            np.array([0, 1, 2]),
            {},
            r"targets: expected shape \(\.\.\.\) = \(2,\) \(the leading axes of logits\)",
        ),
        (
            np.zeros((2, 3)),
            np.array([0, 3]),
            {},
            r"targets: expected class ids in \[0, V\) = \[0, 3\) or ignore_index = -100, got 3",
        ),
        (np.zeros((2, 3)), np.array([0, -1]), {}, r"targets: expected class ids .* got -1 at index \(1,\)"),
        (np.zeros((2, 3), dtype=int), np.array([0, 1]), {}, "logits: expected dtype float32 or float64, got int64"),
        (np.zeros((2, 3)), np.array([0, 1]), {"reduction": "avg"}, "reduction: expected one of 'mean', 'sum', 'none'"),
        (np.zeros((2, 3)), np.array([0, 1]), {"label_smoothing": 1.5}, r"label_smoothing: expected .* \[0, 1\]"),
        (np.zeros((2, 3)), np.array([0, 1]), {"ignore_index": -1.0}, "ignore_index: expected an integer, got -1.0"),
    ],
)
def test_cross_entropy_bad_input(logits, targets, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cross_entropy(logits, targets, **kwargs)


def test_cross_entropy_backward_bad_dloss(rng):
    _, cache = cross_entropy(rng.standard_normal((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"dloss: expected shape \(\.\.\.\) = \(\)"):
        cross_entropy_backward(np.ones(2), cache)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_forward_matches_definition_and_gradcheck(rng, reduction):
    pred, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    loss, _ = mse(pred, target, reduction=reduction)
    squares = [[(pred[i, j] - target[i, j]) ** 2 for j in range(4)] for i in range(3)]
    total = sum(map(sum, squares))
    expected = {"mean": total / 12, "sum": total, "none": np.array(squares)}[reduction]
    np.testing.assert_allclose(loss, expected, rtol=1e-13)
    fwd = partial(mse, reduction=reduction)
    gradcheck(fwd, mse_backward, {"pred": pred, "target": target}, rng=rng, name="mse")


@pytest.mark.parametrize(
    "pred, target, kwargs, match",
    [
        (np.zeros(3), np.zeros(4), {}, r"target: expected shape \(\.\.\.\) = \(3,\) \(the shape of pred\), got \(4,\)"),
        (np.zeros(3), np.zeros((1, 3)), {}, r"target: expected shape .* = \(3,\)"),  # no silent broadcast
        (np.zeros(3), np.zeros(3, np.float32), {}, r"target: expected dtype float64 \(the dtype of pred\)"),
        (np.zeros(3, dtype=int), np.zeros(3), {}, "pred: expected dtype float32 or float64, got int64"),
        (np.zeros(3), np.zeros(3), {"reduction": "max"}, "reduction: expected one of"),
    ],
)
def test_mse_bad_input(pred, target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mse(pred, target, **kwargs)
