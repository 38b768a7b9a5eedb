"""The parallel form: an associative scan over (a, b) pairs, O(log T) steps.

Write one step of the recurrence as the affine map f_t(h) = a_t h + b_t. Composing two steps
gives another affine map:

    (f_t o f_s)(h) = a_t (a_s h + b_s) + b_t = (a_s a_t) h + (a_t b_s + b_t)

so the pairs combine with the associative operator

    (a_s, b_s) . (a_t, b_t) = (a_s a_t,  a_t b_s + b_t)                     (1)

and h_t is the b-part of the prefix (a_0, b_0) . (a_1, b_1) . ... . (a_t, b_t), once the initial
state is folded into the first pair: b_0 <- a_0 h_{-1} + b_0.

Any prefix-scan algorithm computes all T prefixes of an associative operator. We use
Hillis-Steele: at round k (offset 2^k) every position t >= 2^k combines with the pair 2^k to
its left. After ceil(log2 T) rounds position t holds the prefix over 0..t. Each round is one
vectorised NumPy expression over the whole (B, T, D) array: T log T work, log T depth, which is
the shape a GPU block scan has (Blelloch's variant does O(T) work in 2 log T rounds).

Backward: the reverse recurrence g_t = dh_t + a_{t+1} g_{t+1} is itself a linear scan (in
reverse time), so the backward runs this same parallel scan on flipped inputs.
"""

from __future__ import annotations

import numpy as np

from ref.mixers.linear_scan._inputs import (
    ScanCache,
    check_cotangents,
    check_inputs,
    grads_from_g,
    reverse_scan_inputs,
)


def _hillis_steele(a, b, initial_state):
    """All prefixes of (1), returning h (B, T, D). Inputs are not modified."""
    A = a.copy()  # (B, T, D): the a-part of the running prefix
    Bv = b.copy()  # (B, T, D): the b-part; equals h at the end
    if initial_state is not None:
        # fold h_{-1} into the first pair: b_0 <- a_0 h_{-1} + b_0
        Bv[:, 0] += a[:, 0] * initial_state
    T = a.shape[1]
    k = 1
    while k < T:
        # (1) combine (A, Bv)[t-k] . (A, Bv)[t] for every t >= k; the right-hand sides are
        # evaluated from the previous round's values before either array is overwritten
        Bv[:, k:] = A[:, k:] * Bv[:, :-k] + Bv[:, k:]
        A[:, k:] = A[:, :-k] * A[:, k:]
        k *= 2
    return Bv


def associative_scan(a, b, initial_state=None):
    """All prefixes of (1) for any numeric dtype (complex included), without input validation.

    ``a``, ``b`` (B, T, D) and ``initial_state`` (B, D) or None; returns h (B, T, D). The public
    building block for scans whose coefficients the real-valued ``linear_scan_*`` refuse, e.g. the
    complex diagonal states of S5 / ConvS5. Its backward is itself run on reversed inputs (see
    ``linear_scan_parallel_backward``).
    """
    return _hillis_steele(a, b, initial_state)


def linear_scan_parallel(a, b, initial_state=None):
    """h_t = a_t h_{t-1} + b_t by a log-depth associative scan. Returns ``h, ht, cache``."""
    a, b, initial_state = check_inputs(a, b, initial_state)
    h = _hillis_steele(a, b, initial_state)
    cache = ScanCache(a=a, h=h, initial_state=initial_state, backend="numpy")
    return h, h[:, -1].copy(), cache


def linear_scan_parallel_backward(dh, dht, cache: ScanCache):
    """``(da, db, dinitial_state)``: the reverse recurrence for g by the same parallel scan."""
    a, h, h0 = cache.a, cache.h, cache.initial_state
    dh, dht = check_cotangents(dh, dht, h.shape, h.dtype)
    a_rev, dh_rev, carry_in = reverse_scan_inputs(a, dh, dht)
    g = _hillis_steele(a_rev, dh_rev, carry_in)[:, ::-1]  # (B, T, D), back in forward time
    return grads_from_g(np.ascontiguousarray(g), a, h, h0)
