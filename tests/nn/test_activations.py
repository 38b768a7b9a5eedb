import math
from functools import partial

import numpy as np
import pytest

from ref.nn import (
    gelu,
    gelu_backward,
    gradcheck,
    logsigmoid,
    logsigmoid_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    silu,
    silu_backward,
    softplus,
    softplus_backward,
    tanh,
    tanh_backward,
)

PAIRS = {
    "relu": (relu, relu_backward),
    "gelu_none": (partial(gelu, approximate="none"), gelu_backward),
    "gelu_tanh": (partial(gelu, approximate="tanh"), gelu_backward),
    "sigmoid": (sigmoid, sigmoid_backward),
    "silu": (silu, silu_backward),
    "tanh": (tanh, tanh_backward),
    "softplus": (softplus, softplus_backward),
    "softplus_beta2": (partial(softplus, beta=2.0, threshold=5.0), softplus_backward),
    "logsigmoid": (logsigmoid, logsigmoid_backward),
}


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


# independent scalar definitions, from the math module
SCALAR = {
    "relu": lambda v: max(v, 0.0),
    "gelu_none": lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))),
    "gelu_tanh": lambda v: 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3))),
    "sigmoid": _sig,
    "silu": lambda v: v * _sig(v),
    "tanh": math.tanh,
    "softplus": lambda v: v if v > 20.0 else math.log1p(math.exp(v)),
    "softplus_beta2": lambda v: v if 2.0 * v > 5.0 else math.log1p(math.exp(2.0 * v)) / 2.0,
    "logsigmoid": lambda v: math.log(_sig(v)),
}


def _away_from_zero(rng, shape):
    """Standard normal values pushed out of (-0.05, 0.05): no input sits on relu's kink."""
    x = rng.standard_normal(shape) * 2.0
    return np.where(x >= 0, x + 0.05, x - 0.05)


@pytest.mark.parametrize("name", list(PAIRS))
def test_activation_gradcheck(rng, name):
    fwd, bwd = PAIRS[name]
    gradcheck(fwd, bwd, {"x": _away_from_zero(rng, (3, 5))}, rng=rng, name=name)


@pytest.mark.parametrize("name", list(PAIRS))
def test_activation_forward_matches_definition(rng, name):
    x = _away_from_zero(rng, (4, 6))
    x[0, :3] = [-8.0, 2.4, 6.0]  # includes softplus_beta2's linear region (2x > 5)
    y, _ = PAIRS[name][0](x)
    expected = np.vectorize(SCALAR[name])(x)
    np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-15)


def test_gelu_approximations_are_close_but_not_equal(rng):
    x = np.linspace(-5, 5, 101)
    exact, _ = gelu(x)
    approx, _ = gelu(x, approximate="tanh")
    assert 0 < np.abs(exact - approx).max() < 1e-3


