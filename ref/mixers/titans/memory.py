"""Titans' memory M: an MLP of L >= 1 layers (L = 1: a linear matrix), its inner loss and gradient.

The memory is a tuple of weight matrices ``W = (W_1, ..., W_L)``, W_l (..., out_l, in_l) with
in_1 = K and out_L = V, no biases, SiLU between layers and none after the last::

    h_0 = k,   z_l = W_l h_(l-1),   h_l = silu(z_l) (l < L),   M(k) = z_L

The inner (test-time) loss of one token and its gradient w.r.t. every W_l (paper eq. 12)::

    l(M; k, v) = ||M(k) - v||^2
    delta_L = 2 (M(k) - v)
    delta_l = (W_(l+1)^T delta_(l+1)) * silu'(z_l)            (l < L)
    G_l     = dl/dW_l = delta_l h_(l-1)^T

Training Titans differentiates *through* this gradient (the memory is updated with G at test time
and the outer loss sees the updated memory), so ``inner_grad_backward`` is the backward of the
backward: given dG_l it returns dW_l, dk and dv, with the second-order terms through delta and
silu''. Every function is batched over any leading axes ``...`` shared by weights and vectors.
"""

from __future__ import annotations

import numpy as np


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _silu_derivatives(z):
    """silu(z), silu'(z), silu''(z) for s = sigmoid(z)."""
    s = _sigmoid(z)
    d1 = s * (1.0 + z * (1.0 - s))  # silu' = s (1 + z (1 - s))
    d2 = s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))  # silu'' = s (1 - s) (2 + z (1 - 2 s))
    return z * s, d1, d2


def _matvec(W, x):
    return np.einsum("...oi,...i->...o", W, x)  # (..., out)


def _rmatvec(W, y):
    return np.einsum("...oi,...o->...i", W, y)  # W^T y: (..., in)


def _outer(a, b):
    return a[..., :, None] * b[..., None, :]  # (..., out, in)


def memory_forward(W, x):
    """Read the memory: ``y = M(x)``. W a tuple of (..., out_l, in_l); x (..., in_1).

    Returns ``y`` (..., out_L) and the cache (the layer inputs h and pre-activations z).
    """
    h = [x]
    z = []
    for l, Wl in enumerate(W):
        z.append(_matvec(Wl, h[-1]))  # z_l = W_l h_(l-1)
        if l < len(W) - 1:
            h.append(_silu_derivatives(z[-1])[0])  # h_l = silu(z_l)
    return z[-1], (tuple(W), h, z)


def memory_forward_backward(dy, cache):
    """Backward of the read: returns ``dW`` (a tuple like W) and ``dx``."""
    W, h, z = cache
    dW = [None] * len(W)
    dz = dy
    for l in range(len(W) - 1, -1, -1):
        dW[l] = _outer(dz, h[l])  # dW_l = dz_l h_(l-1)^T
        dh = _rmatvec(W[l], dz)  # dh_(l-1) = W_l^T dz_l
        if l > 0:
            dz = dh * _silu_derivatives(z[l - 1])[1]
    return tuple(dW), dh


def inner_loss(W, k, v):
    """The inner loss l(M; k, v) = ||M(k) - v||^2 (eq. 12), one value per leading index."""
    y, _ = memory_forward(W, k)
    return np.sum((y - v) ** 2, axis=-1)


def inner_grad(W, k, v):
    """The gradient G_l = dl/dW_l of the inner loss at (k, v): a tuple like W, and the cache."""
    y, (W, h, z) = memory_forward(W, k)
    L = len(W)
    delta = [None] * L
    a = [None] * L  # a_l = W_(l+1)^T delta_(l+1), kept for the backward
    delta[L - 1] = 2.0 * (y - v)  # delta_L = 2 (M(k) - v)
    for l in range(L - 2, -1, -1):
        a[l] = _rmatvec(W[l + 1], delta[l + 1])
        delta[l] = a[l] * _silu_derivatives(z[l])[1]  # delta_l = (W_(l+1)^T delta_(l+1)) * silu'(z_l)
    G = tuple(_outer(delta[l], h[l]) for l in range(L))  # G_l = delta_l h_(l-1)^T
    return G, (W, h, z, delta, a)


def inner_grad_backward(dG, cache):
    """Backward of ``inner_grad``: given dG (a tuple like W) return ``dW`` (tuple), ``dk``, ``dv``.

    Reverses inner_grad step by step: G_l = delta_l h_(l-1)^T, then the delta recursion
    (l = 1 .. L-1, the reverse of its L-1 .. 1 order), then delta_L = 2 (M(k) - v), then the
    forward pass of the MLP (l = L .. 1).
    """
    W, h, z, delta, a = cache
    L = len(W)
    dW = [np.zeros_like(Wl) for Wl in W]
    dh = [np.zeros_like(hl) for hl in h]
    dz = [np.zeros_like(zl) for zl in z]
    ddelta = [None] * L
    for l in range(L):
        ddelta[l] = _matvec(dG[l], h[l])  # from G_l = delta_l h_(l-1)^T
        dh[l] = dh[l] + _rmatvec(dG[l], delta[l])
    for l in range(L - 1):  # delta_l = a_l * silu'(z_l), a_l = W_(l+1)^T delta_(l+1)
        _, d1, d2 = _silu_derivatives(z[l])
        da = ddelta[l] * d1
        dz[l] = dz[l] + ddelta[l] * a[l] * d2
        dW[l + 1] = dW[l + 1] + _outer(delta[l + 1], da)
        ddelta[l + 1] = ddelta[l + 1] + _matvec(W[l + 1], da)
    dy = 2.0 * ddelta[L - 1]  # delta_L = 2 (y - v)
    dv = -dy
    dz[L - 1] = dz[L - 1] + dy
    for l in range(L - 1, -1, -1):  # the MLP's forward pass, reversed
        dW[l] = dW[l] + _outer(dz[l], h[l])
        dh[l] = dh[l] + _rmatvec(W[l], dz[l])
        if l > 0:
            dz[l - 1] = dz[l - 1] + dh[l] * _silu_derivatives(z[l - 1])[1]
    return tuple(dW), dh[0], dv
