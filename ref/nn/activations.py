"""Elementwise activations, each a forward/backward pair (PyTorch semantics).

Shapes: x (...), y (...) the same; every backward returns ``(dx,)`` with dx = dy * f'(x).

    relu(x)       = max(x, 0)                       f' = 1[x > 0]  (0 at x = 0, as PyTorch)
    gelu(x)       = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2          ("none", exact)
                    f' = Phi(x) + x phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
                  = x (1 + tanh(u)) / 2,  u = sqrt(2/pi) (x + 0.044715 x^3)   ("tanh")
                    f' = (1 + tanh u) / 2 + x (1 - tanh^2 u) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    sigmoid(x)    = 1 / (1 + exp(-x))               f' = s (1 - s)
    silu(x)       = x sigmoid(x)                    f' = s (1 + x (1 - s))
    tanh(x)                                         f' = 1 - tanh(x)^2
    softplus(x)   = log(1 + exp(beta x)) / beta, and x itself where beta x > threshold
                                                    f' = sigmoid(beta x), and 1 there
    logsigmoid(x) = log sigmoid(x) = -softplus(-x)  f' = 1 - sigmoid(x) = sigmoid(-x)

``gelu``, ``silu`` and ``logsigmoid`` take ``backend="numba"``: the same formulas fused into one
parallel pass (``numba_kernels.activations_cpu``), for the MLPs and gates of the models' blocks.

Stability: exp is only ever taken of -|x| (a number in (0, 1]), so nothing overflows:
sigmoid(x) = 1 / (1 + e^{-|x|}) for x >= 0 and e^{-|x|} / (1 + e^{-|x|}) for x < 0, and
log(1 + e^{x}) = max(x, 0) + log1p(e^{-|x|}). logsigmoid(±1000) is (0, -1000), not NaN.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from ref import checks
from ref.backend import resolve
from ref.nn import _validate

__all__ = [
    "relu",
    "relu_backward",
    "gelu",
    "gelu_backward",
    "host_backend",
    "sigmoid",
    "sigmoid_backward",
    "silu",
    "silu_backward",
    "tanh",
    "tanh_backward",
    "softplus",
    "softplus_backward",
    "logsigmoid",
    "logsigmoid_backward",
]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_CUBIC = 0.044715


def _stable_sigmoid(x: np.ndarray) -> np.ndarray:
    """sigmoid(x) without overflow: only exp(-|x|) is ever formed."""
    z = np.exp(-np.abs(x))  # in (0, 1]
    # sigmoid(x) = 1 / (1 + e^{-x}) for x >= 0,  e^{x} / (1 + e^{x}) for x < 0
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


def _log1p_exp(x: np.ndarray) -> np.ndarray:
    """log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}), finite for every finite x."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _dx(dy, cache_x: np.ndarray, fprime: np.ndarray):
    dy = _validate.cotangent(dy, "dy", cache_x.shape, cache_x.dtype, "(...) the shape of x")
    # dx = dy * f'(x)
    return (dy * fprime,)


def relu(x: np.ndarray):
    """Forward. Returns ``(y, cache)``."""
    x = checks.float_array(x, "x")
    # y = max(x, 0)
    y = np.maximum(x, 0)
    return y, (x,)


def relu_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx,)``."""
    (x,) = cache
    # f' = 1[x > 0]
    return _dx(dy, x, (x > 0).astype(x.dtype))


def _kernels():
    from numba_kernels import activations_cpu  # imported on first use: numba compiles lazily

    return activations_cpu


def host_backend(backend: str) -> str:
    """The backend of an activation on host arrays inside a layer that runs on ``backend``:
    the fused kernels for "numba" and "auto", NumPy for "numpy" and "cuda" (whose kernels take
    only the sequence mixer; the MLP's arrays stay on the host)."""
    checks.one_of(backend, "backend", ("numpy", "numba", "cuda", "auto"))
    return "numba" if backend in ("numba", "auto") else "numpy"


def gelu(x: np.ndarray, *, approximate: str = "none", backend: str = "numpy"):
    """Forward. ``approximate="none"`` is the exact erf form, ``"tanh"`` the tanh approximation;
    ``backend``: "numpy" (the formulas below) or "numba" (the same, fused)."""
    x = checks.float_array(x, "x")
    approximate = checks.one_of(approximate, "approximate", ("none", "tanh"))
    if resolve(backend, ("numpy", "numba"), "gelu") == "numba":
        return _kernels().gelu_cpu(x, approximate), (x, approximate, "numba")
    if approximate == "none":
        # y = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2
        y = x * (0.5 * (1.0 + erf(x / math.sqrt(2.0))))
    else:
        # y = x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2
        y = 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3)))
    return y, (x, approximate, "numpy")


