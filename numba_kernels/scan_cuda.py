"""First-order linear scan h_t = a_t h_{t-1} + b_t on a CUDA GPU (numba-cuda).

Same math, arguments and layout as ``numba_kernels.scan_cpu``: a, b, h (B, T, D); states (B, D).

Two kernel families:

1. **Thread per channel** (``scan_cuda``, ``scan_cuda_backward``): thread i owns channel
   (bi, d) = divmod(i, D) and loops over time with its state in a register. Neighbouring threads
   own neighbouring d, so every load of a[bi, t, :] by a warp is one coalesced transaction. Only
   B * D threads exist: a GPU holds ~270k resident threads, so this is under-occupied unless
   B * D is large; each thread therefore loads ``STEPS`` steps of a and b into registers before it
   computes them, so that many loads are in flight at once.

2. **Time-chunked** (``scan_cuda_chunked``, ``scan_cuda_chunked_backward``): time is cut into n
   chunks of C steps and a 2-D grid puts a thread on every (channel, chunk): B * D * n threads.
     pass 1  each (channel, chunk) scans its chunk from a zero state: summary (P, l), with P the
             product of the chunk's a's and l the local result, so the chunk maps s to P s + l;
     pass 2  a thread per channel carries the state across the n chunks (n sequential steps);
     pass 3  each (channel, chunk) rescans its chunk from its entering state and writes h.
   a and b are read twice, h written once; no shared memory, no synchronisation inside a block
   (so the kernels also run under the CUDA simulator at tiny sizes).

The backward is the same recurrence run in reverse time (``reverse=True``):
    g = s + dh_t;  s <- a_t g        (carry-in dht, output g_t = dL/dh_t, final s = dL/dh_{-1})
followed by da_t = g_t h_{t-1}, db_t = g_t in an elementwise kernel.

Numerics: the CUDA target contracts a * s + b into one FMA by default, so results differ from the
CPU in the last bits (tests use tolerances derived from the float precision).

Host wrappers take NumPy arrays and return NumPy arrays. The ``launch_*`` functions work on
device arrays, for benchmarks and callers that keep data on the GPU.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

THREADS = 128  # threads per block along channels
# Time steps whose loads a thread issues together before it computes and stores them. The compiler
# must assume that h may alias a and b, so it cannot move the load of step t + 1 above the store of
# step t: a plain loop waits a whole memory round trip per step. Loading STEPS steps into registers
# first keeps 2 * STEPS loads in flight per thread, which is what hides DRAM latency when only
# B * D threads exist. Little's law for an H200: 4.8 TB/s over 132 SMs at ~0.7 us latency needs
# ~25 KB in flight per SM; at B * D = 65,536 (the benchmark), ~500 threads per SM with 16 steps
# of a and b in flight hold 64 KB. The thread-per-channel backward reads three arrays a step, and
# at 16 steps needs more than the 255 registers a thread has (ptxas spills), so it groups 8.
STEPS = 16
STEPS_BACKWARD = 8


# --- thread per channel ------------------------------------------------------------------------


@cuda.jit
def _forward_thread_kernel(a, b, h0, h):
    i = cuda.grid(1)
    Bn, T, D = a.shape
    if i < Bn * D:
        bi = i // D
        d = i % D
        at = cuda.local.array(STEPS, a.dtype)  # registers: the loop over STEPS is unrolled
        bt = cuda.local.array(STEPS, b.dtype)
        s = h0[bi, d]
        for t0 in range(0, T, STEPS):
            n = min(STEPS, T - t0)
            for u in range(STEPS):  # every load of the group first (see STEPS)
                if u < n:
                    at[u] = a[bi, t0 + u, d]
                    bt[u] = b[bi, t0 + u, d]
            for u in range(STEPS):
                if u < n:
                    s = at[u] * s + bt[u]
                    h[bi, t0 + u, d] = s


@cuda.jit
def _backward_thread_kernel(a, h, h0, dh, dht, da, db, dh0):
    i = cuda.grid(1)
    Bn, T, D = a.shape
    if i < Bn * D:
        bi = i // D
        d = i % D
        at = cuda.local.array(STEPS_BACKWARD, a.dtype)
        gt = cuda.local.array(STEPS_BACKWARD, a.dtype)  # dh_t, then g_t
        ht = cuda.local.array(STEPS_BACKWARD, a.dtype)  # h_{t-1}
        s = dht[bi, d]  # s = a_{t+1} g_{t+1}, the part of dL/dh_t coming from the future
        for k0 in range(0, T, STEPS_BACKWARD):
            n = min(STEPS_BACKWARD, T - k0)
            for u in range(STEPS_BACKWARD):  # steps t = T - 1 - k0 - u, backwards in time; loads first
                if u < n:
                    t = T - 1 - k0 - u
                    at[u] = a[bi, t, d]
                    gt[u] = dh[bi, t, d]
                    ht[u] = h[bi, t - 1, d] if t > 0 else h0[bi, d]
            for u in range(STEPS_BACKWARD):
                if u < n:
                    t = T - 1 - k0 - u
                    g = s + gt[u]
                    db[bi, t, d] = g
                    da[bi, t, d] = g * ht[u]
                    s = at[u] * g
        dh0[bi, d] = s


# --- time-chunked ------------------------------------------------------------------------------


@cuda.jit
def _chunk_summary_kernel(a, b, C, reverse, P, L):
    i, c = cuda.grid(2)
    Bn, T, D = a.shape
    if i < Bn * D and c < P.shape[1]:
        bi = i // D
        d = i % D
        k0 = C * c
        t = T - 1 - k0 if reverse else k0
        p = a[bi, t, d]
        l = a[bi, t, d] * b[bi, t, d] if reverse else b[bi, t, d]
        for k in range(k0 + 1, min(k0 + C, T)):
            t = T - 1 - k if reverse else k
            p = p * a[bi, t, d]
            if reverse:
                l = a[bi, t, d] * (l + b[bi, t, d])
            else:
                l = a[bi, t, d] * l + b[bi, t, d]
        P[bi, c, d] = p
        L[bi, c, d] = l


@cuda.jit
def _chunk_carry_kernel(P, L, s0, entering, s_final):
    i = cuda.grid(1)
    Bn, n, D = P.shape
    if i < Bn * D:
        bi = i // D
        d = i % D
        s = s0[bi, d]
        for c in range(n):
            entering[bi, c, d] = s
            s = P[bi, c, d] * s + L[bi, c, d]
        s_final[bi, d] = s


@cuda.jit
def _chunk_apply_kernel(a, b, entering, C, reverse, out):
    i, c = cuda.grid(2)
    Bn, T, D = a.shape
    if i < Bn * D and c < entering.shape[1]:
        bi = i // D
        d = i % D
        at = cuda.local.array(STEPS, a.dtype)
        bt = cuda.local.array(STEPS, b.dtype)
        s = entering[bi, c, d]
        k1 = min(C * c + C, T)
        for k0 in range(C * c, k1, STEPS):
            n = min(STEPS, k1 - k0)
            for u in range(STEPS):  # every load of the group first (see STEPS)
                if u < n:
                    t = T - 1 - (k0 + u) if reverse else k0 + u
                    at[u] = a[bi, t, d]
                    bt[u] = b[bi, t, d]
            for u in range(STEPS):
                if u < n:
                    if reverse:
                        t = T - 1 - (k0 + u)
                        g = s + bt[u]
                        out[bi, t, d] = g
                        s = at[u] * g
                    else:
                        s = at[u] * s + bt[u]
                        out[bi, k0 + u, d] = s


@cuda.jit
def _grads_kernel(h, h0, g, da):
    # da_t = g_t h_{t-1} (h_{-1} = h0), a thread per element
    i = cuda.grid(1)
    Bn, T, D = h.shape
    if i < Bn * T * D:
        bi = i // (T * D)
        t = (i // D) % T
        d = i % D
        if t > 0:
            da[bi, t, d] = g[bi, t, d] * h[bi, t - 1, d]
        else:
            da[bi, t, d] = g[bi, t, d] * h0[bi, d]


# --- launchers on device arrays ----------------------------------------------------------------


def _grid1(n):
    return (max(1, math.ceil(n / THREADS)),)


def launch_scan(a, b, h0, h):
    """Thread per channel: h = scan(a, b) from h0. All arguments are device arrays."""
    Bn, T, D = a.shape
    _forward_thread_kernel[_grid1(Bn * D), THREADS](a, b, h0, h)


def launch_scan_backward(a, h, h0, dh, dht, da, db, dh0):
    Bn, T, D = a.shape
    _backward_thread_kernel[_grid1(Bn * D), THREADS](a, h, h0, dh, dht, da, db, dh0)


def launch_scan_chunked(a, b, s0, out, s_final, C, reverse=False):
    """Time-chunked scan in three passes; ``reverse`` runs the backward recurrence."""
    Bn, T, D = a.shape
    n = math.ceil(T / C)
    if n > 65535:
        raise ValueError(f"chunk_size: at most 65535 chunks fit the grid's y axis, got {n} (T = {T}, C = {C})")
    P = cuda.device_array((Bn, n, D), a.dtype)
    L = cuda.device_array((Bn, n, D), a.dtype)
    entering = cuda.device_array((Bn, n, D), a.dtype)
    grid2 = (max(1, math.ceil(Bn * D / THREADS)), n)
    _chunk_summary_kernel[grid2, (THREADS, 1)](a, b, C, reverse, P, L)
    _chunk_carry_kernel[_grid1(Bn * D), THREADS](P, L, s0, entering, s_final)
    _chunk_apply_kernel[grid2, (THREADS, 1)](a, b, entering, C, reverse, out)


# --- host wrappers: the same arguments as the NumPy reference ----------------------------------


def _to_device(*arrays):
    return [cuda.to_device(np.ascontiguousarray(x)) for x in arrays]


def _h0(a, initial_state):
    return np.zeros((a.shape[0], a.shape[2]), a.dtype) if initial_state is None else initial_state


def scan_cuda(a, b, initial_state=None):
    """h (B, T, D), thread per channel."""
    a_d, b_d, h0_d = _to_device(a, b, _h0(a, initial_state))
    h_d = cuda.device_array(a.shape, a.dtype)
    launch_scan(a_d, b_d, h0_d, h_d)
    return h_d.copy_to_host()


def scan_cuda_backward(a, h, initial_state, dh, dht):
    """(da, db, dinitial_state), thread per channel, one fused reverse pass."""
    a_d, h_d, h0_d, dh_d, dht_d = _to_device(a, h, _h0(a, initial_state), dh, dht)
    da_d = cuda.device_array(a.shape, a.dtype)
    db_d = cuda.device_array(a.shape, a.dtype)
    dh0_d = cuda.device_array(h0_d.shape, a.dtype)
    launch_scan_backward(a_d, h_d, h0_d, dh_d, dht_d, da_d, db_d, dh0_d)
    dh0 = dh0_d.copy_to_host() if initial_state is not None else None
    return da_d.copy_to_host(), db_d.copy_to_host(), dh0


def scan_cuda_chunked(a, b, initial_state=None, chunk_size=64):
    """h (B, T, D) by the time-chunked kernels: B * D * ceil(T / chunk_size) threads."""
    a_d, b_d, h0_d = _to_device(a, b, _h0(a, initial_state))
    h_d = cuda.device_array(a.shape, a.dtype)
    s_final = cuda.device_array(h0_d.shape, a.dtype)
    launch_scan_chunked(a_d, b_d, h0_d, h_d, s_final, int(chunk_size), reverse=False)
    return h_d.copy_to_host()


def scan_cuda_chunked_backward(a, h, initial_state, dh, dht, chunk_size=64):
    """(da, db, dinitial_state) with the reverse recurrence run by the time-chunked kernels."""
    Bn, T, D = a.shape
    a_d, h_d, h0_d, dh_d, dht_d = _to_device(a, h, _h0(a, initial_state), dh, dht)
    g_d = cuda.device_array(a.shape, a.dtype)
    dh0_d = cuda.device_array(h0_d.shape, a.dtype)
    launch_scan_chunked(a_d, dh_d, dht_d, g_d, dh0_d, int(chunk_size), reverse=True)
    da_d = cuda.device_array(a.shape, a.dtype)
    _grads_kernel[_grid1(Bn * T * D), THREADS](h_d, h0_d, g_d, da_d)
    dh0 = dh0_d.copy_to_host() if initial_state is not None else None
    return da_d.copy_to_host(), g_d.copy_to_host(), dh0


def kernel_signatures(dtype):
    """Every kernel of this module with its argument types for ``dtype`` (float32 or float64).

    Used to compile each kernel to PTX without a GPU (``numba.cuda.compile_ptx``), which runs the
    real type inference and code generation that the simulator skips.
    """
    from numba import types

    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    A3, A2 = types.Array(f, 3, "C"), types.Array(f, 2, "C")
    i64, b1 = types.int64, types.boolean
    return [
        (_forward_thread_kernel, (A3, A3, A2, A3)),
        (_backward_thread_kernel, (A3, A3, A2, A3, A2, A3, A3, A2)),
        (_chunk_summary_kernel, (A3, A3, i64, b1, A3, A3)),
        (_chunk_carry_kernel, (A3, A3, A2, A3, A2)),
        (_chunk_apply_kernel, (A3, A3, A3, i64, b1, A3)),
        (_grads_kernel, (A3, A2, A3, A3)),
    ]
