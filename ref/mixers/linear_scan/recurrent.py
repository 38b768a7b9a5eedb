"""The recurrent form: a loop over time.

    h_t = a_t * h_{t-1} + b_t                                   (1)

Each step is vectorised over (B, D); the loop over T is sequential. This is the definition:
the other forms are checked against it.

Backward. L depends on h_t directly (through dh_t) and through h_{t+1} = a_{t+1} h_t + b_{t+1}.
So the total gradient g_t = dL/dh_t obeys a linear recurrence that runs backwards in time:

    g_t = dh_t + a_{t+1} g_{t+1}        g_{T-1} = dh_{T-1} + dht          (2)

and, differentiating (1) for a_t, b_t and h_{-1}:

    da_t = g_t h_{t-1}      db_t = g_t      dinitial_state = a_0 g_0      (3)
"""

from __future__ import annotations

import numpy as np

from ref.backend import resolve
from ref.mixers.linear_scan._inputs import (
    ScanCache,
    check_cotangents,
    check_finite_after,
    check_inputs,
    grads_from_g,
)


def linear_scan_recurrent(a, b, initial_state=None, *, backend: str = "numpy"):
    """h_t = a_t h_{t-1} + b_t by a loop over time.

    a, b: (B, T, D); initial_state: (B, D) or None (zeros). Returns ``h`` (B, T, D), the final
    state ``ht`` (B, D) and the cache for :func:`linear_scan_recurrent_backward`.
    backend: "numpy" (this loop), "numba" (``numba_kernels.scan_cpu``), "cuda" (a thread per
    channel, ``numba_kernels.scan_cuda``) or "auto".
    """
    backend = resolve(backend, ("numpy", "numba", "cuda"), "linear_scan_recurrent")
    # the kernels check a and b for NaN/inf through the final state (check_finite_after)
    a, b, initial_state = check_inputs(a, b, initial_state, finite=backend == "numpy")
    if backend == "numpy":
        h = np.empty_like(b)  # (B, T, D)
        state = np.zeros_like(b[:, 0]) if initial_state is None else initial_state  # (B, D)
        for t in range(a.shape[1]):
            # (1)  h_t = a_t * h_{t-1} + b_t
            state = a[:, t] * state + b[:, t]
            h[:, t] = state
    elif backend == "numba":
        from numba_kernels.scan_cpu import scan_cpu

        h = scan_cpu(a, b, initial_state)
    else:
        from numba_kernels.scan_cuda import scan_cuda

        h = scan_cuda(a, b, initial_state)
    ht = h[:, -1].copy()  # (B, D)
    if backend != "numpy":
        check_finite_after(ht, a, b)
    cache = ScanCache(a=a, h=h, initial_state=initial_state, backend=backend)
    return h, ht, cache


def linear_scan_recurrent_backward(dh, dht, cache: ScanCache):
    """Gradients ``(da, db, dinitial_state)`` from the cotangents of ``h`` and ``ht``.

    ``dh`` (B, T, D) and ``dht`` (B, D) may be None (zero). ``dinitial_state`` is None when the
    forward had no initial state.
    """
    a, h, h0 = cache.a, cache.h, cache.initial_state
    dh, dht = check_cotangents(dh, dht, h.shape, h.dtype)
    if cache.backend == "numba":
        from numba_kernels.scan_cpu import scan_cpu_backward

        return scan_cpu_backward(a, h, h0, dh, dht)
    if cache.backend == "cuda":
        from numba_kernels.scan_cuda import scan_cuda_backward

        return scan_cuda_backward(a, h, h0, dh, dht)
    T = a.shape[1]
    g = np.empty_like(h)  # (B, T, D)
    g_next = dht  # (B, D): the final state's cotangent enters at t = T-1
    for t in range(T - 1, -1, -1):
        # (2)  g_t = dh_t + a_{t+1} g_{t+1}   (for t = T-1 the "a_T g_T" term is dht)
        g_t = dh[:, t] + (a[:, t + 1] * g_next if t + 1 < T else g_next)
        g[:, t] = g_t
        g_next = g_t
    # (3)
    return grads_from_g(g, a, h, h0)
