"""Layer normalization over the last axis (PyTorch ``nn.LayerNorm(D)`` semantics).

Shapes: x (..., D), weight (D,), bias (D,) or None, y (..., D).

Forward, for each row x of length D (biased variance, eps inside the square root):
    mu = mean(x),  var = mean((x - mu)^2),  rstd = 1 / sqrt(var + eps)
    xhat = (x - mu) * rstd
    y = xhat * weight + bias

Backward, from dL/dy = dy (..., D):
    dweight = sum over rows of dy * xhat,   dbias = sum over rows of dy
    g = dy * weight  (= dL/dxhat)
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
The two means are the projections that remove the directions xhat cannot move in: adding a
constant to x, or scaling x - mu, leaves xhat unchanged.

``standardize`` / ``standardize_backward`` (the part without weight and bias) are shared with
group norm, which is the same computation on groups of channels.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.nn import _validate

__all__ = ["layer_norm", "layer_norm_backward", "standardize", "standardize_backward"]


def standardize(x: np.ndarray, eps: float):
    """xhat = (x - mean) / sqrt(var + eps) over the last axis. Returns ``(xhat, rstd)``, rstd (..., 1)."""
    # mu = mean(x)
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    # var = mean((x - mu)^2)   (biased, as PyTorch)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)  # (..., 1)
    # rstd = 1 / sqrt(var + eps)
    rstd = 1.0 / np.sqrt(var + eps)  # (..., 1)
    # xhat = (x - mu) * rstd
    xhat = (x - mu) * rstd
    return xhat, rstd


def standardize_backward(dxhat: np.ndarray, xhat: np.ndarray, rstd: np.ndarray) -> np.ndarray:
    """dx from dL/dxhat: rstd * (g - mean(g) - xhat * mean(g * xhat)) over the last axis."""
    mean_g = dxhat.mean(axis=-1, keepdims=True)  # (..., 1)
    mean_gx = (dxhat * xhat).mean(axis=-1, keepdims=True)  # (..., 1)
    # dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
    return rstd * (dxhat - mean_g - xhat * mean_gx)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *, eps: float = 1e-5):
    """Forward. Returns ``(y, cache)``."""
    x = checks.float_array(x, "x")
    if x.ndim < 1:
        raise ValueError(f"x: expected at least 1 axis (..., D), got shape {x.shape}")
    D = x.shape[-1]
    weight = _validate.param(weight, "weight", x.dtype, (D,), "(D,)", "the last axis of x")
    if bias is not None:
        bias = _validate.param(bias, "bias", x.dtype, (D,), "(D,)", "the last axis of x")
    eps = _validate.positive(eps, "eps")

    xhat, rstd = standardize(x, eps)  # (..., D), (..., 1)
    # y = xhat * weight + bias
    y = xhat * weight
    if bias is not None:
        y = y + bias
    cache = (xhat, rstd, weight, bias is not None)
    return y, cache


def layer_norm_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx, dweight, dbias)``; ``dbias`` is None when the forward had no bias."""
    xhat, rstd, weight, has_bias = cache
    D = xhat.shape[-1]
    dy = _validate.cotangent(dy, "dy", xhat.shape, xhat.dtype, "(..., D)")
    dy2 = dy.reshape(-1, D)  # (M, D), M = rows
    # dweight = sum_rows dy * xhat;  dbias = sum_rows dy
    dweight = (dy2 * xhat.reshape(-1, D)).sum(axis=0)  # (D,)
    dbias = dy2.sum(axis=0) if has_bias else None  # (D,)
    # g = dL/dxhat = dy * weight
    dx = standardize_backward(dy * weight, xhat, rstd)  # (..., D)
    return dx, dweight, dbias
