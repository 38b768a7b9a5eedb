"""Causal depthwise 1-D convolution over time, with a carried state (the conv of Mamba/GLA).

Shapes: x (B, T, D) channels-last, weight (D, W) one filter of width W per channel,
bias (D,) or None, initial_state (B, W-1, D) or None (= zeros): the W-1 inputs that precede
x in time. Returns y (B, T, D) and final_state (B, W-1, D).

Forward. Let xpad (B, W-1+T, D) be the W-1 previous inputs followed by x. Then
    y[b, t, d] = bias[d] + sum_{j=0}^{W-1} weight[d, j] * xpad[b, t + j, d]
so y[t] sees x[t-W+1 .. t] and never the future (tap j = W-1 multiplies the current input).
final_state = xpad[:, T:, :], the last W-1 inputs; when T < W-1 some of them come from
initial_state. Feeding final_state as the initial_state of the next call continues the
sequence: running x in pieces gives the same y as running it whole.

Relation to PyTorch/Mamba: this is ``torch.nn.Conv1d(D, D, W, groups=D, padding=W-1, bias=True)``
applied to x transposed to (B, D, T), its output cropped to the first T steps
(``conv1d(x)[..., :T]``, as Mamba does), with ``weight[d, j] = conv1d.weight[d, 0, j]``.
The ``causal_conv1d_fn`` of the causal-conv1d package computes the same on (B, D, T) with
``initial_states`` (B, D, W-1) and ``final_states_out`` (B, D, W-1).

Backward, from dy (B, T, D) and dfinal_state (B, W-1, D) or None (= zeros):
    dxpad[b, t + j, d] += weight[d, j] * dy[b, t, d]      for every tap j
    dxpad[:, T:, :]    += dfinal_state
    dx = dxpad[:, W-1:],  dinitial_state = dxpad[:, :W-1]
    dweight[d, j] = sum_{b, t} dy[b, t, d] * xpad[b, t + j, d],   dbias = sum_{b, t} dy
When T < W-1 an entry of the initial state reaches both y and final_state, and its gradient
collects both (the T < W-1 case is tested explicitly).
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.nn import _validate

__all__ = ["causal_conv1d", "causal_conv1d_backward"]


def causal_conv1d(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, initial_state: np.ndarray | None = None
):
    """Forward. Returns ``(y, final_state, cache)``."""
    x = checks.float_array(x, "x", ndim=3, dims="(B, T, D)")
    B, T, D = x.shape
    checks.nonempty_time(T, "x")
    weight = checks.float_array(weight, "weight", ndim=2, dims="(D, W)")
    if weight.shape[0] != D or weight.shape[1] < 1:
        raise ValueError(
            f"weight: expected shape (D, W) with D = {D} (the last axis of x) and W >= 1, got {weight.shape}"
        )
    checks.same_dtype(weight, "weight", x.dtype, "the dtype of x")
    W = weight.shape[1]
    if bias is not None:
        bias = _validate.param(bias, "bias", x.dtype, (D,), "(D,)", "the last axis of x")
    if initial_state is not None:
        initial_state = _validate.param(
            initial_state, "initial_state", x.dtype, (B, W - 1, D), "(B, W-1, D)", "from x and weight"
        )
        previous = initial_state
    else:
        previous = np.zeros((B, W - 1, D), dtype=x.dtype)

    # xpad = [previous W-1 inputs, x]
    xpad = np.concatenate([previous, x], axis=1)  # (B, W-1+T, D)
    # y[t] = bias + sum_j weight[:, j] * xpad[t + j]   (a loop over the W taps, not over time)
    y = np.zeros_like(x) if bias is None else np.broadcast_to(bias, x.shape).copy()  # (B, T, D)
    for j in range(W):
        y += weight[:, j] * xpad[:, j : j + T, :]
    # final_state = the last W-1 inputs
    final_state = xpad[:, T:, :].copy()  # (B, W-1, D)
    cache = (xpad, weight, bias is not None, initial_state is not None)
    return y, final_state, cache


def causal_conv1d_backward(dy: np.ndarray, dfinal_state: np.ndarray | None, cache):
    """Backward. Returns ``(dx, dweight, dbias, dinitial_state)``.

    ``dfinal_state`` may be None (zero). ``dbias`` / ``dinitial_state`` are None when the forward
    had no bias / no initial state.
    """
    xpad, weight, has_bias, has_initial_state = cache
    B, L, D = xpad.shape
    W = weight.shape[1]
    T = L - (W - 1)
    dy = _validate.cotangent(dy, "dy", (B, T, D), xpad.dtype, "(B, T, D)")
    if dfinal_state is not None:
        dfinal_state = _validate.cotangent(dfinal_state, "dfinal_state", (B, W - 1, D), xpad.dtype, "(B, W-1, D)")

    dxpad = np.zeros_like(xpad)  # (B, W-1+T, D)
    dweight = np.empty_like(weight)  # (D, W)
    for j in range(W):
        # dxpad[t + j] += weight[:, j] * dy[t]
        dxpad[:, j : j + T, :] += weight[:, j] * dy
        # dweight[:, j] = sum_{b, t} dy[t] * xpad[t + j]
        dweight[:, j] = (dy * xpad[:, j : j + T, :]).sum(axis=(0, 1))
    if dfinal_state is not None:
        # final_state = xpad[:, T:]
        dxpad[:, T:, :] += dfinal_state
    dx = dxpad[:, W - 1 :, :]  # (B, T, D)
    dinitial_state = dxpad[:, : W - 1, :] if has_initial_state else None  # (B, W-1, D)
    dbias = dy.sum(axis=(0, 1)) if has_bias else None  # (D,)
    return dx, dweight, dbias, dinitial_state
