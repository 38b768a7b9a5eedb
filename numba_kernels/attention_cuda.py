"""Softmax attention on a CUDA GPU (numba-cuda): FlashAttention-style tiles, forward and backward.

Same math, arguments and results as ``numba_kernels.attention_cpu`` and
``ref.mixers.attention.attention_parallel``: q (B, T, HQ, K), k (B, S, H, K), v (B, S, H, V),
o (B, T, HQ, V), lse (B, T, HQ); query head h reads key/value head h // (HQ / H); query t sits at
position p = t + S - T; a fully masked row gives o = 0, lse = -inf and no gradient.

Naive loop (the contract), as in ``attention_cpu``:

    for b, hq, t:   allowed keys A = {s : M[p, s]},  s_ts = scale * q_t . k_s  for s in A
                    lse_t = log sum_{s in A} exp(s_ts);   o_t = sum_{s in A} exp(s_ts - lse_t) v_s

Design: tiles in shared memory, register-blocked products. A block of TY x TX threads owns a
tile of BR = TY RM rows; the other side streams through shared memory BC = TX CN columns at a
time (loaded by the whole block, consecutive threads reading consecutive elements of a row, with
``syncthreads`` around each tile). Thread (ty, tx) computes the RM x CN entries of rows
ty + TY i and columns tx + TX j of every score tile in registers, reading RM + CN values from
shared memory per RM CN multiply-adds (a block-level matrix product: the CUDA cores' way, numba
has no tensor cores); the TX lanes of a row combine their row maxima and sums with shuffles
(``cuda_lanes``). Shared tiles are padded to K + 1 and V + 1 columns, so that reads down a column
by consecutive threads fall in different banks. No (T, S) matrix exists.

* ``forward``, a block per (query tile, b * HQ + hq): the online softmax over the visible key
  tiles. Per tile the scores S = scale Q K^T (RM x CN per thread), then per row

      m' = max(m, max_s s_ts),  l = exp(m - m') l + sum_s exp(s_ts - m'),
      acc = exp(m - m') acc + sum_s exp(s_ts - m') v_s                                    (1)

  with P = exp(S - m') written to shared memory for the product P V (acc holds RM x ceil(V/TX)
  entries per thread); at the end o_t = acc / l, lse_t = m + log l.                        (2)
* ``row_dots``, a thread per (b, hq, t): D_t = do_t . o_t                                   (3)
* ``backward_dq``, a block per (query tile, b * HQ + hq): per visible key tile

      P_ts = exp(s_ts - lse_t),  dS_ts = P_ts (do_t . v_s - D_t),  dq_t = scale sum_s dS_ts k_s  (4)

  (S = Q K^T and dP = dO V^T as register-blocked products, dS through shared memory for dS K).
* ``backward_dkdv``, a block per (key tile, b * H + h), its rows the keys: the query tiles of its
  G query heads streamed through shared memory,

      dv_s = sum_t P_ts do_t,   dk_s = scale sum_t dS_ts q_t                                  (5)

  (S^T = K Q^T and dP^T = V dO^T, then P^T and dS^T through shared memory for P^T dO and
  dS^T Q.) FlashAttention-2's split without atomics: P and dS are computed in both kernels.

Masks as in ``attention_cpu``: each kind allows one interval of keys lo(p) <= s <= hi(p), lo and
hi non-decreasing in p, so a query tile sees the keys lo(first row) .. hi(last row) and the fully
masked tiles outside are never loaded (the test is the same for every thread of a block). A
boolean mask array (uint8 here) is tested entry by entry, and a tile in which no thread has an
allowed entry is skipped (``syncthreads_or``).

Sizes. Shared arrays have compile-time shapes, so kernels are built per (dtype, K, V) and tile
shape: ``kernels(dtype, K, V)`` picks, for each of the three tiled kernels, the first shape of
``CONFIGS`` whose shared arrays fit the 48 KiB a block may declare statically (float32, K = V = 64:
forward 64 x 32 tiles, backward 32 x 32). K and V are at most ``MAX_DIM`` = 128 (larger raise
ValueError). The simulator tests pass small shapes (``tile=(TY, TX, RM, CN)``). Numerics: the
CUDA target contracts a * b + c into FMAs, so results differ from the CPU in the last bits;
float32 kernels compute in float32 (``tests/test_cuda_ptx.py``). Host wrappers take and return
NumPy arrays; the ``launch_*`` functions work on device arrays.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import config, cuda

from numba_kernels.attention_cpu import ARRAY, CAUSAL, CHUNKED, PREFIX_LM, SLIDING_WINDOW, mask_parameters
from numba_kernels.cuda_lanes import shfl_xor

MAX_DIM = 128  # the largest K or V
SHARED_BYTES = 48 * 1024  # the static shared memory a block may declare
# Tile shapes (TY, TX, RM, CN), preferred first: TY x TX threads, RM x CN entries per thread.
CONFIGS = ((8, 16, 8, 4), (8, 16, 8, 2), (8, 16, 4, 2), (8, 16, 4, 1), (8, 16, 2, 1), (8, 16, 1, 1), (8, 8, 1, 1),
           (4, 8, 1, 1))  # fmt: skip
ROW_THREADS = 128  # threads per block of ``row_dots``


def shared_bytes(kernel: str, itemsize: int, BR: int, BC: int, K: int, V: int) -> int:
    """The shared memory of ``kernel`` ("forward", "dq" or "dkdv") for tiles of BR rows and BC
    columns: the arrays each one declares (see ``_build``)."""
    if kernel == "forward":  # Q (BR, K+1); K (BC, K+1), then P (BR, BC+1), in one array; V (BC, V)
        n = BR * (K + 1) + max(BC * (K + 1), BR * (BC + 1)) + BC * V
    elif kernel == "dq":  # Q, dO (BR, K+1 | V+1); K (BC, K+1); V (BC, V+1), then dS (BR, BC+1)
        n = BR * (K + 1) + BR * (V + 1) + BC * (K + 1) + max(BC * (V + 1), BR * (BC + 1))
    else:  # K, V (BR, K+1 | V+1); Q, dO (BC, K+1 | V+1); P^T, then dS^T (BR, BC+1); lse, D (BC)
        n = BR * (K + 1) + BR * (V + 1) + BC * (K + 1) + BC * (V + 1) + BR * (BC + 1) + 2 * BC
    return n * itemsize


def kernels(dtype, K: int, V: int, tile: tuple | None = None) -> SimpleNamespace:
    """Every kernel of this module for ``dtype`` (float32 or float64) and head sizes K, V, compiled
    lazily at launch; ``tile`` = (TY, TX, RM, CN) for all three tiled kernels, or by default the
    first of ``CONFIGS`` that fits each one's shared memory."""
    name = np.dtype(dtype).name
    itemsize = np.dtype(dtype).itemsize
    check_dims(K, V)
    if tile is not None:
        TY, TX, RM, CN = (int(x) for x in tile)
        if TX not in (1, 2, 4, 8, 16, 32) or min(TY, RM, CN) < 1:
            raise ValueError(f"tile: expected (TY, TX, RM, CN) >= 1 with TX a power of two up to 32, got {tile!r}")
        if not config.ENABLE_CUDASIM and (TY * TX) % 32:
            raise ValueError(f"tile: a block must be whole warps (TY * TX a multiple of 32), got {tile!r}")
        shapes = []
        for kernel in ("forward", "dq", "dkdv"):
            need = shared_bytes(kernel, itemsize, TY * RM, TX * CN, K, V)
            if need > SHARED_BYTES:
                raise ValueError(f"tile: {tile!r} needs {need} bytes of shared memory in {kernel}, "
                                 f"at most {SHARED_BYTES}")  # fmt: skip
            shapes.append((TY, TX, RM, CN))
    else:
        shapes = [next(c for c in CONFIGS if shared_bytes(kernel, itemsize, c[0] * c[2], c[1] * c[3], K, V)
                       <= SHARED_BYTES) for kernel in ("forward", "dq", "dkdv")]  # fmt: skip
    return _build(name, K, V, *shapes)


