"""The causal convolution y = K * u + D u by FFT, and its backward (two correlations).

Per batch b and channel h, with K (H, L) a kernel as long as the input:

    y_t = sum_{s<=t} K_{t-s} u_s + D u_t,     t = 0 .. L-1                                 (1)

By FFT: pad both signals with zeros to length 2L, multiply their spectra, invert and keep the
first L outputs (state-spaces/s4 ``irfft(rfft(u, n=2L) * rfft(k, n=2L),
n=2L)[..., :L]``). Why 2L: the FFT computes a *circular* convolution; a full product of two length-L
signals is 2L - 1 long, so with length 2L nothing wraps around onto the first L outputs.

Backward. (1) is linear in u and in K; their adjoints are *correlations* (the convolution with
the other signal reversed in time):

    du_s = sum_{t>=s} K_{t-s} dy_t + D dy_s              (dy correlated with K)            (2)
    dK_j = sum_b sum_{t>=j} dy_t u_{t-j}                 (dy correlated with u)            (3)
    dD   = sum_b sum_t dy_t u_t                                                            (4)

A correlation is a product with the *conjugated* spectrum: with the same zero padding to 2L,
irfft(conj(rfft(K)) rfft(dy))_m = sum_j K_j dy_{m+j} for m < L, and no index wraps (m + j < 2L).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks

__all__ = ["causal_conv", "causal_conv_backward"]


@dataclass(frozen=True)
class ConvCache:
    u_f: np.ndarray  # (B, H, L+1) rfft of u padded to 2L
    K_f: np.ndarray  # (H, L+1) rfft of K padded to 2L
    u: np.ndarray  # (B, H, L), for dD
    D: np.ndarray | None  # (H,)


def causal_conv(u, K, D=None):
    """(1): ``u`` (B, H, L), ``K`` (H, L), ``D`` (H,) or None -> ``y`` (B, H, L), cache."""
    u = checks.float_array(u, "u", ndim=3, dims="(B, H, L)")
    Bn, H, L = u.shape
    checks.nonempty_time(L, "u")
    K = checks.float_array(K, "K", ndim=2, dims="(H, L)")
    checks.same_shape(K, "K", (H, L), "(H, L)", "from u")
    checks.same_dtype(K, "K", u.dtype, "the dtype of u")
    if D is not None:
        D = checks.float_array(D, "D", ndim=1, dims="(H,)")
        checks.same_shape(D, "D", (H,), "(H,)", "from u")
        checks.same_dtype(D, "D", u.dtype, "the dtype of u")
    u_f = np.fft.rfft(u, n=2 * L)  # (B, H, L+1): spectrum of u zero-padded to 2L
    K_f = np.fft.rfft(K, n=2 * L)  # (H, L+1)
    y = np.fft.irfft(u_f * K_f, n=2 * L)[..., :L]  # (1): the first L of the 2L circular outputs
    if D is not None:
        y = y + D[:, None] * u  # (1): + D u
    return np.ascontiguousarray(y, dtype=u.dtype), ConvCache(u_f, K_f, u, D)


def causal_conv_backward(dy, cache: ConvCache):
    """Gradients ``(du, dK, dD)`` by the correlations (2)-(4); ``dD`` is None when D was."""
    Bn, H, L = cache.u.shape
    dy = checks.float_array(dy, "dy", ndim=3, dims="(B, H, L)")
    checks.same_shape(dy, "dy", (Bn, H, L), "(B, H, L)", "the shape of y")
    dy_f = np.fft.rfft(dy, n=2 * L)  # (B, H, L+1)
    du = np.fft.irfft(cache.K_f.conj() * dy_f, n=2 * L)[..., :L]  # (2): dy correlated with K
    dK = np.fft.irfft((cache.u_f.conj() * dy_f).sum(axis=0), n=2 * L)[..., :L]  # (3), summed over b
    dD = None
    if cache.D is not None:
        du = du + cache.D[:, None] * dy  # (2): + D dy
        dD = (dy * cache.u).sum(axis=(0, 2))  # (4)
    dtype = cache.u.dtype
    return (np.ascontiguousarray(du, dtype=dtype), np.ascontiguousarray(dK, dtype=dtype),
            None if dD is None else dD.astype(dtype))
