"""im2col and col2im: the window gather behind conv2d and the 2-D pools, and its adjoint.

Image layout letters follow PyTorch here: N batch, C channels, H height, W width (in this
file and in conv2d/pool2d, H and W are image sizes, not heads or a filter width).

Shapes: xp (N, C, Hp, Wp) an already padded input; a kernel (kh, kw) and a stride (sh, sw);
    Ho = (Hp - kh) // sh + 1,  Wo = (Wp - kw) // sw + 1
    cols[n, c, i, j, u, v] = xp[n, c, u * sh + i, v * sw + j]        cols (N, C, kh, kw, Ho, Wo)
so cols[..., u, v] is the (C, kh, kw) window under output pixel (u, v).

Both functions loop over the kh * kw kernel taps, never over pixels: for a fixed tap (i, j) the
windows read the strided slice xp[:, :, i::sh, j::sw] (Ho x Wo of it) in one array operation.

col2im is the adjoint (transpose) of im2col: it scatters-and-adds each window entry back to
the pixel it was read from, so a pixel covered by several windows (stride < kernel) collects
the sum. That is exactly the backward of a gather: d xp = col2im(d cols).
"""

from __future__ import annotations

import numpy as np

__all__ = ["output_size", "im2col", "col2im"]


def output_size(padded: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    """(Ho, Wo) = ((Hp - kh) // sh + 1, (Wp - kw) // sw + 1); (0, 0) or less if the kernel does not fit."""
    return (padded[0] - kernel[0]) // stride[0] + 1, (padded[1] - kernel[1]) // stride[1] + 1


def im2col(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """Gather every window: xp (N, C, Hp, Wp) -> cols (N, C, kh, kw, Ho, Wo)."""
    N, C, Hp, Wp = xp.shape
    (kh, kw), (sh, sw) = kernel, stride
    Ho, Wo = output_size((Hp, Wp), kernel, stride)
    cols = np.empty((N, C, kh, kw, Ho, Wo), dtype=xp.dtype)
    for i in range(kh):
        for j in range(kw):
            # cols[:, :, i, j, u, v] = xp[:, :, u * sh + i, v * sw + j]
            cols[:, :, i, j] = xp[:, :, i : i + sh * Ho : sh, j : j + sw * Wo : sw]  # (N, C, Ho, Wo)
    return cols


def col2im(dcols: np.ndarray, padded_shape: tuple, stride: tuple[int, int]) -> np.ndarray:
    """Adjoint of :func:`im2col`: dcols (N, C, kh, kw, Ho, Wo) -> dxp (N, C, Hp, Wp), overlaps summed."""
    _, _, kh, kw, Ho, Wo = dcols.shape
    sh, sw = stride
    dxp = np.zeros(padded_shape, dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            # dxp[:, :, u * sh + i, v * sw + j] += dcols[:, :, i, j, u, v]   (no repeats within one tap)
            dxp[:, :, i : i + sh * Ho : sh, j : j + sw * Wo : sw] += dcols[:, :, i, j]  # (N, C, Ho, Wo)
    return dxp