def gelu_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx,)``."""
    x, approximate, backend = cache
    if backend == "numba":
        dy = _validate.cotangent(dy, "dy", x.shape, x.dtype, "(...) the shape of x")
        return (_kernels().gelu_cpu_backward(dy, x, approximate),)
    if approximate == "none":
        # f' = Phi(x) + x phi(x)
        fprime = 0.5 * (1.0 + erf(x / math.sqrt(2.0))) + x * (_INV_SQRT_2PI * np.exp(-0.5 * x * x))
    else:
        t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3))
        # f' = (1 + t) / 2 + x (1 - t^2) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        fprime = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * (_SQRT_2_OVER_PI * (1.0 + 3 * _GELU_CUBIC * x * x))
    return _dx(dy, x, fprime)


def sigmoid(x: np.ndarray):
    """Forward. Returns ``(y, cache)``; stable for large |x|."""
    x = checks.float_array(x, "x")
    # y = 1 / (1 + exp(-x))
    y = _stable_sigmoid(x)
    return y, (y,)


def sigmoid_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx,)``."""
    (s,) = cache
    # f' = s (1 - s)
    return _dx(dy, s, s * (1.0 - s))


def silu(x: np.ndarray, *, backend: str = "numpy"):
    """Forward (also called swish); ``backend`` as :func:`gelu`. Returns ``(y, cache)``."""
    x = checks.float_array(x, "x")
    if resolve(backend, ("numpy", "numba"), "silu") == "numba":
        y, s = _kernels().silu_cpu(x)
        return y, (x, s, "numba")
    s = _stable_sigmoid(x)
    # y = x sigmoid(x)
    y = x * s
    return y, (x, s, "numpy")


def silu_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx,)``."""
    x, s, backend = cache
    if backend == "numba":
        dy = _validate.cotangent(dy, "dy", x.shape, x.dtype, "(...) the shape of x")
        return (_kernels().silu_cpu_backward(dy, x, s),)
    # f' = s (1 + x (1 - s))
    return _dx(dy, x, s * (1.0 + x * (1.0 - s)))


def tanh(x: np.ndarray):
    """Forward. Returns ``(y, cache)``."""
    x = checks.float_array(x, "x")
    # y = tanh(x)
    y = np.tanh(x)
    return y, (y,)


def tanh_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx,)``."""
    (t,) = cache
    # f' = 1 - tanh(x)^2
    return _dx(dy, t, 1.0 - t * t)


def softplus(x: np.ndarray, *, beta: float = 1.0, threshold: float = 20.0):
    """Forward. Linear (y = x) where ``beta * x > threshold``, as ``torch.nn.functional.softplus``."""
    x = checks.float_array(x, "x")
    beta = _validate.positive(beta, "beta")
    threshold = _validate.real(threshold, "threshold")
    bx = beta * x
    linear = bx > threshold
    # y = log(1 + exp(beta x)) / beta, or x where beta x > threshold
    y = np.where(linear, x, _log1p_exp(bx) / beta)
    return y, (x, bx, linear)


def softplus_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx,)``."""
    x, bx, linear = cache
    # f' = sigmoid(beta x), or 1 where beta x > threshold
    return _dx(dy, x, np.where(linear, 1.0, _stable_sigmoid(bx)).astype(x.dtype, copy=False))


def logsigmoid(x: np.ndarray, *, backend: str = "numpy"):
    """Forward. Returns ``(y, cache)``; finite for every finite x. ``backend`` as :func:`gelu`."""
    x = checks.float_array(x, "x")
    if resolve(backend, ("numpy", "numba"), "logsigmoid") == "numba":
        return _kernels().logsigmoid_cpu(x), (x, "numba")
    # y = log sigmoid(x) = -log(1 + e^{-x}) = min(x, 0) - log1p(e^{-|x|})
    y = np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))
    return y, (x, "numpy")


def logsigmoid_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx,)``."""
    x, backend = cache
    if backend == "numba":
        dy = _validate.cotangent(dy, "dy", x.shape, x.dtype, "(...) the shape of x")
        return (_kernels().logsigmoid_cpu_backward(dy, x),)
    # f' = 1 - sigmoid(x) = sigmoid(-x)
    return _dx(dy, x, _stable_sigmoid(-x))
