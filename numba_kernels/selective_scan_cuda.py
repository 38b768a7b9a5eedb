"""Mamba's selective scan (S6) on a CUDA GPU (numba-cuda): forward and backward, two kernel families.

Same math, arguments and results as ``numba_kernels.selective_scan_cpu`` and
``ref.mixers.selective_scan``: u, delta, z, out (B, D, L); A (D, N); B and C fixed (D, N),
variable (B, N, L) or grouped (B, G, N, L) (passed to the kernels by rows, (B | 1, G, L | 1, N),
see ``selective_scan_cpu.as_rows``); optional D, z, delta_bias, ``delta_softplus``; states (B, D, N).

Naive loop (the contract), as in ``selective_scan_cpu``:

    for b, d:   x = h0[b, d]
        for t:  dt = softplus(delta[b, d, t] + delta_bias[d]);  x = exp(dt A[d]) x + dt u[b, d, t] B_t
                out[b, d, t] = (x . C_t + D[d] u[b, d, t]) silu(z[b, d, t])

1. **Recurrent** (``selective_scan_cuda``, ``..._backward``), one pass over time per channel.
   The forward gives each channel (b, d) ``LANES`` (32, a warp) threads, which walk through time
   in windows of 32 P steps, each lane owning P = ``STEPS_PER_LANE`` consecutive steps: per state
   entry, a lane composes its steps' maps x -> a x + b, an inclusive scan over the lanes (warp
   shuffles, log2 32 = 5 exchanges) composes the window, and each lane then steps through its P
   steps from the state entering them. So 32 B * D threads work (a thread per channel would be
   B * D, under-filling a GPU at Mamba's B = 8, D = 2048), and a warp reads 32 P consecutive
   steps of u and delta. The forward saves the state every K = ``BUF // N`` steps. The backward
   is a thread per channel, in blocks of whole warps: it takes those segments from the last,
   recomputes each segment's states into a local buffer of ``BUF`` values, and runs the reverse
   recurrence dx_t = dy_t C_t + a_{t+1} dx_{t+1} over it. N <= ``MAX_N`` (64; larger raises
   ValueError).

2. **Time-chunked** (``selective_scan_cuda_chunked``, ``..._backward``): time is cut into n chunks
   of C steps and a 2-D grid puts a thread on every (channel, chunk), B * D * n threads, in three
   passes like ``scan_cuda``'s chunked scan, applied to each of the N state entries:
     pass 1  (channel, chunk): the chunk's affine map of the state, per entry: x -> P x + l, with
             P the product of the decays exp(dt A) and l the chunk's result from x = 0;
     pass 2  a thread per (channel, entry) carries the state across the n chunks;
     pass 3  the forward of family 1 on every (channel, chunk) from its entering state.
   The backward runs the same three passes on the reverse recurrence of dx (its inputs dy_t C_t
   do not depend on the state, so its chunk maps are computed the same way) and then, per
   (channel, chunk), the segment backward of family 1 from the forward's entering state and the
   carried dx (a chunk longer than BUF // N steps in several segments, each segment's entering
   state recomputed from the chunk's start).

Gradients summed over threads (dA, dD, ddelta_bias; dB and dC over time when fixed, over the
channels of a group when variable or grouped) are accumulated per thread and added with
``cuda.atomic.add``: their summation order, and so their last bits, vary from run to run.
The variable and grouped dB and dC get a term from every channel of a group at every step: in the
backward, the channels of a warp first sum their terms by shuffles, per run of lanes that share
(b, g) (``cuda_lanes.run_sum``, five steps), and the first lane of each run adds the sum: one
atomic add per warp and step where there were 32.

The forward's lanes, and the backward's runs, exchange values by warp shuffles; under numba's CUDA
simulator (which has none) through shared memory instead (``cuda_lanes``), and the simulator tests
use fewer lanes (``LANES``, read at each launch). The other kernels use no shared memory and no
synchronisation. Kernels are built per dtype and lane count by ``kernels(dtype, lanes)`` (local
arrays need the element type at compile time; CUDA kernels are compiled per process, never
cached); float32 kernels compute in float32 (``tests/test_cuda_ptx.py`` checks the PTX).
Numerics: the CUDA target contracts a * b + c into FMAs and uses its own exp, and the forward
composes each window's maps in a tree rather than step by step, so results differ from the CPU
in the last bits.
Host wrappers take and return NumPy arrays; the ``launch_*`` functions work on device arrays.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import cuda

from numba_kernels.cuda_lanes import run_starts, run_steps, run_sum, shfl_idx, shfl_up
from numba_kernels.selective_scan_cpu import SOFTPLUS_THRESHOLD, from_rows, prepare

THREADS = 128  # threads per block
MAX_N = 64  # the largest state size N: the length of the local arrays holding a state
BUF = 1024  # values in the backward's local buffer of recomputed states: segments of BUF // N steps
LANES = 32  # lanes per channel in the forward: a warp (the simulator tests also build 2 and 4)
STEPS_PER_LANE = 4  # P, consecutive steps of a lane in the forward
WARPS = 4  # channels per block of the forward
# The forward's lanes exchange values with warp shuffles, through shared memory under the simulator
# (``numba_kernels.cuda_lanes``).


def kernels(dtype, lanes: int = LANES) -> SimpleNamespace:
    """Every kernel of this module for ``dtype`` (float32 or float64), with ``lanes`` lanes per
    channel in the forward, compiled lazily at launch."""
    if lanes not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"lanes: expected a power of two from 1 to 32, got {lanes!r}")
    return _build(np.dtype(dtype).name, lanes)


@functools.cache
def _build(dtype_name: str, LANES: int) -> SimpleNamespace:
    real = np.dtype(dtype_name).type  # constants and local arrays in the input dtype
    one, zero, thr = real(1), real(0), real(SOFTPLUS_THRESHOLD)
    WINDOW = LANES * STEPS_PER_LANE  # steps a channel's lanes cover at once
    THREADS_FWD = WARPS * LANES

    # The forward's lanes exchange values with warp shuffles (``shfl_up``, ``shfl_idx`` below).
    # The backward is one thread per (b, d) and chunk, so both kernels serve both families (a grid
    # of channels x n chunks, n = 1 for the recurrent family).

    @cuda.jit
    def forward(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, start, C, out, xs, K, last, write_last):
        """LANES threads per (b, d) and chunk c (grid y): steps c C .. c C + C - 1 from start[b, d, c],
        writing out; the state entering every step t with t % K == 0 into xs[b, d, t // K] (K > 0);
        the state after the chunk into last[b, d] when ``write_last``.

        The chunk is walked in windows of WINDOW = LANES P steps, lane j owning the P consecutive
        steps t0 + j P .. t0 + j P + P - 1 of window t0. For every state entry n:
          1. each lane composes its P steps' maps x -> a_t x + b_t (a_t = exp(dt_t A[d, n]),
             b_t = dt_t u_t B_t[n]) into one map x -> pa x + pb;
          2. an inclusive scan over the lanes composes the maps of lanes 0 .. j (log2 LANES
             exchanges of (pa, pb));
          3. the map of lanes 0 .. j - 1 applied to the state entering the window gives the state
             entering lane j's steps; the lane steps through its P steps, adding x_t[n] C_t[n] to
             their outputs; the last lane's final state, broadcast, enters the next window.
        Every lane keeps the whole state entering the window (``carry``, local memory touched once
        per entry and window, not per step)."""
        Bn, Dn, L = u.shape
        N = A.shape[1]
        tid = cuda.threadIdx.x
        lane = tid % LANES
        i = cuda.blockIdx.x * (cuda.blockDim.x // LANES) + tid // LANES
        c = cuda.blockIdx.y
        active = i < Bn * Dn  # the same for a channel's lanes; idle lanes still take part in the exchanges
        i = min(i, Bn * Dn - 1)
        b, d = i // Dn, i % Dn
        bB, gB = (b if B4.shape[0] > 1 else 0), d // (Dn // B4.shape[1])
        bC, gC = (b if C4.shape[0] > 1 else 0), d // (Dn // C4.shape[1])
        buf = cuda.shared.array(THREADS_FWD, real)  # used by the exchanges under the simulator only
        carry = cuda.local.array(MAX_N, real)
        dtv = cuda.local.array(STEPS_PER_LANE, real)  # registers: the loops over P are unrolled
        uv = cuda.local.array(STEPS_PER_LANE, real)
        yv = cuda.local.array(STEPS_PER_LANE, real)
        av = cuda.local.array(STEPS_PER_LANE, real)
        bv = cuda.local.array(STEPS_PER_LANE, real)
        for n in range(N):
            carry[n] = start[b, d, c, n]
        c0 = c * C
        c1 = min(c0 + C, L)
        for t0 in range(c0, c1, WINDOW):
            base = t0 + lane * STEPS_PER_LANE
            for p in range(STEPS_PER_LANE):
                t = base + p
                dtv[p] = zero
                uv[p] = zero
                yv[p] = zero
                if t < c1:
                    dt = delta[b, d, t] + bias[d]
                    if softplus and dt <= thr:
                        dt = math.log1p(math.exp(dt))  # softplus, linear above the threshold
                    dtv[p] = dt
                    uv[p] = u[b, d, t]
            for n in range(N):
                An = A[d, n]
                # 1. the lane's map over its steps (the identity past the chunk's end)
                pa, pb = one, zero
                for p in range(STEPS_PER_LANE):
                    t = base + p
                    av[p] = one
                    bv[p] = zero
                    if t < c1:
                        # x_t = exp(dt A) x_{t-1} + dt u B_t
                        av[p] = math.exp(dtv[p] * An)
                        bv[p] = dtv[p] * uv[p] * B4[bB, gB, t if varB else 0, n]
                    pa, pb = av[p] * pa, av[p] * pb + bv[p]
                # 2. inclusive scan over the lanes: (pa, pb) <- (pa, pb) o (the map of lane j - off)
                off = 1
                while off < LANES:
                    qa = shfl_up(buf, tid, lane, pa, off)
                    qb = shfl_up(buf, tid, lane, pb, off)
                    if lane >= off:
                        pa, pb = pa * qa, pa * qb + pb
                    off *= 2
                # 3. the state entering the lane's steps (lanes 0 .. j - 1 applied to the carry)
                qa = shfl_up(buf, tid, lane, pa, 1)
                qb = shfl_up(buf, tid, lane, pb, 1)
                x = carry[n] if lane == 0 else qa * carry[n] + qb
                for p in range(STEPS_PER_LANE):
                    t = base + p
                    if t < c1:
                        if K > 0 and t % K == 0 and active:
                            xs[b, d, t // K, n] = x
                        x = av[p] * x + bv[p]
                        yv[p] += x * C4[bC, gC, t if varC else 0, n]  # y_t = x_t . C_t
                carry[n] = shfl_idx(buf, tid, lane, x, LANES - 1)  # the state leaving the window
            for p in range(STEPS_PER_LANE):
                t = base + p
                if t < c1 and active:
                    y = yv[p] + Dv[d] * uv[p]
                    if gated:
                        zt = z[b, d, t]
                        y = y * zt / (one + math.exp(-zt))  # (y + D u) silu(z)
                    out[b, d, t] = y
        if write_last and active:
            for n in range(lane, N, LANES):
                last[b, d, n] = carry[n]

    @cuda.jit
    def backward(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, start, xs, K, C, leaving, dout,
                 du, ddelta, dz, dA, dB4, dC4, dD, dbias, dfirst, write_first):
        """A thread per (b, d) and chunk c (grid y): the chunk's steps backwards from dx =
        leaving[b, d, c] (the gradient of its last state from later steps), in segments of
        S = BUF // N steps from the last. A segment's states are recomputed into a local buffer
        from the saved state xs[b, d, s0 // K] when its start s0 is a multiple of K > 0, else from
        start[b, d, c] stepped forward from the chunk's start. Writes du, ddelta, dz; adds into dA,
        dB4, dC4, dD, dbias (atomically); dx after the chunk into dfirst[b, d] when ``write_first``."""
        i, c = cuda.grid(2)
        Bn, Dn, L = u.shape
        N = A.shape[1]
        tid = cuda.threadIdx.x
        lane = tid % LANES
        active = i < Bn * Dn  # idle threads of the last block still take part in the exchanges
        i = min(i, Bn * Dn - 1)
        if c < start.shape[2]:  # the same for the whole block
            b, d = i // Dn, i % Dn
            bB, gB = (b if B4.shape[0] > 1 else 0), d // (Dn // B4.shape[1])
            bC, gC = (b if C4.shape[0] > 1 else 0), d // (Dn // C4.shape[1])
            # The lanes of a group whose channels add into the same entries of dB (dC) at every step
            # (a run of channels with one (b, g)) sum their terms by shuffles first: one atomic add
            # per run instead of one per channel. Idle threads get the key -1 and add nothing.
            buf = cuda.shared.array(THREADS, real)  # used by the exchanges under the simulator only
            keyB = real(bB * B4.shape[1] + gB) if active else real(-1)
            keyC = real(bC * C4.shape[1] + gC) if active else real(-1)
            stepsB = run_steps(buf, tid, lane, keyB, LANES)
            stepsC = run_steps(buf, tid, lane, keyC, LANES)
            headB = run_starts(buf, tid, lane, keyB) and active
            headC = run_starts(buf, tid, lane, keyC) and active
            dx = cuda.local.array(MAX_N, real)
            x0 = cuda.local.array(MAX_N, real)  # the state entering the segment
            accA = cuda.local.array(MAX_N, real)  # sums over time: dA, and dB, dC when fixed
            accB = cuda.local.array(MAX_N, real)
            accC = cuda.local.array(MAX_N, real)
            xbuf = cuda.local.array(BUF, real)  # the segment's states, xbuf[(t - s0) N + n] = x_t[n]
            for n in range(N):
                dx[n] = leaving[b, d, c, n]
                accA[n] = zero
                accB[n] = zero
                accC[n] = zero
            accD = zero
            accbias = zero
            S = BUF // N
            c0 = c * C
            c1 = min(c0 + C, L)
            nseg = (c1 - c0 + S - 1) // S
            for k in range(nseg):
                s0 = c0 + (nseg - 1 - k) * S
                s1 = min(s0 + S, c1)
                # the state entering the segment
                if K > 0 and s0 % K == 0:
                    for n in range(N):
                        x0[n] = xs[b, d, s0 // K, n]
                else:
                    for n in range(N):
                        x0[n] = start[b, d, c, n]
                    for t in range(c0, s0):
                        dt = delta[b, d, t] + bias[d]
                        if softplus and dt <= thr:
                            dt = math.log1p(math.exp(dt))
                        dtu = dt * u[b, d, t]
                        tb = t if varB else 0
                        for n in range(N):
                            x0[n] = math.exp(dt * A[d, n]) * x0[n] + dtu * B4[bB, gB, tb, n]
                # recompute the segment's states
                for t in range(s0, s1):
                    dt = delta[b, d, t] + bias[d]
                    if softplus and dt <= thr:
                        dt = math.log1p(math.exp(dt))
                    dtu = dt * u[b, d, t]
                    tb = t if varB else 0
                    j = (t - s0) * N
                    for n in range(N):
                        prev = x0[n] if t == s0 else xbuf[j - N + n]
                        xbuf[j + n] = math.exp(dt * A[d, n]) * prev + dtu * B4[bB, gB, tb, n]
                # backwards through the segment
                for t in range(s1 - 1, s0 - 1, -1):
                    pre = delta[b, d, t] + bias[d]
                    dt = pre
                    if softplus and dt <= thr:
                        dt = math.log1p(math.exp(dt))
                    ut = u[b, d, t]
                    dtu = dt * ut
                    tb = t if varB else 0
                    tc = t if varC else 0
                    j = (t - s0) * N
                    dy = dout[b, d, t]
                    if gated:
                        y = zero
                        for n in range(N):
                            y += xbuf[j + n] * C4[bC, gC, tc, n]
                        zt = z[b, d, t]
                        sig = one / (one + math.exp(-zt))
                        # dz = dout (y + D u) silu'(z),  silu'(z) = sig (1 + z (1 - sig))
                        if active:
                            dz[b, d, t] = dy * (y + Dv[d] * ut) * sig * (one + zt * (one - sig))
                        dy = dy * zt * sig  # dy = dout silu(z)
                    accD += dy * ut
                    sA = zero
                    sB = zero
                    for n in range(N):
                        a = math.exp(dt * A[d, n])
                        xn = xbuf[j + n]
                        xp = x0[n] if t == s0 else xbuf[j - N + n]
                        g = dx[n] + dy * C4[bC, gC, tc, n]  # dx_t = dy_t C_t + a_{t+1} dx_{t+1}
                        daa = g * xp * a  # da_t a_t, da_t = dx_t x_{t-1}
                        accA[n] += daa * dt
                        sA += daa * A[d, n]
                        sB += g * B4[bB, gB, tb, n]
                        if varB:
                            sumB = run_sum(buf, tid, lane, g * dtu, stepsB, LANES)  # dB_t = dx_t dt u
                            if headB:
                                cuda.atomic.add(dB4, (bB, gB, tb, n), sumB)
                        else:
                            accB[n] += g * dtu
                        if varC:
                            sumC = run_sum(buf, tid, lane, dy * xn, stepsC, LANES)  # dC_t = dy_t x_t
                            if headC:
                                cuda.atomic.add(dC4, (bC, gC, tc, n), sumC)
                        else:
                            accC[n] += dy * xn
                        dx[n] = a * g  # carried to x_{t-1}
                    ddt = sA + sB * ut
                    if softplus and pre <= thr:
                        ddt = ddt / (one + math.exp(-pre))  # softplus' = sigmoid
                    if active:
                        du[b, d, t] = dy * Dv[d] + sB * dt
                        ddelta[b, d, t] = ddt
                    accbias += ddt
            if active:
                for n in range(N):
                    cuda.atomic.add(dA, (d, n), accA[n])
                    if not varB:
                        cuda.atomic.add(dB4, (0, gB, 0, n), accB[n])
                    if not varC:
                        cuda.atomic.add(dC4, (0, gC, 0, n), accC[n])
                    if write_first:
                        dfirst[b, d, n] = dx[n]
                cuda.atomic.add(dD, d, accD)
                cuda.atomic.add(dbias, d, accbias)

    @cuda.jit
    def chunk_maps(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, dout, C, reverse, P, Lm):
        """Pass 1, a thread per (b, d) and chunk c (grid y): the chunk's map s -> P s + l per entry.

        forward:  x_t = a_t x_{t-1} + dt u B_t over the chunk, from x = 0;
        reverse:  g = s + dy_t C_t, s <- a_t g from the chunk's last step down, from s = 0 (the
                  reverse recurrence of dx: s leaves as the gradient of the state entering the chunk).
        """
        i, c = cuda.grid(2)
        Bn, Dn, L = u.shape
        N = A.shape[1]
        if i < Bn * Dn and c < P.shape[2]:
            b, d = i // Dn, i % Dn
            bB, gB = (b if B4.shape[0] > 1 else 0), d // (Dn // B4.shape[1])
            bC, gC = (b if C4.shape[0] > 1 else 0), d // (Dn // C4.shape[1])
            p = cuda.local.array(MAX_N, real)
            s = cuda.local.array(MAX_N, real)
            for n in range(N):
                p[n] = one
                s[n] = zero
            t0 = c * C
            t1 = min(t0 + C, L)
            for k in range(t0, t1):
                t = t1 - 1 - (k - t0) if reverse else k
                dt = delta[b, d, t] + bias[d]
                if softplus and dt <= thr:
                    dt = math.log1p(math.exp(dt))
                if reverse:
                    dy = dout[b, d, t]
                    if gated:
                        zt = z[b, d, t]
                        dy = dy * zt / (one + math.exp(-zt))  # dy = dout silu(z)
                    tc = t if varC else 0
                    for n in range(N):
                        a = math.exp(dt * A[d, n])
                        p[n] *= a
                        s[n] = a * (s[n] + dy * C4[bC, gC, tc, n])
                else:
                    dtu = dt * u[b, d, t]
                    tb = t if varB else 0
                    for n in range(N):
                        a = math.exp(dt * A[d, n])
                        p[n] *= a
                        s[n] = a * s[n] + dtu * B4[bB, gB, tb, n]
            for n in range(N):
                P[b, d, c, n] = p[n]
                Lm[b, d, c, n] = s[n]

    @cuda.jit
    def chunk_carry(P, Lm, s0, entering, s_final, reverse):
        """Pass 2, a thread per (b, d, n): s <- P_c s + l_c across the chunks (from the last in
        reverse); entering[b, d, c, n] = s before chunk c, s_final = s after all of them."""
        i = cuda.grid(1)
        Bn, Dn, nc, N = P.shape
        if i < Bn * Dn * N:
            b, d, n = i // (Dn * N), (i // N) % Dn, i % N
            s = s0[b, d, n]
            for k in range(nc):
                c = nc - 1 - k if reverse else k
                entering[b, d, c, n] = s
                s = P[b, d, c, n] * s + Lm[b, d, c, n]
            s_final[b, d, n] = s

    return SimpleNamespace(forward=forward, backward=backward, chunk_maps=chunk_maps, chunk_carry=chunk_carry,
                           lanes=LANES)


# --- launchers on device arrays ------------------------------------------------------------------


def _threads(n):
    """Threads per block for n threads of work: ``THREADS``, fewer for a tiny problem (a block
    much larger than the work only idles on a GPU, and costs an OS thread each in the simulator)."""
    return max(1, min(THREADS, n))


def _grid(n):
    return max(1, math.ceil(n / _threads(n)))


def _backward_grid(ks, channels, chunks):
    """(grid, block) of the backward: a thread per channel and chunk, blocks a whole number of
    ``ks.lanes`` groups (``THREADS``, fewer for a tiny problem), so that groups align with warps."""
    lanes = ks.lanes
    threads = -(-min(THREADS, channels) // lanes) * lanes
    return (-(-channels // threads), chunks), (threads, 1)


def _lanes_grid(ks, channels, chunks):
    """(grid, block) of the forward: ``ks.lanes`` threads per channel and chunk, ``WARPS`` channels
    per block (fewer for a tiny problem)."""
    per_block = max(1, min(WARPS, channels))
    return (math.ceil(channels / per_block), chunks), per_block * ks.lanes


def check_state_size(N: int) -> None:
    """N must fit the local arrays of the kernels (``MAX_N``)."""
    if N > MAX_N:
        raise ValueError(f"A: the CUDA kernels hold a state in a local array: expected N <= {MAX_N}, got N = {N}")


def segment_steps(N: int) -> int:
    """K, the steps between the states the thread-per-channel forward saves: the backward's buffer
    of ``BUF`` values holds K states of N entries."""
    return max(1, BUF // N)


def check_chunk_size(chunk_size, L: int) -> int:
    """An integer >= 1; the chunks go on the grid's y axis (at most 65535 of them)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
    n = math.ceil(L / chunk_size)
    if n > 65535:
        raise ValueError(
            f"chunk_size: at most 65535 chunks fit the grid's y axis, got {n} (L = {L}, chunk_size = {chunk_size})"
        )
    return int(chunk_size)


