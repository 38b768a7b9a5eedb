"""numba_kernels.vecmath: the vectorisable exp, softplus and sigmoid against extended precision.

Each function is measured in units in the last place (ulp) of the exact value, computed in
np.longdouble, on dense sweeps over the whole range of its float32 and float64 arguments plus the
special values; the bounds are those the module states (exp 1 ulp, log1pexp and softplus 2, sigmoid 3). A
subnormal result is measured in units of the smallest subnormal.
"""

import numpy as np
import pytest
from numba import njit

from numba_kernels.vecmath import SOFTPLUS_THRESHOLD, VECTOR_JIT, vexp, vlog1pexp, vsigmoid, vsoftplus


@njit(**VECTOR_JIT)
def _apply(x, e, s, g, lp):
    for i in range(x.shape[0]):
        e[i] = vexp(x[i])
        s[i] = vsoftplus(x[i])
        g[i] = vsigmoid(x[i])
        lp[i] = vlog1pexp(x[i])


def _ulp_error(got, exact, dtype):
    finfo = np.finfo(dtype)
    finite = np.abs(exact) <= finfo.max
    ulp = np.maximum(np.spacing(exact[finite].astype(dtype)).astype(np.longdouble), finfo.smallest_subnormal)
    return float((np.abs(got[finite] - exact[finite]) / ulp).max())


@pytest.mark.parametrize("dtype, lo, hi", [(np.float32, -110.0, 95.0), (np.float64, -760.0, 715.0)])
def test_within_their_ulp_bounds(dtype, lo, hi):
    x = np.concatenate([np.linspace(lo, hi, 200_001), np.linspace(-2, 2, 20_001), [0.0, 20.0, 20.5, -0.0]])
    x = x.astype(dtype)
    e, s, g, lp = (np.empty_like(x) for _ in range(4))
    _apply(x, e, s, g, lp)
    xl = x.astype(np.longdouble)
    assert _ulp_error(e, np.exp(xl), dtype) <= 1.0
    assert _ulp_error(lp, np.log1p(np.exp(xl)), dtype) <= 2.0
    assert _ulp_error(s, np.where(xl > SOFTPLUS_THRESHOLD, xl, np.log1p(np.exp(xl))), dtype) <= 2.0
    assert _ulp_error(g, 1 / (1 + np.exp(-xl)), dtype) <= 3.0
    finfo = np.finfo(dtype)
    assert np.isinf(e[x > np.log(finfo.max)]).all() and (e[x < np.log(finfo.smallest_subnormal) - 1] == 0).all()
    assert e.dtype == s.dtype == g.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype):
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0], dtype)
    e, s, g, lp = (np.empty_like(x) for _ in range(4))
    _apply(x, e, s, g, lp)
    np.testing.assert_array_equal(e, [0.0, np.inf, np.nan, 1.0, 1.0])  # a masked score of -inf: probability 0
    np.testing.assert_array_equal(g, [0.0, 1.0, np.nan, 0.5, 0.5])
    assert s[3] == s[4] == np.log(dtype(2))  # (softplus takes finite arguments only: a gate's input)
