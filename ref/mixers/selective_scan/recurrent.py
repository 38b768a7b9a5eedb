"""The selective scan, sequential form: Mamba's S6 as a loop over time (``selective_scan_ref``).

    x_t = exp(delta_t A) * x_{t-1} + delta_t B_t u_t,    y_t = sum_n x_t C_t      (see ``_inputs``)

The loop keeps the (B, D, N) state; it is the definition the other forms are checked against.

Backward. With dx the total gradient of the state x_t (carried backwards in time):

    dx_t = C_t dy_t + a_{t+1} dx_{t+1}        (dx_{L-1} also gets dlast_state)
    da_t = dx_t x_{t-1},   db_t = dx_t,       dinitial_state = a_0 dx_0

then (da, db) go back through the discretisation to delta, A, B and u (``discretize_backward``).

Backends: ``backend="numba"`` runs the fused CPU kernels of ``numba_kernels.selective_scan_cpu``
(discretisation, scan and readout in one pass per channel; the backward recomputes the states from
checkpoints instead of keeping all of them), ``"cuda"`` the thread-per-channel kernels of
``numba_kernels.selective_scan_cuda``; the backward runs on the forward's backend.
"""

from __future__ import annotations

import numpy as np

from ref.backend import resolve
from ref.mixers.selective_scan._inputs import (
    check_inputs,
    discretize,
    discretize_backward,
    readout,
    readout_backward,
)
from ref.mixers.selective_scan._cache import SSCache, check_cotangents


def selective_scan_recurrent(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
    initial_state=None, return_last_state=False, backend: str = "numpy",
):
    """Mamba's selective scan by a loop over time; arguments and results as ``selective_scan_ref``.

    Returns ``out`` (B, D, L), ``last_state`` (B, D, N) or None (unless ``return_last_state``), cache.
    ``initial_state`` (B, D, N) is an extension (mamba_ssm has none).
    backend: "numpy" (this loop), "numba" (``numba_kernels.selective_scan_cpu``), "cuda" (a warp
    per channel forward, a thread per channel backward, ``numba_kernels.selective_scan_cuda``) or
    "auto".
    """
    inp = check_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state=initial_state)
    backend = resolve(backend, ("numpy", "numba", "cuda"), "selective_scan_recurrent")
    if backend != "numpy":
        return forward_on_kernels(inp, backend, return_last_state)
    delta_eff, a, b = discretize(inp)  # (B, L, D, N)
    Bn, L, Dn, N = a.shape
    x = np.empty_like(a)  # (B, L, D, N): every state, for the backward
    state = np.zeros((Bn, Dn, N), a.dtype) if inp.initial_state is None else inp.initial_state
    for t in range(L):
        state = a[:, t] * state + b[:, t]  # x_t = a_t x_{t-1} + b_t
        x[:, t] = state
    out, y = readout(x, inp)
    cache = SSCache(inp, delta_eff, a, x, y, return_last_state, backend)
    return out, (state.copy() if return_last_state else None), cache


def selective_scan_recurrent_backward(dout, dlast_state, cache: SSCache):
    """Gradients ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state)`` (None if absent)."""
    if cache.backend != "numpy":
        return backward_on_kernels(dout, dlast_state, cache)
    inp, a, x = cache.inp, cache.a, cache.x
    dout, dlast_state = check_cotangents(dout, dlast_state, cache)
    dx_out, dC, dD, dz, du = readout_backward(dout, x, cache.y, inp)
    Bn, L, Dn, N = a.shape
    g = np.zeros((Bn, Dn, N), a.dtype) if dlast_state is None else dlast_state.copy()
    da = np.empty_like(a)
    db = np.empty_like(a)
    for t in range(L - 1, -1, -1):
        g = g + dx_out[:, t]  # dx_t = C_t dy_t + a_{t+1} dx_{t+1}
        db[:, t] = g
        x_prev = x[:, t - 1] if t > 0 else (0 if inp.initial_state is None else inp.initial_state)
        da[:, t] = g * x_prev
        g = a[:, t] * g  # carried to x_{t-1}
    dinitial_state = None if inp.initial_state is None else g
    ddelta, dA, dB, ddelta_bias, du = discretize_backward(da, db, a, cache.delta, inp, du)
    return du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state


# --- the numba kernels (shared with the chunked form's "cuda" backend) ---------------------------


def _kernels(backend: str, chunk_size: int):
    """(forward, backward) kernel functions: the CPU kernels, or the CUDA ones (time-chunked when
    ``chunk_size`` is set)."""
    if backend == "numba":
        from numba_kernels.selective_scan_cpu import selective_scan_cpu, selective_scan_cpu_backward

        return selective_scan_cpu, selective_scan_cpu_backward
    from numba_kernels import selective_scan_cuda as k

    if chunk_size:
        return (
            lambda *args: k.selective_scan_cuda_chunked(*args, chunk_size=chunk_size),
            lambda *args: k.selective_scan_cuda_chunked_backward(*args, chunk_size=chunk_size),
        )
    return k.selective_scan_cuda, k.selective_scan_cuda_backward


def forward_on_kernels(inp, backend: str, return_last_state: bool, chunk_size: int = 0):
    """The forward on the numba kernels: the cache keeps the inputs and the kernels' saved states
    (a state every few steps), not the (B, L, D, N) arrays of the NumPy forms."""
    forward, _ = _kernels(backend, chunk_size)
    args = (inp.u, inp.delta_raw, inp.A, inp.B, inp.C, inp.D, inp.z, inp.delta_bias, inp.delta_softplus)
    out, last, saved = forward(*args, inp.initial_state)
    cache = SSCache(inp, None, None, None, None, return_last_state, backend, chunk_size, saved)
    return out, (last if return_last_state else None), cache


def backward_on_kernels(dout, dlast_state, cache: SSCache):
    inp = cache.inp
    dout, dlast_state = check_cotangents(dout, dlast_state, cache)
    _, backward = _kernels(cache.backend, cache.chunk_size)
    args = (inp.u, inp.delta_raw, inp.A, inp.B, inp.C, inp.D, inp.z, inp.delta_bias, inp.delta_softplus)
    return backward(*args, inp.initial_state, cache.scan, dout, dlast_state)
