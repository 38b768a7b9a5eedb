"""The LSTM over a sequence on the CPU (numba, parallel over the batch): forward and full BPTT.

Same math, conventions and layouts as ``ref.mixers.rnn.lstm`` (``torch.nn.LSTM``, batch first):
x (B, T, I), y (B, T, H), h0, c0 (B, H), weight_ih (4H, I), weight_hh (4H, H), biases (4H,),
gate rows in PyTorch's order i, f, g, o.

Naive loop (the contract), with gx = x W_ih^T + b_ih + b_hh computed for all steps up front:

    for b:                        h, c = h0[b], c0[b]
        for t in range(T):        a = gx[b, t] + W_hh h                                  # (4H,)
                                  i, f, g, o = sigmoid(a_i), sigmoid(a_f), tanh(a_g), sigmoid(a_o)
                                  c = f c + i g;   h = o tanh(c);   y[b, t] = h

Backward, per batch row in reverse time (dh_n, dc_n the gradients carried from step t + 1):

    dh = dy[b, t] + dh_n;   do = dh tanh(c_t);   dc = dc_n + dh o (1 - tanh(c_t)^2)
    da = [dc g i(1-i), dc c_{t-1} f(1-f), dc i (1-g^2), do o(1-o)]   (saved as da[b, t])
    dc_n = dc f;   dh_n = da W_hh        (both zeroed at a truncation boundary)

and then, outside the loop, as matrix products over all B T steps at once:
dx = da W_ih, dW_ih = da^T x, dW_hh = da^T h_prev (h_prev = [h0, y[:, :-1]]), db = sum da.

Only the recurrence needs a loop; the rest is BLAS:

* the input projection x W_ih^T + b for every step is one (B T, I) x (I, 4H) product before the
  loop (as cuDNN does), and the backward's dx, dW_ih, dW_hh and db are products over all steps
  after it. The kernels run only the sequential part: per step, the (4H, H) recurrent
  matrix-vector product and the gates.
* parallel over the batch: one task per numba thread, each a block of batch rows (``plan``)
  with their states in local (n, H) arrays; a row of W_hh is read once per step for the whole
  block. A single task (B = 1, or one thread) runs in a serial twin: a parallel region costs
  tens of microseconds to start. Splitting one row's gate rows across threads would need a
  parallel region per time step; at H = 128 a step's matrix-vector product is about 4 us of
  work on the reference machine (18 ms serial for B T = 4096 float32 steps), less than a
  region's start, so it is not done.
* the matrix-vector products are written as axpys over contiguous rows, a += W_hh^T[k] h[k] in
  the forward (the transposed matrix, contiguous) and dh_n += da[j] W_hh[j] in the backward, so
  the inner loop has no reduction and vectorises without reassociating sums.
* sigmoids use ``vexp`` (``numba_kernels.selective_scan_cpu``: a vectorisable exp within 1 ulp);
  tanh is libm's (an exp-based tanh loses relative accuracy near 0).
* ``fastmath={"contract"}`` (FMAs, no unsafe flags), ``error_model="numpy"`` (no division
  checks in the loops), ``cache=True``; float32 stays float32.
* the forward saves the activated gates (B, T, 4H), c and tanh(c) (B, T, H) for the backward.

Outputs are allocated by the wrappers; kernels write into them and return nothing.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from numba_kernels.selective_scan_cpu import vexp

_JIT = dict(parallel=True, cache=True, fastmath={"contract"}, error_model="numpy")
_JIT_SERIAL = dict(cache=True, fastmath={"contract"}, error_model="numpy")


def plan(B: int) -> int:
    """Batch rows per task: one task per numba thread (fewer if B is smaller)."""
    from numba import get_num_threads

    return -(-B // min(B, get_num_threads()))


@njit(**_JIT_SERIAL)
def _forward_rows(gates, w_hh_t, h0, c0, y, c, tanh_c, hT, cT, b0, b1):
    """Batch rows b0 .. b1 - 1: ``gates[b]`` holds gx on entry and the activated i, f, g, o on exit."""
    T, G = gates.shape[1], gates.shape[2]
    H = G // 4
    one = gates.dtype.type(1.0)
    h = h0[b0:b1].copy()  # (n, H)
    cell = c0[b0:b1].copy()  # (n, H)
    for t in range(T):
        for k in range(H):  # a += W_hh h, as axpys over the rows of W_hh^T, each row used for all n rows
            for r in range(b1 - b0):
                a = gates[b0 + r, t]  # (4H,): gx on entry
                hk = h[r, k]
                for j in range(G):
                    a[j] += w_hh_t[k, j] * hk
        for r in range(b1 - b0):
            b = b0 + r
            a = gates[b, t]  # (4H,)
            for j in range(2 * H):  # i, f
                a[j] = one / (one + vexp(-a[j]))
            for j in range(2 * H, 3 * H):  # g
                a[j] = math.tanh(a[j])
            for j in range(3 * H, G):  # o
                a[j] = one / (one + vexp(-a[j]))
            for k in range(H):
                cell[r, k] = a[H + k] * cell[r, k] + a[k] * a[2 * H + k]  # c = f c + i g
                tc = math.tanh(cell[r, k])
                h[r, k] = a[3 * H + k] * tc  # h = o tanh(c)
                c[b, t, k] = cell[r, k]
                tanh_c[b, t, k] = tc
                y[b, t, k] = h[r, k]
    hT[b0:b1] = h
    cT[b0:b1] = cell


@njit(**_JIT)
def _forward_parallel(gates, w_hh_t, h0, c0, y, c, tanh_c, hT, cT, rows):
    B = gates.shape[0]
    for task in prange((B + rows - 1) // rows):
        _forward_rows(gates, w_hh_t, h0, c0, y, c, tanh_c, hT, cT, task * rows, min(task * rows + rows, B))


@njit(**_JIT_SERIAL)
def _forward_serial(gates, w_hh_t, h0, c0, y, c, tanh_c, hT, cT):
    _forward_rows(gates, w_hh_t, h0, c0, y, c, tanh_c, hT, cT, 0, gates.shape[0])


@njit(**_JIT_SERIAL)
def _backward_rows(dy, dhT, dcT, gates, c, tanh_c, c0, w_hh, truncation, da, dh0, dc0, b0, b1):
    """Batch rows b0 .. b1 - 1 in reverse time: writes da[b] (T, 4H), dh0[b], dc0[b]."""
    T, G = gates.shape[1], gates.shape[2]
    H = G // 4
    one = gates.dtype.type(1.0)
    dh_n = dhT[b0:b1].copy()  # (n, H): the gradient of h_t from step t + 1 (and dhT)
    dc_n = dcT[b0:b1].copy()  # (n, H)
    for t in range(T - 1, -1, -1):
        for r in range(b1 - b0):
            b = b0 + r
            g_t = gates[b, t]  # (4H,): i, f, g, o
            d = da[b, t]  # (4H,)
            for k in range(H):
                i, f, g, o = g_t[k], g_t[H + k], g_t[2 * H + k], g_t[3 * H + k]
                tc = tanh_c[b, t, k]
                c_prev = c[b, t - 1, k] if t > 0 else c0[b, k]
                dh = dy[b, t, k] + dh_n[r, k]
                do = dh * tc
                dc = dc_n[r, k] + dh * o * (one - tc * tc)
                d[k] = dc * g * i * (one - i)
                d[H + k] = dc * c_prev * f * (one - f)
                d[2 * H + k] = dc * i * (one - g * g)
                d[3 * H + k] = do * o * (one - o)
                dc_n[r, k] = dc * f
        dh_n[:] = 0
        for j in range(G):  # dh_n = da W_hh, as axpys over the rows of W_hh, each row used for all n rows
            for r in range(b1 - b0):
                dj = da[b0 + r, t, j]
                for k in range(H):
                    dh_n[r, k] += dj * w_hh[j, k]
        if truncation > 0 and t > 0 and t % truncation == 0:  # step t opens a segment
            dh_n[:] = 0
            dc_n[:] = 0
    dh0[b0:b1] = dh_n
    dc0[b0:b1] = dc_n


@njit(**_JIT)
def _backward_parallel(dy, dhT, dcT, gates, c, tanh_c, c0, w_hh, truncation, da, dh0, dc0, rows):
    B = gates.shape[0]
    for task in prange((B + rows - 1) // rows):
        b0, b1 = task * rows, min(task * rows + rows, B)
        _backward_rows(dy, dhT, dcT, gates, c, tanh_c, c0, w_hh, truncation, da, dh0, dc0, b0, b1)


@njit(**_JIT_SERIAL)
def _backward_serial(dy, dhT, dcT, gates, c, tanh_c, c0, w_hh, truncation, da, dh0, dc0):
    _backward_rows(dy, dhT, dcT, gates, c, tanh_c, c0, w_hh, truncation, da, dh0, dc0, 0, gates.shape[0])


# --- wrappers: the arguments of the NumPy reference --------------------------------------------


def _zeros_if_none(s, B, H, dtype):
    return np.zeros((B, H), dtype) if s is None else np.ascontiguousarray(s)


def lstm_cpu(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """The forward: ``(y, hT, cT, gates, c, tanh_c)``; x (B, T, I), h0 and c0 (B, H) or None
    (zeros). ``gates`` (B, T, 4H) are the activated i, f, g, o; ``c``, ``tanh_c`` (B, T, H)."""
    B, T, I = x.shape
    H = weight_hh.shape[1]
    dtype = x.dtype
    h0 = _zeros_if_none(h0, B, H, dtype)
    c0 = _zeros_if_none(c0, B, H, dtype)
    gates = (x.reshape(B * T, I) @ weight_ih.T).reshape(B, T, 4 * H)  # (B, T, 4H): x W_ih^T
    if bias_ih is not None:
        gates += bias_ih
    if bias_hh is not None:
        gates += bias_hh
    y = np.empty((B, T, H), dtype)
    c = np.empty((B, T, H), dtype)
    tanh_c = np.empty((B, T, H), dtype)
    hT = np.empty((B, H), dtype)
    cT = np.empty((B, H), dtype)
    rows = plan(B)
    w_hh_t = np.ascontiguousarray(weight_hh.T)  # (H, 4H)
    if rows < B:
        _forward_parallel(gates, w_hh_t, h0, c0, y, c, tanh_c, hT, cT, rows)
    else:
        _forward_serial(gates, w_hh_t, h0, c0, y, c, tanh_c, hT, cT)
    return y, hT, cT, gates, c, tanh_c


def lstm_cpu_backward(dy, dhT, dcT, x, h0, c0, weight_ih, weight_hh, y, gates, c, tanh_c, truncation=None):
    """Full BPTT (or truncated every ``truncation`` steps): ``(dx, dh0, dc0, dweight_ih,
    dweight_hh, dbias)``, ``dbias`` (4H,) the gradient of either bias (both enter as a sum).
    ``dy`` (B, T, H); ``dhT``, ``dcT``, ``h0``, ``c0`` (B, H) or None (zeros); the rest as
    returned by :func:`lstm_cpu`."""
    B, T, I = x.shape
    H = weight_hh.shape[1]
    dtype = x.dtype
    h0 = _zeros_if_none(h0, B, H, dtype)
    c0 = _zeros_if_none(c0, B, H, dtype)
    dhT = _zeros_if_none(dhT, B, H, dtype)
    dcT = _zeros_if_none(dcT, B, H, dtype)
    da = np.empty((B, T, 4 * H), dtype)
    dh0 = np.empty((B, H), dtype)
    dc0 = np.empty((B, H), dtype)
    k = 0 if truncation is None else int(truncation)
    args = (np.ascontiguousarray(dy), dhT, dcT, gates, c, tanh_c, c0, np.ascontiguousarray(weight_hh), k, da, dh0, dc0)
    rows = plan(B)
    if rows < B:
        _backward_parallel(*args, rows)
    else:
        _backward_serial(*args)
    da2 = da.reshape(B * T, 4 * H)  # (B T, 4H)
    h_prev = np.concatenate([h0[:, None], y[:, :-1]], axis=1).reshape(B * T, H)  # (B T, H): h_{t-1}
    dx = (da2 @ weight_ih).reshape(B, T, I)  # (B, T, I)
    dweight_ih = da2.T @ x.reshape(B * T, I)  # (4H, I)
    dweight_hh = da2.T @ h_prev  # (4H, H)
    dbias = da2.sum(axis=0)  # (4H,)
    return dx, dh0, dc0, dweight_ih, dweight_hh, dbias
