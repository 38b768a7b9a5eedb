"""Gated linear attention (GLA) on a CUDA GPU (numba-cuda): the recurrent and chunked forms.

Same math, arguments and layouts as ``numba_kernels.gla_cpu`` and ``ref.mixers.gla``: q, k, gk
(B, T, H, K); v, o (B, T, H, V); states (B, H, K, V); natural-log gates gk <= 0 (zeros for "no
gate"); o_t = scale * q_t S_t with S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t.

Naive loop (the contract), as in ``gla_cpu``:

    for b, h:   S = h0[b, h]
        for t:  S = exp(gk[b, t, h])[:, None] * S + outer(k[b, t, h], v[b, t, h]);  o[b, t, h] = scale * q[b, t, h] @ S

Design: simple kernels, a thread (or a group of lanes) per output element or per slice of a
state, without shared memory, except the chunked form's score matrices, which are tiled products
(``SCORE_TILE``).

Recurrent form (T sequential steps), a group of ``LANES`` (16) consecutive threads per state
column or row, lane j holding its entries j, j + LANES, ... in registers (their number fixed at
compile time: ``recurrent_kernels(dtype, K, V)``), the sums over the column or row taken by a
butterfly of lane shuffles (``cuda_lanes.shfl_xor``) at every step:
  * forward: a group per (b, h, v) carries the column S[:, v] of the state;
  * backward: a group per (b, h, k) carries the row S[k, :] forward (recomputed) for dq, then the
    row dS[k, :] backwards for dk and dinitial_state; a group per (b, h, v) carries the column
    dS[:, v] backwards for dv. (The entries of S and of dS evolve independently, so rows and
    columns can be carried by different threads.)
  A thread per column would give the GPU bench's shape (B = 8, H = 16, V = 64) 8,192 threads, two
  warps per multiprocessor of an H200, each waiting on its loads at every step (this module's first
  design: 38 ms forward there); LANES = 16 makes 131,072, and keeps the column in registers
  instead of a local array.

Chunked form (n = ceil(T / C) chunks of L <= C steps; bl_t the gates accumulated from the chunk's
start). What every thread of a row would otherwise recompute is computed once, by its own pass,
into a workspace (``chunked_workspace``):
  0. ``chunk_gates``, a thread per (b, c, h, k): bl, qg_t = q_t exp(bl_t), kg_t = k_t exp(bl_last - bl_t);
  1. ``contributions``, a thread per (b, h, k, v) and chunk (grid y): the chunk's addition to the
     state, sum_j kg_j[k] v_j[v];
  2. ``carry``, a thread per (b, h, k, v): S_{c+1} = exp(bl_last) * S_c + addition_c over the n
     chunks; the chunk-entering states are kept for the backward;
  3. ``scores``: the decayed scores A_ij = sum_k q_i k_j exp(bl_i - bl_j) (j <= i), a block per
     (b, h, c) and tile of A, the rows of q, k and bl it needs staged in shared memory (coalesced
     loads) and each thread's RM entries in registers; then ``chunk_outputs``, a thread per
     (b, t, h, v): o_t = scale (qg_t S_c + sum_j A_tj v_j).
  The backward: (0) and A again, ``score_gradients`` dA_ij = scale do_i . v_j by the same
  tiles, (1) scale * sum_i qg_i[k] do_i[v] per chunk, (2) the gradient of the entering states
  carried from the last chunk, (3) a thread per (b, t, h, k) for dq and dk (they need only the
  gates of key dim k; they read the states and their gradients transposed, so that a warp's
  loads are coalesced), a thread per (b, t, h, v) for dv.
The gate gradient (dgk = reverse cumulative sum of q dq - k dk, plus sum_v dht * ht) is a thread
per (b, h, k). Every exponent is bl_t - bl_j with j <= t, bl_t or bl_last - bl_j, all <= 0: bl is
one running sum of gates <= 0 and rounding is monotone, so bl_t <= bl_j in floating point too.

Work of the chunked forward per (b, h) and chunk, against a thread per output that rebuilds its
row's scores (this module's first design, 388 ms forward at the GPU bench's shape on an H200):
exponentials about L^2 K / 2 instead of L^2 K V / 2, multiply-adds about
L^2 K / 2 + L^2 V / 2 + 2 L K V instead of L^2 K V / 2 + 2 L K V. At C = K = V = 64 that is
about 60x fewer exponentials and 11x fewer multiply-adds; the backward's dq and dk no longer
rebuild each score gradient do_i . v_j per key dim (the first design's (C K) V multiply-adds per
thread). The score tiles read q, k and bl once per tile, a row's dims by consecutive threads; a
thread per score would have each warp load 32 rows of k, 32 memory sectors per instruction. No
time on a GPU yet: ``python -m ref bench gpu`` measures it.

Numerics: the CUDA target contracts a * b + c into FMAs, so results differ from the CPU in the
last bits.

Kernels are built per dtype and score tile by ``kernels(dtype, tile)`` (the local and shared
arrays need the element type and their sizes at compile time; CUDA kernels are compiled per
process anyway, never cached), and float32 kernels compute in float32 (``tests/test_cuda_ptx.py``
checks the PTX). Host wrappers take and return NumPy arrays; the ``launch_*`` functions work on
device arrays.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import config, cuda

from numba_kernels.cuda_lanes import shfl_xor

THREADS = 128  # threads per block (whole warps), except in the score tiles
# The score tiles of the chunked form: (TJ, TY, RM, KS) = TJ x TY threads per block, RM query rows
# per thread (tiles of TY RM rows by TJ columns), KS key dims per shared-memory step. Read at each
# launch: the simulator tests set smaller tiles.
SCORE_TILE = (32, 8, 4, 32)
# Threads per state column (or row) in the recurrent form, each holding a slice of it in
# registers; read at each launch (the simulator tests also build 1, 2 and 4).
LANES = 16


def recurrent_kernels(dtype, K: int, V: int, lanes: int | None = None) -> SimpleNamespace:
    """The recurrent form's kernels for ``dtype``, head sizes K and V and ``lanes`` threads per
    state column or row (default ``LANES``): each lane holds ceil(K / lanes) (or ceil(V / lanes))
    entries in registers, a size fixed at compile time."""
    lanes = LANES if lanes is None else int(lanes)
    if lanes not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"lanes: expected a power of two up to 32, got {lanes!r}")
    return _build_recurrent(np.dtype(dtype).name, lanes, -(-K // lanes), -(-V // lanes))


@functools.cache
def _build_recurrent(dtype_name: str, LANES: int, SK: int, SV: int) -> SimpleNamespace:
    real = np.dtype(dtype_name).type

    @cuda.jit(device=True, inline="always")
    def group_sum(buf, tid, lane, x):
        """x summed over the lanes of the group, on every lane (a butterfly of lane shuffles)."""
        off = LANES // 2
        while off > 0:
            x += shfl_xor(buf, tid, lane, x, off)
            off //= 2
        return x

    @cuda.jit
    def recurrent_forward(q, k, v, gk, scale, h0, o, ht):
        """A group of LANES threads per (b, h, v): lane j holds S[k, v] for k = j + LANES m (m < SK)."""
        B, T, H, K = q.shape
        V = v.shape[3]
        buf = cuda.shared.array(THREADS, real)  # the simulator's lane exchanges; unused on a GPU
        tid = cuda.threadIdx.x
        lane = tid % LANES
        g = cuda.grid(1) // LANES
        active = g < B * H * V  # a whole group is active or idle; idle ones still shuffle
        b, h, vv = g // (H * V), (g // V) % H, g % V
        S = cuda.local.array(SK, real)
        for m in range(SK):
            kk = lane + LANES * m
            S[m] = h0[b, h, kk, vv] if active and kk < K else real(0)
        for t in range(T):
            part = real(0)
            if active:
                vt = v[b, t, h, vv]
                for m in range(SK):
                    kk = lane + LANES * m
                    if kk < K:
                        # S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t;  o_t = scale * q_t S_t
                        S[m] = math.exp(gk[b, t, h, kk]) * S[m] + k[b, t, h, kk] * vt
                        part += q[b, t, h, kk] * S[m]
            total = group_sum(buf, tid, lane, part)
            if active and lane == 0:
                o[b, t, h, vv] = scale * total
        if active:
            for m in range(SK):
                kk = lane + LANES * m
                if kk < K:
                    ht[b, h, kk, vv] = S[m]

    @cuda.jit
    def recurrent_dq_dk(q, k, v, gk, scale, h0, do, dht, dq, dk, dh0):
        """A group per (b, h, k): lane j holds the row entries S[k, v] for v = j + LANES m (m < SV),
        forward for dq, then dS[k, v] backward for dk."""
        B, T, H, K = q.shape
        V = v.shape[3]
        buf = cuda.shared.array(THREADS, real)
        tid = cuda.threadIdx.x
        lane = tid % LANES
        g = cuda.grid(1) // LANES
        active = g < B * H * K
        b, h, kk = g // (H * K), (g // K) % H, g % K
        R = cuda.local.array(SV, real)
        # pass 1, forward: recompute S_t[k, :]; dq_t[k] = scale * do_t . S_t[k, :]
        for m in range(SV):
            vv = lane + LANES * m
            R[m] = h0[b, h, kk, vv] if active and vv < V else real(0)
        for t in range(T):
            part = real(0)
            if active:
                decay = math.exp(gk[b, t, h, kk])
                kt = k[b, t, h, kk]
                for m in range(SV):
                    vv = lane + LANES * m
                    if vv < V:
                        R[m] = decay * R[m] + kt * v[b, t, h, vv]
                        part += do[b, t, h, vv] * R[m]
            total = group_sum(buf, tid, lane, part)
            if active and lane == 0:
                dq[b, t, h, kk] = scale * total
        # pass 2, backward: dS_t = scale * q_t^T do_t + diag(exp(gk_{t+1})) dS_{t+1};  dk_t = dS_t v_t^T
        for m in range(SV):
            vv = lane + LANES * m
            R[m] = dht[b, h, kk, vv] if active and vv < V else real(0)
        for t in range(T - 1, -1, -1):
            part = real(0)
            if active:
                qs = scale * q[b, t, h, kk]
                decay = math.exp(gk[b, t, h, kk])
                for m in range(SV):
                    vv = lane + LANES * m
                    if vv < V:
                        R[m] += qs * do[b, t, h, vv]
                        part += R[m] * v[b, t, h, vv]
                        R[m] *= decay
            total = group_sum(buf, tid, lane, part)
            if active and lane == 0:
                dk[b, t, h, kk] = total
        # dinitial_state = diag(exp(gk_0)) dS_0
        if active:
            for m in range(SV):
                vv = lane + LANES * m
                if vv < V:
                    dh0[b, h, kk, vv] = R[m]

    @cuda.jit
    def recurrent_dv(q, k, gk, scale, do, dht, dv):
        """A group per (b, h, v): lane j carries dS[k, v] for k = j + LANES m backward; dv_t = k_t dS_t."""
        B, T, H, K = q.shape
        V = do.shape[3]
        buf = cuda.shared.array(THREADS, real)
        tid = cuda.threadIdx.x
        lane = tid % LANES
        g = cuda.grid(1) // LANES
        active = g < B * H * V
        b, h, vv = g // (H * V), (g // V) % H, g % V
        Cv = cuda.local.array(SK, real)
        for m in range(SK):
            kk = lane + LANES * m
            Cv[m] = dht[b, h, kk, vv] if active and kk < K else real(0)
        for t in range(T - 1, -1, -1):
            part = real(0)
            if active:
                dot = do[b, t, h, vv]
                for m in range(SK):
                    kk = lane + LANES * m
                    if kk < K:
                        Cv[m] += scale * q[b, t, h, kk] * dot
                        part += k[b, t, h, kk] * Cv[m]
                        Cv[m] *= math.exp(gk[b, t, h, kk])  # carry to t-1
            total = group_sum(buf, tid, lane, part)
            if active and lane == 0:
                dv[b, t, h, vv] = total

    return SimpleNamespace(
        lanes=LANES, recurrent_forward=recurrent_forward, recurrent_dq_dk=recurrent_dq_dk, recurrent_dv=recurrent_dv
    )


def kernels(dtype, tile: tuple | None = None) -> SimpleNamespace:
    """The chunked form's kernels and the gate gradient for ``dtype`` (float32 or float64) and
    score tile (default ``SCORE_TILE``), compiled lazily at launch (the recurrent form's:
    :func:`recurrent_kernels`)."""
    tile = SCORE_TILE if tile is None else tile
    TJ, TY, RM, KS = (int(x) for x in tile)
    if min(TJ, TY, RM, KS) < 1:
        raise ValueError(f"tile: expected (TJ, TY, RM, KS) >= 1, got {tile!r}")
    return _build(np.dtype(dtype).name, (TJ, TY, RM, KS))


@functools.cache
def _build(dtype_name: str, tile: tuple) -> SimpleNamespace:
    real = np.dtype(dtype_name).type  # np.float32 or np.float64: constants and local arrays in the input dtype

    @cuda.jit
    def gate_gradient(q, dq, k, dk, ht, dht, dgk):
        """A thread per (b, h, k): dgk_t = sum_{t' >= t} (q dq - k dk)_t' + sum_v dht * ht."""
        i = cuda.grid(1)
        B, T, H, K = q.shape
        if i < B * H * K:
            b, h, kk = i // (H * K), (i // K) % H, i % K
            final = real(0)
            for vv in range(ht.shape[3]):
                final += dht[b, h, kk, vv] * ht[b, h, kk, vv]
            acc = real(0)
            for t in range(T - 1, -1, -1):
                acc += q[b, t, h, kk] * dq[b, t, h, kk] - k[b, t, h, kk] * dk[b, t, h, kk]
                dgk[b, t, h, kk] = acc + final

    # --- chunked form --------------------------------------------------------------------------

    @cuda.jit
    def chunk_gates(q, k, gk, C, bl, qg, kg):
        """Pass 0, a thread per (b, c, h, k): the gates accumulated from the chunk's start, and the
        queries and keys with their decays applied:

        bl_t = gk_s + ... + gk_t   (one sum in time order),   qg_t = q_t exp(bl_t),   kg_t = k_t exp(bl_last - bl_t)
        """
        i = cuda.grid(1)
        B, T, H, K = q.shape
        n = (T + C - 1) // C
        if i < B * n * H * K:
            b, c, h, kk = i // (n * H * K), (i // (H * K)) % n, (i // K) % H, i % K
            s = c * C
            e = min(s + C, T)
            acc = real(0)
            for t in range(s, e):
                acc += gk[b, t, h, kk]
                bl[b, t, h, kk] = acc
                qg[b, t, h, kk] = q[b, t, h, kk] * math.exp(acc)
            for t in range(s, e):
                kg[b, t, h, kk] = k[b, t, h, kk] * math.exp(acc - bl[b, t, h, kk])

    @cuda.jit
    def contributions(x, y, coef, C, offset, out):
        """Pass 1, a thread per (b, h, k, v) and chunk c (grid y): coef * sum_{t in chunk} x_t[k] y_t[v], so

        forward   (x, y = kg, v;  coef 1,  offset 1):   out[:, c + 1] = the chunk's addition to the state
        backward  (x, y = qg, do; coef scale, offset 0): out[:, c] = the gradient its outputs send to S_c
        """
        i, c = cuda.grid(2)
        B, T, H, K = x.shape
        V = y.shape[3]
        if i < B * H * K * V and c * C < T:
            b, h, kk, vv = i // (H * K * V), (i // (K * V)) % H, (i // V) % K, i % V
            acc = real(0)
            for t in range(c * C, min(c * C + C, T)):
                acc += x[b, t, h, kk] * y[b, t, h, vv]
            out[b, c + offset, h, kk, vv] = coef * acc

    @cuda.jit
    def carry(states, bl, C, s0, s_final, reverse):
        """Pass 2, a thread per (b, h, k, v), across the n chunks, with decay_c = exp(bl_last of chunk c):

        forward:  states[0] = s0 (h0);   states[c + 1] = decay_c * states[c] + states[c + 1]
        reverse:  states[n] = s0 (dht);  states[c] = decay_c * states[c + 1] + states[c]
        and s_final = the last state written (ht forward, dinitial_state in reverse).
        """
        i = cuda.grid(1)
        B, n1, H, K, V = states.shape
        n = n1 - 1
        T = bl.shape[1]
        if i < B * H * K * V:
            b, h, kk, vv = i // (H * K * V), (i // (K * V)) % H, (i // V) % K, i % V
            s = s0[b, h, kk, vv]
            if reverse:
                states[b, n, h, kk, vv] = s
                for c in range(n - 1, -1, -1):
                    s = math.exp(bl[b, min(c * C + C, T) - 1, h, kk]) * s + states[b, c, h, kk, vv]
                    states[b, c, h, kk, vv] = s
            else:
                states[b, 0, h, kk, vv] = s
                for c in range(n):
                    s = math.exp(bl[b, min(c * C + C, T) - 1, h, kk]) * s + states[b, c + 1, h, kk, vv]
                    states[b, c + 1, h, kk, vv] = s
            s_final[b, h, kk, vv] = s

    # Pass 3a: the chunk's L x L score matrices, by tiles of BI query rows and TJ key columns (a
    # block of TJ x TY threads, each holding RM rows of one column in registers), the key dims
    # streamed through shared memory KS at a time. Upper tiles (every key after every query) are
    # zeros. Rows are padded to KS + 1 so that a warp's TJ threads, reading down one column of the
    # key tile, hit TJ different banks.
    TJ, TY, RM, KS = tile
    NT, BI, KP = TJ * TY, TY * RM, KS + 1  # threads, rows of a tile, padded row length
    # Two blocks per multiprocessor: ptxas keeps the score kernels within 128 registers (168 and
    # 198 unbounded, float32 and float64: one block of 8 warps), without spills (bench ptx).
    # The simulator's jit takes no launch bounds.
    two_blocks = {} if config.ENABLE_CUDASIM else {"launch_bounds": (NT, 2)}

    @cuda.jit(device=True, inline="always")
    def load_tile(dst, src, b, h, first, end, k0, tid):
        """dst[r, c] = src[b, first + r, h, k0 + c], zeros past row ``end`` or the last column; the
        block's threads read consecutive columns of a row."""
        for idx in range(tid, dst.shape[0] * KS, NT):
            r, c = idx // KS, idx % KS
            t, kk = first + r, k0 + c
            dst[r, c] = src[b, t, h, kk] if t < end and kk < src.shape[3] else real(0)

    @cuda.jit(device=True, inline="always")
    def tile_origin(A):
        """(b, h, c, first row i0, first column j0) of this block's tile of A[b, h, c], from
        blockIdx.x = (b, h, c) and blockIdx.y = the tile, row tiles major."""
        H, n, L = A.shape[1], A.shape[2], A.shape[3]
        tiles_j = (L + TJ - 1) // TJ
        bhc = cuda.blockIdx.x
        b, h, c = bhc // (H * n), (bhc // n) % H, bhc % n
        return b, h, c, (cuda.blockIdx.y // tiles_j) * BI, (cuda.blockIdx.y % tiles_j) * TJ

    @cuda.jit(**two_blocks)
    def scores(q, k, bl, C, A):
        """A block per (b, h, c) (grid x) and tile of A[b, h, c] (grid y): the decayed scores of the
        chunk's queries i and keys j, A[b, h, c, i, j] = sum_k q_t[k] k_r[k] exp(bl_t - bl_r)[k] for
        r = s + j <= t = s + i (else 0)."""
        B, T, H, K = q.shape
        b, h, c, i0, j0 = tile_origin(A)
        L = A.shape[3]
        s = c * C
        e = min(s + C, T)
        tx, ty = cuda.threadIdx.x % TJ, cuda.threadIdx.x // TJ
        acc = cuda.local.array(RM, real)
        for m in range(RM):
            acc[m] = 0
        if j0 <= i0 + BI - 1:  # not an upper tile: the same test for the whole block
            sq = cuda.shared.array((BI, KP), real)
            sbq = cuda.shared.array((BI, KP), real)
            sk = cuda.shared.array((TJ, KP), real)
            sbk = cuda.shared.array((TJ, KP), real)
            r = s + j0 + tx
            for k0 in range(0, K, KS):
                load_tile(sq, q, b, h, s + i0, e, k0, cuda.threadIdx.x)
                load_tile(sbq, bl, b, h, s + i0, e, k0, cuda.threadIdx.x)
                load_tile(sk, k, b, h, s + j0, e, k0, cuda.threadIdx.x)
                load_tile(sbk, bl, b, h, s + j0, e, k0, cuda.threadIdx.x)
                cuda.syncthreads()
                for cc in range(min(KS, K - k0)):
                    kv, bk = sk[tx, cc], sbk[tx, cc]
                    for m in range(RM):
                        t = s + i0 + ty + TY * m
                        if r <= t and t < e:
                            acc[m] += sq[ty + TY * m, cc] * kv * math.exp(sbq[ty + TY * m, cc] - bk)
                cuda.syncthreads()
        for m in range(RM):
            ii, jj = i0 + ty + TY * m, j0 + tx
            if ii < L and jj < L:
                A[b, h, c, ii, jj] = acc[m]

    @cuda.jit(**two_blocks)
    def score_gradients(do, v, scale, C, dA):
        """The same tiles: dA[b, h, c, i, j] = scale * do_t . v_r for r = s + j <= t = s + i (else 0),
        the gradient of the score A[b, h, c, i, j]."""
        B, T, H, V = v.shape
        b, h, c, i0, j0 = tile_origin(dA)
        L = dA.shape[3]
        s = c * C
        e = min(s + C, T)
        tx, ty = cuda.threadIdx.x % TJ, cuda.threadIdx.x // TJ
        acc = cuda.local.array(RM, real)
        for m in range(RM):
            acc[m] = 0
        if j0 <= i0 + BI - 1:
            sdo = cuda.shared.array((BI, KP), real)
            sv = cuda.shared.array((TJ, KP), real)
            r = s + j0 + tx
            for k0 in range(0, V, KS):
                load_tile(sdo, do, b, h, s + i0, e, k0, cuda.threadIdx.x)
                load_tile(sv, v, b, h, s + j0, e, k0, cuda.threadIdx.x)
                cuda.syncthreads()
                for cc in range(min(KS, V - k0)):
                    vv = sv[tx, cc]
                    for m in range(RM):
                        t = s + i0 + ty + TY * m
                        if r <= t and t < e:
                            acc[m] += sdo[ty + TY * m, cc] * vv
                cuda.syncthreads()
        for m in range(RM):
            ii, jj = i0 + ty + TY * m, j0 + tx
            if ii < L and jj < L:
                dA[b, h, c, ii, jj] = scale * acc[m]

    @cuda.jit
    def chunk_outputs(qg, v, A, scale, C, states, o):
        """Pass 3b, a thread per (b, t, h, v): o_t = scale * (qg_t S_c + sum_{j <= i} A[c, i, j] v_{s+j})."""
        i = cuda.grid(1)
        B, T, H, K = qg.shape
        V = v.shape[3]
        if i < B * T * H * V:
            b, t, h, vv = i // (T * H * V), (i // (H * V)) % T, (i // V) % H, i % V
            c = t // C
            s = c * C
            acc = real(0)
            for kk in range(K):  # (1) inter-chunk
                acc += qg[b, t, h, kk] * states[b, c, h, kk, vv]
            for j in range(t - s + 1):  # (2) intra-chunk
                acc += A[b, h, c, t - s, j] * v[b, s + j, h, vv]
            o[b, t, h, vv] = scale * acc

    @cuda.jit
    def transpose_states(src, dst):
        """A thread per element: dst[b, c, h, v, k] = src[b, c, h, k, v] (consecutive threads: consecutive k)."""
        i = cuda.grid(1)
        B, n1, H, V, K = dst.shape
        if i < dst.size:
            b, c, h = i // (n1 * H * V * K), (i // (H * V * K)) % n1, (i // (V * K)) % H
            vv, kk = (i // K) % V, i % K
            dst[b, c, h, vv, kk] = src[b, c, h, kk, vv]

    @cuda.jit
    def chunk_dq_dk(q, k, v, bl, do, dA, scale, C, statesT, dstatesT, dq, dk):
        """Pass 3b of the backward, a thread per (b, t, h, k), with dA the score gradients:

        dq_t = scale exp(bl_t) (do_t S_c^T) + sum_{r <= t} dA_tr k_r exp(bl_t - bl_r)
        dk_t = exp(bl_last - bl_t) (v_t dS_{c+1}^T) + sum_{r >= t} dA_rt q_r exp(bl_r - bl_t)

        The states come transposed, (B, n + 1, H, V, K): a warp's threads (consecutive k) then
        read consecutive addresses of S_c^T[v] instead of one row of S_c each.
        """
        i = cuda.grid(1)
        B, T, H, K = q.shape
        V = v.shape[3]
        if i < B * T * H * K:
            b, t, h, kk = i // (T * H * K), (i // (H * K)) % T, (i // K) % H, i % K
            c = t // C
            s = c * C
            e = min(s + C, T)
            bt = bl[b, t, h, kk]
            acc_q = real(0)
            acc_k = real(0)
            for vv in range(V):
                acc_q += do[b, t, h, vv] * statesT[b, c, h, vv, kk]
                acc_k += v[b, t, h, vv] * dstatesT[b, c + 1, h, vv, kk]
            dq_t = scale * math.exp(bt) * acc_q  # from (1)
            dk_t = math.exp(bl[b, e - 1, h, kk] - bt) * acc_k  # from (3)
            for r in range(s, t + 1):  # key r of query t
                dq_t += dA[b, h, c, t - s, r - s] * k[b, r, h, kk] * math.exp(bt - bl[b, r, h, kk])
            for r in range(t, e):  # query r of key t
                dk_t += dA[b, h, c, r - s, t - s] * q[b, r, h, kk] * math.exp(bl[b, r, h, kk] - bt)
            dq[b, t, h, kk] = dq_t
            dk[b, t, h, kk] = dk_t

    @cuda.jit
    def chunk_dv(kg, do, A, scale, C, dstates, dv):
        """Pass 3b of the backward, a thread per (b, t, h, v):
        dv_t = kg_t dS_{c+1} + scale * sum_{r >= t} A[c, r, t] do_r."""
        i = cuda.grid(1)
        B, T, H, K = kg.shape
        V = do.shape[3]
        if i < B * T * H * V:
            b, t, h, vv = i // (T * H * V), (i // (H * V)) % T, (i // V) % H, i % V
            c = t // C
            s = c * C
            acc = real(0)
            for kk in range(K):  # from (3)
                acc += kg[b, t, h, kk] * dstates[b, c + 1, h, kk, vv]
            intra = real(0)
            for r in range(t, min(s + C, T)):  # from (2)
                intra += A[b, h, c, r - s, t - s] * do[b, r, h, vv]
            dv[b, t, h, vv] = acc + scale * intra

    return SimpleNamespace(
        gate_gradient=gate_gradient,
        score_threads=NT,
        score_rows=BI,
        score_columns=TJ,
        chunk_gates=chunk_gates,
        contributions=contributions,
        carry=carry,
        scores=scores,
        score_gradients=score_gradients,
        chunk_outputs=chunk_outputs,
        transpose_states=transpose_states,
        chunk_dq_dk=chunk_dq_dk,
        chunk_dv=chunk_dv,
    )


# --- launchers on device arrays ----------------------------------------------------------------


def _grid(n):
    return max(1, math.ceil(n / THREADS))


def _score_grid(ks, A):
    """Blocks of the score kernels: (b, h, c) on x, the tiles of an L x L matrix on y."""
    B, H, n, L = A.shape[:4]
    return B * H * n, math.ceil(L / ks.score_rows) * math.ceil(L / ks.score_columns)


def _chunks(T, C):
    n = math.ceil(T / C)
    if n > 65535:
        raise ValueError(f"chunk_size: at most 65535 chunks fit the grid's y axis, got {n} (T = {T}, C = {C})")
    return n


def launch_recurrent(q, k, v, gk, scale, h0, o, ht):
    """o and ht of the recurrent form. All arrays are device arrays; gk holds zeros for no gate."""
    B, T, H, K = q.shape
    V = v.shape[3]
    rk = recurrent_kernels(q.dtype, K, V)
    rk.recurrent_forward[_grid(B * H * V * rk.lanes), THREADS](q, k, v, gk, q.dtype.type(scale), h0, o, ht)


def launch_recurrent_backward(q, k, v, gk, scale, h0, ht, do, dht, dq, dk, dv, dgk, dh0):
    """dq, dk, dv, dgk, dh0 of the recurrent form, from the final state ht of the forward."""
    B, T, H, K = q.shape
    V = v.shape[3]
    rk = recurrent_kernels(q.dtype, K, V)
    scale = q.dtype.type(scale)
    rk.recurrent_dq_dk[_grid(B * H * K * rk.lanes), THREADS](q, k, v, gk, scale, h0, do, dht, dq, dk, dh0)
    rk.recurrent_dv[_grid(B * H * V * rk.lanes), THREADS](q, k, gk, scale, do, dht, dv)
    kernels(q.dtype).gate_gradient[_grid(B * H * K), THREADS](q, dq, k, dk, ht, dht, dgk)


def chunked_workspace(B, T, H, K, V, chunk_size, dtype, backward=False) -> SimpleNamespace:
    """The device arrays the chunked form computes on its way, allocated once to be reused:
    bl, qg, kg (B, T, H, K) of pass 0; the scores A (B, H, n, L, L) with L = min(C, T); for the
    backward also their gradients dA and dstates (B, n + 1, H, K, V), and the states and dstates
    transposed (B, n + 1, H, V, K)."""
    n = _chunks(T, chunk_size)
    L = min(chunk_size, T)
    work = SimpleNamespace(
        bl=cuda.device_array((B, T, H, K), dtype),
        qg=cuda.device_array((B, T, H, K), dtype),
        kg=cuda.device_array((B, T, H, K), dtype),
        A=cuda.device_array((B, H, n, L, L), dtype),
        dA=None,
        dstates=None,
        statesT=None,
        dstatesT=None,
    )
    if backward:
        work.dA = cuda.device_array((B, H, n, L, L), dtype)
        work.dstates = cuda.device_array((B, n + 1, H, K, V), dtype)
        work.statesT = cuda.device_array((B, n + 1, H, V, K), dtype)
        work.dstatesT = cuda.device_array((B, n + 1, H, V, K), dtype)
    return work


def _prepare(ks, q, k, gk, C, work):
    """Pass 0 and pass 3a's scores: bl, qg, kg and A into ``work``."""
    B, T, H, K = q.shape
    n = _chunks(T, C)
    ks.chunk_gates[_grid(B * n * H * K), THREADS](q, k, gk, C, work.bl, work.qg, work.kg)
    ks.scores[_score_grid(ks, work.A), ks.score_threads](q, k, work.bl, C, work.A)


def launch_chunked(q, k, v, gk, scale, h0, o, states, ht, chunk_size, work=None):
    """o of the chunked form, ``states`` (B, n + 1, H, K, V): the chunk-entering states then the
    final state, and that final state again in ``ht`` (B, H, K, V). ``work``: from
    :func:`chunked_workspace`, or None to allocate it."""
    B, T, H, K = q.shape
    V = v.shape[3]
    n = _chunks(T, chunk_size)
    if work is None:
        work = chunked_workspace(B, T, H, K, V, chunk_size, q.dtype)
    ks = kernels(q.dtype)
    scale = q.dtype.type(scale)
    _prepare(ks, q, k, gk, chunk_size, work)
    ks.contributions[(_grid(B * H * K * V), n), (THREADS, 1)](work.kg, v, q.dtype.type(1), chunk_size, 1, states)
    ks.carry[_grid(B * H * K * V), THREADS](states, work.bl, chunk_size, h0, ht, False)
    ks.chunk_outputs[_grid(B * T * H * V), THREADS](work.qg, v, work.A, scale, chunk_size, states, o)


def launch_chunked_backward(q, k, v, gk, scale, states, ht, do, dht, dq, dk, dv, dgk, dh0, chunk_size, work=None):
    """dq, dk, dv, dgk, dh0 of the chunked form from the ``states`` and ``ht`` of :func:`launch_chunked`.
    ``work``: from :func:`chunked_workspace` with ``backward=True``, or None to allocate it."""
    B, T, H, K = q.shape
    V = v.shape[3]
    n = _chunks(T, chunk_size)
    if work is None:
        work = chunked_workspace(B, T, H, K, V, chunk_size, q.dtype, backward=True)
    ks = kernels(q.dtype)
    scale = q.dtype.type(scale)
    dstates = work.dstates  # dstates[:, c]: gradient of the state entering chunk c
    _prepare(ks, q, k, gk, chunk_size, work)
    ks.score_gradients[_score_grid(ks, work.dA), ks.score_threads](do, v, scale, chunk_size, work.dA)
    ks.contributions[(_grid(B * H * K * V), n), (THREADS, 1)](work.qg, do, scale, chunk_size, 0, dstates)
    ks.carry[_grid(B * H * K * V), THREADS](dstates, work.bl, chunk_size, dht, dh0, True)
    ks.transpose_states[_grid(states.size), THREADS](states, work.statesT)
    ks.transpose_states[_grid(dstates.size), THREADS](dstates, work.dstatesT)
    ks.chunk_dq_dk[_grid(B * T * H * K), THREADS](
        q, k, v, work.bl, do, work.dA, scale, chunk_size, work.statesT, work.dstatesT, dq, dk
    )
    ks.chunk_dv[_grid(B * T * H * V), THREADS](work.kg, do, work.A, scale, chunk_size, dstates, dv)
    ks.gate_gradient[_grid(B * H * K), THREADS](q, dq, k, dk, ht, dht, dgk)


# --- host wrappers: the arguments of gla_cpu ---------------------------------------------------


def _to_device(q, k, v, gk, initial_state):
    """Device copies; zeros for an absent gate or initial state."""
    B, T, H, K = q.shape
    if gk is None:
        gk = np.zeros_like(q)
    if initial_state is None:
        initial_state = np.zeros((B, H, K, v.shape[3]), q.dtype)
    return [cuda.to_device(np.ascontiguousarray(x)) for x in (q, k, v, gk, initial_state)]


def _cotangents_to_device(v, h0, do, dht):
    do = np.zeros(v.shape, v.dtype) if do is None else do
    dht = np.zeros(h0.shape, v.dtype) if dht is None else dht
    return cuda.to_device(np.ascontiguousarray(do)), cuda.to_device(np.ascontiguousarray(dht))


def gla_cuda(q, k, v, gk, scale, initial_state=None):
    """The recurrent form: ``(o, ht)``, a group of lanes per state column."""
    q_d, k_d, v_d, gk_d, h0_d = _to_device(q, k, v, gk, initial_state)
    o_d = cuda.device_array(v.shape, q.dtype)
    ht_d = cuda.device_array(h0_d.shape, q.dtype)
    launch_recurrent(q_d, k_d, v_d, gk_d, scale, h0_d, o_d, ht_d)
    return o_d.copy_to_host(), ht_d.copy_to_host()


def gla_cuda_backward(q, k, v, gk, scale, initial_state, ht, do, dht):
    """``(dq, dk, dv, dgk, dinitial_state)`` of the recurrent form; None for an absent gate or
    initial state. ``do`` and ``dht`` may be None (zero)."""
    q_d, k_d, v_d, gk_d, h0_d = _to_device(q, k, v, gk, initial_state)
    do_d, dht_d = _cotangents_to_device(v, h0_d, do, dht)
    ht_d = cuda.to_device(np.ascontiguousarray(ht))
    dq_d, dk_d, dgk_d = (cuda.device_array(q.shape, q.dtype) for _ in range(3))
    dv_d = cuda.device_array(v.shape, q.dtype)
    dh0_d = cuda.device_array(h0_d.shape, q.dtype)
    launch_recurrent_backward(q_d, k_d, v_d, gk_d, scale, h0_d, ht_d, do_d, dht_d, dq_d, dk_d, dv_d, dgk_d, dh0_d)
    dgk = dgk_d.copy_to_host() if gk is not None else None
    dh0 = dh0_d.copy_to_host() if initial_state is not None else None
    return dq_d.copy_to_host(), dk_d.copy_to_host(), dv_d.copy_to_host(), dgk, dh0


def gla_cuda_chunked(q, k, v, gk, scale, initial_state=None, chunk_size=64):
    """The chunked form: ``(o, states)``, states (B, n + 1, H, K, V) the chunk-entering states
    followed by the final state, as ``gla_cpu.gla_cpu_chunked``."""
    B, T, H, K = q.shape
    n = _chunks(T, int(chunk_size))
    q_d, k_d, v_d, gk_d, h0_d = _to_device(q, k, v, gk, initial_state)
    o_d = cuda.device_array(v.shape, q.dtype)
    states_d = cuda.device_array((B, n + 1, H, K, v.shape[3]), q.dtype)
    ht_d = cuda.device_array(h0_d.shape, q.dtype)
    launch_chunked(q_d, k_d, v_d, gk_d, scale, h0_d, o_d, states_d, ht_d, int(chunk_size))
    return o_d.copy_to_host(), states_d.copy_to_host()


def gla_cuda_chunked_backward(q, k, v, gk, scale, initial_state, states, do, dht, chunk_size=64):
    """``(dq, dk, dv, dgk, dinitial_state)`` of the chunked form from the ``states`` of the forward."""
    q_d, k_d, v_d, gk_d, h0_d = _to_device(q, k, v, gk, initial_state)
    do_d, dht_d = _cotangents_to_device(v, h0_d, do, dht)
    states_d = cuda.to_device(np.ascontiguousarray(states))
    ht_d = cuda.to_device(np.ascontiguousarray(states[:, -1]))
    dq_d, dk_d, dgk_d = (cuda.device_array(q.shape, q.dtype) for _ in range(3))
    dv_d = cuda.device_array(v.shape, q.dtype)
    dh0_d = cuda.device_array(h0_d.shape, q.dtype)
    launch_chunked_backward(
        q_d, k_d, v_d, gk_d, scale, states_d, ht_d, do_d, dht_d, dq_d, dk_d, dv_d, dgk_d, dh0_d, int(chunk_size)
    )
    dgk = dgk_d.copy_to_host() if gk is not None else None
    dh0 = dh0_d.copy_to_host() if initial_state is not None else None
    return dq_d.copy_to_host(), dk_d.copy_to_host(), dv_d.copy_to_host(), dgk, dh0


def kernel_signatures(dtype):
    """Every kernel of this module with its argument types for ``dtype`` (float32 or float64).

    Used to compile each kernel to PTX without a GPU (``numba.cuda.compile_ptx``), which runs the
    real type inference and code generation that the simulator skips.
    """
    from numba import types

    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    A4, A5 = types.Array(f, 4, "C"), types.Array(f, 5, "C")
    i64, b1 = types.int64, types.boolean
    ks = kernels(dtype)
    rk = recurrent_kernels(dtype, 64, 64)  # the GPU bench's heads
    note = f"K = V = 64, {rk.lanes} lanes"
    return [
        (rk.recurrent_forward, (A4, A4, A4, A4, f, A4, A4, A4), note),
        (rk.recurrent_dq_dk, (A4, A4, A4, A4, f, A4, A4, A4, A4, A4, A4), note),
        (rk.recurrent_dv, (A4, A4, A4, f, A4, A4, A4), note),
        (ks.gate_gradient, (A4, A4, A4, A4, A4, A4, A4)),
        (ks.chunk_gates, (A4, A4, A4, i64, A4, A4, A4)),
        (ks.contributions, (A4, A4, f, i64, i64, A5)),
        (ks.carry, (A5, A4, i64, A4, A4, b1)),
        (ks.scores, (A4, A4, A4, i64, A5)),
        (ks.score_gradients, (A4, A4, f, i64, A5)),
        (ks.chunk_outputs, (A4, A4, A5, f, i64, A5, A4)),
        (ks.transpose_states, (A5, A5)),
        (ks.chunk_dq_dk, (A4, A4, A4, A4, A4, A5, f, i64, A5, A5, A4, A4)),
        (ks.chunk_dv, (A4, A4, A5, f, i64, A5, A4)),
    ]
