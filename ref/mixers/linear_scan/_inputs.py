"""Validation and the shared pieces of the three forms' backward passes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks


def check_inputs(a, b, initial_state, finite=True):
    """Validate (a, b, initial_state); return them with ``initial_state`` possibly None.

    ``finite=False`` leaves the finiteness of a and b to :func:`check_finite_after` (for the
    compiled backends, which would otherwise spend two extra passes over memory on it).
    """
    a = checks.float_array(a, "a", ndim=3, dims="(B, T, D)")
    b = checks.float_array(b, "b", ndim=3, dims="(B, T, D)")
    checks.same_shape(b, "b", a.shape, "(B, T, D)", "the shape of a")
    checks.same_dtype(b, "b", a.dtype, "the dtype of a")
    checks.nonempty_time(a.shape[1], "a")
    if finite:
        checks.finite(a, "a")
        checks.finite(b, "b")
    if initial_state is not None:
        initial_state = checks.float_array(initial_state, "initial_state", ndim=2, dims="(B, D)")
        Bn, _, D = a.shape
        checks.same_shape(initial_state, "initial_state", (Bn, D), "(B, D)", "batch and channels of a")
        checks.same_dtype(initial_state, "initial_state", a.dtype, "the dtype of a")
        checks.finite(initial_state, "initial_state")
    return a, b, initial_state


def check_finite_after(ht, a, b):
    """Finiteness of a and b, checked from the final state the kernel computed.

    NaN and inf are absorbing in s <- a s + b (inf * 0 = NaN, NaN * x = NaN, inf + x = inf), and
    the kernels start from an explicit (zero) state, so a non-finite a_t or b_t always leaves a
    non-finite final state. Only then are a and b searched, to name the culprit. (A final state
    that overflowed from finite inputs passes, as it does with the NumPy backend.)
    """
    if not np.all(np.isfinite(ht)):
        checks.finite(a, "a")
        checks.finite(b, "b")


def check_cotangents(dh, dht, shape, dtype):
    """Validate the output cotangents; ``None`` means zero. Returns (dh, dht) as arrays."""
    Bn, T, D = shape
    if dh is None:
        dh = np.zeros(shape, dtype)
    else:
        dh = checks.float_array(dh, "dh", ndim=3, dims="(B, T, D)")
        checks.same_shape(dh, "dh", shape, "(B, T, D)", "the shape of h")
        checks.same_dtype(dh, "dh", dtype, "the dtype of h")
    if dht is None:
        dht = np.zeros((Bn, D), dtype)
    else:
        dht = checks.float_array(dht, "dht", ndim=2, dims="(B, D)")
        checks.same_shape(dht, "dht", (Bn, D), "(B, D)", "the shape of ht")
        checks.same_dtype(dht, "dht", dtype, "the dtype of h")
    return dh, dht


@dataclass(frozen=True)
class ScanCache:
    """What every form's backward needs: the coefficients and the states of the forward."""

    a: np.ndarray  # (B, T, D)
    h: np.ndarray  # (B, T, D) all states h_0 .. h_{T-1}
    initial_state: np.ndarray | None  # (B, D) or None
    backend: str
    chunk_size: int = 0


def previous_states(h, initial_state):
    """h_{t-1} for t = 0..T-1, with h_{-1} = initial_state or 0.   # (B, T, D)"""
    h_prev = np.empty_like(h)
    h_prev[:, 1:] = h[:, :-1]
    h_prev[:, 0] = 0 if initial_state is None else initial_state
    return h_prev


def reverse_scan_inputs(a, dh, dht):
    """The backward recurrence g_t = a_{t+1} g_{t+1} + dh_t (carry-in dht) as a forward scan.

    Flipping time turns it into h'_s = a'_s h'_{s-1} + b'_s with s = T-1-t,
    a'_s = a_{t+1} (a'_0 = 1: the carry-in dht enters unchanged), b'_s = dh_t, h'_{-1} = dht.
    Returns (a', b', h'_{-1}); the caller flips the result back.
    """
    a_next = np.empty_like(a)  # (B, T, D): a_{t+1}
    a_next[:, :-1] = a[:, 1:]
    a_next[:, -1] = 1
    return a_next[:, ::-1], dh[:, ::-1], dht


def grads_from_g(g, a, h, initial_state):
    """da_t = g_t h_{t-1},  db_t = g_t,  dinitial_state = a_0 g_0 (None if there was none)."""
    da = g * previous_states(h, initial_state)
    dh0 = None if initial_state is None else a[:, 0] * g[:, 0]
    return da, g, dh0