def _dummy(dtype):
    return cuda.device_array((1, 1, 1, 1), dtype)


def launch_forward(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, h0, out, last, xs):
    """Recurrent (LANES threads per channel): out, last and the saved states xs (B, D, ceil(L / K), N)
    with K = ``segment_steps(N)``. Every array is a device array; B4, C4 by rows; z (1, 1, 1) when
    not gated."""
    Bn, Dn, L = u.shape
    N = A.shape[1]
    check_state_size(N)
    ks = kernels(u.dtype, LANES)  # the module's LANES at call time (the simulator tests lower it)
    ks.forward[_lanes_grid(ks, Bn * Dn, 1)](u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC,
                                       h0.reshape(Bn, Dn, 1, N), L, out, xs, segment_steps(N), last, True)


def launch_backward(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, h0, xs, dout, dlast,
                    du, ddelta, dz, dA, dB4, dC4, dD, dbias, dh0):
    """Thread per channel, from the forward's saved states xs. dA, dB4, dC4, dD and dbias are added
    into: pass zeroed arrays."""
    Bn, Dn, L = u.shape
    N = A.shape[1]
    check_state_size(N)
    ks = kernels(u.dtype, LANES)  # the module's LANES at call time (the simulator tests lower it)
    grid, block = _backward_grid(ks, Bn * Dn, 1)
    ks.backward[grid, block](u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, h0.reshape(Bn, Dn, 1, N),
                             xs, segment_steps(N), L, dlast.reshape(Bn, Dn, 1, N), dout, du, ddelta, dz, dA, dB4, dC4,
                             dD, dbias, dh0, True)


