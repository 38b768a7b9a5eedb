"""The chunked form: scan inside chunks, carry the state across chunks.

Split time into n = ceil(T / C) chunks of C steps (the last one padded with identity steps
a = 1, b = 0, which leave the state unchanged). Unrolling (1) h_t = a_t h_{t-1} + b_t from the
start s of t's chunk:

    h_t = P_t h_{s-1} + l_t,   P_t = a_s a_{s+1} ... a_t,   l_t = the scan of the chunk from 0   (2)

1. Inside every chunk at once, from a zero state: the local scan l_t and the running products
   P_t (C vectorised steps, all chunks in parallel).
2. Across chunks, sequentially (n steps): the state entering chunk c+1 is
   h_{end of c} = P_end(c) h_{entering c} + l_end(c), starting from the initial state.
3. Everywhere at once: h_t = P_t h_{entering chunk(t)} + l_t, from (2).

C + n sequential steps instead of T (C ~ sqrt(T) minimises them); step 1 and 3 are the parallel
work, step 2 the short carry. The GPU kernels (``numba_kernels.scan_cuda``) use this structure
to put B * D * n threads to work instead of B * D. Nothing is divided by a product of a's, so the
form stays exact when some a_t are 0 or tiny.

Backward: the reverse recurrence g_t = dh_t + a_{t+1} g_{t+1} runs through this same chunked
scan on flipped inputs.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.backend import resolve
from ref.mixers.linear_scan._inputs import (
    ScanCache,
    check_cotangents,
    check_finite_after,
    check_inputs,
    grads_from_g,
    reverse_scan_inputs,
)


def _chunked_scan(a, b, initial_state, C):
    """h (B, T, D) by steps 1-3 above. Inputs are not modified."""
    Bn, T, D = a.shape
    n = -(-T // C)  # number of chunks, ceil(T / C)
    pad = n * C - T
    # identity steps (a = 1, b = 0) pad the last chunk; they leave every state unchanged
    a_p = np.concatenate([a, np.ones((Bn, pad, D), a.dtype)], axis=1).reshape(Bn, n, C, D)  # (B, n, C, D)
    b_p = np.concatenate([b, np.zeros((Bn, pad, D), b.dtype)], axis=1).reshape(Bn, n, C, D)  # (B, n, C, D)

    # 1. local scans and running products, all chunks at once
    local = np.empty_like(b_p)  # (B, n, C, D): l_t
    prod = np.empty_like(a_p)  # (B, n, C, D): P_t
    l_i, p_i = b_p[:, :, 0], a_p[:, :, 0]  # (B, n, D)
    local[:, :, 0], prod[:, :, 0] = l_i, p_i
    for i in range(1, C):
        l_i = a_p[:, :, i] * l_i + b_p[:, :, i]
        p_i = p_i * a_p[:, :, i]
        local[:, :, i], prod[:, :, i] = l_i, p_i

    # 2. the state entering each chunk, sequentially across chunks
    entering = np.empty((Bn, n, D), a.dtype)  # (B, n, D)
    state = np.zeros((Bn, D), a.dtype) if initial_state is None else initial_state
    for c in range(n):
        entering[:, c] = state
        state = prod[:, c, -1] * state + local[:, c, -1]

    # 3. (2) h_t = P_t h_{entering} + l_t
    h = prod * entering[:, :, None, :] + local  # (B, n, C, D)
    return h.reshape(Bn, n * C, D)[:, :T]  # (B, T, D)


def linear_scan_chunked(a, b, initial_state=None, *, chunk_size: int = 64, backend: str = "numpy"):
    """h_t = a_t h_{t-1} + b_t by chunks of ``chunk_size`` steps. Returns ``h, ht, cache``.

    backend: "numpy" (this file), "numba" (``numba_kernels.scan_cpu.scan_cpu_chunked``),
    "cuda" (the time-chunked kernels of ``numba_kernels.scan_cuda``) or "auto".
    """
    C = checks.positive_int(chunk_size, "chunk_size")
    backend = resolve(backend, ("numpy", "numba", "cuda"), "linear_scan_chunked")
    # the kernels check a and b for NaN/inf through the final state (check_finite_after)
    a, b, initial_state = check_inputs(a, b, initial_state, finite=backend == "numpy")
    if backend == "numpy":
        h = np.ascontiguousarray(_chunked_scan(a, b, initial_state, C))
    elif backend == "numba":
        from numba_kernels.scan_cpu import scan_cpu_chunked

        h = scan_cpu_chunked(a, b, initial_state, C)
    else:
        from numba_kernels.scan_cuda import scan_cuda_chunked

        h = scan_cuda_chunked(a, b, initial_state, C)
    ht = h[:, -1].copy()  # (B, D)
    if backend != "numpy":
        check_finite_after(ht, a, b)
    cache = ScanCache(a=a, h=h, initial_state=initial_state, backend=backend, chunk_size=C)
    return h, ht, cache


def linear_scan_chunked_backward(dh, dht, cache: ScanCache):
    """``(da, db, dinitial_state)``: the reverse recurrence for g by the same chunked scan."""
    a, h, h0, C = cache.a, cache.h, cache.initial_state, cache.chunk_size
    dh, dht = check_cotangents(dh, dht, h.shape, h.dtype)
    if cache.backend == "numba":
        from numba_kernels.scan_cpu import scan_cpu_chunked_backward

        return scan_cpu_chunked_backward(a, h, h0, dh, dht, C)
    if cache.backend == "cuda":
        from numba_kernels.scan_cuda import scan_cuda_chunked_backward

        return scan_cuda_chunked_backward(a, h, h0, dh, dht, C)
    a_rev, dh_rev, carry_in = reverse_scan_inputs(a, dh, dht)
    g = _chunked_scan(a_rev, dh_rev, carry_in, C)[:, ::-1]  # (B, T, D), back in forward time
    return grads_from_g(np.ascontiguousarray(g), a, h, h0)