@functools.cache
def _build(dtype_name: str, K: int, V: int, fwd: tuple, dqs: tuple, dkvs: tuple) -> SimpleNamespace:
    real = np.dtype(dtype_name).type  # np.float32 or np.float64: constants and local arrays in the input dtype
    NINF = real(-np.inf)
    ZERO = real(0)
    KP, VP = K + 1, V + 1  # padded row lengths of the shared tiles

    @cuda.jit(device=True, inline="always")
    def allowed(kind, lo, hi, marr, b, bm, hm, t, s):
        """May query row t attend to key s? (lo <= s <= hi <= S - 1, and the mask array's entry)"""
        return lo[b, t] <= s <= hi[b, t] and (kind != ARRAY or marr[bm, hm, t, s] != 0)

    @cuda.jit(device=True, inline="always")
    def load_rows(dst, src, b, first, head, limit, tid, nt):
        """dst[r, c] = src[b, first + r, head, c] for every row of dst (zeros from row ``limit`` of
        src on), shared by the block's nt threads: consecutive threads read consecutive c."""
        n = src.shape[3]
        for idx in range(tid, dst.shape[0] * n, nt):
            r, c = idx // n, idx % n
            dst[r, c] = src[b, first + r, head, c] if first + r < limit else ZERO

    @cuda.jit(device=True, inline="always")
    def outer_add(acc, xr, xc):
        """acc[i, j] += xr[i] xc[j]: one step of a register-blocked product (fully unrolled)."""
        for i in range(xr.shape[0]):
            for j in range(xc.shape[0]):
                acc[i, j] += xr[i] * xc[j]

    # --- forward -------------------------------------------------------------------------------
    TY, TX, RM, CN = fwd
    NT, BR, BC = TY * TX, TY * RM, TX * CN
    VJ = -(-V // TX)  # value columns per thread: v = tx + TX jj
    KP_LEN = max(BC * KP, BR * (BC + 1))

    @cuda.jit
    def forward(q, k, v, scale, kind, lo, hi, marr, o, lse):
        """A block per (query tile, b * HQ + hq): (1), (2)."""
        B, T, HQ, _ = q.shape
        S, H = k.shape[1], k.shape[2]
        bh = cuda.blockIdx.y
        b, hq = bh // HQ, bh % HQ
        h = hq // (HQ // H)
        bm = b if marr.shape[0] > 1 else 0
        hm = hq if marr.shape[1] > 1 else 0
        tid = cuda.threadIdx.x
        ty, tx = tid // TX, tid % TX
        t0 = cuda.blockIdx.x * BR
        t1 = min(t0 + BR, T)
        Qs = cuda.shared.array((BR, KP), real)
        KPs = cuda.shared.array(KP_LEN, real)  # K (BC, KP), then P (BR, BC + 1)
        Vs = cuda.shared.array((BC, V), real)
        buf = cuda.shared.array(NT, real)  # the lane exchanges under the simulator
        sc = cuda.local.array((RM, CN), real)  # this thread's scores, then probabilities
        acc = cuda.local.array((RM, VJ), real)
        m = cuda.local.array(RM, real)
        l = cuda.local.array(RM, real)  # this thread's part of the row sums
        xr = cuda.local.array(RM, real)  # a column of the row side, then of P
        xk = cuda.local.array(CN, real)  # a column of the key side
        xc = cuda.local.array(VJ, real)  # a row of V
        load_rows(Qs, q, b, t0, hq, T, tid, NT)
        for i in range(RM):
            m[i] = NINF
            l[i] = ZERO
            for jj in range(VJ):
                acc[i, jj] = ZERO
        for kt in range(lo[b, t0] // BC, hi[b, t1 - 1] // BC + 1):  # the visible key tiles
            s0 = kt * BC
            if kind == ARRAY:
                any_here = 0  # an int32 for syncthreads_or
                for i in range(RM):
                    t = t0 + ty + TY * i
                    for j in range(CN):
                        if t < T and allowed(kind, lo, hi, marr, b, bm, hm, t, s0 + tx + TX * j):
                            any_here = 1
                if not cuda.syncthreads_or(any_here):
                    continue  # a fully masked tile (the same answer in every thread)
            cuda.syncthreads()  # every thread is done with the previous tile's P and V
            for idx in range(tid, BC * K, NT):
                c, d = idx // K, idx % K
                KPs[c * KP + d] = k[b, s0 + c, h, d] if s0 + c < S else ZERO
            load_rows(Vs, v, b, s0, h, S, tid, NT)
            cuda.syncthreads()
            # S = Q K^T on rows ty + TY i, columns tx + TX j
            for i in range(RM):
                for j in range(CN):
                    sc[i, j] = ZERO
            for d in range(K):
                for i in range(RM):
                    xr[i] = Qs[ty + TY * i, d]
                for j in range(CN):
                    xk[j] = KPs[(tx + TX * j) * KP + d]
                outer_add(sc, xr, xk)
            # (1) per row: the mask, the new maximum over the row's TX lanes, the rescaling
            for i in range(RM):
                t = t0 + ty + TY * i
                mx = NINF
                for j in range(CN):
                    x = NINF
                    if t < T and allowed(kind, lo, hi, marr, b, bm, hm, t, s0 + tx + TX * j):
                        x = scale * sc[i, j]  # s_ts
                    sc[i, j] = x
                    mx = max(mx, x)
                off = TX // 2
                while off > 0:
                    mx = max(mx, shfl_xor(buf, tid, tx, mx, off))
                    off //= 2
                mnew = max(m[i], mx)
                alpha = math.exp(m[i] - mnew) if mnew > NINF else ZERO  # 0 when m = -inf
                rowsum = ZERO
                for j in range(CN):
                    p = math.exp(sc[i, j] - mnew) if mnew > NINF else ZERO  # 0 off the mask
                    sc[i, j] = p
                    rowsum += p
                l[i] = alpha * l[i] + rowsum
                for jj in range(VJ):
                    acc[i, jj] *= alpha
                m[i] = mnew
            cuda.syncthreads()  # every thread is done with K: P takes its place
            for i in range(RM):
                for j in range(CN):
                    KPs[(ty + TY * i) * (BC + 1) + tx + TX * j] = sc[i, j]
            cuda.syncthreads()
            # acc += P V on rows ty + TY i, value columns tx + TX jj
            for c in range(BC):
                for i in range(RM):
                    xr[i] = KPs[(ty + TY * i) * (BC + 1) + c]
                for jj in range(VJ):
                    xc[jj] = Vs[c, min(tx + TX * jj, V - 1)]
                outer_add(acc, xr, xc)
        # (2): the row sums over the row's lanes, then o and lse
        for i in range(RM):
            li = l[i]
            off = TX // 2
            while off > 0:
                li += shfl_xor(buf, tid, tx, li, off)
                off //= 2
            t = t0 + ty + TY * i
            if t < T:
                for jj in range(VJ):
                    if tx + TX * jj < V:
                        o[b, t, hq, tx + TX * jj] = acc[i, jj] / li if li > ZERO else ZERO
                if tx == 0:
                    lse[b, t, hq] = m[i] + math.log(li) if li > ZERO else NINF

    @cuda.jit
    def row_dots(do, o, D):
        """A thread per (b, t, hq): (3) D_t = do_t . o_t."""
        i = cuda.grid(1)
        B, T, HQ, Vn = o.shape
        if i < B * T * HQ:
            b, t, hq = i // (T * HQ), (i // HQ) % T, i % HQ
            acc = ZERO
            for c in range(Vn):
                acc += do[b, t, hq, c] * o[b, t, hq, c]
            D[b, t, hq] = acc

    # --- backward: dq ----------------------------------------------------------------------------
    QTY, QTX, QRM, QCN = dqs
    QNT, QBR, QBC = QTY * QTX, QTY * QRM, QTX * QCN
    KJ = -(-K // QTX)  # key columns per thread: c = tx + QTX jj
    VD_LEN = max(QBC * VP, QBR * (QBC + 1))

    @cuda.jit
    def backward_dq(q, k, v, do, lse, D, scale, kind, lo, hi, marr, dq):
        """A block per (query tile, b * HQ + hq): (4)."""
        B, T, HQ, _ = q.shape
        S, H = k.shape[1], k.shape[2]
        bh = cuda.blockIdx.y
        b, hq = bh // HQ, bh % HQ
        h = hq // (HQ // H)
        bm = b if marr.shape[0] > 1 else 0
        hm = hq if marr.shape[1] > 1 else 0
        tid = cuda.threadIdx.x
        ty, tx = tid // QTX, tid % QTX
        t0 = cuda.blockIdx.x * QBR
        t1 = min(t0 + QBR, T)
        Qs = cuda.shared.array((QBR, KP), real)
        dOs = cuda.shared.array((QBR, VP), real)
        Ks = cuda.shared.array((QBC, KP), real)
        VDs = cuda.shared.array(VD_LEN, real)  # V (BC, VP), then dS (BR, BC + 1)
        sc = cuda.local.array((QRM, QCN), real)  # scores, then dS
        dp = cuda.local.array((QRM, QCN), real)  # do_t . v_s
        acc = cuda.local.array((QRM, KJ), real)
        lse_r = cuda.local.array(QRM, real)  # per row: lse (-inf: no gradient) and D
        D_r = cuda.local.array(QRM, real)
        xr = cuda.local.array(QRM, real)  # a column of the row side
        xs = cuda.local.array(QCN, real)  # a column of the key side
        xc = cuda.local.array(KJ, real)  # a row of K
        load_rows(Qs, q, b, t0, hq, T, tid, QNT)
        load_rows(dOs, do, b, t0, hq, T, tid, QNT)
        for i in range(QRM):
            t = t0 + ty + QTY * i
            lse_r[i] = lse[b, t, hq] if t < T else NINF
            D_r[i] = D[b, t, hq] if t < T else ZERO
            for jj in range(KJ):
                acc[i, jj] = ZERO
        for kt in range(lo[b, t0] // QBC, hi[b, t1 - 1] // QBC + 1):
            s0 = kt * QBC
            if kind == ARRAY:
                any_here = 0
                for i in range(QRM):
                    t = t0 + ty + QTY * i
                    for j in range(QCN):
                        if t < T and allowed(kind, lo, hi, marr, b, bm, hm, t, s0 + tx + QTX * j):
                            any_here = 1
                if not cuda.syncthreads_or(any_here):
                    continue
            cuda.syncthreads()  # every thread is done with the previous tile's K and dS
            load_rows(Ks, k, b, s0, h, S, tid, QNT)
            for idx in range(tid, QBC * V, QNT):
                c, d = idx // V, idx % V
                VDs[c * VP + d] = v[b, s0 + c, h, d] if s0 + c < S else ZERO
            cuda.syncthreads()
            for i in range(QRM):
                for j in range(QCN):
                    sc[i, j] = ZERO
                    dp[i, j] = ZERO
            for d in range(K):  # S = Q K^T
                for i in range(QRM):
                    xr[i] = Qs[ty + QTY * i, d]
                for j in range(QCN):
                    xs[j] = Ks[tx + QTX * j, d]
                outer_add(sc, xr, xs)
            for d in range(V):  # dP = dO V^T
                for i in range(QRM):
                    xr[i] = dOs[ty + QTY * i, d]
                for j in range(QCN):
                    xs[j] = VDs[(tx + QTX * j) * VP + d]
                outer_add(dp, xr, xs)
            for i in range(QRM):
                t = t0 + ty + QTY * i
                for j in range(QCN):
                    ds = ZERO
                    if lse_r[i] > NINF and allowed(kind, lo, hi, marr, b, bm, hm, t, s0 + tx + QTX * j):
                        p = math.exp(scale * sc[i, j] - lse_r[i])  # P_ts
                        ds = p * (dp[i, j] - D_r[i])  # dS_ts
                    sc[i, j] = ds
            cuda.syncthreads()  # every thread is done with V: dS takes its place
            for i in range(QRM):
                for j in range(QCN):
                    VDs[(ty + QTY * i) * (QBC + 1) + tx + QTX * j] = sc[i, j]
            cuda.syncthreads()
            for c in range(QBC):  # acc += dS K
                for i in range(QRM):
                    xr[i] = VDs[(ty + QTY * i) * (QBC + 1) + c]
                for jj in range(KJ):
                    xc[jj] = Ks[c, min(tx + QTX * jj, K - 1)]
                outer_add(acc, xr, xc)
        for i in range(QRM):
            t = t0 + ty + QTY * i
            if t < T:
                for jj in range(KJ):
                    if tx + QTX * jj < K:
                        dq[b, t, hq, tx + QTX * jj] = scale * acc[i, jj]  # (4)

    # --- backward: dk, dv ------------------------------------------------------------------------
    KTY, KTX, KRM, KCN = dkvs
    KNT, KBR, KBC = KTY * KTX, KTY * KRM, KTX * KCN
    DKJ, DVJ = -(-K // KTX), -(-V // KTX)
    KBC1 = KBC + 1

    @cuda.jit
    def backward_dkdv(q, k, v, do, lse, D, scale, kind, lo, hi, marr, dk, dv):
        """A block per (key tile, b * H + h), its rows the keys: (5), over the G query heads of h."""
        B, T, HQ, _ = q.shape
        S, H = k.shape[1], k.shape[2]
        G = HQ // H
        bh = cuda.blockIdx.y
        b, h = bh // H, bh % H
        bm = b if marr.shape[0] > 1 else 0
        tid = cuda.threadIdx.x
        ty, tx = tid // KTX, tid % KTX
        s0 = cuda.blockIdx.x * KBR
        s_last = min(s0 + KBR, S) - 1
        Ks = cuda.shared.array((KBR, KP), real)
        Vs = cuda.shared.array((KBR, VP), real)
        Qs = cuda.shared.array((KBC, KP), real)
        dOs = cuda.shared.array((KBC, VP), real)
        PT = cuda.shared.array((KBR, KBC1), real)  # P^T, then dS^T
        Ls = cuda.shared.array(KBC, real)  # lse of the tile's queries (-inf: no gradient)
        Ds = cuda.shared.array(KBC, real)
        sc = cuda.local.array((KRM, KCN), real)  # S^T, then P^T
        dp = cuda.local.array((KRM, KCN), real)  # dP^T, then dS^T
        dka = cuda.local.array((KRM, DKJ), real)
        dva = cuda.local.array((KRM, DVJ), real)
        xr = cuda.local.array(KRM, real)  # a column of the key side, then of P^T or dS^T
        xt = cuda.local.array(KCN, real)  # a column of the query side
        xk = cuda.local.array(DKJ, real)  # a row of Q
        xv = cuda.local.array(DVJ, real)  # a row of dO
        load_rows(Ks, k, b, s0, h, S, tid, KNT)
        load_rows(Vs, v, b, s0, h, S, tid, KNT)
        for i in range(KRM):
            for jj in range(DKJ):
                dka[i, jj] = ZERO
            for jj in range(DVJ):
                dva[i, jj] = ZERO
        for hq in range(h * G, (h + 1) * G):
            hm = hq if marr.shape[1] > 1 else 0
            for qt in range((T + KBC - 1) // KBC):
                t0 = qt * KBC
                t1 = min(t0 + KBC, T)
                if hi[b, t1 - 1] < s0 or lo[b, t0] > s_last:
                    continue  # no query of the tile sees these keys (the same in every thread)
                if kind == ARRAY:
                    any_here = 0
                    for i in range(KRM):
                        s = s0 + ty + KTY * i
                        for j in range(KCN):
                            t = t0 + tx + KTX * j
                            if s < S and t < T and allowed(kind, lo, hi, marr, b, bm, hm, t, s):
                                any_here = 1
                    if not cuda.syncthreads_or(any_here):
                        continue
                cuda.syncthreads()  # every thread is done with the previous tile
                load_rows(Qs, q, b, t0, hq, T, tid, KNT)
                load_rows(dOs, do, b, t0, hq, T, tid, KNT)
                for r in range(tid, KBC, KNT):
                    Ls[r] = lse[b, t0 + r, hq] if t0 + r < T else NINF
                    Ds[r] = D[b, t0 + r, hq] if t0 + r < T else ZERO
                cuda.syncthreads()
                for i in range(KRM):
                    for j in range(KCN):
                        sc[i, j] = ZERO
                        dp[i, j] = ZERO
                for d in range(K):  # S^T = K Q^T
                    for i in range(KRM):
                        xr[i] = Ks[ty + KTY * i, d]
                    for j in range(KCN):
                        xt[j] = Qs[tx + KTX * j, d]
                    outer_add(sc, xr, xt)
                for d in range(V):  # dP^T = V dO^T
                    for i in range(KRM):
                        xr[i] = Vs[ty + KTY * i, d]
                    for j in range(KCN):
                        xt[j] = dOs[tx + KTX * j, d]
                    outer_add(dp, xr, xt)
                for i in range(KRM):
                    s = s0 + ty + KTY * i
                    for j in range(KCN):
                        c = tx + KTX * j
                        p = ZERO
                        ds = ZERO
                        if s < S and Ls[c] > NINF and allowed(kind, lo, hi, marr, b, bm, hm, t0 + c, s):
                            p = math.exp(scale * sc[i, j] - Ls[c])  # P_ts
                            ds = p * (dp[i, j] - Ds[c])  # dS_ts
                        sc[i, j] = p
                        dp[i, j] = ds
                        PT[ty + KTY * i, c] = p
                cuda.syncthreads()
                for c in range(KBC):  # dv += P^T dO
                    for i in range(KRM):
                        xr[i] = PT[ty + KTY * i, c]
                    for jj in range(DVJ):
                        xv[jj] = dOs[c, min(tx + KTX * jj, V - 1)]
                    outer_add(dva, xr, xv)
                cuda.syncthreads()  # every thread is done with P^T: dS^T takes its place
                for i in range(KRM):
                    for j in range(KCN):
                        PT[ty + KTY * i, tx + KTX * j] = dp[i, j]
                cuda.syncthreads()
                for c in range(KBC):  # dk += dS^T Q
                    for i in range(KRM):
                        xr[i] = PT[ty + KTY * i, c]
                    for jj in range(DKJ):
                        xk[jj] = Qs[c, min(tx + KTX * jj, K - 1)]
                    outer_add(dka, xr, xk)
        for i in range(KRM):
            s = s0 + ty + KTY * i
            if s < S:
                for jj in range(DKJ):
                    if tx + KTX * jj < K:
                        dk[b, s, h, tx + KTX * jj] = scale * dka[i, jj]  # (5)
                for jj in range(DVJ):
                    if tx + KTX * jj < V:
                        dv[b, s, h, tx + KTX * jj] = dva[i, jj]

    return SimpleNamespace(forward=forward, row_dots=row_dots, backward_dq=backward_dq, backward_dkdv=backward_dkdv,
                           shapes=dict(forward=fwd, dq=dqs, dkdv=dkvs))  # fmt: skip


# --- launchers on device arrays ----------------------------------------------------------------


def check_dims(K: int, V: int) -> None:
    """K and V must fit the shared tiles of the kernels (``MAX_DIM``)."""
    for n, name, arg in ((K, "K", "q"), (V, "V", "v")):
        if n > MAX_DIM:
            raise ValueError(
                f"{arg}: the CUDA kernels hold tiles of rows in shared memory: expected {name} <= {MAX_DIM}, "
                f"got {name} = {n}"
            )


def _launch_shape(shape, n_rows):
    """(blocks along the rows, threads per block) of a tiled kernel of tile shape (TY, TX, RM, CN)
    over n_rows rows."""
    TY, TX, RM, _ = shape
    return max(1, math.ceil(n_rows / (TY * RM))), TY * TX


def launch_forward(q, k, v, scale, mask_args, o, lse, tile=None):
    """o and lse; q, k, v, o, lse device arrays; ``mask_args`` = (kind, lo, hi, mask array), the
    last three on the device (``_mask_to_device``)."""
    B, T, HQ, K = q.shape
    ks = kernels(q.dtype, K, v.shape[3], tile)
    blocks, threads = _launch_shape(ks.shapes["forward"], T)
    ks.forward[(blocks, B * HQ), threads](q, k, v, q.dtype.type(scale), *mask_args, o, lse)


def launch_backward(q, k, v, o, lse, do, scale, mask_args, dq, dk, dv, tile=None):
    """dq, dk, dv from the forward's o and lse (device arrays)."""
    B, T, HQ, K = q.shape
    _, S, H, V = v.shape
    ks = kernels(q.dtype, K, V, tile)
    scale = q.dtype.type(scale)
    D = cuda.device_array((B, T, HQ), q.dtype)
    ks.row_dots[max(1, math.ceil(B * T * HQ / ROW_THREADS)), ROW_THREADS](do, o, D)
    blocks, threads = _launch_shape(ks.shapes["dq"], T)
    ks.backward_dq[(blocks, B * HQ), threads](q, k, v, do, lse, D, scale, *mask_args, dq)
    blocks, threads = _launch_shape(ks.shapes["dkdv"], S)
    ks.backward_dkdv[(blocks, B * H), threads](q, k, v, do, lse, D, scale, *mask_args, dk, dv)


# --- host wrappers: the arguments of attention_cpu ---------------------------------------------


def key_intervals(kind, B, T, S, window, chunk, prefix):
    """lo, hi (B, T) int64: the keys lo .. hi (inclusive) query t may attend to (all for an array),
    the rules of ``attention_cpu.key_range`` for every row at once."""
    p = np.arange(T, dtype=np.int64) + (S - T)  # (T,): the position of each query
    lo, hi = np.zeros((B, T), np.int64), np.broadcast_to(p, (B, T)).copy()
    if kind == SLIDING_WINDOW:
        lo[:] = np.maximum(p - window + 1, 0)
    elif kind == CHUNKED:
        lo[:] = (p // chunk) * chunk
    elif kind == PREFIX_LM:
        hi = np.maximum(p[None, :], prefix[:, None] - 1)  # (B, T)
    elif kind != CAUSAL:  # bidirectional, array
        hi[:] = S - 1
    return lo, np.minimum(hi, S - 1)


def _mask_to_device(mask, B, HQ, T, S, window, chunk_size, prefix_len):
    """(kind, lo, hi, mask array) on the device, as the kernels take the mask."""
    kind, window, chunk, prefix, marr = mask_parameters(mask, B, HQ, T, S, window, chunk_size, prefix_len)
    lo, hi = key_intervals(kind, B, T, S, window, chunk, prefix)
    return kind, cuda.to_device(lo), cuda.to_device(hi), cuda.to_device(marr)


def attention_cuda(q, k, v, scale, mask="causal", window=None, chunk_size=None, prefix_len=None, tile=None):
    """The forward: ``(o, lse)`` as ``attention_cpu``; ``tile`` (TY, TX, RM, CN), see ``kernels``."""
    B, T, HQ, K = q.shape
    _, S, H, V = v.shape
    check_dims(K, V)
    mask_args = _mask_to_device(mask, B, HQ, T, S, window, chunk_size, prefix_len)
    q_d, k_d, v_d = (cuda.to_device(np.ascontiguousarray(x)) for x in (q, k, v))
    o_d = cuda.device_array((B, T, HQ, V), q.dtype)
    lse_d = cuda.device_array((B, T, HQ), q.dtype)
    launch_forward(q_d, k_d, v_d, scale, mask_args, o_d, lse_d, tile)
    return o_d.copy_to_host(), lse_d.copy_to_host()


def attention_cuda_backward(q, k, v, o, lse, do, scale, mask="causal", window=None, chunk_size=None,
                            prefix_len=None, tile=None):  # fmt: skip
    """Gradients ``(dq, dk, dv)`` as ``attention_cpu_backward``."""
    B, T, HQ, K = q.shape
    _, S, H, V = v.shape
    check_dims(K, V)
    mask_args = _mask_to_device(mask, B, HQ, T, S, window, chunk_size, prefix_len)
    q_d, k_d, v_d, o_d, lse_d, do_d = (cuda.to_device(np.ascontiguousarray(x)) for x in (q, k, v, o, lse, do))
    dq_d = cuda.device_array(q.shape, q.dtype)
    dk_d, dv_d = cuda.device_array(k.shape, q.dtype), cuda.device_array(v.shape, q.dtype)
    launch_backward(q_d, k_d, v_d, o_d, lse_d, do_d, scale, mask_args, dq_d, dk_d, dv_d, tile)
    return dq_d.copy_to_host(), dk_d.copy_to_host(), dv_d.copy_to_host()


def kernel_signatures(dtype):
    """Every kernel of this module with its argument types for ``dtype`` (float32 or float64), at
    head sizes 64 (the benchmark's) and 128 (``MAX_DIM``: the smallest tile shapes), the tiled
    kernels with a note naming their variant.

    Used to compile each kernel to PTX without a GPU (``numba.cuda.compile_ptx``), which runs the
    real type inference and code generation that the simulator skips.
    """
    from numba import types

    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    A3, A4 = types.Array(f, 3, "C"), types.Array(f, 4, "C")
    i64 = types.int64
    I2 = types.Array(i64, 2, "C")
    mask = (i64, I2, I2, types.Array(types.uint8, 4, "C"))
    out = []
    for dim in (64, MAX_DIM):
        ks = kernels(dtype, dim, dim)
        note = f"K = V = {dim}, tile (TY, TX, RM, CN) = {{}}".format
        out += [
            (ks.forward, (A4, A4, A4, f, *mask, A4, A3), note(ks.shapes["forward"])),
            (ks.backward_dq, (A4, A4, A4, A4, A3, A3, f, *mask, A4), note(ks.shapes["dq"])),
            (ks.backward_dkdv, (A4, A4, A4, A4, A3, A3, f, *mask, A4, A4), note(ks.shapes["dkdv"])),
        ]
    return out + [(ks.row_dots, (A4, A4, A3))]
