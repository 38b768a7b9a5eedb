"""RMSNorm fused into one parallel pass, forward and backward (``ref.nn.rms_norm`` with
``backend="numba"``).

The NumPy reference forms x * x, its mean, x * r and the product with the weight as whole-array
temporaries, and the backward five more; here each row is read once and written once, rows are
split over numba's threads in blocks, and the loops over a row vectorise (row sums in eight
partial sums, ``numba_kernels.vecmath.lane_sum``). The formulas of ``ref/nn/rmsnorm.py``, per
row x of length D:

    forward    r = 1 / sqrt(mean(x^2) + eps),   y = x r w
    backward   g = dy w,   dx = r (g - x r^2 mean(g x)),   dw = sum over rows of dy x r

dw is summed over rows in a (blocks, D) buffer, one row per block of rows (no two threads write
the same entry), then over the blocks. ``eps`` is passed in the array's dtype, so a float32 row is
computed in float32 throughout, as NumPy does; the sums are in another order than NumPy's
pairwise ones, so results differ in the last bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from numba_kernels.vecmath import LANES, VECTOR_JIT, lane_sum

_JIT = dict(parallel=True, cache=True, **VECTOR_JIT)
ROWS_PER_BLOCK = 64  # rows per parallel task


@njit(**_JIT)
def _rms_norm(x, w, eps, y, r):
    M, D = x.shape
    one = w.dtype.type(1)
    nblk = -(-M // ROWS_PER_BLOCK)
    for blk in prange(nblk):
        lanes = np.empty(LANES, x.dtype)
        sq = np.empty(D, x.dtype)
        for i in range(blk * ROWS_PER_BLOCK, min((blk + 1) * ROWS_PER_BLOCK, M)):
            xi, yi = x[i], y[i]
            for d in range(D):
                sq[d] = xi[d] * xi[d]
            # r = 1 / sqrt(mean(x^2) + eps)
            ri = one / np.sqrt(lane_sum(sq, D, lanes) / D + eps)
            r[i] = ri
            # y = x r w
            for d in range(D):
                yi[d] = xi[d] * ri * w[d]


@njit(**_JIT)
def _rms_norm_backward(dy, x, w, r, dx, dw_part):
    M, D = x.shape
    nblk = dw_part.shape[0]
    for blk in prange(nblk):
        lanes = np.empty(LANES, x.dtype)
        gx = np.empty(D, x.dtype)
        dwb = dw_part[blk]
        for d in range(D):
            dwb[d] = 0
        for i in range(blk * ROWS_PER_BLOCK, min((blk + 1) * ROWS_PER_BLOCK, M)):
            xi, dyi, dxi, ri = x[i], dy[i], dx[i], r[i]
            for d in range(D):
                gx[d] = dyi[d] * w[d] * xi[d]  # g x, g = dy w
            c = ri * ri * (lane_sum(gx, D, lanes) / D)  # r^2 mean(g x)
            for d in range(D):
                # dx = r (g - x r^2 mean(g x))
                dxi[d] = ri * (dyi[d] * w[d] - xi[d] * c)
                # dw += dy x r
                dwb[d] += dyi[d] * xi[d] * ri


def rms_norm_cpu(x: np.ndarray, weight: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(y, r): y like x, and r (..., 1) = 1 / sqrt(mean(x^2) + eps), which the backward reuses."""
    D = x.shape[-1]
    x2 = np.ascontiguousarray(x).reshape(-1, D)
    y = np.empty_like(x2)
    r = np.empty(x2.shape[0], x.dtype)
    _rms_norm(x2, np.ascontiguousarray(weight), x.dtype.type(eps), y, r)
    return y.reshape(x.shape), r.reshape(x.shape[:-1] + (1,))


def rms_norm_cpu_backward(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, r: np.ndarray):
    """(dx, dweight) from the forward's r."""
    D = x.shape[-1]
    x2 = np.ascontiguousarray(x).reshape(-1, D)
    dx = np.empty_like(x2)
    dw_part = np.empty((max(1, -(-x2.shape[0] // ROWS_PER_BLOCK)), D), x.dtype)
    _rms_norm_backward(
        np.ascontiguousarray(dy).reshape(-1, D), x2, np.ascontiguousarray(weight), np.ascontiguousarray(r).reshape(-1),
        dx, dw_part,
    )  # fmt: skip
    return dx.reshape(x.shape), dw_part.sum(axis=0)
