import numpy as np
import pytest

from ref.nn import GradcheckError, gradcheck, linear, linear_backward


def test_linear_gradcheck_with_bias(rng):
    x = rng.standard_normal((2, 3, 4))
    W = rng.standard_normal((4, 5))
    b = rng.standard_normal(5)
    gradcheck(linear, linear_backward, {"x": x, "W": W, "b": b}, rng=rng)


def test_linear_gradcheck_without_bias(rng):
    x = rng.standard_normal((6, 4))
    W = rng.standard_normal((4, 3))
    gradcheck(linear, linear_backward, {"x": x, "W": W}, rng=rng)
    _, cache = linear(x, W)
    assert linear_backward(np.ones((6, 3)), cache)[2] is None


def test_linear_forward_matches_definition(rng):
    x = rng.standard_normal((3, 4))
    W = rng.standard_normal((4, 2))
    b = rng.standard_normal(2)
    y, _ = linear(x, W, b)
    expected = np.array([[sum(x[m, i] * W[i, j] for i in range(4)) + b[j] for j in range(2)] for m in range(3)])
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.zeros((2, 3)), np.zeros((4, 5))), "x: expected last axis D_in = 4"),
        ((np.zeros((2, 4)), np.zeros((4, 5)), np.zeros(4)), r"b: expected shape \(D_out,\) = \(5,\)"),
        ((np.zeros((2, 4), dtype=int), np.zeros((4, 5))), "x: expected dtype float32 or float64, got int64"),
        ((np.zeros((2, 4), np.float32), np.zeros((4, 5))), "W: expected dtype float32"),
        ((np.zeros((2, 4)), np.zeros(4)), r"W: expected 2 axes \(D_in, D_out\)"),
    ],
)
def test_linear_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        linear(*args)


def test_gradcheck_catches_a_wrong_backward(rng):
    """The checker must fail, with a readable report, when backward is wrong."""

    def wrong_backward(dy, cache):
        dx, dW, db = linear_backward(dy, cache)
        return dx, dW, 0.5 * db  # a deliberate bug in the bias gradient

    x, W, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)
    with pytest.raises(GradcheckError) as err:
        gradcheck(linear, wrong_backward, {"x": x, "W": W, "b": b}, name="linear-with-bug")
    text = str(err.value)
    assert "gradcheck linear-with-bug: FAILED" in text
    assert "b " in text and "MISMATCH" in text and "numeric :" in text and "analytic:" in text
    # x and W are still right and must be reported as such
    assert text.count("MISMATCH") == 1


def test_gradcheck_catches_accumulation_and_mutation(rng):
    store = {"dW": None}

    def accumulating_backward(dy, cache):
        dx, dW, db = linear_backward(dy, cache)
        store["dW"] = dW if store["dW"] is None else store["dW"] + dW  # hidden accumulator
        return dx, store["dW"], db

    x, W, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)
    report = gradcheck(linear, accumulating_backward, {"x": x, "W": W, "b": b}, raise_on_failure=False)
    assert not report.ok and any("twice" in p for p in report.problems)

    def mutating_forward(x, W, b):
        y, cache = linear(x, W, b)
        x *= 1.0 + 1e-3  # modifies the caller's array
        return y, cache

    report = gradcheck(mutating_forward, linear_backward, {"x": x, "W": W, "b": b}, raise_on_failure=False)
    assert not report.ok and any("in place" in p for p in report.problems)


def test_gradcheck_refuses_float32(rng):
    with pytest.raises(ValueError, match="x: gradcheck needs float64"):
        gradcheck(linear, linear_backward, {"x": np.zeros((2, 3), np.float32), "W": np.zeros((3, 2), np.float32)})


def test_gradcheck_passes_options_through(rng):
    """Non-array inputs (options) reach forward unchanged and are not differentiated."""
    from ref.nn import gelu, gelu_backward

    x = rng.standard_normal((3, 4))
    report = gradcheck(gelu, gelu_backward, {"x": x, "approximate": "tanh"}, rng=rng)
    assert [t.name for t in report.tensors] == ["x"]