def test_relu_gradient_at_zero_is_zero():
    _, cache = relu(np.array([-1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(relu_backward(np.ones(3), cache)[0], [0.0, 0.0, 1.0])


def test_sigmoid_logsigmoid_silu_stable_at_1000():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    dy = np.ones(5)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s, cs = sigmoid(x)
        ls, cls = logsigmoid(x)
        si, csi = silu(x)
        ds = sigmoid_backward(dy, cs)[0]
        dls = logsigmoid_backward(dy, cls)[0]
        dsi = silu_backward(dy, csi)[0]
    np.testing.assert_array_equal(s[[0, 2, 4]], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(ls[[0, 4]], [-1000.0, 0.0])
    np.testing.assert_allclose(ls[[1, 3]], [-50.0, -math.exp(-50.0)], rtol=1e-15)
    np.testing.assert_array_equal(dls[[0, 4]], [1.0, 0.0])  # d/dx log sigmoid = sigmoid(-x)
    np.testing.assert_array_equal(si[[0, 4]], [-0.0, 1000.0])
    for a in (s, ls, si, ds, dls, dsi):
        assert np.all(np.isfinite(a))


def test_softplus_threshold_region():
    """PyTorch: linear only where beta * x > threshold (strictly); log1p(exp) at the threshold."""
    x = np.array([19.5, 20.0, 20.0 + 1e-9, 20.5, 30.0])
    y, cache = softplus(x)
    (dx,) = softplus_backward(np.ones(5), cache)
    assert y[1] == math.log1p(math.exp(20.0)) and y[1] != 20.0  # at the threshold: not yet linear
    np.testing.assert_array_equal(y[2:], x[2:])  # past it: exactly x
    np.testing.assert_allclose(y[0], math.log1p(math.exp(19.5)), rtol=1e-15)
    np.testing.assert_allclose(dx[:2], [_sig(19.5), _sig(20.0)], rtol=1e-15)
    np.testing.assert_array_equal(dx[2:], [1.0, 1.0, 1.0])
    assert abs(y[2] - y[1]) < 3e-9  # the jump at the switch is below exp(-20)
    # both sides of the switch, away from it by more than the finite-difference step
    gradcheck(softplus, softplus_backward, {"x": np.array([19.0, 19.9, 20.1, 21.0])}, name="softplus")
    # beta scales the threshold: beta = 2 switches at x = 10
    y2, _ = softplus(np.array([10.0, 10.5, 1000.0, -1000.0]), beta=2.0)
    assert y2[0] == math.log1p(math.exp(20.0)) / 2.0 and y2[1] == 10.5 and y2[2] == 1000.0 and y2[3] == 0.0


@pytest.mark.parametrize(
    "fn, kwargs, match",
    [
        (gelu, {"approximate": "exact"}, "approximate: expected one of 'none', 'tanh', got 'exact'"),
        (softplus, {"beta": 0.0}, "beta: expected a number > 0, got 0.0"),
        (softplus, {"threshold": "20"}, "threshold: expected a finite real number, got '20'"),
        (softplus, {"threshold": math.inf}, "threshold: expected a finite real number, got inf"),
    ],
)
def test_activation_bad_options(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(np.zeros(3), **kwargs)


@pytest.mark.parametrize("name", list(PAIRS))
def test_activation_bad_input(name):
    fwd, bwd = PAIRS[name]
    with pytest.raises(ValueError, match="x: expected dtype float32 or float64, got int64"):
        fwd(np.arange(3))
    _, cache = fwd(np.ones(3))
    with pytest.raises(ValueError, match=r"dy: expected shape .* = \(3,\) .*got \(1, 3\)"):
        bwd(np.ones((1, 3)), cache)


# --- backend="numba": the fused kernels of numba_kernels.activations_cpu ------------------------

FUSED = {
    "gelu_none": partial(gelu, approximate="none"),
    "gelu_tanh": partial(gelu, approximate="tanh"),
    "silu": silu,
    "logsigmoid": logsigmoid,
}
BACKWARD = {
    "gelu_none": gelu_backward, "gelu_tanh": gelu_backward, "silu": silu_backward, "logsigmoid": logsigmoid_backward
}


def fused_bound(x, dy, dtype):
    """Elementwise bound on |numba - NumPy|, both in ``dtype``.

    NumPy evaluates g = (1 + tanh u) / 2 (or Phi, or the sigmoid) with its own tanh/erf/exp;
    the kernels evaluate g with numba_kernels.vecmath (exp within 1 ulp, sigmoid within 3; the
    tanh GELU's g as sigmoid(2 u)), libm's erf, and products in another order. Each side's g errs by at
    most 4 u (tanh's error and the rounding of 1 + tanh are absolute errors <= 4 u on g in
    [0, 1.13]; logsigmoid's y = -log(1 + e^-x) errs by <= 4 u |y| <= 4 u (|x| + 1) on each side),
    and an error of k ulp in g's argument u = sqrt(2/pi) (x + 0.044715 x^3) (or
    x / sqrt 2, or |x|) moves g by at most k u |u| |g'| <= k u |u|; the product with x adds
    u |y|. So |dy| (1 + |x|) (1 + |u|) 8 u bounds both y (dy = 1) and dx = dy f'(x) (f' adds the
    same terms once more, hence the 16 u there; we use 16 u for both)."""
    u = np.finfo(dtype).eps / 2
    arg = np.abs(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)) + np.abs(x)
    return 16 * u * np.abs(dy) * (1.0 + np.abs(x)) * (1.0 + arg)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(FUSED))
def test_fused_kernels_equal_numpy(rng, name, dtype):
    from tests.compare import assert_within

    x = (rng.standard_normal((3, 7, 33)) * 3.0).astype(dtype)
    x.flat[:6] = [0.0, -30.0, 30.0, 1e-3, -1e-3, 9.0]  # zero, saturated tails, near zero
    dy = rng.standard_normal(x.shape).astype(dtype)
    fwd, bwd = FUSED[name], BACKWARD[name]
    y_np, c_np = fwd(x)
    y_nb, c_nb = fwd(x, backend="numba")
    assert y_nb.dtype == dtype and y_nb.shape == x.shape
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    assert_within(f"{name} forward", y_nb, y_np, fused_bound(x64, np.ones_like(x64), dtype))
    (dx_np,), (dx_nb,) = bwd(dy, c_np), bwd(dy, c_nb)
    assert dx_nb.dtype == dtype
    assert_within(f"{name} backward", dx_nb, dx_np, fused_bound(x64, dy64, dtype))


@pytest.mark.parametrize("name", list(FUSED))
def test_fused_kernels_gradcheck(rng, name):
    gradcheck(partial(FUSED[name], backend="numba"), BACKWARD[name], {"x": _away_from_zero(rng, (3, 5))}, rng=rng,
              name=f"{name}[numba]")  # fmt: skip


def test_fused_kernels_take_strided_input_and_check_the_cotangent(rng):
    x = rng.standard_normal((6, 8))[:, ::2]  # not contiguous
    y, cache = gelu(x, approximate="tanh", backend="numba")
    np.testing.assert_allclose(y, gelu(np.ascontiguousarray(x), approximate="tanh")[0], rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match="dy: expected shape"):
        gelu_backward(np.zeros((6, 3)), cache)
    with pytest.raises(ValueError, match="backend: gelu supports 'numpy', 'numba', got 'cuda'"):
        gelu(x, backend="cuda")


def test_host_backend():
    from ref.nn import host_backend

    assert [host_backend(b) for b in ("numpy", "numba", "cuda", "auto")] == ["numpy", "numba", "numpy", "numba"]
    with pytest.raises(ValueError, match="backend: expected one of"):
        host_backend("gpu")


def test_fused_float32_kernels_do_no_float64_arithmetic(monkeypatch):
    """The constants reach the kernels in the array's dtype: the LLVM IR of each kernel compiled
    for float32 has no double-precision arithmetic and no double tanh/erf/exp call (uncached
    serial copies, since code loaded from numba's cache cannot be inspected)."""
    import re

    from numba import njit
    from numba.core.registry import CPUDispatcher

    import numba_kernels.activations_cpu as act

    float64_ops = re.compile(
        r"\b(?:fadd|fsub|fmul|fdiv|fneg)\b[^\n=]*\bdouble\b|call [^\n]*double @(?:llvm\.)?(?:exp|fma|tanh|erf)\b"
    )

    @njit
    def planted(x):
        return math.tanh(x[0] * 0.5)  # a float64 literal: float32 * float64 is float64

    planted(np.ones(1, np.float32))
    assert float64_ops.search(next(iter(planted.inspect_llvm().values()))), "the pattern must catch a float64 op"
    fresh = {}
    for name, fn in list(vars(act).items()):
        if isinstance(fn, CPUDispatcher):
            fresh[name] = njit(fn.py_func)
            monkeypatch.setattr(act, name, fresh[name])
    x = np.linspace(-4, 4, 11, dtype=np.float32)
    for approximate in ("tanh", "none"):
        act.gelu_cpu_backward(x, x, approximate), act.gelu_cpu(x, approximate)
    y, s = act.silu_cpu(x)
    act.silu_cpu_backward(x, x, s)
    act.logsigmoid_cpu_backward(x, act.logsigmoid_cpu(x))
    assert len(fresh) == 8
    for name, fn in fresh.items():
        for ir in fn.inspect_llvm().values():
            found = float64_ops.search(ir)
            assert not found, f"{name}: float64 arithmetic in the float32 kernel: {found.group(0)[:120]}"