def launch_chunked(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, h0, out, last, entering, chunk_size):
    """Time-chunked forward: out, last and ``entering`` (B, D, n, N), the state entering each chunk."""
    Bn, Dn, L = u.shape
    N = A.shape[1]
    check_state_size(N)
    C = check_chunk_size(chunk_size, L)
    n = entering.shape[2]
    ks = kernels(u.dtype, LANES)  # the module's LANES at call time (the simulator tests lower it)
    P = cuda.device_array((Bn, Dn, n, N), u.dtype)
    Lm = cuda.device_array((Bn, Dn, n, N), u.dtype)
    grid2, block2 = (_grid(Bn * Dn), n), (_threads(Bn * Dn), 1)
    flags = (softplus, gated, varB, varC)
    ks.chunk_maps[grid2, block2](u, delta, A, B4, C4, Dv, z, bias, *flags, u, C, False, P, Lm)
    ks.chunk_carry[_grid(Bn * Dn * N), _threads(Bn * Dn * N)](P, Lm, h0, entering, last, False)
    grid, block = _lanes_grid(ks, Bn * Dn, n)
    ks.forward[grid, block](u, delta, A, B4, C4, Dv, z, bias, *flags, entering, C, out, _dummy(u.dtype), 0, last, False)


def launch_chunked_backward(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, entering, dout, dlast,
                            du, ddelta, dz, dA, dB4, dC4, dD, dbias, dh0, chunk_size):
    """Time-chunked backward from the forward's ``entering``; adds into zeroed dA, dB4, dC4, dD, dbias."""
    Bn, Dn, L = u.shape
    N = A.shape[1]
    check_state_size(N)
    C = check_chunk_size(chunk_size, L)
    n = entering.shape[2]
    ks = kernels(u.dtype, LANES)  # the module's LANES at call time (the simulator tests lower it)
    P = cuda.device_array((Bn, Dn, n, N), u.dtype)
    Lm = cuda.device_array((Bn, Dn, n, N), u.dtype)
    leaving = cuda.device_array((Bn, Dn, n, N), u.dtype)  # the gradient carried into each chunk's last state
    grid2, block2 = (_grid(Bn * Dn), n), (_threads(Bn * Dn), 1)
    flags = (softplus, gated, varB, varC)
    ks.chunk_maps[grid2, block2](u, delta, A, B4, C4, Dv, z, bias, *flags, dout, C, True, P, Lm)
    ks.chunk_carry[_grid(Bn * Dn * N), _threads(Bn * Dn * N)](P, Lm, dlast, leaving, dh0, True)
    grid, block = _backward_grid(ks, Bn * Dn, n)
    ks.backward[grid, block](u, delta, A, B4, C4, Dv, z, bias, *flags, entering, _dummy(u.dtype), 0, C, leaving,
                             dout, du, ddelta, dz, dA, dB4, dC4, dD, dbias, dh0, False)


