"""Mamba-2's SSD, the four-step chunked algorithm, on the CPU (numba, parallel): forward and backward.

Same math, layouts and results as ``ref.mixers.ssd.ssd_chunked`` (mamba_ssm's ``ssd_minimal``
conventions): X (b, l, h, p); A (b, l, h) discretised log-decays <= 0; B, C (b, l, h, n); states
(b, h, p, n). Per batch and head, with chunks of L = ``block_len`` steps and Acs_i = A_s + ... + A_i
the decays accumulated from the chunk's start s:

    1. Y_diag_i = sum_{j <= i} (C_i . B_j) exp(Acs_i - Acs_j) X_j                          (3)
    2. S_c      = sum_j exp(Acs_last - Acs_j) X_j^T B_j         (the chunk's state from zero) (4)
    3. S_in[c+1] = exp(Acs_last) S_in[c] + S_c,  S_in[0] = initial state; final = S_in[n]    (5)
    4. Y_off_i  = exp(Acs_i) S_in[c] C_i                                                    (6)

Naive loop (the contract):

    for b, h:  S = S0[b, h]                                                            # (p, n)
        for t: S = exp(A[b, t, h]) S + outer(X[b, t, h], B[b, t, h]);  Y[b, t, h] = S @ C[b, t, h]

Passes (as ``gla_cpu``'s chunked form, of which SSD is the scalar-decay case):
  * steps 1, 2 and 4 are independent per (batch, head, chunk): ``prange`` over all of them;
  * step 3 is sequential over the n chunks, parallel over (batch, head, row p of the state).
  Forward: (2) per chunk, (3) carry, (1) + (4) per chunk. Backward: the gradient of each chunk's
  entering state from (4), the reverse carry of (3), then per chunk dX, dB, dC from (1), (2) and
  (4); dA from the identity dA_t = sum_{t' >= t} (C . dC - B . dB)_t' + dfinal . final, a reverse
  cumulative sum per (batch, head).

Optimizations:
* every inner loop runs over contiguous memory without a dependence between iterations (sums over
  n or p are written as axpys over a transposed copy of the chunk's B, X or state), so LLVM
  vectorises them; the exps go through ``selective_scan_cpu.vexp`` (vectorisable, within 1 ulp)
  and come one row of the chunk at a time (L (L + 1) / 2 per chunk and head: the decay is a
  scalar per head, so no sub-chunks are needed, unlike GLA's per-key gates).
* every exponent is Acs_i - Acs_j (j <= i), Acs_i or Acs_last - Acs_j: all <= 0, since a running
  sum of numbers <= 0 never increases in floating point either; nothing overflows at any length.
* any length: the last chunk is simply shorter (the reference pads it with A = 0, B = C = X = 0).
* ``fastmath={"contract"}``, ``error_model="numpy"`` (no division checks), ``cache=True``;
  float32 stays float32. The work of a task is a plain jitted function called from thin
  ``prange`` loops.

Outputs are allocated by the wrappers; kernels write into them and return nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from numba_kernels.selective_scan_cpu import vexp

_JIT = dict(parallel=True, cache=True, fastmath={"contract"}, error_model="numpy")
_JIT_SERIAL = dict(cache=True, fastmath={"contract"}, error_model="numpy")


@njit(**_JIT_SERIAL)
def _decays(A, b, h, s, e):
    """Acs (e - s,): the log-decays of the chunk [s, e) accumulated from its start."""
    acs = np.empty(e - s, A.dtype)
    run = A.dtype.type(0)
    for j in range(e - s):
        run += A[b, s + j, h]
        acs[j] = run
    return acs


# --- forward ---------------------------------------------------------------------------------------


@njit(**_JIT_SERIAL)
def _chunk_state_task(X, A, B, Lc, states, decay, b, h, c):
    """(4): states[b, c + 1, h] = S_c = sum_j exp(Acs_last - Acs_j) X_j^T B_j; decay = exp(Acs_last)."""
    T, p, n = X.shape[1], X.shape[3], B.shape[3]
    s = c * Lc
    e = min(s + Lc, T)
    acs = _decays(A, b, h, s, e)
    last = acs[e - s - 1]
    S = states[b, c + 1, h]  # (p, n)
    for q in range(p):
        for k in range(n):
            S[q, k] = 0
    for j in range(e - s):
        w = vexp(last - acs[j])
        Xj, Bj = X[b, s + j, h], B[b, s + j, h]
        for q in range(p):
            wx = w * Xj[q]
            Sq = S[q]
            for k in range(n):
                Sq[k] += wx * Bj[k]
    decay[b, c, h] = vexp(last)


@njit(**_JIT_SERIAL)
def _chunk_output_task(X, A, B, C, Lc, states, Y, b, h, c):
    """(3) + (6): Y_i = sum_{j <= i} (C_i . B_j) exp(Acs_i - Acs_j) X_j + exp(Acs_i) S_in C_i."""
    T, p, n = X.shape[1], X.shape[3], B.shape[3]
    s = c * Lc
    e = min(s + Lc, T)
    L = e - s
    acs = _decays(A, b, h, s, e)
    BT = np.empty((n, L), X.dtype)  # the chunk's B, transposed: C_i . B_j as axpys over j
    for j in range(L):
        Bj = B[b, s + j, h]
        for k in range(n):
            BT[k, j] = Bj[k]
    ST = states[b, c, h].T.copy()  # (n, p): the entering state, transposed
    w = np.empty(L, X.dtype)
    acc = np.empty(p, X.dtype)
    for i in range(L):
        Ci = C[b, s + i, h]
        for j in range(i + 1):
            w[j] = 0
        for k in range(n):
            cik, BTk = Ci[k], BT[k]
            for j in range(i + 1):
                w[j] += cik * BTk[j]  # C_i . B_j
        ai = acs[i]
        for j in range(i + 1):
            w[j] *= vexp(ai - acs[j])  # (L ⊙ C B^T)_ij
        for q in range(p):
            acc[q] = 0
        for j in range(i + 1):
            wj, Xj = w[j], X[b, s + j, h]
            for q in range(p):
                acc[q] += wj * Xj[q]  # (3)
        ea = vexp(ai)
        for k in range(n):
            g, STk = ea * Ci[k], ST[k]
            for q in range(p):
                acc[q] += g * STk[q]  # (6)
        Yi = Y[b, s + i, h]
        for q in range(p):
            Yi[q] = acc[q]


@njit(**_JIT)
def _chunk_states(X, A, B, Lc, states, decay):
    nb, nc, nh = decay.shape
    for task in prange(nb * nh * nc):
        _chunk_state_task(X, A, B, Lc, states, decay, task // (nh * nc), (task // nc) % nh, task % nc)


@njit(**_JIT)
def _carry(states, decay, reverse):
    """(5), a task per (batch, head, row of the state), across the chunks:

    forward:  states[c + 1] = decay_c * states[c] + states[c + 1]   (c = 0 .. n-1; states[0] = S0)
    reverse:  states[c] = decay_c * states[c + 1] + states[c]       (c = n-1 .. 0; states[n] = dfinal)
    """
    nb, n1, nh, p, n = states.shape
    nc = n1 - 1
    for task in prange(nb * nh * p):
        b, h, q = task // (nh * p), (task // p) % nh, task % p
        for step in range(nc):
            c = nc - 1 - step if reverse else step
            if reverse:
                src, dst = states[b, c + 1, h, q], states[b, c, h, q]
            else:
                src, dst = states[b, c, h, q], states[b, c + 1, h, q]
            dec = decay[b, c, h]
            for k in range(n):
                dst[k] = dec * src[k] + dst[k]


@njit(**_JIT)
def _chunk_outputs(X, A, B, C, Lc, states, Y):
    nb, n1, nh = states.shape[0], states.shape[1], states.shape[2]
    nc = n1 - 1
    for task in prange(nb * nh * nc):
        _chunk_output_task(X, A, B, C, Lc, states, Y, task // (nh * nc), (task // nc) % nh, task % nc)


# --- backward --------------------------------------------------------------------------------------


@njit(**_JIT_SERIAL)
def _state_gradient_task(A, C, dY, Lc, dstates, decay, b, h, c):
    """From (6): dstates[b, c, h] = sum_i exp(Acs_i) dY_i^T C_i, the direct gradient of the state
    entering chunk c (the reverse carry then adds decay_c times that of the next one)."""
    T, p, n = dY.shape[1], dY.shape[3], C.shape[3]
    s = c * Lc
    e = min(s + Lc, T)
    acs = _decays(A, b, h, s, e)
    U = dstates[b, c, h]  # (p, n)
    for q in range(p):
        for k in range(n):
            U[q, k] = 0
    for i in range(e - s):
        ea = vexp(acs[i])
        dYi, Ci = dY[b, s + i, h], C[b, s + i, h]
        for q in range(p):
            g = ea * dYi[q]
            Uq = U[q]
            for k in range(n):
                Uq[k] += g * Ci[k]
    decay[b, c, h] = vexp(acs[e - s - 1])


@njit(**_JIT_SERIAL)
def _chunk_gradient_task(X, A, B, C, dY, Lc, states, dstates, dX, dB, dC, b, h, c):
    """dX, dB, dC of chunk c from S_in = states[c] and dS = dstates[c + 1], the gradient of the
    chunk's own state S_c (= that of the state leaving it):

        (6)  dC_i  = exp(Acs_i) S_in^T dY_i
        (4)  dX_j += w_j dS B_j,  dB_j += w_j dS^T X_j          w_j = exp(Acs_last - Acs_j)
        (3)  with W_ij = (C_i . B_j) E_ij, E_ij = exp(Acs_i - Acs_j), dW_ij = dY_i . X_j (j <= i):
             dX_j += sum_i W_ij dY_i,  dC_i += sum_j dW_ij E_ij B_j,  dB_j += sum_i dW_ij E_ij C_i
    """
    T, p, n = X.shape[1], X.shape[3], B.shape[3]
    s = c * Lc
    e = min(s + Lc, T)
    L = e - s
    acs = _decays(A, b, h, s, e)
    last = acs[L - 1]
    S_in = states[b, c, h]  # (p, n)
    dS = dstates[b, c + 1, h]  # (p, n)
    dST = dS.T.copy()  # (n, p)
    BT = np.empty((n, L), X.dtype)
    XT = np.empty((p, L), X.dtype)
    for j in range(L):
        Bj, Xj = B[b, s + j, h], X[b, s + j, h]
        for k in range(n):
            BT[k, j] = Bj[k]
        for q in range(p):
            XT[q, j] = Xj[q]
        # zero this chunk's rows of the outputs
        dXj, dBj, dCj = dX[b, s + j, h], dB[b, s + j, h], dC[b, s + j, h]
        for q in range(p):
            dXj[q] = 0
        for k in range(n):
            dBj[k] = 0
            dCj[k] = 0
    G = np.empty(L, X.dtype)  # C_i . B_j, then W_ij
    dW = np.empty(L, X.dtype)
    E = np.empty(L, X.dtype)
    for i in range(L):
        Ci, dYi, dCi = C[b, s + i, h], dY[b, s + i, h], dC[b, s + i, h]
        ai = acs[i]
        ea = vexp(ai)
        # (6)
        for q in range(p):
            g, Sq = ea * dYi[q], S_in[q]
            for k in range(n):
                dCi[k] += g * Sq[k]
        # (3): this row's weights and their gradients
        for j in range(i + 1):
            G[j] = 0
            dW[j] = 0
        for k in range(n):
            cik, BTk = Ci[k], BT[k]
            for j in range(i + 1):
                G[j] += cik * BTk[j]
        for q in range(p):
            dyq, XTq = dYi[q], XT[q]
            for j in range(i + 1):
                dW[j] += dyq * XTq[j]
        for j in range(i + 1):
            E[j] = vexp(ai - acs[j])
            G[j] *= E[j]  # W_ij
            dW[j] *= E[j]  # dW_ij E_ij: the gradient of C_i . B_j
        for j in range(i + 1):
            wij, gij = G[j], dW[j]
            dXj, dBj = dX[b, s + j, h], dB[b, s + j, h]
            Bj = B[b, s + j, h]
            for q in range(p):
                dXj[q] += wij * dYi[q]
            for k in range(n):
                dCi[k] += gij * Bj[k]
                dBj[k] += gij * Ci[k]
    # (4)
    acc_x = np.empty(p, X.dtype)
    acc_b = np.empty(n, X.dtype)
    for j in range(L):
        w = vexp(last - acs[j])
        Bj, Xj, dXj, dBj = B[b, s + j, h], X[b, s + j, h], dX[b, s + j, h], dB[b, s + j, h]
        for q in range(p):
            acc_x[q] = 0
        for k in range(n):
            bk, dSTk = Bj[k], dST[k]
            for q in range(p):
                acc_x[q] += bk * dSTk[q]  # (dS B_j)_q
        for k in range(n):
            acc_b[k] = 0
        for q in range(p):
            xq, dSq = Xj[q], dS[q]
            for k in range(n):
                acc_b[k] += xq * dSq[k]  # (dS^T X_j)_k
        for q in range(p):
            dXj[q] += w * acc_x[q]
        for k in range(n):
            dBj[k] += w * acc_b[k]


@njit(**_JIT_SERIAL)
def _decay_gradient_task(B, C, dB, dC, final, dfinal, dA, b, h):
    """dA_t = sum_{t' >= t} (C . dC - B . dB)_t' + dfinal . final, for one (batch, head)."""
    T, n = B.shape[1], B.shape[3]
    f = dA.dtype.type(0)
    F, dF = final[b, h], dfinal[b, h]
    for q in range(F.shape[0]):
        for k in range(n):
            f += dF[q, k] * F[q, k]
    acc = dA.dtype.type(0)
    for t in range(T - 1, -1, -1):
        Ct, dCt, Bt, dBt = C[b, t, h], dC[b, t, h], B[b, t, h], dB[b, t, h]
        g = dA.dtype.type(0)
        for k in range(n):
            g += Ct[k] * dCt[k] - Bt[k] * dBt[k]
        acc += g
        dA[b, t, h] = acc + f


@njit(**_JIT)
def _state_gradients(A, C, dY, Lc, dstates, decay):
    nb, nc, nh = decay.shape
    for task in prange(nb * nh * nc):
        _state_gradient_task(A, C, dY, Lc, dstates, decay, task // (nh * nc), (task // nc) % nh, task % nc)


@njit(**_JIT)
def _chunk_gradients(X, A, B, C, dY, Lc, states, dstates, dX, dB, dC):
    nb, n1, nh = states.shape[0], states.shape[1], states.shape[2]
    nc = n1 - 1
    for task in prange(nb * nh * nc):
        _chunk_gradient_task(X, A, B, C, dY, Lc, states, dstates, dX, dB, dC, task // (nh * nc), (task // nc) % nh,
                             task % nc)


@njit(**_JIT)
def _decay_gradients(B, C, dB, dC, final, dfinal, dA):
    nb, nh = B.shape[0], B.shape[2]
    for task in prange(nb * nh):
        _decay_gradient_task(B, C, dB, dC, final, dfinal, dA, task // nh, task % nh)


# --- wrappers: the arguments of the NumPy reference ----------------------------------------------------


def _block_len(block_len):
    if isinstance(block_len, bool) or not isinstance(block_len, (int, np.integer)) or block_len < 1:
        raise ValueError(f"block_len: expected an integer >= 1, got {block_len!r}")
    return int(block_len)


def ssd_cpu_chunked(X, A, B, C, initial_states=None, block_len=64):
    """``(Y, states)``: Y (b, l, h, p) and states (b, n + 1, h, p, n): the state entering each of the
    ceil(l / block_len) chunks, then the final state."""
    Lc = _block_len(block_len)
    X, A, B, C = (np.ascontiguousarray(x) for x in (X, A, B, C))
    nb, T, nh, p = X.shape
    n = B.shape[3]
    nc = -(-T // Lc)
    states = np.empty((nb, nc + 1, nh, p, n), X.dtype)
    states[:, 0] = 0 if initial_states is None else initial_states
    decay = np.empty((nb, nc, nh), X.dtype)
    _chunk_states(X, A, B, Lc, states, decay)
    _carry(states, decay, False)
    Y = np.empty_like(X)
    _chunk_outputs(X, A, B, C, Lc, states, Y)
    return Y, states


def ssd_cpu_chunked_backward(X, A, B, C, states, dY, dfinal_state=None, block_len=64, with_initial=True):
    """Gradients ``(dX, dA, dB, dC, dinitial_states)`` from the ``states`` of :func:`ssd_cpu_chunked`;
    ``dY`` and ``dfinal_state`` may be None (zero), and are cast to X's dtype; dinitial_states is
    None unless ``with_initial``."""
    Lc = _block_len(block_len)
    X, A, B, C = (np.ascontiguousarray(x) for x in (X, A, B, C))
    states = np.ascontiguousarray(states)
    nb, T, nh, p = X.shape
    n = B.shape[3]
    nc = states.shape[1] - 1
    dY = np.zeros_like(X) if dY is None else np.ascontiguousarray(dY, dtype=X.dtype)
    dfinal = np.zeros((nb, nh, p, n), X.dtype) if dfinal_state is None else np.ascontiguousarray(dfinal_state, X.dtype)
    dstates = np.empty_like(states)  # dstates[:, c]: the gradient of the state entering chunk c
    dstates[:, nc] = dfinal
    decay = np.empty((nb, nc, nh), X.dtype)
    _state_gradients(A, C, dY, Lc, dstates, decay)
    _carry(dstates, decay, True)
    dX, dB, dC = np.empty_like(X), np.empty_like(B), np.empty_like(C)
    _chunk_gradients(X, A, B, C, dY, Lc, states, dstates, dX, dB, dC)
    dA = np.empty_like(A)
    _decay_gradients(B, C, dB, dC, np.ascontiguousarray(states[:, nc]), dfinal, dA)
    return dX, dA, dB, dC, (dstates[:, 0].copy() if with_initial else None)
