"""Gated linear attention (GLA) on the CPU (numba, parallel): the recurrent and chunked forms.

Same math, layout and results as ``ref.mixers.gla``: q, k, gk (B, T, H, K); v, o (B, T, H, V);
states (B, H, K, V); natural-log gates gk <= 0 (the wrappers pass zeros for "no gate":
exp(0) = 1); o_t = scale * q_t S_t.

Naive loops (the contract):

    recurrent   for b, h:   S = h0[b, h]                                                  # (K, V)
                    for t:  S = exp(gk[b, t, h])[:, None] * S + outer(k[b, t, h], v[b, t, h])
                            o[b, t, h] = scale * q[b, t, h] @ S
    chunked     for b, h:   S = h0[b, h]
                    for each chunk [s, e), with bl_i = gk_s + ... + gk_i (per key dim):
                        A_ij = sum_k q_i[k] k_j[k] exp(bl_i[k] - bl_j[k])   (j <= i)             (2)
                        o_i  = scale * ((q_i * exp(bl_i)) @ S + sum_{j <= i} A_ij v_j)       (1) + (2)
                        S    = exp(bl_last)[:, None] * S + sum_j outer(k_j * exp(bl_last - bl_j), v_j)  (3)

Backward: the recurrent form as ``gla_recurrent_backward`` (dq in a forward pass that recomputes
the state; dk, dv and dinitial_state in a reverse pass carrying dS), the chunked form as
``gla_chunked_backward`` (from the chunk-entering states saved by the forward, dS carried from
the last chunk); dgk from dq and dk by the identity of ``ref.mixers.gla._inputs.gate_gradient``,
in its own kernel (``_gate_gradient_*``).

Optimizations:
* recurrent: tasks of (batch, head, block of value columns) (``plan``). The columns of the state
  are independent (column v of S_t needs only v_t[v]), so a task carries a (K, block) slice in a
  local array, sequentially over time. Blocks are made only when B * H is too small to keep every
  thread busy; the backward's sums over v (dq, dk) are then added up over the blocks afterwards.
* chunked: three passes, like the chunked scan of ``scan_cpu``, so that B * H * n_chunks tasks
  exist and nothing is computed twice:
    1. per chunk (parallel over batch, head, chunk): its contribution to the state,
       sum_j outer(k_j exp(bl_last - bl_j), v_j), and its decay exp(bl_last), from (3);
    2. across chunks (parallel over batch, head, key dim, since the rows of S are independent):
       S_{c+1} = decay_c * S_c + contribution_c, n short sequential steps;
    3. per chunk (parallel): the outputs (1) + (2) from the state entering the chunk.
  The backward mirrors it: (1) each chunk's contribution scale * sum_i outer(q_i exp(bl_i), do_i)
  to the gradient of the state entering it, (2) that gradient carried from the last chunk back,
  (3) dq, dk, dv of each chunk from its entering state and the gradient of its leaving state.
  (Splitting value columns instead would recompute the weights A, which do not depend on v.)
* sub-chunks for the exps. Computing every exp(bl_i - bl_j) of (2) takes L (L + 1) K / 2 of them
  per chunk of L steps. As flash-linear-attention's kernels do (secondary chunking), the chunk is
  cut into sub-chunks of ``sub_size`` steps; inside one the exps are taken directly, and for a key
  j before the sub-chunk [f, ...) of query i the exp factors at f:

      exp(bl_i - bl_j) = exp(bl_i - bl_f) * exp(bl_f - bl_j),    both exponents <= 0

  so A[i, :f] is a matrix product of q_i exp(bl_i - bl_f) and k_j exp(bl_f - bl_j), with exps per
  row and sub-chunk instead of per pair. At L = 64, K = 64: 36,864 exps per chunk instead of
  133,120 with sub-chunks of 8 (the default). The exps are ``numba_kernels.vecmath.vexp``
  (vectorisable; libm's scalar exp took 3-5 ns each), and the sub-chunks still pay: forward +
  backward of one float32 layer at B = 8, T = 512, H = 4, K = 16, V = 32 took 32, 36, 43 and
  93 ms with sub-chunks of 4, 8, 16 and 64 (none) on the 2-core reference machine. Every
  exponent anywhere is a difference bl_i - bl_j with j <= i, bl_i, or bl_last - bl_j: all <= 0
  (prefix sums of gates <= 0 do not increase in floating point either), so nothing overflows at
  any T, and a product of two factors <= 1 underflows only where the exact value is smaller
  still.
* the inner loops index 1-D row views (``q[b, t, h]``) or local arrays with the bare loop
  variable: numba adds a wrap-around test for negative indices to ``x[v0 + j]``, which stops LLVM
  from vectorising (3x slower here). They run over contiguous memory with no dependence between
  iterations (``acc[v] += w * S[k, v]``), so they vectorise; a dot product accumulating into one
  scalar is a chain that ``contract`` alone does not let LLVM reorder, so the recurrent form
  writes its reductions as axpys over a transposed copy (``ST``). The chunked form's sums over a
  chunk's steps or a state's columns are matrix products (``np.dot``, BLAS on the thread that calls
  it) of the chunk's rows copied contiguous (``_chunk_rows``): the outputs (Q exp(bl)) S + A V,
  and in the backward dA = dO V^T, dO S^T, V dS^T, A^T dO and (K exp(bl_last - bl)) dS, and the
  sub-chunks' factor products. That took the backward from 24 to 18 ms at the sizes above. The
  remaining scalar sums (the diagonal blocks) sit in loops with an exp, which hides their latency.
* the work of a task is a plain jitted function called from a thin ``prange`` loop (not inlined
  into it): numba's parallel passes then analyse a few lines instead of the whole body. Even so the
  first compilation takes about 30 s per dtype on the 2-core reference machine (numba's cache
  then serves later processes; any edit of this file invalidates it).
* ``fastmath={"contract"}`` fuses a * b + c into FMAs without the unsafe flags; ``cache=True``;
  ``error_model="numpy"`` (no ZeroDivisionError test before a division, which blocks vectorising).
* float32 stays float32: zeros come from ``x.dtype.type(0)``, ``scale`` is passed in the input
  dtype, local arrays take the input dtype (a bare ``0.0`` would promote a sum to float64).
* a recurrent problem that makes a single task runs in a serial twin (as in ``scan_cpu``):
  starting a parallel region costs tens of microseconds. The chunked kernels make B * H * n_chunks
  tasks, a single one only when B * H = 1 and T <= chunk_size (a call of a few microseconds of work).

Outputs are allocated by the wrappers; kernels write into them and return nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from numba_kernels.vecmath import vexp

_JIT = dict(parallel=True, cache=True, fastmath={"contract"}, error_model="numpy")
_JIT_SERIAL = dict(cache=True, fastmath={"contract"}, error_model="numpy")

MIN_COLUMNS = 16  # the narrowest block of value columns a recurrent task takes
SUB_SIZE = 8  # steps per sub-chunk of the intra-chunk weights


def plan(BH: int, V: int, tasks_per_thread: int = 2) -> tuple[int, bool]:
    """(value columns per task, parallel?) for the recurrent kernels with B * H = ``BH``.

    Columns are split only when B * H gives fewer than ``tasks_per_thread`` tasks per numba
    thread, into blocks of at least ``MIN_COLUMNS`` columns; a single task runs serially.
    """
    from numba import get_num_threads

    blocks = max(1, min(-(-tasks_per_thread * get_num_threads() // BH), V // MIN_COLUMNS))
    blk = -(-V // blocks)
    return blk, BH * -(-V // blk) > 1


# --- recurrent form ----------------------------------------------------------------------------


@njit(**_JIT_SERIAL)
def _store(dst, src):
    """dst[...] = src for 2-D arrays, as loops (numba's array-to-array setitem compiles slowly)."""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[i, j] = src[i, j]


@njit(**_JIT_SERIAL)
def _recurrent_forward_task(q, k, v, gk, scale, h0, o, ht, b, h, v0, v1):
    """Columns v0:v1 of the state of (b, h), through all T steps."""
    T, K = q.shape[1], q.shape[3]
    S = h0[b, h, :, v0:v1].copy()  # (K, n): columns v0:v1 of the state
    acc = np.empty(v1 - v0, q.dtype)  # (n,): q_t S_t
    for t in range(T):
        qt, kt, gt, vt = q[b, t, h], k[b, t, h], gk[b, t, h], v[b, t, h, v0:v1]
        acc[:] = 0
        for kk in range(K):
            decay = vexp(gt[kk])
            Sk = S[kk]
            for j in range(v1 - v0):
                # S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t
                Sk[j] = decay * Sk[j] + kt[kk] * vt[j]
                acc[j] += qt[kk] * Sk[j]
        ot = o[b, t, h, v0:v1]
        for j in range(v1 - v0):
            # o_t = scale * q_t S_t
            ot[j] = scale * acc[j]
    _store(ht[b, h, :, v0:v1], S)


@njit(**_JIT_SERIAL)
def _recurrent_backward_task(q, k, v, gk, scale, h0, do, dht, dq_part, dk_part, dv, dh0, block, b, h, v0, v1):
    """Columns v0:v1 of (b, h): dv, dinitial_state and this block's share of dq and dk."""
    T, K = q.shape[1], q.shape[3]
    n = v1 - v0

    # pass 1, forward: recompute S_t; dq_t = scale * do_t S_t^T (the sum over this block's columns)
    ST = h0[b, h, :, v0:v1].T.copy()  # (n, K): the state's columns, transposed (axpys over k)
    decay = np.empty(K, q.dtype)
    acc = np.empty(K, q.dtype)
    for t in range(T):
        kt, gt, vt, dot = k[b, t, h], gk[b, t, h], v[b, t, h, v0:v1], do[b, t, h, v0:v1]
        for kk in range(K):
            decay[kk] = vexp(gt[kk])
        acc[:] = 0
        for j in range(n):
            Sj = ST[j]
            for kk in range(K):
                Sj[kk] = decay[kk] * Sj[kk] + kt[kk] * vt[j]
                acc[kk] += dot[j] * Sj[kk]
        dqt = dq_part[block, b, t, h]
        for kk in range(K):
            dqt[kk] = scale * acc[kk]

    # pass 2, backward in time, carrying dS (the total gradient of S_t)
    dS = dht[b, h, :, v0:v1].copy()  # (K, n)
    dv_t = np.empty(n, q.dtype)
    for t in range(T - 1, -1, -1):
        qt, kt, gt, vt, dot = q[b, t, h], k[b, t, h], gk[b, t, h], v[b, t, h, v0:v1], do[b, t, h, v0:v1]
        dv_t[:] = 0
        for kk in range(K):
            qs = scale * qt[kk]
            dSk = dS[kk]
            for j in range(n):
                # dS_t = scale * q_t^T do_t + diag(exp(gk_{t+1})) dS_{t+1}
                dSk[j] += qs * dot[j]
                # dv_t = k_t dS_t
                dv_t[j] += kt[kk] * dSk[j]
        # dk_t = dS_t v_t^T, accumulated per key dim (strided, but no chain of dependent adds)
        acc[:] = 0
        for j in range(n):
            for kk in range(K):
                acc[kk] += dS[kk, j] * vt[j]
        dkt = dk_part[block, b, t, h]
        for kk in range(K):
            dkt[kk] = acc[kk]
        dvt = dv[b, t, h, v0:v1]
        for j in range(n):
            dvt[j] = dv_t[j]
        # carry to t-1 through the decay of step t
        for kk in range(K):
            decay_k = vexp(gt[kk])
            dSk = dS[kk]
            for j in range(n):
                dSk[j] *= decay_k
    # dinitial_state = diag(exp(gk_0)) dS_0
    _store(dh0[b, h, :, v0:v1], dS)


@njit(**_JIT)
def _recurrent_forward_parallel(q, k, v, gk, scale, h0, o, ht, blk):
    B, T, H, K = q.shape
    V = v.shape[3]
    nblk = (V + blk - 1) // blk
    for task in prange(B * H * nblk):
        bh, v0 = task // nblk, (task % nblk) * blk
        _recurrent_forward_task(q, k, v, gk, scale, h0, o, ht, bh // H, bh % H, v0, min(v0 + blk, V))


@njit(**_JIT_SERIAL)
def _recurrent_forward_serial(q, k, v, gk, scale, h0, o, ht):
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            _recurrent_forward_task(q, k, v, gk, scale, h0, o, ht, b, h, 0, v.shape[3])


@njit(**_JIT)
def _recurrent_backward_parallel(q, k, v, gk, scale, h0, do, dht, dq_part, dk_part, dv, dh0, blk):
    B, T, H, K = q.shape
    V = v.shape[3]
    nblk = (V + blk - 1) // blk
    for task in prange(B * H * nblk):
        bh, block = task // nblk, task % nblk
        v0 = block * blk
        _recurrent_backward_task(
            q, k, v, gk, scale, h0, do, dht, dq_part, dk_part, dv, dh0, block, bh // H, bh % H, v0, min(v0 + blk, V)
        )


@njit(**_JIT_SERIAL)
def _recurrent_backward_serial(q, k, v, gk, scale, h0, do, dht, dq_part, dk_part, dv, dh0):
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            _recurrent_backward_task(q, k, v, gk, scale, h0, do, dht, dq_part, dk_part, dv, dh0, 0, b, h, 0, v.shape[3])


# --- the gate gradient, shared by both backward passes --------------------------------------------


@njit(**_JIT_SERIAL)
def _gate_gradient_task(q, dq, k, dk, ht, dht, dgk, b, h):
    T, K = q.shape[1], q.shape[3]
    final = np.zeros(K, q.dtype)  # sum_v dht * ht: the final state's share, in every dgk_t
    for kk in range(K):
        for vv in range(ht.shape[3]):
            final[kk] += dht[b, h, kk, vv] * ht[b, h, kk, vv]
    acc = np.zeros(K, q.dtype)
    for t in range(T - 1, -1, -1):
        qt, dqt, kt, dkt, out = q[b, t, h], dq[b, t, h], k[b, t, h], dk[b, t, h], dgk[b, t, h]
        for kk in range(K):
            # dgk_t = sum_{t' >= t} (q dq - k dk)_t'  (+ sum_v dht * ht)
            acc[kk] += qt[kk] * dqt[kk] - kt[kk] * dkt[kk]
            out[kk] = acc[kk] + final[kk]


@njit(**_JIT)
def _gate_gradient_parallel(q, dq, k, dk, ht, dht, dgk):
    B, T, H, K = q.shape
    for task in prange(B * H):
        _gate_gradient_task(q, dq, k, dk, ht, dht, dgk, task // H, task % H)


@njit(**_JIT_SERIAL)
def _gate_gradient_serial(q, dq, k, dk, ht, dht, dgk):
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            _gate_gradient_task(q, dq, k, dk, ht, dht, dgk, b, h)


# --- chunked form: the pieces of one chunk -------------------------------------------------------


@njit(**_JIT_SERIAL)
def _chunk_gates(gk, b, h, s, e):
    """bl[i] = gk_s + ... + gk_{s+i}: the gates accumulated from the chunk's start.   (L, K)"""
    bl = np.empty((e - s, gk.shape[3]), gk.dtype)
    for kk in range(gk.shape[3]):
        bl[0, kk] = gk[b, s, h, kk]
    for i in range(1, e - s):
        prev, cur, gi = bl[i - 1], bl[i], gk[b, s + i, h]
        for kk in range(gk.shape[3]):
            cur[kk] = prev[kk] + gi[kk]
    return bl


@njit(**_JIT_SERIAL)
def _key_factors(k, b, h, s, bl, f):
    """For the keys j < f before a sub-chunk starting at f: ek[j] = exp(bl_f - bl_j) and
    kg[j] = k_j * ek[j], both (f, K)."""
    K = bl.shape[1]
    ek = np.empty((f, K), bl.dtype)
    kg = np.empty((f, K), bl.dtype)
    for j in range(f):
        kj, blj, blf, ekj, kgj = k[b, s + j, h], bl[j], bl[f], ek[j], kg[j]
        for kk in range(K):
            ekj[kk] = vexp(blf[kk] - blj[kk])
            kgj[kk] = kj[kk] * ekj[kk]
    return ek, kg


@njit(**_JIT_SERIAL)
def _query_factors(q, b, h, s, bl, f, g):
    """For the queries f <= i < g of the sub-chunk starting at f: eq[i - f] = exp(bl_i - bl_f)
    and qg[i - f] = q_i * eq[i - f], both (g - f, K)."""
    K = bl.shape[1]
    eq = np.empty((g - f, K), bl.dtype)
    qg = np.empty((g - f, K), bl.dtype)
    blf = bl[f]
    for i in range(f, g):
        qi, bli, eqi, qgi = q[b, s + i, h], bl[i], eq[i - f], qg[i - f]
        for kk in range(K):
            eqi[kk] = vexp(bli[kk] - blf[kk])
            qgi[kk] = qi[kk] * eqi[kk]
    return eq, qg


@njit(**_JIT_SERIAL)
def _intra_weights(q, k, b, h, s, bl, sub):
    """A[i, j] = sum_k q_i[k] k_j[k] exp(bl_i[k] - bl_j[k]) for j <= i, 0 above.   (L, L)

    By sub-chunks [f, g) of ``sub`` steps: directly for f <= j <= i, and through the factors
    at f for j < f (module docstring), one matrix product per sub-chunk."""
    L, K = bl.shape
    zero = q.dtype.type(0)
    A = np.zeros((L, L), q.dtype)
    for f in range(0, L, sub):
        g = min(f + sub, L)
        _, qg = _query_factors(q, b, h, s, bl, f, g)
        if f > 0:
            # j < f: A[i, :f] = (q_i exp(bl_i - bl_f)) . (k_j exp(bl_f - bl_j))
            _, kg = _key_factors(k, b, h, s, bl, f)
            before = np.dot(qg, kg.T)  # (g - f, f)
            for i in range(f, g):
                Ai, bi = A[i], before[i - f]
                for j in range(f):
                    Ai[j] = bi[j]
        # f <= j <= i: directly
        for i in range(f, g):
            qi, bli, Ai = q[b, s + i, h], bl[i], A[i]
            for j in range(f, i + 1):
                kj, blj = k[b, s + j, h], bl[j]
                a = zero
                for kk in range(K):
                    a += qi[kk] * kj[kk] * vexp(bli[kk] - blj[kk])
                Ai[j] = a
    return A


@njit(**_JIT_SERIAL)
def _intra_weights_backward(q, k, b, h, s, bl, sub, dA, dq_c, dk_c):
    """The weights A of ``_intra_weights`` and, given dA (L, L), their share of dq and dk,
    added into dq_c and dk_c (L, K):

        dq_i += sum_{j <= i} dA_ij k_j exp(bl_i - bl_j),    dk_j += sum_{i >= j} dA_ij q_i exp(bl_i - bl_j)

    sub-chunks as in ``_intra_weights``: for j < f the three sums are matrix products of the
    factors at f, and on the diagonal blocks one exp serves A, dq and dk."""
    L, K = bl.shape
    zero = q.dtype.type(0)
    A = np.zeros((L, L), q.dtype)
    for f in range(0, L, sub):
        g = min(f + sub, L)
        eq, qg = _query_factors(q, b, h, s, bl, f, g)
        if f > 0:
            ek, kg = _key_factors(k, b, h, s, bl, f)
            before = np.dot(qg, kg.T)  # (g - f, f): A[i, :f]
            dAb = np.empty((g - f, f), q.dtype)  # dA[f:g, :f]
            for i in range(f, g):
                Ai, bi, dAi, dAbi = A[i], before[i - f], dA[i], dAb[i - f]
                for j in range(f):
                    Ai[j] = bi[j]
                    dAbi[j] = dAi[j]
            # dq_i += exp(bl_i - bl_f) * sum_{j < f} dA_ij k_j exp(bl_f - bl_j)
            dq_sum = np.dot(dAb, kg)  # (g - f, K)
            for i in range(f, g):
                dqi, eqi, sqi = dq_c[i], eq[i - f], dq_sum[i - f]
                for kk in range(K):
                    dqi[kk] += eqi[kk] * sqi[kk]
            # dk_j += exp(bl_f - bl_j) * sum_{f <= i < g} dA_ij q_i exp(bl_i - bl_f)
            dk_sum = np.dot(dAb.T, qg)  # (f, K)
            for j in range(f):
                dkj, ekj, skj = dk_c[j], ek[j], dk_sum[j]
                for kk in range(K):
                    dkj[kk] += ekj[kk] * skj[kk]
        # f <= j <= i: directly
        for i in range(f, g):
            qi, bli, Ai, dAi, dqi = q[b, s + i, h], bl[i], A[i], dA[i], dq_c[i]
            for j in range(f, i + 1):
                kj, blj, dkj, d = k[b, s + j, h], bl[j], dk_c[j], dAi[j]
                a = zero
                for kk in range(K):
                    E = vexp(bli[kk] - blj[kk])
                    a += qi[kk] * kj[kk] * E
                    dqi[kk] += d * kj[kk] * E
                    dkj[kk] += d * qi[kk] * E
                Ai[j] = a
    return A


@njit(**_JIT_SERIAL)
def _chunk_contribution_task(x, y, gk, scale, C, backward, out, decay, b, h, c):
    """Pass 1 for chunk c: what the chunk adds to the state carried across chunks, and its decay
    decay[b, c, h] = exp(bl_last).

    forward   (x, y = k, v):   out[b, c + 1, h] = sum_j outer(k_j exp(bl_last - bl_j), v_j)    from (3)
    backward  (x, y = q, do):  out[b, c, h] = scale * sum_i outer(q_i exp(bl_i), do_i)          from (1)

    (the forward carry then adds decay_c * S_c, the reverse carry decay_c * dS_{c+1}).
    """
    K, V = x.shape[3], y.shape[3]
    s = c * C
    e = min(s + C, x.shape[1])
    bl = _chunk_gates(gk, b, h, s, e)
    last = bl[e - s - 1]
    U = out[b, c, h] if backward else out[b, c + 1, h]  # (K, V)
    for kk in range(K):
        for vv in range(V):
            U[kk, vv] = 0
    w = np.empty(K, x.dtype)
    for j in range(e - s):
        xj, blj, yj = x[b, s + j, h], bl[j], y[b, s + j, h]
        for kk in range(K):
            w[kk] = scale * xj[kk] * vexp(blj[kk]) if backward else xj[kk] * vexp(last[kk] - blj[kk])
        for kk in range(K):
            Uk = U[kk]
            for vv in range(V):
                Uk[vv] += w[kk] * yj[vv]
    for kk in range(K):
        decay[b, c, h, kk] = vexp(last[kk])


@njit(**_JIT_SERIAL)
def _chunk_rows(x, b, h, s, e):
    """x[b, s:e, h] as a contiguous (e - s, X) array (a matrix product's operand)."""
    out = np.empty((e - s, x.shape[3]), x.dtype)
    for i in range(e - s):
        xi, oi = x[b, s + i, h], out[i]
        for c in range(x.shape[3]):
            oi[c] = xi[c]
    return out


@njit(**_JIT_SERIAL)
def _chunk_output_task(q, k, v, gk, scale, C, sub, states, o, b, h, c):
    """Pass 3 (forward) for chunk c: o_i = (1) + (2) from the state entering the chunk, as two
    matrix products, O = scale ((Q * exp(bl)) S + A V)."""
    K = q.shape[3]
    s = c * C
    e = min(s + C, q.shape[1])
    L = e - s
    bl = _chunk_gates(gk, b, h, s, e)
    A = _intra_weights(q, k, b, h, s, bl, sub)  # (L, L)
    Qe = np.empty((L, K), q.dtype)  # q_i exp(bl_i)
    for i in range(L):
        qi, bli, qei = q[b, s + i, h], bl[i], Qe[i]
        for kk in range(K):
            qei[kk] = qi[kk] * vexp(bli[kk])
    inter = np.dot(Qe, states[b, c, h])  # (1): (q_i exp(bl_i)) S, (L, V)
    intra = np.dot(A, _chunk_rows(v, b, h, s, e))  # (2): sum_j A_ij v_j, (L, V)
    for i in range(L):
        oi, ei, ai = o[b, s + i, h], inter[i], intra[i]
        for vv in range(oi.shape[0]):
            oi[vv] = scale * (ei[vv] + ai[vv])


@njit(**_JIT_SERIAL)
def _chunk_gradient_task(q, k, v, gk, do, scale, C, sub, states, dstates, dq, dk, dv, b, h, c):
    """Pass 3 (backward) for chunk c: dq, dk, dv from the state entering the chunk (states[c])
    and the gradient of the state leaving it (dstates[c + 1]); the sums over the chunk's steps
    and the state's columns are matrix products of the chunk's rows."""
    K = q.shape[3]
    s = c * C
    e = min(s + C, q.shape[1])
    L = e - s
    bl = _chunk_gates(gk, b, h, s, e)
    last = bl[L - 1]
    S = states[b, c, h]  # (K, V) entering the chunk
    dS = dstates[b, c + 1, h]  # (K, V) gradient of the state leaving it
    Vc, dO = _chunk_rows(v, b, h, s, e), _chunk_rows(do, b, h, s, e)  # (L, V)

    # dA_ij = scale * do_i . v_j for j <= i, 0 above                                        from (2)
    dA = np.dot(dO, Vc.T)  # (L, L)
    for i in range(L):
        dAi = dA[i]
        for j in range(i + 1):
            dAi[j] *= scale
        for j in range(i + 1, L):
            dAi[j] = 0

    # the intra-chunk parts of dq and dk, and the weights A (0 above the diagonal)          from (2)
    dq_c = np.zeros((L, K), q.dtype)
    dk_c = np.zeros((L, K), q.dtype)
    A = _intra_weights_backward(q, k, b, h, s, bl, sub, dA, dq_c, dk_c)

    # dq_i = the intra part + scale * exp(bl_i) * (do_i S^T)                                 from (1)
    dOS = np.dot(dO, S.T)  # (L, K)
    for i in range(L):
        bli, dqi, dqci, gi = bl[i], dq[b, s + i, h], dq_c[i], dOS[i]
        for kk in range(K):
            dqi[kk] = dqci[kk] + scale * vexp(bli[kk]) * gi[kk]

    # the state leaving the chunk, S' = ... + sum_j outer(k_j exp(bl_last - bl_j), v_j)      from (3)
    # dk_j = the intra part + exp(bl_last - bl_j) * (v_j dS^T)
    # dv_j = sum_{i >= j} scale A_ij do_i + (k_j exp(bl_last - bl_j)) dS                     from (2), (3)
    Kd = np.empty((L, K), q.dtype)  # k_j exp(bl_last - bl_j)
    VdS = np.dot(Vc, dS.T)  # (L, K)
    for j in range(L):
        kj, blj, dkj, dkcj, Kdj, g = k[b, s + j, h], bl[j], dk[b, s + j, h], dk_c[j], Kd[j], VdS[j]
        for kk in range(K):
            to_end = vexp(last[kk] - blj[kk])
            dkj[kk] = dkcj[kk] + to_end * g[kk]
            Kdj[kk] = kj[kk] * to_end
    dv_intra = np.dot(A.T, dO)  # (L, V): sum_{i >= j} A_ij do_i
    dv_state = np.dot(Kd, dS)  # (L, V)
    for j in range(L):
        dvj, ai, si = dv[b, s + j, h], dv_intra[j], dv_state[j]
        for vv in range(dvj.shape[0]):
            dvj[vv] = scale * ai[vv] + si[vv]


# --- chunked form: the three passes --------------------------------------------------------------


@njit(**_JIT)
def _chunk_contributions(x, y, gk, scale, C, backward, out, decay):
    B, n, H = decay.shape[0], decay.shape[1], decay.shape[2]
    for task in prange(B * H * n):
        _chunk_contribution_task(x, y, gk, scale, C, backward, out, decay, task // (H * n), (task // n) % H, task % n)


@njit(**_JIT)
def _carry(states, decay, reverse):
    """Pass 2: the recurrence across chunks, a task per (batch, head, key dim) row.

    forward:  states[c + 1] = decay_c * states[c] + states[c + 1]   (c = 0 .. n-1; states[0] = h0)
    reverse:  states[c] = decay_c * states[c + 1] + states[c]       (c = n-1 .. 0; states[n] = dht)
    """
    B, n1, H, K, V = states.shape
    n = n1 - 1
    for task in prange(B * H * K):
        b, h, kk = task // (H * K), (task // K) % H, task % K
        for step in range(n):
            c = n - 1 - step if reverse else step
            if reverse:
                src, dst = states[b, c + 1, h, kk], states[b, c, h, kk]
            else:
                src, dst = states[b, c, h, kk], states[b, c + 1, h, kk]
            d = decay[b, c, h, kk]
            for vv in range(V):
                dst[vv] = d * src[vv] + dst[vv]


@njit(**_JIT)
def _chunk_outputs(q, k, v, gk, scale, C, sub, states, o):
    B, n1, H = states.shape[0], states.shape[1], states.shape[2]
    n = n1 - 1
    for task in prange(B * H * n):
        _chunk_output_task(q, k, v, gk, scale, C, sub, states, o, task // (H * n), (task // n) % H, task % n)


@njit(**_JIT)
def _chunk_gradients(q, k, v, gk, do, scale, C, sub, states, dstates, dq, dk, dv):
    B, n1, H = states.shape[0], states.shape[1], states.shape[2]
    n = n1 - 1
    for task in prange(B * H * n):
        _chunk_gradient_task(
            q, k, v, gk, do, scale, C, sub, states, dstates, dq, dk, dv, task // (H * n), (task // n) % H, task % n
        )


# --- wrappers: the arguments of the NumPy reference -----------------------------------------------


def _prepare(q, k, v, gk, scale, initial_state):
    """Contiguous arrays; zeros for an absent gate or initial state; ``scale`` in the input dtype."""
    q, k, v = (np.ascontiguousarray(x) for x in (q, k, v))
    gk = np.zeros_like(q) if gk is None else np.ascontiguousarray(gk)
    B, T, H, K = q.shape
    V = v.shape[3]
    if initial_state is None:
        h0 = np.zeros((B, H, K, V), q.dtype)
    else:
        h0 = np.ascontiguousarray(initial_state)
    return q, k, v, gk, q.dtype.type(scale), h0


def _cotangents(q, v, do, dht):
    B, T, H, K = q.shape
    do = np.zeros_like(v) if do is None else np.ascontiguousarray(do)
    dht = np.zeros((B, H, K, v.shape[3]), q.dtype) if dht is None else np.ascontiguousarray(dht)
    return do, dht


def _gate_gradient(q, dq, k, dk, ht, dht):
    """dgk (B, T, H, K): the reverse cumulative sum of q dq - k dk, plus sum_v dht * ht."""
    dgk = np.empty_like(q)
    if q.shape[0] * q.shape[2] > 1:
        _gate_gradient_parallel(q, dq, k, dk, ht, dht, dgk)
    else:
        _gate_gradient_serial(q, dq, k, dk, ht, dht, dgk)
    return dgk


def _check_sizes(chunk_size, sub_size):
    for value, name in ((chunk_size, "chunk_size"), (sub_size, "sub_size")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(chunk_size), int(sub_size)


def gla_cpu(q, k, v, gk, scale, initial_state=None):
    """The recurrent form: ``(o, ht)``, o (B, T, H, V) and the final state ht (B, H, K, V).

    gk None means no decay; initial_state None means zeros. ``scale`` is a number (the caller's
    default is K^-0.5).
    """
    q, k, v, gk, scale, h0 = _prepare(q, k, v, gk, scale, initial_state)
    B, T, H, K = q.shape
    o = np.empty_like(v)
    ht = np.empty_like(h0)
    blk, parallel = plan(B * H, v.shape[3])
    if parallel:
        _recurrent_forward_parallel(q, k, v, gk, scale, h0, o, ht, blk)
    else:
        _recurrent_forward_serial(q, k, v, gk, scale, h0, o, ht)
    return o, ht


def gla_cpu_backward(q, k, v, gk, scale, initial_state, ht, do, dht):
    """Gradients ``(dq, dk, dv, dgk, dinitial_state)`` of the recurrent form, in two passes.

    ``ht`` is the final state of the forward; ``do`` and ``dht`` may be None (zero). dgk is None
    when gk is None, dinitial_state when initial_state is None.
    """
    gated = gk is not None
    q, k, v, gk, scale, h0 = _prepare(q, k, v, gk, scale, initial_state)
    do, dht = _cotangents(q, v, do, dht)
    B, T, H, K = q.shape
    V = v.shape[3]
    blk, parallel = plan(B * H, V)
    nblk = -(-V // blk)
    dq_part = np.empty((nblk, B, T, H, K), q.dtype)  # the sums over v, one share per column block
    dk_part = np.empty((nblk, B, T, H, K), q.dtype)
    dv = np.empty_like(v)
    dh0 = np.empty_like(h0)
    if parallel:
        _recurrent_backward_parallel(q, k, v, gk, scale, h0, do, dht, dq_part, dk_part, dv, dh0, blk)
    else:
        _recurrent_backward_serial(q, k, v, gk, scale, h0, do, dht, dq_part, dk_part, dv, dh0)
    dq = dq_part[0] if nblk == 1 else dq_part.sum(axis=0)  # (B, T, H, K)
    dk = dk_part[0] if nblk == 1 else dk_part.sum(axis=0)
    dgk = _gate_gradient(q, dq, k, dk, np.ascontiguousarray(ht), dht) if gated else None
    return dq, dk, dv, dgk, (dh0 if initial_state is not None else None)


def gla_cpu_chunked(q, k, v, gk, scale, initial_state=None, chunk_size=64, sub_size=SUB_SIZE):
    """The chunked form: ``(o, states)``, o (B, T, H, V) and states (B, n + 1, H, K, V): the state
    entering each of the n = ceil(T / chunk_size) chunks, then the final state.

    ``sub_size``: steps per sub-chunk of the intra-chunk weights (the same result for any value).
    """
    C, sub = _check_sizes(chunk_size, sub_size)
    q, k, v, gk, scale, h0 = _prepare(q, k, v, gk, scale, initial_state)
    B, T, H, K = q.shape
    n = -(-T // C)
    states = np.empty((B, n + 1, H, K, v.shape[3]), q.dtype)
    states[:, 0] = h0
    decay = np.empty((B, n, H, K), q.dtype)
    _chunk_contributions(k, v, gk, scale, C, False, states, decay)
    _carry(states, decay, False)
    o = np.empty_like(v)
    _chunk_outputs(q, k, v, gk, scale, C, sub, states, o)
    return o, states


def gla_cpu_chunked_backward(q, k, v, gk, scale, initial_state, states, do, dht, chunk_size=64, sub_size=SUB_SIZE):
    """Gradients ``(dq, dk, dv, dgk, dinitial_state)`` of the chunked form, from the ``states``
    saved by :func:`gla_cpu_chunked`; ``do`` and ``dht`` may be None (zero)."""
    C, sub = _check_sizes(chunk_size, sub_size)
    gated = gk is not None
    q, k, v, gk, scale, h0 = _prepare(q, k, v, gk, scale, initial_state)
    do, dht = _cotangents(q, v, do, dht)
    states = np.ascontiguousarray(states)
    B, T, H, K = q.shape
    n = states.shape[1] - 1
    dstates = np.empty_like(states)  # dstates[:, c]: the gradient of the state entering chunk c
    dstates[:, n] = dht
    decay = np.empty((B, n, H, K), q.dtype)
    _chunk_contributions(q, do, gk, scale, C, True, dstates, decay)
    _carry(dstates, decay, True)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    _chunk_gradients(q, k, v, gk, do, scale, C, sub, states, dstates, dq, dk, dv)
    ht = np.ascontiguousarray(states[:, n])  # (B, H, K, V)
    dgk = _gate_gradient(q, dq, k, dk, ht, dht) if gated else None
    return dq, dk, dv, dgk, (dstates[:, 0].copy() if initial_state is not None else None)
