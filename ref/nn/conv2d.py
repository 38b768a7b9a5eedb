"""2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``) by im2col.

Image layout letters as PyTorch: N batch, C channels, H height, W width.
Shapes: x (N, C_in, H, W), weight (C_out, C_in, kh, kw), bias (C_out,) or None,
stride and padding ints or (vertical, horizontal) pairs; zero padding on both sides.
    Ho = (H + 2 ph - kh) // sh + 1,  Wo = (W + 2 pw - kw) // sw + 1,  y (N, C_out, Ho, Wo)

Forward, with xp the zero-padded x:
    y[n, o, u, v] = bias[o] + sum_{c, i, j} weight[o, c, i, j] * xp[n, c, u sh + i, v sw + j]
im2col lays the windows out as rows of a matrix X_col (N Ho Wo, C_in kh kw), and the sum
becomes one matrix product with W_mat = weight reshaped to (C_out, C_in kh kw):
    Y = X_col W_mat^T  + bias

Backward, from dy (N, C_out, Ho, Wo) flattened to dY (N Ho Wo, C_out):
    dW_mat = dY^T X_col,   dbias = sum of dY over rows,
    dX_col = dY W_mat,     dxp = col2im(dX_col)  (each window entry added back to its pixel),
    dx = dxp without the padding.
Not supported: dilation, groups, padding modes other than zeros.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.nn import _validate
from ref.nn.im2col import col2im, im2col, output_size

__all__ = ["conv2d", "conv2d_backward"]


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *, stride=1, padding=0):
    """Forward. Returns ``(y, cache)``."""
    x = checks.float_array(x, "x", ndim=4, dims="(N, C_in, H, W)")
    weight = checks.float_array(weight, "weight", ndim=4, dims="(C_out, C_in, kh, kw)")
    checks.same_dtype(weight, "weight", x.dtype, "the dtype of x")
    N, C_in, H, W = x.shape
    C_out, _, kh, kw = weight.shape
    if weight.shape[1] != C_in:
        raise ValueError(
            f"weight: expected shape (C_out, C_in, kh, kw) with C_in = {C_in} (axis 1 of x), got {weight.shape}"
        )
    if bias is not None:
        bias = _validate.param(bias, "bias", x.dtype, (C_out,), "(C_out,)", "axis 0 of weight")
    sh, sw = _validate.pair(stride, "stride", 1)
    ph, pw = _validate.pair(padding, "padding", 0)
    Ho, Wo = output_size((H + 2 * ph, W + 2 * pw), (kh, kw), (sh, sw))
    if Ho < 1 or Wo < 1 or kh < 1 or kw < 1:
        raise ValueError(
            f"weight: expected a kernel (kh, kw) of at least (1, 1) and at most the padded input "
            f"(H + 2 ph, W + 2 pw) = {(H + 2 * ph, W + 2 * pw)}, got {(kh, kw)}"
        )

    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # (N, C_in, H + 2 ph, W + 2 pw)
    cols = im2col(xp, (kh, kw), (sh, sw))  # (N, C_in, kh, kw, Ho, Wo)
    X_col = cols.transpose(0, 4, 5, 1, 2, 3).reshape(N * Ho * Wo, C_in * kh * kw)  # (N Ho Wo, C_in kh kw)
    W_mat = weight.reshape(C_out, C_in * kh * kw)  # (C_out, C_in kh kw)
    # Y = X_col W_mat^T + bias
    Y = X_col @ W_mat.T  # (N Ho Wo, C_out)
    if bias is not None:
        Y = Y + bias
    y = Y.reshape(N, Ho, Wo, C_out).transpose(0, 3, 1, 2)  # (N, C_out, Ho, Wo)
    cache = (X_col, weight, x.shape, (ph, pw), (sh, sw), bias is not None)
    return np.ascontiguousarray(y), cache


def conv2d_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx, dweight, dbias)``; ``dbias`` is None when the forward had no bias."""
    X_col, weight, (N, C_in, H, W), (ph, pw), stride, has_bias = cache
    C_out, _, kh, kw = weight.shape
    Ho, Wo = output_size((H + 2 * ph, W + 2 * pw), (kh, kw), stride)
    dy = _validate.cotangent(dy, "dy", (N, C_out, Ho, Wo), weight.dtype, "(N, C_out, Ho, Wo)")
    dY = dy.transpose(0, 2, 3, 1).reshape(N * Ho * Wo, C_out)  # (N Ho Wo, C_out)
    W_mat = weight.reshape(C_out, C_in * kh * kw)  # (C_out, C_in kh kw)
    # dW_mat = dY^T X_col
    dweight = (dY.T @ X_col).reshape(weight.shape)  # (C_out, C_in, kh, kw)
    # dbias = sum over rows of dY
    dbias = dY.sum(axis=0) if has_bias else None  # (C_out,)
    # dX_col = dY W_mat
    dX_col = dY @ W_mat  # (N Ho Wo, C_in kh kw)
    dcols = dX_col.reshape(N, Ho, Wo, C_in, kh, kw).transpose(0, 3, 4, 5, 1, 2)  # (N, C_in, kh, kw, Ho, Wo)
    dxp = col2im(dcols, (N, C_in, H + 2 * ph, W + 2 * pw), stride)  # (N, C_in, H + 2 ph, W + 2 pw)
    dx = dxp[:, :, ph : ph + H, pw : pw + W].copy()  # (N, C_in, H, W)
    return dx, dweight, dbias
