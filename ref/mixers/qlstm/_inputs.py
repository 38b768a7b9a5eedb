"""Validation, the cache, and the elementwise parts (gates in, output out) shared by both forms."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks

FORGET_BIAS = 1.0  # Languini: f = sigmoid(W_f x + b_f + 1.0), so a fresh layer starts with f ~ 0.73
NAMES = ("fx", "ix", "zx", "ox")


@dataclass(frozen=True)
class QLSTMCache:
    """What either form's backward needs: the gate values, the cell states, the options."""

    f: np.ndarray  # (B, T, D) forget gate sigmoid(fx + forget_bias)
    i: np.ndarray  # (B, T, D) input gate sigmoid(ix)
    z: np.ndarray  # (B, T, D) candidate tanh(zx)
    o: np.ndarray  # (B, T, D) output gate sigmoid(ox)
    c: np.ndarray  # (B, T, D) cell states c_0 .. c_{T-1}
    tanh_c: np.ndarray  # (B, T, D)
    initial_state: np.ndarray | None  # (B, D)
    backend: str
    block_length: int = 0  # block-parallel form only
    logf: np.ndarray | None = None  # (B, T, D) log f, block-parallel NumPy form only
    scan_cache: object = None  # the cache of the linear scan that ran (3), where one did


def check_inputs(fx, ix, zx, ox, initial_state, forget_bias):
    """Validate the four pre-activations (B, T, D), the initial cell state (B, D) or None and
    ``forget_bias`` (a finite number). Returns them, ``forget_bias`` as a float."""
    fx = checks.float_array(fx, "fx", ndim=3, dims="(B, T, D)")
    checks.nonempty_time(fx.shape[1], "fx")
    arrays = [fx]
    for x, name in zip((ix, zx, ox), NAMES[1:]):
        x = checks.float_array(x, name, ndim=3, dims="(B, T, D)")
        checks.same_shape(x, name, fx.shape, "(B, T, D)", "the shape of fx")
        checks.same_dtype(x, name, fx.dtype, "the dtype of fx")
        arrays.append(x)
    for x, name in zip(arrays, NAMES):
        checks.finite(x, name)
    if initial_state is not None:
        initial_state = checks.float_array(initial_state, "initial_state", ndim=2, dims="(B, D)")
        Bn, _, D = fx.shape
        checks.same_shape(initial_state, "initial_state", (Bn, D), "(B, D)", "batch and channels of fx")
        checks.same_dtype(initial_state, "initial_state", fx.dtype, "the dtype of fx")
        checks.finite(initial_state, "initial_state")
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float, np.floating)) or not np.isfinite(
        forget_bias
    ):
        raise ValueError(f"forget_bias: expected a finite number, got {forget_bias!r}")
    return (*arrays, initial_state, float(forget_bias))


def check_cotangents(dh, dct, shape, dtype):
    """Validate the output cotangents; ``None`` means zero. Returns (dh, dct) as arrays."""
    Bn, _, D = shape
    if dh is None:
        dh = np.zeros(shape, dtype)
    else:
        dh = checks.output_cotangent(dh, "dh", shape, dtype)
    if dct is None:
        dct = np.zeros((Bn, D), dtype)
    else:
        dct = checks.output_cotangent(dct, "dct", (Bn, D), dtype, dims="(B, D)")
    return dh, dct


def sigmoid(x):
    """sigmoid(x), forming only exp(-|x|) (no overflow for any finite x)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def log_sigmoid(x):
    """log sigmoid(x) = -log(1 + exp(-x)), finite for every finite x."""
    return -np.logaddexp(0, -x)


def gates(fx, ix, zx, ox, forget_bias):
    """The gates, from the input only (nothing here depends on the state):

    f = sigmoid(fx + forget_bias),  i = sigmoid(ix),  z = tanh(zx),  o = sigmoid(ox)   (1)
    u = i * z                                                                          (2)
    """
    # (1)
    f = sigmoid(fx + forget_bias)  # (B, T, D)
    i = sigmoid(ix)
    z = np.tanh(zx)
    o = sigmoid(ox)
    # (2)
    u = i * z  # (B, T, D)
    return f, i, z, o, u


def output(o, c):
    """(4) h = o * tanh(c). Returns (h, tanh_c)."""
    tanh_c = np.tanh(c)
    return o * tanh_c, tanh_c


def output_backward(dh, o, tanh_c):
    """From dh: the direct part of dL/dc (not through later states) and dox."""
    dc = dh * o * (1 - tanh_c * tanh_c)  # (B, T, D)
    dox = dh * tanh_c * o * (1 - o)  # do/dox = o (1 - o)
    return dc, dox


def gates_backward(dlogf, du, cache: QLSTMCache):
    """(dfx, dix, dzx) from dL/dlog f and dL/du = g (the total gradient of the cell state).

    d log f / dfx = 1 - f (log sigmoid' = 1 - sigmoid);  du/dix = z i (1 - i);  du/dzx = i (1 - z^2).
    """
    f, i, z = cache.f, cache.i, cache.z
    dfx = dlogf * (1 - f)
    dix = du * z * i * (1 - i)
    dzx = du * i * (1 - z * z)
    return dfx, dix, dzx


def previous_cells(c, initial_state):
    """c_{t-1} for t = 0..T-1, with c_{-1} = initial_state or 0.   # (B, T, D)"""
    c_prev = np.empty_like(c)
    c_prev[:, 1:] = c[:, :-1]
    c_prev[:, 0] = 0 if initial_state is None else initial_state
    return c_prev