# --- host wrappers: the arguments of selective_scan_cpu ---------------------------------------------


def _inputs_to_device(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state):
    """The kernels' first 12 arguments on the device (B and C by rows, then the four flags), and h0."""
    u, delta, A, B4, C4, Dv, zz, bias, h0 = prepare(u, delta, A, B, C, D, z, delta_bias, initial_state)
    check_state_size(A.shape[1])
    arrays = [cuda.to_device(x) for x in (u, delta, A, B4, C4, Dv, zz, bias)]
    flags = [bool(delta_softplus), z is not None, np.ndim(B) > 2, np.ndim(C) > 2]  # softplus, gated, varB, varC
    return arrays + flags, cuda.to_device(h0)


_GRADS = ("du", "ddelta", "dz", "dA", "dB4", "dC4", "dD", "dbias", "dh0")


def _gradient_arrays(args, dout, dlast):
    """dout and dlast on the device (zeros for None) and the gradient arrays, zeroed where added into."""
    u_d, A_d, B4_d, C4_d, z_d = args[0], args[2], args[3], args[4], args[6]
    Bn, Dn, L = u_d.shape
    N = A_d.shape[1]
    dtype = u_d.dtype
    dout = np.zeros(u_d.shape, dtype) if dout is None else np.ascontiguousarray(dout)
    dlast = np.zeros((Bn, Dn, N), dtype) if dlast is None else np.ascontiguousarray(dlast)
    grads = dict(
        du=cuda.device_array(u_d.shape, dtype),
        ddelta=cuda.device_array(u_d.shape, dtype),
        dz=cuda.device_array(z_d.shape, dtype),
        dA=cuda.to_device(np.zeros(A_d.shape, dtype)),
        dB4=cuda.to_device(np.zeros(B4_d.shape, dtype)),
        dC4=cuda.to_device(np.zeros(C4_d.shape, dtype)),
        dD=cuda.to_device(np.zeros(Dn, dtype)),
        dbias=cuda.to_device(np.zeros(Dn, dtype)),
        dh0=cuda.device_array((Bn, Dn, N), dtype),
    )
    return cuda.to_device(dout), cuda.to_device(dlast), grads


