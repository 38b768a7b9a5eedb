"""Linear (fully connected) layer: y = x W + b.

Shapes: x (..., D_in), W (D_in, D_out), b (D_out,) or None, y (..., D_out).
Any number of leading axes (batch, time, ...) is allowed; they are flattened to M rows.

Backward, from dL/dy = dy (..., D_out):
    dx = dy W^T                 (..., D_in)
    dW = x^T dy  (summed over all leading axes)
    db = sum of dy over all leading axes
"""

from __future__ import annotations

import numpy as np

from ref import checks

__all__ = ["linear", "linear_backward"]


def linear(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None):
    """Forward. Returns ``(y, cache)``."""
    x = checks.float_array(x, "x")
    W = checks.float_array(W, "W", ndim=2, dims="(D_in, D_out)")
    checks.same_dtype(W, "W", x.dtype, "the dtype of x")
    if x.ndim < 1 or x.shape[-1] != W.shape[0]:
        raise ValueError(f"x: expected last axis D_in = {W.shape[0]} (rows of W), got shape {x.shape}")
    if b is not None:
        b = checks.float_array(b, "b", ndim=1, dims="(D_out,)")
        checks.same_shape(b, "b", (W.shape[1],), "(D_out,)", "the columns of W")
        checks.same_dtype(b, "b", x.dtype, "the dtype of x")
    y = x @ W  # (..., D_out)
    if b is not None:
        y = y + b
    cache = (x, W, b is not None)
    return y, cache


def linear_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx, dW, db)``; ``db`` is None when the forward had no bias."""
    x, W, has_bias = cache
    x2 = x.reshape(-1, x.shape[-1])  # (M, D_in)
    dy2 = dy.reshape(-1, dy.shape[-1])  # (M, D_out)
    dx = dy @ W.T  # (..., D_in)
    dW = x2.T @ dy2  # (D_in, D_out)
    db = dy2.sum(axis=0) if has_bias else None  # (D_out,)
    return dx, dW, db
