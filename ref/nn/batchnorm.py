"""Batch normalization over channel axis 1 (PyTorch ``nn.BatchNorm1d/2d`` semantics), pure.

Shapes: x (N, C) or (N, C, H, W) (any (N, C, *) works), weight (C,), bias (C,) or None,
running_mean (C,), running_var (C,); y has the shape of x. Per channel c, the statistics are
taken over the M = N * H * W values x[:, c, ...].

Training mode (``training=True``):
    mu = mean(x[:, c]),  var = mean((x[:, c] - mu)^2)          (biased: divide by M)
    xhat = (x - mu) / sqrt(var + eps),  y = xhat * weight + bias
    new_running_mean = (1 - momentum) * running_mean + momentum * mu
    new_running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (unbiased)
Eval mode (``training=False``): the running statistics replace the batch statistics,
    y = (x - running_mean) / sqrt(running_var + eps) * weight + bias,
and they come back unchanged (as copies).

Pure: nothing is updated in place. The forward RETURNS ``(y, new_running_mean,
new_running_var, cache)``; the caller stores the new statistics where it keeps its buffers.

Backward: the new running statistics are outputs like y, so the backward takes a cotangent for
each of them too, ``batch_norm_backward(dy, dnew_running_mean, dnew_running_var, cache)``;
pass None for those (the usual case: nothing downstream differentiates a running statistic)
and they count as zero. It returns ``(dx, dweight, dbias, drunning_mean, drunning_var)``.
With g = dy * weight and means over the M values of a channel:
    training: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))                 (as layer norm)
                   + momentum * dnew_running_mean / M
                   + momentum * dnew_running_var * 2 (x - mu) / (M - 1)
              drunning_mean = (1 - momentum) dnew_running_mean, same for the variance
    eval:     dx = g * rstd,  drunning_mean = -rstd * sum(g) + dnew_running_mean,
              drunning_var = -rstd^2 / 2 * sum(g * xhat) + dnew_running_var
    both:     dweight = sum(dy * xhat),  dbias = sum(dy)
Not supported: ``momentum=None`` (PyTorch's cumulative average) and absent running statistics.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.nn import _validate

__all__ = ["batch_norm", "batch_norm_backward"]


def batch_norm(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
):
    """Forward. Returns ``(y, new_running_mean, new_running_var, cache)``."""
    x = checks.float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x: expected at least 2 axes (N, C) or (N, C, H, W), got shape {x.shape}")
    C = x.shape[1]
    like = "the channel axis 1 of x"
    weight = _validate.param(weight, "weight", x.dtype, (C,), "(C,)", like)
    if bias is not None:
        bias = _validate.param(bias, "bias", x.dtype, (C,), "(C,)", like)
    running_mean = _validate.param(running_mean, "running_mean", x.dtype, (C,), "(C,)", like)
    running_var = _validate.param(running_var, "running_var", x.dtype, (C,), "(C,)", like)
    training = _validate.flag(training, "training")
    momentum = _validate.in_unit_interval(momentum, "momentum")
    eps = _validate.positive(eps, "eps")

    axes = (0,) + tuple(range(2, x.ndim))  # every axis but the channels
    M = x.size // C if C else 0  # values per channel
    per_channel = (1, C) + (1,) * (x.ndim - 2)  # (1, C, 1, 1) for images
    if training:
        if M < 2:
            raise ValueError(
                f"x: expected more than 1 value per channel in training mode (N*H*W >= 2), got shape {x.shape}"
            )
        # mu = mean over (N, H, W);  var = mean((x - mu)^2)   (biased)
        mu = x.mean(axis=axes, keepdims=True)  # (1, C, 1, 1)
        var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)  # (1, C, 1, 1)
        # new running = (1 - momentum) * running + momentum * batch statistic (unbiased variance)
        new_running_mean = (1 - momentum) * running_mean + momentum * mu.reshape(C)  # (C,)
        new_running_var = (1 - momentum) * running_var + momentum * (M / (M - 1)) * var.reshape(C)  # (C,)
    else:
        mu = running_mean.reshape(per_channel)  # (1, C, 1, 1)
        var = running_var.reshape(per_channel)  # (1, C, 1, 1)
        new_running_mean, new_running_var = running_mean.copy(), running_var.copy()
    # xhat = (x - mu) / sqrt(var + eps)
    rstd = 1.0 / np.sqrt(var + eps)  # (1, C, 1, 1)
    xhat = (x - mu) * rstd
    # y = xhat * weight + bias
    w = weight.reshape(per_channel)  # (1, C, 1, 1)
    y = xhat * w
    if bias is not None:
        y = y + bias.reshape(per_channel)  # (1, C, 1, 1)
    cache = (training, xhat, rstd, w, axes, M, momentum, bias is not None)
    return y, new_running_mean, new_running_var, cache


def batch_norm_backward(dy: np.ndarray, dnew_running_mean, dnew_running_var, cache):
    """Backward. Returns ``(dx, dweight, dbias, drunning_mean, drunning_var)``.

    ``dnew_running_mean`` and ``dnew_running_var`` may be None (zero); ``dbias`` is None when the
    forward had no bias.
    """
    training, xhat, rstd, w, axes, M, momentum, has_bias = cache
    C, dtype = xhat.shape[1], xhat.dtype
    dy = _validate.cotangent(dy, "dy", xhat.shape, dtype, "(N, C, ...)")
    dmean = np.zeros(C, dtype) if dnew_running_mean is None else dnew_running_mean
    dvar = np.zeros(C, dtype) if dnew_running_var is None else dnew_running_var
    dmean = _validate.cotangent(dmean, "dnew_running_mean", (C,), dtype, "(C,)")
    dvar = _validate.cotangent(dvar, "dnew_running_var", (C,), dtype, "(C,)")

    # dweight = sum dy * xhat;  dbias = sum dy   (over every axis but the channels)
    dweight = (dy * xhat).sum(axis=axes)  # (C,)
    dbias = dy.sum(axis=axes) if has_bias else None  # (C,)
    # g = dL/dxhat
    g = dy * w
    per_channel = rstd.shape  # (1, C, 1, 1)
    if training:
        # dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dx = rstd * (g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True))
        # + d/dx of momentum * mu:  momentum / M per value
        dx = dx + (momentum / M) * dmean.reshape(per_channel)  # (1, C, 1, 1) broadcast
        # + d/dx of momentum * sum((x - mu)^2) / (M - 1):  momentum * 2 (x - mu) / (M - 1), x - mu = xhat / rstd
        dx = dx + (2 * momentum / (M - 1)) * dvar.reshape(per_channel) * (xhat / rstd)  # (1, C, 1, 1) broadcast
        drunning_mean = (1 - momentum) * dmean
        drunning_var = (1 - momentum) * dvar
    else:
        # dx = g * rstd
        dx = g * rstd
        # y depends on running_mean through -rstd, on running_var through d rstd = -rstd^3 / 2
        drunning_mean = -(g.sum(axis=axes) * rstd.reshape(C)) + dmean  # (C,)
        drunning_var = -0.5 * (g * xhat).sum(axis=axes) * rstd.reshape(C) ** 2 + dvar  # (C,)
    return dx, dweight, dbias, drunning_mean, drunning_var
