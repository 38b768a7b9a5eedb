"""Inverted dropout, seeded through an explicit ``np.random.Generator``.

Shapes: x (...), y (...) the same.

Forward (training, 0 <= p <= 1): keep each value with probability 1 - p and scale the kept ones
so that E[y] = x:
    mask = (u >= p) / (1 - p)   with u ~ Uniform[0, 1) drawn from ``rng``   (0 everywhere if p = 1)
    y = x * mask
``p = 0`` or ``training=False`` is the identity (``rng`` is not used and may be None). The
uniforms are drawn in float64 whatever the dtype of x, so the same seed gives the same mask in
float32 and float64. Pass a freshly seeded generator to reproduce a mask; a shared generator
advances, so two calls give two masks.

Backward, from dL/dy = dy: dx = dy * mask, with the mask saved by the forward.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.nn import _validate

__all__ = ["dropout", "dropout_backward"]


def dropout(x: np.ndarray, *, p: float, rng: np.random.Generator | None = None, training: bool = True):
    """Forward. Returns ``(y, cache)``."""
    x = checks.float_array(x, "x")
    p = _validate.in_unit_interval(p, "p")
    training = _validate.flag(training, "training")
    if not training or p == 0:
        return x.copy(), (x.shape, x.dtype, None)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng: expected a numpy.random.Generator when training with p > 0, got {type(rng).__name__}"
        )
    # mask = 1[u >= p] / (1 - p)
    scale = 1.0 / (1.0 - p) if p < 1 else 0.0
    mask = (rng.random(x.shape) >= p).astype(x.dtype) * x.dtype.type(scale)  # (...) like x
    # y = x * mask
    y = x * mask
    return y, (x.shape, x.dtype, mask)


def dropout_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx,)``."""
    shape, dtype, mask = cache
    dy = _validate.cotangent(dy, "dy", shape, dtype, "(...) the shape of x")
    # dx = dy * mask   (identity when the forward was)
    dx = dy.copy() if mask is None else dy * mask
    return (dx,)
