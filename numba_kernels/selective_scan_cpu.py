"""Mamba's selective scan (S6) on the CPU (numba, parallel): forward and backward, fused.

Same math, arguments and results as ``ref.mixers.selective_scan`` (mamba_ssm's ``selective_scan_ref``):
u, delta, z, out (B, D, L); A (D, N); B and C fixed (D, N), variable (B, N, L) or grouped
(B, G, N, L); optional D (D,), z, delta_bias (D,), ``delta_softplus``; states (B, D, N).

Naive loop (the contract):

    for b, d:                     x = h0[b, d]                                          # (N,)
        for t in range(L):        dt = delta[b, d, t] + delta_bias[d]
                                  dt = softplus(dt) if delta_softplus    (linear above 20)
                                  x  = exp(dt * A[d]) * x + dt * u[b, d, t] * B_t       (B_t: B's (N,) row for b, d, t)
                                  y  = x . C_t + D[d] * u[b, d, t]
                                  out[b, d, t] = y * silu(z[b, d, t])
        last[b, d] = x

Backward, per channel in reverse time, dx the gradient of the state x_t, a_t = exp(dt_t A):

    dy_t = dout_t silu(z_t);   dz_t = dout_t (y_t + D u_t) silu'(z_t);   dD += dy_t u_t
    dx_t = dy_t C_t + a_{t+1} dx_{t+1}  (dx_{L-1} also gets dlast);   dC_t += dy_t x_t
    dA += dx_t x_{t-1} a_t dt_t;   ddt_t = sum_n (dx_t x_{t-1} a_t A + dx_t B_t u_t)
    du_t = dy_t D + dt_t sum_n dx_t B_t;   dB_t += dx_t dt_t u_t;   dh0 = a_0 dx_0
    ddelta_t = ddt_t softplus'(delta_t + bias) (sigmoid; 1 above 20);   ddelta_bias += ddelta_t

Optimizations:
* fused: the discretisation (exp(dt A), dt u B, the bias and the softplus), the scan and the
  readout (C, D, the z gate) run in one pass per channel, so nothing of size (B, L, D, N) is ever
  written. The NumPy reference materialises a, b and x (and the backward dx, da, db), each
  B L D N values, several times the size of the inputs.
* tasks of (batch, block of channels) (``plan``), sequential over time inside a channel, with the
  channel's (N,) state in a local array. A problem that makes a single task runs in a serial twin.
* vectorised exps. numba calls a scalar libm ``exp`` (5-10 ns here) that stops LLVM from
  vectorising; the B L D N exps of exp(dt A) were most of the time. ``numba_kernels.vecmath``'s
  ``vexp`` and ``vsoftplus`` are branch-free polynomial versions (within 1 and 2 ulp), so each
  loop over the N state entries becomes AVX2/AVX-512 code: 0.7 ns instead of 5 ns per float32
  exp on the reference machine. The kernels compile with ``error_model="numpy"``: numba's
  default Python error model puts a ZeroDivisionError test before every division, which also
  blocks vectorisation.
* per chunk of ``CHECKPOINT`` steps the per-step scalars (dt with its softplus, the z gate and
  its derivative, du, ddelta) are computed in vectorised loops over time into small local
  buffers; only the loop over the N entries remains inside the sequential time loop. Sums over
  the N entries (y = x . C, and the backward's sums for ddelta and du) use eight partial sums
  (``vecmath.lane_sum``), since an ordered float sum does not vectorise.
* the backward recomputes instead of storing: the forward saves the state every ``CHECKPOINT``
  steps (B D N L / CHECKPOINT values, a quarter of u's size at N = 16); the backward takes the
  chunks in reverse, recomputes each chunk's dt, decays and states from its checkpoint into local
  buffers of a few KiB (L1-resident), then runs the reverse recurrence over them. Each exp is
  taken once in the forward and once in the backward.
* sums over channels or batch (dA, dD, ddelta_bias, and dB, dC) go to partial buffers that no two
  concurrent tasks share (a slot per batch index for quantities summed over b, a slot per channel
  block for the variable and grouped B and C, which are summed over d), added up by the wrapper.
* ``fastmath={"contract"}`` (FMAs, no unsafe flags); ``cache=True``; float32 stays float32
  (constants through ``np.float32`` or the input's dtype, local arrays in the input dtype).
* the work of a task is a plain jitted function called from thin ``prange`` loops (not inlined),
  as in ``gla_cpu``, to keep numba's parallel passes short.

Outputs are allocated by the wrappers; kernels write into them and return nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from numba_kernels.vecmath import LANES, SOFTPLUS_THRESHOLD, lane_dot, lane_sum, vexp, vsoftplus

_JIT = dict(parallel=True, cache=True, fastmath={"contract"}, error_model="numpy")
_JIT_SERIAL = dict(cache=True, fastmath={"contract"}, error_model="numpy")
_INLINE = dict(inline="always", fastmath={"contract"}, error_model="numpy")

CHECKPOINT = 64  # steps between the states the forward saves for the backward (and the chunk of the buffers)


def plan(B: int, D: int, tasks_per_thread: int = 2) -> tuple[int, bool]:
    """(channels per task, parallel?): about ``tasks_per_thread`` tasks per numba thread, blocks of
    whole channels (one channel is already L N exps of work); a single task runs serially."""
    from numba import get_num_threads

    blocks_per_row = max(1, min(D, -(-tasks_per_thread * get_num_threads() // B)))
    blk = -(-D // blocks_per_row)
    return blk, B * -(-D // blk) > 1


# --- small vectorised helpers ----------------------------------------------------------------------


@njit(**_INLINE)
def _discretize_steps(dl, ul, bias, softplus, dtb, dtub, n):
    """dt_j = softplus(delta_j + bias) (or without the softplus) and dt_j u_j for n steps."""
    if softplus:
        for j in range(n):
            dt = vsoftplus(dl[j] + bias)
            dtb[j] = dt
            dtub[j] = dt * ul[j]
    else:
        for j in range(n):
            dt = dl[j] + bias
            dtb[j] = dt
            dtub[j] = dt * ul[j]


# --- the work of one task ------------------------------------------------------------------------


@njit(**_JIT_SERIAL)
def _forward_task(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, h0, out, last, xs, b, d0, d1):
    """Channels d0:d1 of batch b, a chunk of ``CHECKPOINT`` steps at a time (every channel of the
    block through a chunk before the next, so the chunk's rows of B and C stay in L1);
    xs[b, d, c] = the state entering chunk c."""
    Dn, L = u.shape[1], u.shape[2]
    N = A.shape[1]
    K = CHECKPOINT
    dtype = u.dtype
    one = dtype.type(1)
    bB, gB, tB = B4.shape[0] > 1, Dn // B4.shape[1], varB  # B's batch index? channels per group; over time?
    bC, gC, tC = C4.shape[0] > 1, Dn // C4.shape[1], varC
    X = np.empty((d1 - d0, N), dtype)  # the states of the block's channels
    prod = np.empty(N, dtype)
    lanes = np.empty(LANES, dtype)
    dtb = np.empty(K, dtype)  # dt of the chunk's steps
    dtub = np.empty(K, dtype)  # dt u
    yb = np.empty(K, dtype)  # y = x . C
    for i in range(d1 - d0):
        for n in range(N):
            X[i, n] = h0[b, d0 + i, n]
    for c in range((L + K - 1) // K):
        t0 = c * K
        nt = min(K, L - t0)
        for i in range(d1 - d0):
            d = d0 + i
            Ad = A[d]
            Brows = B4[b if bB else 0, d // gB]  # (L | 1, N)
            Crows = C4[b if bC else 0, d // gC]
            Dd = Dv[d]
            x = X[i]
            xc = xs[b, d, c]
            for n in range(N):
                xc[n] = x[n]
            ul = u[b, d, t0:t0 + nt]
            _discretize_steps(delta[b, d, t0:t0 + nt], ul, bias[d], softplus, dtb, dtub, nt)
            for j in range(nt):
                dt, dtu = dtb[j], dtub[j]
                Bt = Brows[t0 + j if tB else 0]
                Ct = Crows[t0 + j if tC else 0]
                for n in range(N):
                    # x_t = exp(dt A) x_{t-1} + (dt u) B_t;   y_t = x_t . C_t
                    xn = vexp(dt * Ad[n]) * x[n] + dtu * Bt[n]
                    x[n] = xn
                    prod[n] = xn * Ct[n]
                yb[j] = lane_sum(prod, N, lanes)
            ol = out[b, d, t0:t0 + nt]
            if gated:
                zl = z[b, d, t0:t0 + nt]
                for j in range(nt):
                    zj = zl[j]
                    ol[j] = (yb[j] + Dd * ul[j]) * zj / (one + vexp(-zj))  # (y + D u) silu(z)
            else:
                for j in range(nt):
                    ol[j] = yb[j] + Dd * ul[j]
    for i in range(d1 - d0):
        for n in range(N):
            last[b, d0 + i, n] = X[i, n]


@njit(**_JIT_SERIAL)
def _backward_task(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, xs, dout, dlast,
                   du, ddelta, dz, dA_p, dB_p, dC_p, dD_p, dbias_p, dh0, b, d0, d1, blk_slot):
    """Gradients of channels d0:d1 of batch b, chunk by chunk from the last: du, ddelta, dz, dh0
    directly; the shares of dA, dD, ddelta_bias (slot b) and of dB, dC (slot b when fixed, else
    ``blk_slot``) added into the partial buffers."""
    Dn, L = u.shape[1], u.shape[2]
    N = A.shape[1]
    K = CHECKPOINT
    nd = d1 - d0
    dtype = u.dtype
    one = dtype.type(1)
    zero = dtype.type(0)
    thr = dtype.type(SOFTPLUS_THRESHOLD)
    bB, gB, tB = B4.shape[0] > 1, Dn // B4.shape[1], varB  # B's batch index? channels per group; over time?
    bC, gC, tC = C4.shape[0] > 1, Dn // C4.shape[1], varC
    sB = blk_slot if tB else b  # the slot of the partial buffers this task writes
    sC = blk_slot if tC else b
    xb = np.empty((K + 1, N), dtype)  # the chunk's states: xb[j] = x_{t0 + j - 1}
    ab = np.empty((K, N), dtype)  # its decays a = exp(dt A)
    xa = np.empty((K, N), dtype)  # x_{t-1} a_t: d x_t / d(dt A)
    G = np.empty((K, N), dtype)  # dx_t, the gradient of each state
    dtb, dtub = np.empty(K, dtype), np.empty(K, dtype)
    dyb, sigb = np.empty(K, dtype), np.empty(K, dtype)  # dy = dout silu(z), sigmoid(z)
    yb, sAb, sBb = np.empty(K, dtype), np.empty(K, dtype), np.empty(K, dtype)  # per-step sums over n
    lanes = np.empty(LANES, dtype)
    tA = np.empty(N, dtype)
    DX = np.empty((nd, N), dtype)  # per channel: the gradient carried to the previous chunk
    accA = np.zeros((nd, N), dtype)  # per channel: sums over time of dA and of fixed dB, dC
    accB = np.zeros((nd, N), dtype)
    accC = np.zeros((nd, N), dtype)
    accD = np.zeros(nd, dtype)
    accbias = np.zeros(nd, dtype)
    for i in range(nd):
        for n in range(N):
            DX[i, n] = dlast[b, d0 + i, n]
    for c in range((L + K - 1) // K - 1, -1, -1):
        t0 = c * K
        nt = min(K, L - t0)
        for i in range(nd):
            d = d0 + i
            Ad = A[d]
            Dd = Dv[d]
            Brows = B4[b if bB else 0, d // gB]
            Crows = C4[b if bC else 0, d // gC]
            dBrows = dB_p[sB, b if bB else 0, d // gB]
            dCrows = dC_p[sC, b if bC else 0, d // gC]
            dx, accAi, accBi, accCi = DX[i], accA[i], accB[i], accC[i]
            ul, dl, dol = u[b, d, t0:t0 + nt], delta[b, d, t0:t0 + nt], dout[b, d, t0:t0 + nt]
            # recompute the chunk from its checkpoint: dt, the decays and the states
            _discretize_steps(dl, ul, bias[d], softplus, dtb, dtub, nt)
            xc = xs[b, d, c]
            for n in range(N):
                xb[0, n] = xc[n]
            for j in range(nt):
                dt, dtu = dtb[j], dtub[j]
                Bt = Brows[t0 + j if tB else 0]
                xp, xn, aj, xaj = xb[j], xb[j + 1], ab[j], xa[j]
                for n in range(N):
                    a = vexp(dt * Ad[n])
                    aj[n] = a
                    xaj[n] = xp[n] * a
                    xn[n] = a * xp[n] + dtu * Bt[n]
            # dy = dout silu(z)
            if gated:
                zl = z[b, d, t0:t0 + nt]
                for j in range(nt):
                    sig = one / (one + vexp(-zl[j]))
                    sigb[j] = sig
                    dyb[j] = dol[j] * zl[j] * sig
            else:
                for j in range(nt):
                    dyb[j] = dol[j]
            # the reverse recurrence over the chunk: dx_t = dy_t C_t + a_{t+1} dx_{t+1}
            for j in range(nt - 1, -1, -1):
                dy = dyb[j]
                Ct = Crows[t0 + j if tC else 0]
                aj, Gj = ab[j], G[j]
                for n in range(N):
                    g = dx[n] + dy * Ct[n]
                    Gj[n] = g
                    dx[n] = aj[n] * g  # carried to x_{t-1}
            # what each step's dx_t gives: loops without a dependence between steps
            for j in range(nt):
                dt, dtu, dy = dtb[j], dtub[j], dyb[j]
                Bt = Brows[t0 + j if tB else 0]
                Gj, xaj, xn = G[j], xa[j], xb[j + 1]
                for n in range(N):
                    daa = Gj[n] * xaj[n]  # da_t a_t, da_t = dx_t x_{t-1}
                    tA[n] = daa
                    accAi[n] += daa * dt  # dA += da_t a_t dt_t
                sAb[j] = lane_dot(tA, Ad, N, lanes)  # sum_n da_t a_t A
                sBb[j] = lane_dot(Gj, Bt, N, lanes)  # sum_n db_t B_t, db_t = dx_t
                if tB:
                    dBt = dBrows[t0 + j]
                    for n in range(N):
                        dBt[n] += Gj[n] * dtu  # dB_t = dx_t dt u
                else:
                    for n in range(N):
                        accBi[n] += Gj[n] * dtu
                if tC:
                    dCt = dCrows[t0 + j]
                    for n in range(N):
                        dCt[n] += dy * xn[n]  # dC_t = dy_t x_t
                else:
                    for n in range(N):
                        accCi[n] += dy * xn[n]
            # the per-step gradients of the chunk
            dul, ddl = du[b, d, t0:t0 + nt], ddelta[b, d, t0:t0 + nt]
            for j in range(nt):
                dul[j] = dyb[j] * Dd + sBb[j] * dtb[j]
                ddl[j] = sAb[j] + sBb[j] * ul[j]
            if softplus:
                for j in range(nt):
                    pre = dl[j] + bias[d]
                    dsp = one / (one + vexp(-pre))  # softplus' = sigmoid, 1 above the threshold
                    ddl[j] = ddl[j] * (one if pre > thr else dsp)
            if gated:
                for j in range(nt):
                    Ct = Crows[t0 + j if tC else 0]
                    yb[j] = lane_dot(xb[j + 1], Ct, N, lanes)  # y_t = x_t . C_t
                zl = z[b, d, t0:t0 + nt]
                dzl = dz[b, d, t0:t0 + nt]
                for j in range(nt):
                    sig, zj = sigb[j], zl[j]
                    # dz = dout (y + D u) silu'(z),  silu'(z) = sig (1 + z (1 - sig))
                    dzl[j] = dol[j] * (yb[j] + Dd * ul[j]) * sig * (one + zj * (one - sig))
            sD = accD[i]
            sbias = accbias[i]
            for j in range(nt):
                sD += dyb[j] * ul[j]
                sbias += ddl[j]
            accD[i] = sD
            accbias[i] = sbias
    for i in range(nd):
        d = d0 + i
        for n in range(N):
            dh0[b, d, n] = DX[i, n]
            dA_p[b, d, n] = accA[i, n]
        if not tB:
            dB0 = dB_p[sB, 0, d // gB, 0]
            for n in range(N):
                dB0[n] += accB[i, n]
        if not tC:
            dC0 = dC_p[sC, 0, d // gC, 0]
            for n in range(N):
                dC0[n] += accC[i, n]
        dD_p[b, d] = accD[i]
        dbias_p[b, d] = accbias[i]


# --- parallel loops and their serial twins -------------------------------------------------------


@njit(**_JIT)
def _forward_parallel(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, h0, out, last, xs, blk):
    Bn, Dn = u.shape[0], u.shape[1]
    nblk = (Dn + blk - 1) // blk
    for task in prange(Bn * nblk):
        b = task // nblk
        d0 = (task % nblk) * blk
        _forward_task(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, h0, out, last, xs, b, d0,
                      min(d0 + blk, Dn))


@njit(**_JIT_SERIAL)
def _forward_serial(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, h0, out, last, xs):
    for b in range(u.shape[0]):
        _forward_task(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, h0, out, last, xs, b, 0,
                      u.shape[1])


@njit(**_JIT)
def _backward_parallel(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, xs, dout, dlast,
                       du, ddelta, dz, dA_p, dB_p, dC_p, dD_p, dbias_p, dh0, blk):
    Bn, Dn = u.shape[0], u.shape[1]
    nblk = (Dn + blk - 1) // blk
    for task in prange(Bn * nblk):
        b = task // nblk
        block = task % nblk
        d0 = block * blk
        _backward_task(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, xs, dout, dlast,
                       du, ddelta, dz, dA_p, dB_p, dC_p, dD_p, dbias_p, dh0, b, d0, min(d0 + blk, Dn), block)


@njit(**_JIT_SERIAL)
def _backward_serial(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, xs, dout, dlast,
                     du, ddelta, dz, dA_p, dB_p, dC_p, dD_p, dbias_p, dh0):
    for b in range(u.shape[0]):
        _backward_task(u, delta, A, B4, C4, Dv, z, bias, softplus, gated, varB, varC, xs, dout, dlast,
                       du, ddelta, dz, dA_p, dB_p, dC_p, dD_p, dbias_p, dh0, b, 0, u.shape[1], 0)


# --- wrappers: the arguments of the NumPy reference ----------------------------------------------


def as_rows(X, Dn):
    """B or C as a C-contiguous (B | 1, G, L | 1, N) array whose (N,) rows are contiguous:
    fixed (D, N) -> (1, D, 1, N) (a group per channel); variable (B, N, L) -> (B, 1, L, N);
    grouped (B, G, N, L) -> (B, G, L, N). Channel d reads group d // (D // G)."""
    if X.ndim == 2:
        return np.ascontiguousarray(X)[None, :, None, :]
    if X.ndim == 3:
        X = X[:, None]
    return np.ascontiguousarray(np.swapaxes(X, 2, 3))


def from_rows(dX4, X):
    """The gradient in X's own layout from its (B | 1, G, L | 1, N) form."""
    if X.ndim == 2:
        return np.ascontiguousarray(dX4[0, :, 0, :])
    dX = np.ascontiguousarray(np.swapaxes(dX4, 2, 3))  # (B, G, N, L)
    return dX[:, 0] if X.ndim == 3 else dX


def prepare(u, delta, A, B, C, D, z, delta_bias, initial_state):
    """Contiguous arrays, B and C by rows (``as_rows``); zeros for absent D, delta_bias and initial
    state; a (1, 1, 1) placeholder for no z. Shared with ``selective_scan_cuda``."""
    u, delta, A = (np.ascontiguousarray(x) for x in (u, delta, A))
    Bn, Dn, L = u.shape
    N = A.shape[1]
    dtype = u.dtype
    Dv = np.zeros(Dn, dtype) if D is None else np.ascontiguousarray(D)
    bias = np.zeros(Dn, dtype) if delta_bias is None else np.ascontiguousarray(delta_bias)
    zz = np.zeros((1, 1, 1), dtype) if z is None else np.ascontiguousarray(z)
    h0 = np.zeros((Bn, Dn, N), dtype) if initial_state is None else np.ascontiguousarray(initial_state)
    return u, delta, A, as_rows(B, Dn), as_rows(C, Dn), Dv, zz, bias, h0


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       initial_state=None):
    """``(out, last_state, checkpoints)``: out (B, D, L), last_state (B, D, N) and the states every
    ``CHECKPOINT`` steps, (B, D, ceil(L / CHECKPOINT), N), which the backward starts from."""
    u, delta, A, B4, C4, Dv, zz, bias, h0 = prepare(u, delta, A, B, C, D, z, delta_bias, initial_state)
    Bn, Dn, L = u.shape
    N = A.shape[1]
    out = np.empty_like(u)
    last = np.empty((Bn, Dn, N), u.dtype)
    xs = np.empty((Bn, Dn, -(-L // CHECKPOINT), N), u.dtype)
    args = (u, delta, A, B4, C4, Dv, zz, bias, bool(delta_softplus), z is not None, B.ndim > 2, C.ndim > 2, h0, out,
            last, xs)
    blk, parallel = plan(Bn, Dn)
    if parallel:
        _forward_parallel(*args, blk)
    else:
        _forward_serial(*args)
    return out, last, xs


def selective_scan_cpu_backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                                checkpoints, dout, dlast_state=None):
    """Gradients ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state)`` (None for the
    inputs not given) from the ``checkpoints`` of :func:`selective_scan_cpu`; ``dout`` and
    ``dlast_state`` may be None (zero)."""
    u, delta, A, B4, C4, Dv, zz, bias, _ = prepare(u, delta, A, B, C, D, z, delta_bias, None)
    Bn, Dn, L = u.shape
    N = A.shape[1]
    dtype = u.dtype
    dout = np.zeros_like(u) if dout is None else np.ascontiguousarray(dout)
    dlast = np.zeros((Bn, Dn, N), dtype) if dlast_state is None else np.ascontiguousarray(dlast_state)
    blk, parallel = plan(Bn, Dn)
    nblk = -(-Dn // blk)

    def partial(X4, varying):  # a slot per channel block (variable: summed over d) or per batch index (fixed)
        return np.zeros(((nblk if varying else Bn), *X4.shape), dtype)

    du, ddelta = np.empty_like(u), np.empty_like(u)
    dz = np.empty_like(zz)
    dA_p, dD_p, dbias_p = np.empty((Bn, Dn, N), dtype), np.empty((Bn, Dn), dtype), np.empty((Bn, Dn), dtype)
    dB_p, dC_p = partial(B4, B.ndim > 2), partial(C4, C.ndim > 2)
    dh0 = np.empty((Bn, Dn, N), dtype)
    args = (u, delta, A, B4, C4, Dv, zz, bias, bool(delta_softplus), z is not None, B.ndim > 2, C.ndim > 2,
            np.ascontiguousarray(checkpoints), dout, dlast, du, ddelta, dz, dA_p, dB_p, dC_p, dD_p, dbias_p, dh0)
    if parallel:
        _backward_parallel(*args, blk)
    else:
        _backward_serial(*args)
    return (
        du,
        ddelta,
        dA_p.sum(axis=0),
        from_rows(dB_p.sum(axis=0), B),
        from_rows(dC_p.sum(axis=0), C),
        None if D is None else dD_p.sum(axis=0),
        dz if z is not None else None,
        None if delta_bias is None else dbias_p.sum(axis=0),
        None if initial_state is None else dh0,
    )
