"""Group normalization over groups of the LAST axis (channels-last), per position.

Shapes: x (..., D) with D = G * D_g (G = num_groups groups of D_g contiguous channels),
weight (D,), bias (D,) or None, y (..., D).

Forward: split the last axis into (G, D_g); standardize each group on its own, exactly as
layer norm does a row (biased variance, eps = 1e-5 inside the square root); then scale and
shift per channel:
    xhat[..., g, :] = (x[..., g, :] - mean) / sqrt(var + eps)     (over the D_g channels of g)
    y = xhat * weight + bias

This is the "GroupNorm" that RetNet and GLA apply to the output of a multi-head mixer: on
(B, T, H*V) with num_groups = H each head's V channels are normalized at each time step, with
no statistics shared across time (which would leak the future into the past). With G = 1 it
is layer norm.

Relation to PyTorch's channels-first ``nn.GroupNorm(G, C)``, which takes (N, C, *) and
normalizes each group over its channels AND every position of ``*``: ours equals
``torch.nn.GroupNorm(G, D, eps)(x.reshape(-1, D)).reshape(x.shape)``, i.e. torch's module on
the positions flattened into the batch axis (no spatial axes). Moving channels first on
(B, T, D) -> (B, D, T) would instead pool the statistics over all T: a different function.

Backward, from dL/dy = dy: dweight and dbias sum dy * xhat and dy over all positions; dx is
layer norm's backward applied to each group: with g = dy * weight,
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))        (means over the D_g channels)
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.nn import _validate
from ref.nn.layernorm import standardize, standardize_backward

__all__ = ["group_norm", "group_norm_backward"]


def group_norm(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *, num_groups: int, eps: float = 1e-5
):
    """Forward. Returns ``(y, cache)``."""
    x = checks.float_array(x, "x")
    if x.ndim < 1:
        raise ValueError(f"x: expected at least 1 axis (..., D), got shape {x.shape}")
    D = x.shape[-1]
    weight = _validate.param(weight, "weight", x.dtype, (D,), "(D,)", "the last axis of x")
    if bias is not None:
        bias = _validate.param(bias, "bias", x.dtype, (D,), "(D,)", "the last axis of x")
    G = checks.positive_int(num_groups, "num_groups")
    if D % G:
        raise ValueError(f"num_groups: expected a divisor of D = {D} (the last axis of x), got {num_groups!r}")
    eps = _validate.positive(eps, "eps")

    xg = x.reshape(x.shape[:-1] + (G, D // G))  # (..., G, D_g)
    xhat, rstd = standardize(xg, eps)  # (..., G, D_g), (..., G, 1)
    xhat = xhat.reshape(x.shape)  # (..., D)
    # y = xhat * weight + bias
    y = xhat * weight
    if bias is not None:
        y = y + bias
    cache = (xhat, rstd, weight, G, bias is not None)
    return y, cache


def group_norm_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx, dweight, dbias)``; ``dbias`` is None when the forward had no bias."""
    xhat, rstd, weight, G, has_bias = cache
    shape, D = xhat.shape, xhat.shape[-1]
    dy = _validate.cotangent(dy, "dy", shape, xhat.dtype, "(..., D)")
    dy2 = dy.reshape(-1, D)  # (M, D), M = positions
    # dweight = sum_positions dy * xhat;  dbias = sum_positions dy
    dweight = (dy2 * xhat.reshape(-1, D)).sum(axis=0)  # (D,)
    dbias = dy2.sum(axis=0) if has_bias else None  # (D,)
    grouped = shape[:-1] + (G, D // G)
    # g = dL/dxhat = dy * weight, then layer norm's backward within each group
    dxg = standardize_backward((dy * weight).reshape(grouped), xhat.reshape(grouped), rstd)  # (..., G, D_g)
    dx = dxg.reshape(shape)  # (..., D)
    return dx, dweight, dbias
