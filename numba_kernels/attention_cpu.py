"""Softmax attention on the CPU (numba, parallel): FlashAttention-style tiles, forward and backward.

Same math, arguments and results as ``ref.mixers.attention.attention_parallel``: q (B, T, HQ, K),
k (B, S, H, K), v (B, S, H, V), o (B, T, HQ, V), lse (B, T, HQ); query head h reads key/value head
h // G (G = HQ / H); query t sits at position p = t + S - T; a fully masked row gives o = 0,
lse = -inf and no gradient.

Naive loop (the contract):

    for b, hq, t:   allowed keys A = {s : M[p, s]},  s_ts = scale * q_t . k_s  for s in A
                    lse_t = log sum_{s in A} exp(s_ts);   o_t = sum_{s in A} exp(s_ts - lse_t) v_s

Tiles (FlashAttention, Dao et al. 2022; FlashAttention-2 for the loop order). Queries are cut in
tiles of ``block_q`` rows and keys in tiles of ``block_k``; no (T, S) matrix ever exists, only a
(block_q, block_k) tile per thread, so the memory is linear in T.

* forward, a task per (b, hq, query tile), the key tiles in order, with the *online softmax*:
  a running max m_t, a running sum l_t and an unnormalised output acc_t per row; for each tile

      m'_t   = max(m_t, max_s s_ts)                       the new running max        (1)
      P_ts   = exp(s_ts - m'_t)                           (0 off the mask)           (2)
      l_t    = exp(m_t - m'_t) l_t + sum_s P_ts           rescale the old sum        (3)
      acc_t  = exp(m_t - m'_t) acc_t + sum_s P_ts v_s     and the old output         (4)

  then o_t = acc_t / l_t and lse_t = m_t + log l_t, saved for the backward                 (5)
* backward, a task per (b, key/value head), with P recomputed from the saved lse (no (T, S)
  matrix kept between the passes) and D_t = do_t . o_t:

      P_ts  = exp(s_ts - lse_t),   dP_ts = do_t . v_s,   dS_ts = P_ts (dP_ts - D_t)      (6)
      dv_s += sum_t P_ts do_t,   dk_s += scale sum_t dS_ts q_t,   dq_t += scale sum_s dS_ts k_s  (7)

  The task owns dk and dv of its head and dq of the G query heads reading it, so no two threads
  write the same gradient (no atomics, nothing computed twice). Parallel over B * H tasks only:
  fewer than the numba threads leave threads idle (MQA at B = 1 runs on one).

Masks. Every mask kind allows, for the query at position p, one interval of keys lo(p) <= s <= hi(p):

    bidirectional  [0, S - 1]                 causal     [0, p]
    sliding_window [p - w + 1, p]             chunked    [c floor(p / c), p]
    prefix_lm      [0, max(p, P_b - 1)]       (s <= p or s < P_b)

with lo and hi non-decreasing in p. So a query tile sees the keys lo(first row) .. hi(last row)
and the key tiles outside that range, fully masked, are never visited; inside a tile, the keys
of each row are one range of columns, found once per row. A boolean mask array is tested entry
by entry; its tiles with no allowed entry are skipped too.

Optimizations:
* tile products by BLAS: ``np.dot(a, b, out)`` on 2-D contiguous tiles (numba calls scipy's BLAS
  gemm) for q k^T, P v, do v^T, P^T do, dS^T q and dS k; the row work (max, exp, sums) in loops.
  The inputs are copied head first and zero-padded to whole tiles, (B, HQ, T', K) and so on, so
  that every tile is a contiguous (block, K) slice and every product has the tile's full shape
  (the padding keys are masked, the padding query rows ignored). Tiles are 64 x 64 (smaller for
  heads wider than 64, ``default_block``): 64^3 products run at about 45 GFLOP/s on the 2-core
  reference machine, and are small enough that OpenBLAS does not start threads of its own
  inside the numba threads.
* the row work vectorises: the exps are ``numba_kernels.vecmath.vexp`` (libm's scalar exp is a
  call that stops LLVM from vectorising a loop), the row max and sum take eight partial results
  (``lane_max``, ``lane_sum``), and the loops run over the row's allowed keys as a contiguous
  view, the boolean mask array in a separate loop. At B = 8, T = 512, 4 heads of 32 (float32,
  causal, 2 cores) this took the forward from 30-39 ms to 16 ms and the backward from 39-48 ms
  to 33 ms; the tile products are now most of the time.
* scratch is allocated by the wrappers, one set of tiles per worker (``workers``, the numba
  threads): each worker runs the tasks w, w + W, w + 2W, ... (interleaved, so the longer causal
  tiles spread over the workers). Every array lives in NumPy memory, which ``tracemalloc`` sees.
* ``fastmath={"contract"}`` (FMAs, no unsafe flags: -inf must stay -inf); ``error_model="numpy"``
  (no ZeroDivisionError test before each division, which would also block vectorisation);
  ``cache=True``; float32 stays float32 (constants in the input dtype).

Outputs are allocated by the wrappers; kernels write into them and return nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from numba_kernels.vecmath import LANES, lane_max, lane_sum, vexp

_JIT = dict(parallel=True, cache=True, fastmath={"contract"}, error_model="numpy")
_JIT_SERIAL = dict(cache=True, fastmath={"contract"}, error_model="numpy")

GEMM_LIMIT = 64**3  # the largest tile product m n k that OpenBLAS runs on the calling thread

# mask kinds as integers, for the kernels
BIDIRECTIONAL, CAUSAL, SLIDING_WINDOW, CHUNKED, PREFIX_LM, ARRAY = range(6)
KIND_CODES = {
    "bidirectional": BIDIRECTIONAL,
    "causal": CAUSAL,
    "sliding_window": SLIDING_WINDOW,
    "chunked": CHUNKED,
    "prefix_lm": PREFIX_LM,
}


def mask_parameters(mask, B, HQ, T, S, window=None, chunk_size=None, prefix_len=None):
    """(kind code, window, chunk size, prefix lengths (B,) int64, mask array (B|1, HQ|1, T, S) uint8).

    ``mask``: a kind name (with its option) or a boolean array (T, S), (B, T, S) or (B, HQ, T, S)
    as ``ref.mixers.attention.masks`` validates them (this does not validate again). Unused
    options become 0 or 1 and the mask array a (1, 1, 1, 1) placeholder, so that every kernel
    takes the same argument types.
    """
    prefix = np.zeros(B, np.int64)
    marr = np.ones((1, 1, 1, 1), np.uint8)
    if isinstance(mask, np.ndarray):
        m = {2: mask[None, None], 3: mask[:, None], 4: mask}[mask.ndim]  # (B|1, HQ|1, T, S)
        return ARRAY, 1, 1, prefix, np.ascontiguousarray(m, dtype=np.uint8)
    kind = KIND_CODES[mask]
    if prefix_len is not None:
        prefix[:] = prefix_len
    return kind, int(window or 1), int(chunk_size or 1), prefix, marr


@njit(**_JIT_SERIAL)
def key_range(kind, p, S, window, chunk, prefix):
    """The keys lo..hi (inclusive) that the query at position p may attend to (all for an array)."""
    if kind == CAUSAL:
        return 0, p
    if kind == SLIDING_WINDOW:
        return max(p - window + 1, 0), p
    if kind == CHUNKED:
        return (p // chunk) * chunk, p
    if kind == PREFIX_LM:
        return 0, max(p, prefix - 1)
    return 0, S - 1


@njit(**_JIT_SERIAL)
def _tile_keys(kind, t0, t1, off, S, window, chunk, prefix):
    """The keys lo..hi seen by the queries t0 .. t1 - 1: lo of the first row, hi of the last."""
    lo, _ = key_range(kind, t0 + off, S, window, chunk, prefix)
    _, hi = key_range(kind, t1 - 1 + off, S, window, chunk, prefix)
    return lo, min(hi, S - 1)


@njit(**_JIT_SERIAL)
def _any_allowed(marr, bm, hm, t0, t1, s0, s1):
    """True if the boolean mask allows any entry of queries t0:t1 against keys s0:s1."""
    for t in range(t0, t1):
        row = marr[bm, hm, t]
        for s in range(s0, s1):
            if row[s]:
                return True
    return False


@njit(**_JIT_SERIAL)
def _row_keys(kind, t, off, S, window, chunk, prefix, s0, bk):
    """Columns jlo:jhi of the key tile starting at s0 inside the interval of query t; 0 <= jlo <=
    jhi <= bk (jlo = jhi: none)."""
    lo, hi = key_range(kind, t + off, S, window, chunk, prefix)
    hi = min(hi, S - 1)
    jlo = min(max(lo - s0, 0), bk)
    return jlo, max(min(hi - s0 + 1, bk), jlo)


# --- forward -------------------------------------------------------------------------------------


@njit(**_JIT_SERIAL)
def _forward_task(
    qh, kh, vh, scale, T, S, kind, window, chunk, prefix, marr, oh, lse, sc, acc, pv, m, l, lanes, b, hq, qt
):
    """Query tile qt of (b, hq): the online softmax (1)-(4) over its visible key tiles, then (5)."""
    bq, bk = sc.shape
    G = qh.shape[1] // kh.shape[1]
    h = hq // G
    off = S - T
    t0 = qt * bq
    t1 = min(t0 + bq, T)
    pb = prefix[b]
    bm = b if marr.shape[0] > 1 else 0
    hm = hq if marr.shape[1] > 1 else 0
    zero = scale * 0
    ninf = zero - np.inf  # -inf in the input dtype
    Q = qh[b, hq, t0 : t0 + bq]  # (bq, K)
    for i in range(bq):
        m[i] = ninf
        l[i] = zero
        acc[i] = zero
    lo, hi = _tile_keys(kind, t0, t1, off, S, window, chunk, pb)
    for kt in range(lo // bk, hi // bk + 1):
        s0 = kt * bk
        if kind == ARRAY and not _any_allowed(marr, bm, hm, t0, t1, s0, min(s0 + bk, S)):
            continue  # a fully masked tile
        np.dot(Q, kh[b, h, s0 : s0 + bk].T, sc)  # q k^T: (bq, bk)
        for i in range(bq):
            t = t0 + i
            row = sc[i]
            jlo, jhi = 0, 0
            if t < T:
                jlo, jhi = _row_keys(kind, t, off, S, window, chunk, pb, s0, bk)
            keys = row[jlo:jhi]  # the row's allowed keys in this tile
            n = jhi - jlo
            for j in range(n):
                keys[j] *= scale  # s_ts
            if kind == ARRAY:
                mrow = marr[bm, hm, t, s0 + jlo : s0 + jhi]
                for j in range(n):
                    if not mrow[j]:
                        keys[j] = ninf
            mnew = max(m[i], lane_max(keys, n, lanes))  # (1)
            if mnew == ninf:  # nothing allowed in this row so far
                row[:] = zero
                continue
            alpha = vexp(m[i] - mnew)  # exp(m_t - m'_t); 0 when m_t = -inf
            for j in range(n):
                keys[j] = vexp(keys[j] - mnew)  # (2)
            total = lane_sum(keys, n, lanes)
            row[:jlo] = zero  # off the row's keys: P = 0
            row[jhi:] = zero
            l[i] = alpha * l[i] + total  # (3)
            m[i] = mnew
            ai = acc[i]
            for c in range(ai.shape[0]):
                ai[c] *= alpha
        np.dot(sc, vh[b, h, s0 : s0 + bk], pv)  # P v: (bq, V)
        for i in range(bq):
            ai, pi = acc[i], pv[i]
            for c in range(ai.shape[0]):
                ai[c] += pi[c]  # (4)
    for i in range(t1 - t0):
        oi = oh[b, hq, t0 + i]
        if l[i] > 0:
            inv = 1 / l[i]
            for c in range(oi.shape[0]):
                oi[c] = acc[i, c] * inv
            lse[b, hq, t0 + i] = m[i] + np.log(l[i])  # (5)
        else:  # a fully masked row
            oi[:] = zero
            lse[b, hq, t0 + i] = ninf


@njit(**_JIT)
def _forward(qh, kh, vh, scale, T, S, kind, window, chunk, prefix, marr, oh, lse, sc, acc, pv, m, l, lanes):
    B, HQ, Tp, _ = qh.shape
    bq = sc.shape[1]
    nq = Tp // bq
    tasks = B * HQ * nq
    W = sc.shape[0]
    for w in prange(W):
        for task in range(w, tasks, W):
            _forward_task(
                qh, kh, vh, scale, T, S, kind, window, chunk, prefix, marr, oh, lse,
                sc[w], acc[w], pv[w], m[w], l[w], lanes[w], task // (HQ * nq), (task // nq) % HQ, task % nq,
            )  # fmt: skip


# --- backward ------------------------------------------------------------------------------------


@njit(**_JIT_SERIAL)
def _backward_task(
    qh, kh, vh, doh, lse, D, scale, T, S, kind, window, chunk, prefix, marr, dqh, dkh, dvh, P, dS, tq, tk, tv, b, h
):
    """dk, dv of key/value head h and dq of its G query heads, (6)-(7), tile by tile."""
    bq, bk = P.shape
    HQ, Tp = qh.shape[1], qh.shape[2]
    Sp = kh.shape[2]
    G = HQ // kh.shape[1]
    off = S - T
    pb = prefix[b]
    bm = b if marr.shape[0] > 1 else 0
    zero = scale * 0
    for kt in range(Sp // bk):
        s0 = kt * bk
        Kt, Vt = kh[b, h, s0 : s0 + bk], vh[b, h, s0 : s0 + bk]  # (bk, K), (bk, V)
        dKt, dVt = dkh[b, h, s0 : s0 + bk], dvh[b, h, s0 : s0 + bk]
        for hq in range(h * G, (h + 1) * G):
            hm = hq if marr.shape[1] > 1 else 0
            for qt in range(Tp // bq):
                t0 = qt * bq
                t1 = min(t0 + bq, T)
                lo, hi = _tile_keys(kind, t0, t1, off, S, window, chunk, pb)
                if s0 > hi or s0 + bk - 1 < lo:
                    continue  # a fully masked tile
                if kind == ARRAY and not _any_allowed(marr, bm, hm, t0, t1, s0, min(s0 + bk, S)):
                    continue
                Q, dO = qh[b, hq, t0 : t0 + bq], doh[b, hq, t0 : t0 + bq]  # (bq, K), (bq, V)
                np.dot(Q, Kt.T, P)  # q k^T
                np.dot(dO, Vt.T, dS)  # dP = do v^T
                for i in range(bq):
                    t = t0 + i
                    prow, drow = P[i], dS[i]
                    jlo, jhi = 0, 0
                    if t < T and lse[b, hq, t] > -np.inf:  # padding and fully masked rows: P = 0
                        jlo, jhi = _row_keys(kind, t, off, S, window, chunk, pb, s0, bk)
                    li, Di = lse[b, hq, t], D[b, hq, t]
                    pk, dsk = prow[jlo:jhi], drow[jlo:jhi]  # the row's allowed keys in this tile
                    for j in range(jhi - jlo):
                        p = vexp(scale * pk[j] - li)  # (6): P_ts
                        pk[j] = p
                        dsk[j] = p * (dsk[j] - Di)  # (6): dS_ts
                    if kind == ARRAY:
                        mrow = marr[bm, hm, t, s0 + jlo : s0 + jhi]
                        for j in range(jhi - jlo):
                            if not mrow[j]:
                                pk[j] = zero
                                dsk[j] = zero
                    prow[:jlo] = zero  # off the row's keys: P = dS = 0
                    prow[jhi:] = zero
                    drow[:jlo] = zero
                    drow[jhi:] = zero
                np.dot(P.T, dO, tv)  # (7): sum_t P_ts do_t
                np.dot(dS.T, Q, tk)  # (7): sum_t dS_ts q_t
                np.dot(dS, Kt, tq)  # (7): sum_s dS_ts k_s
                for j in range(bk):
                    for c in range(tv.shape[1]):
                        dVt[j, c] += tv[j, c]
                    for c in range(tk.shape[1]):
                        dKt[j, c] += scale * tk[j, c]
                dQt = dqh[b, hq, t0 : t0 + bq]
                for i in range(bq):
                    for c in range(tq.shape[1]):
                        dQt[i, c] += scale * tq[i, c]


@njit(**_JIT)
def _backward(
    qh, kh, vh, doh, lse, D, scale, T, S, kind, window, chunk, prefix, marr, dqh, dkh, dvh, P, dS, tq, tk, tv
):
    B, H = kh.shape[0], kh.shape[1]
    tasks = B * H
    W = P.shape[0]
    for w in prange(W):
        for task in range(w, tasks, W):
            _backward_task(
                qh, kh, vh, doh, lse, D, scale, T, S, kind, window, chunk, prefix, marr, dqh, dkh, dvh,
                P[w], dS[w], tq[w], tk[w], tv[w], task // H, task % H,
            )  # fmt: skip


# --- wrappers: the arguments of the NumPy reference -----------------------------------------------


def default_block(K: int, V: int) -> int:
    """Rows (and keys) per tile: 64, or fewer for wide heads so that every tile product has
    m n k <= ``GEMM_LIMIT``. OpenBLAS (scipy's, which numba calls) runs a larger product on its
    own threads, which then fight the numba threads for the cores: tiles of 128 at K = 64 ran
    30x slower on the 2-core reference machine."""
    block = 64
    while block > 8 and block * block * max(K, V) > GEMM_LIMIT:
        block //= 2
    return block


def workers(tasks: int) -> int:
    """How many workers (sets of scratch tiles) to use: the numba threads, at most one per task."""
    from numba import get_num_threads

    return max(1, min(get_num_threads(), tasks))


def _check_blocks(block_q, block_k, K, V):
    """The tile sizes: ``default_block`` for None, else integers >= 1."""
    block_q = default_block(K, V) if block_q is None else block_q
    block_k = default_block(K, V) if block_k is None else block_k
    for value, name in ((block_q, "block_q"), (block_k, "block_k")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(block_q), int(block_k)


def _padded_head_first(x, block):
    """(B, T, H, X) -> (B, H, T', X), T' the next multiple of ``block``, zeros after T."""
    B, T, H, X = x.shape
    out = np.zeros((B, H, -(-T // block) * block, X), x.dtype)
    out[:, :, :T] = np.moveaxis(x, 1, 2)
    return out


def attention_cpu(q, k, v, scale, mask="causal", window=None, chunk_size=None, prefix_len=None,
                  block_q=None, block_k=None):  # fmt: skip
    """The forward: ``(o, lse)``, o (B, T, HQ, V) and the log-sum-exp of every row (B, T, HQ).

    ``mask``: a kind name with its option, or a boolean array, as ``attention_parallel`` takes
    them (already validated). ``block_q``, ``block_k``: the tile sizes (the same result for any;
    None: ``default_block``).
    """
    B, T, HQ, K = q.shape
    _, S, H, V = v.shape
    bq, bk = _check_blocks(block_q, block_k, K, V)
    kind, window, chunk, prefix, marr = mask_parameters(mask, B, HQ, T, S, window, chunk_size, prefix_len)
    dtype = q.dtype
    qh, kh, vh = _padded_head_first(q, bq), _padded_head_first(k, bk), _padded_head_first(v, bk)
    oh = np.empty((B, HQ, qh.shape[2], V), dtype)
    lse = np.empty((B, HQ, qh.shape[2]), dtype)
    W = workers(B * HQ * (qh.shape[2] // bq))
    sc, acc, pv = np.empty((W, bq, bk), dtype), np.empty((W, bq, V), dtype), np.empty((W, bq, V), dtype)
    m, l, lanes = np.empty((W, bq), dtype), np.empty((W, bq), dtype), np.empty((W, LANES), dtype)
    _forward(qh, kh, vh, dtype.type(scale), T, S, kind, window, chunk, prefix, marr, oh, lse, sc, acc, pv, m, l, lanes)
    o = np.ascontiguousarray(np.moveaxis(oh[:, :, :T], 1, 2))  # (B, T, HQ, V)
    return o, np.ascontiguousarray(np.moveaxis(lse[:, :, :T], 1, 2))  # (B, T, HQ)


def attention_cpu_backward(q, k, v, o, lse, do, scale, mask="causal", window=None, chunk_size=None,
                           prefix_len=None, block_q=None, block_k=None):  # fmt: skip
    """Gradients ``(dq, dk, dv)`` from the forward's ``o`` and ``lse``; dk, dv summed over each group."""
    B, T, HQ, K = q.shape
    _, S, H, V = v.shape
    bq, bk = _check_blocks(block_q, block_k, K, V)
    kind, window, chunk, prefix, marr = mask_parameters(mask, B, HQ, T, S, window, chunk_size, prefix_len)
    dtype = q.dtype
    qh, doh = _padded_head_first(q, bq), _padded_head_first(do, bq)
    kh, vh = _padded_head_first(k, bk), _padded_head_first(v, bk)
    lse_h = np.full((B, HQ, qh.shape[2]), -np.inf, dtype)
    lse_h[:, :, :T] = np.moveaxis(lse, 1, 2)
    D = np.zeros((B, HQ, qh.shape[2]), dtype)
    D[:, :, :T] = np.moveaxis(np.einsum("bthv,bthv->bth", do, o), 1, 2)  # (6): D_t = do_t . o_t
    dqh, dkh, dvh = np.zeros_like(qh), np.zeros_like(kh), np.zeros_like(vh)
    W = workers(B * H)
    P, dS = np.empty((W, bq, bk), dtype), np.empty((W, bq, bk), dtype)
    tq, tk, tv = np.empty((W, bq, K), dtype), np.empty((W, bk, K), dtype), np.empty((W, bk, V), dtype)
    _backward(qh, kh, vh, doh, lse_h, D, dtype.type(scale), T, S, kind, window, chunk, prefix, marr,
              dqh, dkh, dvh, P, dS, tq, tk, tv)  # fmt: skip
    dq = np.ascontiguousarray(np.moveaxis(dqh[:, :, :T], 1, 2))  # (B, T, HQ, K)
    dk = np.ascontiguousarray(np.moveaxis(dkh[:, :, :S], 1, 2))  # (B, S, H, K)
    dv = np.ascontiguousarray(np.moveaxis(dvh[:, :, :S], 1, 2))  # (B, S, H, V)
    return dq, dk, dv