def _gradients_to_host(g, B, C, D, z, delta_bias, initial_state):
    return (
        g["du"].copy_to_host(),
        g["ddelta"].copy_to_host(),
        g["dA"].copy_to_host(),
        from_rows(g["dB4"].copy_to_host(), B),
        from_rows(g["dC4"].copy_to_host(), C),
        None if D is None else g["dD"].copy_to_host(),
        None if z is None else g["dz"].copy_to_host(),
        None if delta_bias is None else g["dbias"].copy_to_host(),
        None if initial_state is None else g["dh0"].copy_to_host(),
    )


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        initial_state=None):
    """Recurrent: ``(out, last_state, saved)``, saved (B, D, ceil(L / K), N) the states every
    K = ``segment_steps(N)`` steps, which the backward starts from."""
    args, h0_d = _inputs_to_device(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    Bn, Dn, L = args[0].shape
    N = args[2].shape[1]
    dtype = args[0].dtype
    out_d = cuda.device_array((Bn, Dn, L), dtype)
    last_d = cuda.device_array((Bn, Dn, N), dtype)
    xs_d = cuda.device_array((Bn, Dn, -(-L // segment_steps(N)), N), dtype)
    launch_forward(*args, h0_d, out_d, last_d, xs_d)
    return out_d.copy_to_host(), last_d.copy_to_host(), xs_d.copy_to_host()


def selective_scan_cuda_backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                                 saved, dout, dlast_state=None):
    """Gradients ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state)`` from the ``saved``
    states of :func:`selective_scan_cuda`; ``dout`` and ``dlast_state`` may be None (zero)."""
    args, h0_d = _inputs_to_device(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    dout_d, dlast_d, g = _gradient_arrays(args, dout, dlast_state)
    saved_d = cuda.to_device(np.ascontiguousarray(saved))
    launch_backward(*args, h0_d, saved_d, dout_d, dlast_d, *(g[k] for k in _GRADS))
    return _gradients_to_host(g, B, C, D, z, delta_bias, initial_state)


def selective_scan_cuda_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                                initial_state=None, chunk_size=64):
    """Time-chunked: ``(out, last_state, entering)``, entering (B, D, n, N) the state entering each
    of the n = ceil(L / chunk_size) chunks, which the backward starts from."""
    chunk = check_chunk_size(chunk_size, np.shape(u)[2])
    args, h0_d = _inputs_to_device(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    Bn, Dn, L = args[0].shape
    N = args[2].shape[1]
    dtype = args[0].dtype
    out_d = cuda.device_array((Bn, Dn, L), dtype)
    last_d = cuda.device_array((Bn, Dn, N), dtype)
    entering_d = cuda.device_array((Bn, Dn, -(-L // chunk), N), dtype)
    launch_chunked(*args, h0_d, out_d, last_d, entering_d, chunk)
    return out_d.copy_to_host(), last_d.copy_to_host(), entering_d.copy_to_host()


def selective_scan_cuda_chunked_backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                                         entering, dout, dlast_state=None, chunk_size=64):
    """Gradients as :func:`selective_scan_cuda_backward`, by the time-chunked kernels, from the
    ``entering`` states of :func:`selective_scan_cuda_chunked` (the same ``chunk_size``)."""
    chunk = check_chunk_size(chunk_size, np.shape(u)[2])
    args, _ = _inputs_to_device(u, delta, A, B, C, D, z, delta_bias, delta_softplus, None)
    dout_d, dlast_d, g = _gradient_arrays(args, dout, dlast_state)
    entering_d = cuda.to_device(np.ascontiguousarray(entering))
    launch_chunked_backward(*args, entering_d, dout_d, dlast_d, *(g[k] for k in _GRADS), chunk)
    return _gradients_to_host(g, B, C, D, z, delta_bias, initial_state)


def kernel_signatures(dtype):
    """Every kernel of this module with its argument types for ``dtype`` (float32 or float64).

    Used to compile each kernel to PTX without a GPU (``numba.cuda.compile_ptx``), which runs the
    real type inference and code generation that the simulator skips.
    """
    from numba import types

    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    A1, A2, A3, A4 = (types.Array(f, k, "C") for k in (1, 2, 3, 4))
    i64, b1 = types.int64, types.boolean
    # u, delta, A, B4, C4, D, z, bias, softplus, gated, varB, varC
    inputs = (A3, A3, A2, A4, A4, A1, A3, A1, b1, b1, b1, b1)
    grads = (A3, A3, A3, A2, A4, A4, A1, A1)  # du, ddelta, dz, dA, dB4, dC4, dD, dbias
    ks = kernels(dtype)
    return [
        (ks.forward, inputs + (A4, i64, A3, A4, i64, A3, b1)),
        (ks.backward, inputs + (A4, A4, i64, i64, A4, A3) + grads + (A3, b1)),
        (ks.chunk_maps, inputs + (A3, i64, b1, A4, A4)),
        (ks.chunk_carry, (A4, A4, A3, A4, A3, b1)),
    ]
