"""Softmax and log-softmax along one axis, stable for large logits.

Shapes: x (...), y (...) the same; ``axis`` (default -1) is the axis normalized over.

Forward (subtracting the max changes nothing mathematically and keeps exp <= 1):
    m = max(x),  softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m)
    log_softmax(x)_i = x_i - m - log sum_j exp(x_j - m)

Backward, from dL/dy = dy, without forming the Jacobian (a rank-one correction of a diagonal):
    softmax:      J = diag(y) - y y^T              ->  dx = y * (dy - sum_j dy_j y_j)
    log_softmax:  J = I - 1 softmax(x)^T           ->  dx = dy - softmax(x) * sum_j dy_j
with softmax(x) = exp(log_softmax(x)).
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.nn import _validate

__all__ = ["softmax", "softmax_backward", "log_softmax", "log_softmax_backward"]


def _check(x, axis):
    x = checks.float_array(x, "x")
    if x.ndim < 1:
        raise ValueError(f"x: expected at least 1 axis, got shape {x.shape}")
    return x, _validate.axis(axis, "axis", x.ndim)


def softmax(x: np.ndarray, *, axis: int = -1):
    """Forward. Returns ``(y, cache)``."""
    x, axis = _check(x, axis)
    # e_i = exp(x_i - max(x))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    # y_i = e_i / sum_j e_j
    y = e / e.sum(axis=axis, keepdims=True)
    return y, (y, axis)


def softmax_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx,)``."""
    y, axis = cache
    dy = _validate.cotangent(dy, "dy", y.shape, y.dtype, "(...) the shape of x")
    # dx = y * (dy - sum_j dy_j y_j)
    dx = y * (dy - (dy * y).sum(axis=axis, keepdims=True))
    return (dx,)


def log_softmax(x: np.ndarray, *, axis: int = -1):
    """Forward. Returns ``(y, cache)``."""
    x, axis = _check(x, axis)
    z = x - x.max(axis=axis, keepdims=True)
    # y_i = (x_i - m) - log sum_j exp(x_j - m)
    y = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return y, (y, axis)


def log_softmax_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx,)``."""
    y, axis = cache
    dy = _validate.cotangent(dy, "dy", y.shape, y.dtype, "(...) the shape of x")
    # dx = dy - softmax(x) * sum_j dy_j,   softmax(x) = exp(log_softmax(x))
    dx = dy - np.exp(y) * dy.sum(axis=axis, keepdims=True)
    return (dx,)
