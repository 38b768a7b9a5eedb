"""Softmax attention on a CUDA GPU (numba-cuda): FlashAttention-style tiles, forward and backward.

Same math, arguments and results as ``numba_kernels.attention_cpu`` and
``ref.mixers.attention.attention_parallel``: q (B, T, HQ, K), k (B, S, H, K), v (B, S, H, V),
o (B, T, HQ, V), lse (B, T, HQ); query head h reads key/value head h // (HQ / H); query t sits at
position p = t + S - T; a fully masked row gives o = 0, lse = -inf and no gradient.

Naive loop (the contract), as in ``attention_cpu``:

    for b, hq, t:   allowed keys A = {s : M[p, s]},  s_ts = scale * q_t . k_s  for s in A
                    lse_t = log sum_{s in A} exp(s_ts);   o_t = sum_{s in A} exp(s_ts - lse_t) v_s

Design: a block of ``tile`` threads, a thread per query row (or per key in the dk/dv kernel),
the other side streamed through shared memory one tile at a time (loaded by the block together,
``syncthreads`` around each tile). No (T, S) matrix exists: each thread keeps its row in local
arrays.

* ``forward``, grid (query tiles, B * HQ): the online softmax over the visible key tiles; per
  tile the scores of the row in a local array, then

      m' = max(m, max_s s_ts),  l = exp(m - m') l + sum_s exp(s_ts - m'),
      acc = exp(m - m') acc + sum_s exp(s_ts - m') v_s                                    (1)

  and at the end o_t = acc / l, lse_t = m + log l                                          (2)
* ``row_dots``, a thread per (b, hq, t): D_t = do_t . o_t                                   (3)
* ``backward_dq``, grid (query tiles, B * HQ): the key tiles streamed as in the forward,

      P_ts = exp(s_ts - lse_t),  dS_ts = P_ts (do_t . v_s - D_t),  dq_t = scale sum_s dS_ts k_s  (4)

* ``backward_dkdv``, grid (key tiles, B * H): a thread per key s of head h, the query tiles of
  its G query heads streamed through shared memory,

      dv_s = sum_t P_ts do_t,   dk_s = scale sum_t dS_ts q_t                                  (5)

  (FlashAttention-2's split without atomics: P and dS are computed once in each kernel.)

Masks as in ``attention_cpu``: each kind allows one interval of keys lo(p) <= s <= hi(p), lo and
hi non-decreasing in p, so a query tile sees the keys lo(first row) .. hi(last row) and the
fully masked tiles outside are never loaded (the test is the same for every thread of a block).
A boolean mask array (uint8 here) is tested entry by entry, and a tile in which no thread has an
allowed entry is skipped (``syncthreads_or``).

Sizes. Shared tiles have a compile-time shape: (tile, ``MAX_DIM``) with tile 32 threads for
float32 and 16 for float64 (at most 32 KiB of shared memory per block); K and V are at most
``MAX_DIM`` = 128 (larger heads raise ValueError). ``kernels(dtype, tile)`` builds a smaller tile
for the simulator tests. Numerics: the CUDA target contracts a * b + c into FMAs, so results
differ from the CPU in the last bits; float32 kernels compute in float32 (``tests/test_cuda_ptx.py``).
Host wrappers take and return NumPy arrays; the ``launch_*`` functions work on device arrays.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import cuda

from numba_kernels.attention_cpu import ARRAY, CAUSAL, CHUNKED, PREFIX_LM, SLIDING_WINDOW, mask_parameters

MAX_DIM = 128  # the largest K or V: the width of the shared tiles and local rows
TILES = {"float32": 32, "float64": 16}  # threads per block (rows per tile) by dtype
ROW_THREADS = 128  # threads per block of ``row_dots``


def kernels(dtype, tile: int | None = None) -> SimpleNamespace:
    """Every kernel of this module for ``dtype`` (float32 or float64) and ``tile`` rows per tile
    (default ``TILES[dtype]``), compiled lazily at launch."""
    name = np.dtype(dtype).name
    return _build(name, TILES[name] if tile is None else int(tile))


@functools.cache
def _build(dtype_name: str, TILE: int) -> SimpleNamespace:
    real = np.dtype(dtype_name).type  # np.float32 or np.float64: constants and local arrays in the input dtype
    NINF = real(-np.inf)
    ZERO = real(0)

    # No device functions: compile_ptx compiles a kernel without a GPU, but a call to a
    # cuda.jit(device=True) function asks the driver for the current device's compute capability.
    # So the mask comes as the interval lo[b, t] .. hi[b, t] of keys of every query row (computed
    # on the host, ``key_intervals``), and the test "may attend" is written out where needed:
    #     lo[b, t] <= s <= hi[b, t] and (kind != ARRAY or marr[bm, hm, t, s])

    @cuda.jit
    def forward(q, k, v, scale, kind, lo, hi, marr, o, lse):
        """A block per (query tile, b * HQ + hq), a thread per query row: (1), (2)."""
        B, T, HQ, K = q.shape
        S, H, V = k.shape[1], k.shape[2], v.shape[3]
        bh = cuda.blockIdx.y
        b, hq = bh // HQ, bh % HQ
        h = hq // (HQ // H)
        i = cuda.threadIdx.x
        t0 = cuda.blockIdx.x * TILE
        t1 = min(t0 + TILE, T)
        t = t0 + i
        bm = b if marr.shape[0] > 1 else 0
        hm = hq if marr.shape[1] > 1 else 0
        Ks = cuda.shared.array((TILE, MAX_DIM), real)
        Vs = cuda.shared.array((TILE, MAX_DIM), real)
        qt = cuda.local.array(MAX_DIM, real)
        acc = cuda.local.array(MAX_DIM, real)
        sc = cuda.local.array(TILE, real)
        for c in range(K):
            qt[c] = q[b, t, hq, c] if t < T else ZERO
        for c in range(V):
            acc[c] = ZERO
        m = NINF
        l = ZERO
        k_first, k_last = lo[b, t0] // TILE, hi[b, t1 - 1] // TILE  # the visible key tiles
        for kt in range(k_first, k_last + 1):
            s0 = kt * TILE
            # which keys of this tile the row may attend to
            any_here = 0  # an int32 for syncthreads_or
            if t < T:
                for j in range(TILE):
                    if lo[b, t] <= s0 + j <= hi[b, t] and (kind != ARRAY or marr[bm, hm, t, s0 + j] != 0):
                        any_here = 1
            if kind == ARRAY and not cuda.syncthreads_or(any_here):
                continue  # a fully masked tile (the same answer in every thread)
            cuda.syncthreads()  # the previous tile has been read by every thread
            s = s0 + i
            for c in range(K):
                Ks[i, c] = k[b, s, h, c] if s < S else ZERO
            for c in range(V):
                Vs[i, c] = v[b, s, h, c] if s < S else ZERO
            cuda.syncthreads()
            if any_here:
                mnew = m
                for j in range(TILE):
                    x = NINF
                    if lo[b, t] <= s0 + j <= hi[b, t] and (kind != ARRAY or marr[bm, hm, t, s0 + j] != 0):
                        x = ZERO
                        for c in range(K):
                            x += qt[c] * Ks[j, c]
                        x *= scale  # s_ts
                    sc[j] = x
                    if x > mnew:
                        mnew = x
                alpha = math.exp(m - mnew)  # (1); 0 when m = -inf
                l *= alpha
                for c in range(V):
                    acc[c] *= alpha
                for j in range(TILE):
                    e = math.exp(sc[j] - mnew)  # 0 off the mask
                    l += e
                    for c in range(V):
                        acc[c] += e * Vs[j, c]
                m = mnew
        if t < T:
            if l > ZERO:
                for c in range(V):
                    o[b, t, hq, c] = acc[c] / l  # (2)
                lse[b, t, hq] = m + math.log(l)
            else:  # a fully masked row
                for c in range(V):
                    o[b, t, hq, c] = ZERO
                lse[b, t, hq] = NINF

    @cuda.jit
    def row_dots(do, o, D):
        """A thread per (b, t, hq): (3) D_t = do_t . o_t."""
        i = cuda.grid(1)
        B, T, HQ, V = o.shape
        if i < B * T * HQ:
            b, t, hq = i // (T * HQ), (i // HQ) % T, i % HQ
            acc = ZERO
            for c in range(V):
                acc += do[b, t, hq, c] * o[b, t, hq, c]
            D[b, t, hq] = acc

    @cuda.jit
    def backward_dq(q, k, v, do, lse, D, scale, kind, lo, hi, marr, dq):
        """A block per (query tile, b * HQ + hq), a thread per query row: (4)."""
        B, T, HQ, K = q.shape
        S, H, V = k.shape[1], k.shape[2], v.shape[3]
        bh = cuda.blockIdx.y
        b, hq = bh // HQ, bh % HQ
        h = hq // (HQ // H)
        i = cuda.threadIdx.x
        t0 = cuda.blockIdx.x * TILE
        t1 = min(t0 + TILE, T)
        t = t0 + i
        bm = b if marr.shape[0] > 1 else 0
        hm = hq if marr.shape[1] > 1 else 0
        Ks = cuda.shared.array((TILE, MAX_DIM), real)
        Vs = cuda.shared.array((TILE, MAX_DIM), real)
        qt = cuda.local.array(MAX_DIM, real)
        dot = cuda.local.array(MAX_DIM, real)
        acc = cuda.local.array(MAX_DIM, real)
        live = t < T and lse[b, t, hq] > NINF  # padding and fully masked rows send nothing
        for c in range(K):
            qt[c] = q[b, t, hq, c] if t < T else ZERO
            acc[c] = ZERO
        for c in range(V):
            dot[c] = do[b, t, hq, c] if t < T else ZERO
        lse_t = lse[b, t, hq] if live else ZERO
        D_t = D[b, t, hq] if live else ZERO
        k_first, k_last = lo[b, t0] // TILE, hi[b, t1 - 1] // TILE  # the visible key tiles
        for kt in range(k_first, k_last + 1):
            s0 = kt * TILE
            any_here = 0  # an int32 for syncthreads_or
            if live:
                for j in range(TILE):
                    if lo[b, t] <= s0 + j <= hi[b, t] and (kind != ARRAY or marr[bm, hm, t, s0 + j] != 0):
                        any_here = 1
            if kind == ARRAY and not cuda.syncthreads_or(any_here):
                continue
            cuda.syncthreads()
            s = s0 + i
            for c in range(K):
                Ks[i, c] = k[b, s, h, c] if s < S else ZERO
            for c in range(V):
                Vs[i, c] = v[b, s, h, c] if s < S else ZERO
            cuda.syncthreads()
            if any_here:
                for j in range(TILE):
                    if lo[b, t] <= s0 + j <= hi[b, t] and (kind != ARRAY or marr[bm, hm, t, s0 + j] != 0):
                        x = ZERO
                        for c in range(K):
                            x += qt[c] * Ks[j, c]
                        p = math.exp(scale * x - lse_t)  # P_ts
                        dp = ZERO
                        for c in range(V):
                            dp += dot[c] * Vs[j, c]
                        ds = p * (dp - D_t)  # dS_ts
                        for c in range(K):
                            acc[c] += ds * Ks[j, c]
        if t < T:
            for c in range(K):
                dq[b, t, hq, c] = scale * acc[c]  # (4)

    @cuda.jit
    def backward_dkdv(q, k, v, do, lse, D, scale, kind, lo, hi, marr, dk, dv):
        """A block per (key tile, b * H + h), a thread per key: (5), over the G query heads of h."""
        B, T, HQ, K = q.shape
        S, H, V = k.shape[1], k.shape[2], v.shape[3]
        G = HQ // H
        bh = cuda.blockIdx.y
        b, h = bh // H, bh % H
        i = cuda.threadIdx.x
        s0 = cuda.blockIdx.x * TILE
        s = s0 + i
        bm = b if marr.shape[0] > 1 else 0
        Qs = cuda.shared.array((TILE, MAX_DIM), real)
        dOs = cuda.shared.array((TILE, MAX_DIM), real)
        Ls = cuda.shared.array(TILE, real)  # lse of the tile's rows (-inf: no gradient)
        Ds = cuda.shared.array(TILE, real)
        ks = cuda.local.array(MAX_DIM, real)
        vs = cuda.local.array(MAX_DIM, real)
        dks = cuda.local.array(MAX_DIM, real)
        dvs = cuda.local.array(MAX_DIM, real)
        for c in range(K):
            ks[c] = k[b, s, h, c] if s < S else ZERO
            dks[c] = ZERO
        for c in range(V):
            vs[c] = v[b, s, h, c] if s < S else ZERO
            dvs[c] = ZERO
        nq = (T + TILE - 1) // TILE
        for hq in range(h * G, (h + 1) * G):
            hm = hq if marr.shape[1] > 1 else 0
            for qt in range(nq):
                t0 = qt * TILE
                t1 = min(t0 + TILE, T)
                k_first, k_last = lo[b, t0] // TILE, hi[b, t1 - 1] // TILE  # the visible key tiles
                if cuda.blockIdx.x < k_first or cuda.blockIdx.x > k_last:
                    continue  # a fully masked tile (the same in every thread)
                any_here = 0  # an int32 for syncthreads_or
                if s < S:
                    for j in range(t1 - t0):
                        if lo[b, t0 + j] <= s <= hi[b, t0 + j] and (kind != ARRAY or marr[bm, hm, t0 + j, s] != 0):
                            any_here = 1
                if kind == ARRAY and not cuda.syncthreads_or(any_here):
                    continue
                cuda.syncthreads()
                t = t0 + i
                for c in range(K):
                    Qs[i, c] = q[b, t, hq, c] if t < T else ZERO
                for c in range(V):
                    dOs[i, c] = do[b, t, hq, c] if t < T else ZERO
                Ls[i] = lse[b, t, hq] if t < T else NINF
                Ds[i] = D[b, t, hq] if t < T else ZERO
                cuda.syncthreads()
                if any_here:
                    for j in range(t1 - t0):
                        tj = t0 + j
                        if Ls[j] > NINF and lo[b, tj] <= s <= hi[b, tj] and (kind != ARRAY or marr[bm, hm, tj, s] != 0):
                            x = ZERO
                            for c in range(K):
                                x += Qs[j, c] * ks[c]
                            p = math.exp(scale * x - Ls[j])  # P_ts
                            dp = ZERO
                            for c in range(V):
                                dp += dOs[j, c] * vs[c]
                                dvs[c] += p * dOs[j, c]  # (5)
                            ds = p * (dp - Ds[j])  # dS_ts
                            for c in range(K):
                                dks[c] += ds * Qs[j, c]  # (5)
        if s < S:
            for c in range(K):
                dk[b, s, h, c] = scale * dks[c]
            for c in range(V):
                dv[b, s, h, c] = dvs[c]

    return SimpleNamespace(tile=TILE, forward=forward, row_dots=row_dots, backward_dq=backward_dq,
                           backward_dkdv=backward_dkdv)  # fmt: skip


# --- launchers on device arrays ----------------------------------------------------------------


def check_dims(K: int, V: int) -> None:
    """K and V must fit the shared tiles and local rows of the kernels (``MAX_DIM``)."""
    for n, name, arg in ((K, "K", "q"), (V, "V", "v")):
        if n > MAX_DIM:
            raise ValueError(
                f"{arg}: the CUDA kernels hold a row in shared and local arrays: expected {name} <= {MAX_DIM}, "
                f"got {name} = {n}"
            )


def _grid(n, ks):
    return max(1, math.ceil(n / ks.tile))


def launch_forward(q, k, v, scale, mask_args, o, lse, tile=None):
    """o and lse; q, k, v, o, lse device arrays; ``mask_args`` = (kind, lo, hi, mask array), the
    last three on the device (``_mask_to_device``)."""
    B, T, HQ, K = q.shape
    check_dims(K, v.shape[3])
    ks = kernels(q.dtype, tile)
    ks.forward[(_grid(T, ks), B * HQ), ks.tile](q, k, v, q.dtype.type(scale), *mask_args, o, lse)


def launch_backward(q, k, v, o, lse, do, scale, mask_args, dq, dk, dv, tile=None):
    """dq, dk, dv from the forward's o and lse (device arrays)."""
    B, T, HQ, K = q.shape
    _, S, H, V = v.shape
    check_dims(K, V)
    ks = kernels(q.dtype, tile)
    scale = q.dtype.type(scale)
    D = cuda.device_array((B, T, HQ), q.dtype)
    ks.row_dots[max(1, math.ceil(B * T * HQ / ROW_THREADS)), ROW_THREADS](do, o, D)
    ks.backward_dq[(_grid(T, ks), B * HQ), ks.tile](q, k, v, do, lse, D, scale, *mask_args, dq)
    ks.backward_dkdv[(_grid(S, ks), B * H), ks.tile](q, k, v, do, lse, D, scale, *mask_args, dk, dv)


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
    """The forward: ``(o, lse)`` as ``attention_cpu``; ``tile`` rows per block (default by dtype)."""
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
    """Every kernel of this module with its argument types for ``dtype`` (float32 or float64).

    Used to compile each kernel to PTX without a GPU (``numba.cuda.compile_ptx``), which runs the
    real type inference and code generation that the simulator skips.
    """
    from numba import types

    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    A3, A4 = types.Array(f, 3, "C"), types.Array(f, 4, "C")
    i64 = types.int64
    I2 = types.Array(i64, 2, "C")
    mask = (i64, I2, I2, types.Array(types.uint8, 4, "C"))
    ks = kernels(dtype)
    return [
        (ks.forward, (A4, A4, A4, f, *mask, A4, A3)),
        (ks.row_dots, (A4, A4, A3)),
        (ks.backward_dq, (A4, A4, A4, A4, A3, A3, f, *mask, A4)),
        (ks.backward_dkdv, (A4, A4, A4, A4, A3, A3, f, *mask, A4, A4)),
    ]
