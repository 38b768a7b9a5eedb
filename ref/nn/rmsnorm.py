"""RMS normalization over the last axis (Zhang & Sennrich 2019; as in Mamba, GLA, LLaMA).

Shapes: x (..., D), weight (D,), y (..., D).

Forward, for each row x of length D (no mean subtraction, no bias):
    r = 1 / sqrt(mean(x^2) + eps)
    y = x * r * weight
PyTorch's ``nn.RMSNorm(D, eps)`` computes the same; its default eps is the machine epsilon of
the dtype, ours is 1e-6 (the value Mamba and flash-linear-attention use).

Backward, from dL/dy = dy (..., D), with g = dy * weight:
    dweight = sum over rows of dy * x * r
    dr/dx_i = -r^3 x_i / D,  so  dx = r * g - x * r^3 * mean(g * x)
             = r * (g - x * r^2 * mean(g * x))

``backend="numba"``: the same formulas fused into one parallel pass over the rows
(``numba_kernels.norms_cpu``), for the blocks of the models on their numba backend.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.backend import resolve
from ref.nn import _validate

__all__ = ["rms_norm", "rms_norm_backward"]


def rms_norm(x: np.ndarray, weight: np.ndarray, *, eps: float = 1e-6, backend: str = "numpy"):
    """Forward. Returns ``(y, cache)``. ``backend``: "numpy" (the formulas below) or "numba"."""
    x = checks.float_array(x, "x")
    if x.ndim < 1:
        raise ValueError(f"x: expected at least 1 axis (..., D), got shape {x.shape}")
    D = x.shape[-1]
    weight = _validate.param(weight, "weight", x.dtype, (D,), "(D,)", "the last axis of x")
    eps = _validate.positive(eps, "eps")
    if resolve(backend, ("numpy", "numba"), "rms_norm") == "numba":
        from numba_kernels.norms_cpu import rms_norm_cpu  # imported on first use: numba compiles lazily

        y, r = rms_norm_cpu(x, weight, eps)
        return y, (x, r, weight, "numba")

    # r = 1 / sqrt(mean(x^2) + eps)
    r = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)  # (..., 1)
    # y = x * r * weight
    y = x * r * weight
    cache = (x, r, weight, "numpy")
    return y, cache


def rms_norm_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx, dweight)``."""
    x, r, weight, backend = cache
    D = x.shape[-1]
    dy = _validate.cotangent(dy, "dy", x.shape, x.dtype, "(..., D)")
    if backend == "numba":
        from numba_kernels.norms_cpu import rms_norm_cpu_backward

        return rms_norm_cpu_backward(dy, x, weight, r)
    # dweight = sum_rows dy * x * r
    dweight = (dy * (x * r)).reshape(-1, D).sum(axis=0)  # (M, D) -> (D,)
    g = dy * weight
    # dx = r * (g - x * r^2 * mean(g * x))
    dx = r * (g - x * (r * r) * (g * x).mean(axis=-1, keepdims=True))
    return dx, dweight
