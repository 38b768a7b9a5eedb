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


# --- backend="numba": the fused kernel of numba_kernels.norms_cpu ------------------------------


def numba_bound(x, w, dy, r, dtype):
    """Elementwise bounds on |numba - NumPy| for (y, dx, dw), both in ``dtype``.

    Each side forms mean(x^2) with D + 2 roundings (in different orders), so r errs relatively
    by at most (D/2 + 4) u, and y = x r w by (D/2 + 6) u: twice that bounds the difference. dx =
    r (g - x r^2 mean(g x)) is a difference, so its error is bounded by the sum of absolute terms
    r (|g| + |x| r^2 mean(|g x|)) times (D + 10) u per side; dw = sum over M rows of dy x r by
    (M + D/2 + 8) u times sum |dy x r| per side."""
    u = np.finfo(dtype).eps / 2
    D, M = x.shape[-1], x.size // x.shape[-1]
    g = dy * w
    y_bound = 2 * (D / 2 + 6) * u * np.abs(x * r * w)
    dx_terms = r * (np.abs(g) + np.abs(x) * r * r * np.abs(g * x).mean(axis=-1, keepdims=True))
    dw_terms = np.abs(dy * x * r).reshape(-1, D).sum(axis=0)
    return y_bound, 2 * (D + 10) * u * dx_terms, 2 * (M + D / 2 + 8) * u * dw_terms


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1, 1, 7), (3, 70, 40), (2, 5, 128)])  # one row; several row blocks
def test_numba_backend_equals_numpy(rng, shape, dtype):
    from tests.compare import assert_within

    x = (rng.standard_normal(shape) * 2 + 0.3).astype(dtype)
    w = rng.standard_normal(shape[-1]).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y_np, c_np = rms_norm(x, w)
    y_nb, c_nb = rms_norm(x, w, backend="numba")
    assert y_nb.dtype == dtype and y_nb.shape == x.shape
    dx_np, dw_np = rms_norm_backward(dy, c_np)
    dx_nb, dw_nb = rms_norm_backward(dy, c_nb)
    assert dx_nb.dtype == dw_nb.dtype == dtype and dw_nb.shape == w.shape
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    r64 = 1 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + 1e-6)
    y_b, dx_b, dw_b = numba_bound(x64, w64, dy64, r64, dtype)
    assert_within("y", y_nb, y_np, y_b)
    assert_within("dx", dx_nb, dx_np, dx_b)
    assert_within("dweight", dw_nb, dw_np, dw_b)


def test_numba_backend_gradcheck(rng):
    x = rng.standard_normal((3, 70, 5))  # 210 rows: four row blocks
    weight = rng.standard_normal(5)
    gradcheck(partial(rms_norm, backend="numba"), rms_norm_backward, {"x": x, "weight": weight}, rng=rng,
              name="rms_norm[numba]")  # fmt: skip


def test_numba_backend_bad_input():
    with pytest.raises(ValueError, match="backend: rms_norm supports 'numpy', 'numba', got 'cuda'"):
        rms_norm(np.zeros((2, 3)), np.ones(3), backend="cuda")
