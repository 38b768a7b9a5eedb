"""2-D max and average pooling over (kh, kw) windows (``torch.nn.functional.max_pool2d`` /
``avg_pool2d`` without padding, dilation or ceil_mode).

Image layout letters as PyTorch: N batch, C channels, H height, W width.
Shapes: x (N, C, H, W); kernel_size and stride ints or pairs, stride defaulting to the kernel;
    Ho = (H - kh) // sh + 1,  Wo = (W - kw) // sw + 1,  y (N, C, Ho, Wo)

Forward, over the window w(u, v) = x[n, c, u sh : u sh + kh, v sw : v sw + kw] (see im2col):
    max_pool2d: y[n, c, u, v] = max w(u, v)
    avg_pool2d: y[n, c, u, v] = mean w(u, v)

Backward, from dy (N, C, Ho, Wo), with col2im summing where windows overlap:
    max: the whole dy[n, c, u, v] goes to the argmax of its window (the first one on a tie;
         the max is not differentiable there, so tests use inputs without ties)
    avg: every entry of the window receives dy[n, c, u, v] / (kh kw)
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.nn import _validate
from ref.nn.im2col import col2im, im2col, output_size

__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]


def _windows(x, kernel_size, stride):
    """Validate, then gather the windows as (N, C, kh kw, Ho, Wo)."""
    x = checks.float_array(x, "x", ndim=4, dims="(N, C, H, W)")
    kernel = _validate.pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else _validate.pair(stride, "stride", 1)
    N, C, H, W = x.shape
    Ho, Wo = output_size((H, W), kernel, stride)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"kernel_size: expected a kernel no larger than the input (H, W) = {(H, W)}, got {kernel}")
    cols = im2col(x, kernel, stride)  # (N, C, kh, kw, Ho, Wo)
    return cols.reshape(N, C, kernel[0] * kernel[1], Ho, Wo), kernel, stride  # (N, C, kh kw, Ho, Wo)


def max_pool2d(x: np.ndarray, *, kernel_size, stride=None):
    """Forward. Returns ``(y, cache)``."""
    win, kernel, stride = _windows(x, kernel_size, stride)
    # y = max over the window; remember where it was
    arg = win.argmax(axis=2)[:, :, None]  # (N, C, 1, Ho, Wo)
    y = np.take_along_axis(win, arg, axis=2)[:, :, 0]  # (N, C, Ho, Wo)
    cache = (arg, x.shape, x.dtype, kernel, stride)
    return y, cache


def max_pool2d_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx,)``."""
    arg, (N, C, H, W), dtype, (kh, kw), stride = cache
    Ho, Wo = arg.shape[-2:]
    dy = _validate.cotangent(dy, "dy", (N, C, Ho, Wo), dtype, "(N, C, Ho, Wo)")
    dwin = np.zeros((N, C, kh * kw, Ho, Wo), dtype=dtype)
    # dwin[argmax] = dy, zero elsewhere in the window
    np.put_along_axis(dwin, arg, dy[:, :, None], axis=2)
    dx = col2im(dwin.reshape(N, C, kh, kw, Ho, Wo), (N, C, H, W), stride)  # (N, C, H, W)
    return (dx,)


def avg_pool2d(x: np.ndarray, *, kernel_size, stride=None):
    """Forward. Returns ``(y, cache)``."""
    win, kernel, stride = _windows(x, kernel_size, stride)
    # y = mean over the window
    y = win.mean(axis=2)  # (N, C, Ho, Wo)
    cache = (x.shape, x.dtype, kernel, stride)
    return y, cache


def avg_pool2d_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(dx,)``."""
    (N, C, H, W), dtype, (kh, kw), stride = cache
    Ho, Wo = output_size((H, W), (kh, kw), stride)
    dy = _validate.cotangent(dy, "dy", (N, C, Ho, Wo), dtype, "(N, C, Ho, Wo)")
    # dwin = dy / (kh kw) for every entry of the window
    dwin = np.broadcast_to((dy / (kh * kw))[:, :, None, None], (N, C, kh, kw, Ho, Wo))  # (N, C, kh, kw, Ho, Wo)
    dx = col2im(dwin, (N, C, H, W), stride)  # (N, C, H, W)
    return (dx,)
