"""GELU and SiLU fused into one parallel pass each, forward and backward (``ref.nn.activations``
with ``backend="numba"``).

The NumPy reference evaluates ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` as a chain of
whole-array operations, each writing a temporary as large as x: on a (8, 512, 512) MLP activation
that is most of a transformer block's elementwise time. Here every element is read once and
written once, and the elements are split over numba's threads. The formulas are those of
``ref/nn/activations.py``:

    gelu "tanh":  y = x (1 + t) / 2,  t = tanh(sqrt(2/pi) (x + 0.044715 x^3))
                  f' = (1 + t) / 2 + x (1 - t^2) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    gelu "none":  y = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2,  f' = Phi(x) + x phi(x)
    silu:         y = x s,  s = sigmoid(x) (formed from exp(-|x|) only),  f' = s (1 + x (1 - s))

Constants are passed in the array's dtype, so a float32 array is computed in float32 throughout
(as NumPy does); ``math.tanh``, ``math.erf`` and ``math.exp`` are libm's, so results differ from
NumPy's by a few units in the last place, not more.
"""

from __future__ import annotations

import math

import numba
import numpy as np

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
GELU_CUBIC = 0.044715


@numba.njit(parallel=True, cache=True)
def _gelu_tanh(x, y, c, a, half, one):
    for i in numba.prange(x.size):
        v = x[i]
        t = math.tanh(c * (v + a * v * v * v))
        y[i] = half * v * (one + t)


@numba.njit(parallel=True, cache=True)
def _gelu_tanh_backward(dy, x, dx, c, a, a3, half, one):
    for i in numba.prange(x.size):
        v = x[i]
        t = math.tanh(c * (v + a * v * v * v))
        fprime = half * (one + t) + half * v * (one - t * t) * (c * (one + a3 * v * v))
        dx[i] = dy[i] * fprime


@numba.njit(parallel=True, cache=True)
def _gelu_erf(x, y, r, half, one):
    for i in numba.prange(x.size):
        v = x[i]
        y[i] = v * (half * (one + math.erf(v * r)))


@numba.njit(parallel=True, cache=True)
def _gelu_erf_backward(dy, x, dx, r, k, half, one):
    for i in numba.prange(x.size):
        v = x[i]
        fprime = half * (one + math.erf(v * r)) + v * (k * math.exp(-half * v * v))
        dx[i] = dy[i] * fprime


@numba.njit(parallel=True, cache=True)
def _silu(x, y, s, one):
    for i in numba.prange(x.size):
        v = x[i]
        z = math.exp(-abs(v))  # in (0, 1]
        si = one / (one + z) if v >= 0 else z / (one + z)
        s[i] = si
        y[i] = v * si


@numba.njit(parallel=True, cache=True)
def _silu_backward(dy, x, s, dx, one):
    for i in numba.prange(x.size):
        si = s[i]
        dx[i] = dy[i] * (si * (one + x[i] * (one - si)))


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def gelu_cpu(x: np.ndarray, approximate: str) -> np.ndarray:
    """y = gelu(x), the same shape and dtype."""
    f = x.dtype.type
    xf = _flat(x)
    y = np.empty_like(xf)
    if approximate == "tanh":
        _gelu_tanh(xf, y, f(SQRT_2_OVER_PI), f(GELU_CUBIC), f(0.5), f(1.0))
    else:
        _gelu_erf(xf, y, f(INV_SQRT_2), f(0.5), f(1.0))
    return y.reshape(x.shape)


def gelu_cpu_backward(dy: np.ndarray, x: np.ndarray, approximate: str) -> np.ndarray:
    """dx = dy * gelu'(x)."""
    f = x.dtype.type
    xf = _flat(x)
    dx = np.empty_like(xf)
    if approximate == "tanh":
        _gelu_tanh_backward(_flat(dy), xf, dx, f(SQRT_2_OVER_PI), f(GELU_CUBIC), f(3 * GELU_CUBIC), f(0.5), f(1.0))
    else:
        _gelu_erf_backward(_flat(dy), xf, dx, f(INV_SQRT_2), f(INV_SQRT_2PI), f(0.5), f(1.0))
    return dx.reshape(x.shape)


def silu_cpu(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y, s): y = x sigmoid(x) and s = sigmoid(x), which the backward reuses."""
    xf = _flat(x)
    y, s = np.empty_like(xf), np.empty_like(xf)
    _silu(xf, y, s, x.dtype.type(1.0))
    return y.reshape(x.shape), s.reshape(x.shape)


def silu_cpu_backward(dy: np.ndarray, x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """dx = dy * silu'(x) from the forward's s."""
    dx = np.empty(x.size, x.dtype)
    _silu_backward(_flat(dy), _flat(x), _flat(s), dx, x.dtype.type(1.0))
    return dx.reshape(x.shape)
