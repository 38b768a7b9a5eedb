"""The block-parallel form (Languini's "fast implementation"): a matrix per block, a carry across blocks.

Gates, update and output are (1), (2), (4) of ``recurrent.py``. Split time into n = ceil(T / L)
blocks of L steps (the last one padded with identity steps, f = 1 and u = 0). Unrolling (3)
c_k = f_k c_{k-1} + u_k inside a block that starts from the state c_in:

    c_k = (f_0 ... f_k) c_in + sum_{l<=k} (f_{l+1} ... f_k) u_l,      k = 0 .. L-1

which is one matrix-vector product per block and channel:

    c = F [c_in; u],   F (L, L+1),   F_{k,0} = prod_{j=0..k} f_j,
                                     F_{k,l+1} = prod_{j=l+1..k} f_j (l <= k), 0 (l > k)      (7)

The products come from segment sums of log f (ref.mixers.ssd.segsum: masked cumulative sums,
no differences of cumulative sums, so no cancellation). With a = [0, log f_0, ..., log f_{L-1}]
(the 0 stands for the c_in slot):

    F = exp(segsum(a))[1:, :]              segsum(a)_{k,l} = a_{l+1} + ... + a_k                (8)

log f = log sigmoid(fx + 1) is taken from the pre-activation, so it is finite even where f
rounds to 0 (Languini adds 1e-8 inside the log instead, a small bias this form does not have).
Inside a block every step is computed at once (O(L^2) work and memory per channel instead of
O(L)); only the n carries c_in <- c_{L-1} are sequential. F is built one block at a time, in the
forward and again in the backward, so memory stays at one block's matrices. L = T is one
matrix, L = 1 the recurrent loop.

Backward, block by block in reverse time, with dc the direct part of dL/dc (from (4)) and the
carry dc_out = dL/d(the block's last state) from the next block (dct for the last one):

    [dc_in; g] = F^T (dc + dc_out e_{L-1})                                                      (9)

g_l = dL/du_l is the total gradient of c_l (the transpose of (7) runs time backwards), and dc_in
is the next carry (dinitial_state after the first block). The gradient of log f_j through the
segment sums (8) is the sum of dc_k F_{k,l} [c_in; u]_l over the rows k >= j and the columns
l <= j (column 0 is c_in, column l + 1 is u_l: the entries whose product contains f_j). It
collapses: the sum over those columns is the part of c_k that entered before step j,
(f_{j+1} ... f_k) f_j c_{j-1}, and the sum over k of dc_k (f_{j+1} ... f_k) is g_j, so

    dL/dlog f_j = g_j f_j c_{j-1}                                                               (10)

the same expression as the recurrent form's (6) (times f_j for the log).

backend: "numpy" (this file), or "numba" / "cuda", which keep the block structure but run the
inside of each block as a short scan instead of the matrix (7): ``ref.mixers.linear_scan``'s
chunked form with chunk_size = L on ``numba_kernels.scan_cpu`` / ``scan_cuda``.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.backend import resolve
from ref.mixers.linear_scan import linear_scan_chunked, linear_scan_chunked_backward
from ref.mixers.qlstm._inputs import (
    FORGET_BIAS,
    QLSTMCache,
    check_cotangents,
    check_inputs,
    gates,
    gates_backward,
    log_sigmoid,
    output,
    output_backward,
    previous_cells,
)
from ref.mixers.ssd import segsum


def _pad_blocks(x, L, value):
    """(B, T, D) -> (B, n, D, L): time padded with ``value`` to n L steps, cut into blocks."""
    Bn, T, D = x.shape
    n = -(-T // L)
    x = np.concatenate([x, np.full((Bn, n * L - T, D), value, x.dtype)], axis=1)  # (B, n L, D)
    return x.reshape(Bn, n, L, D).transpose(0, 1, 3, 2)  # (B, n, D, L)


def _unblock(x, T):
    """(B, n, D, L) -> (B, T, D), dropping the padding."""
    Bn, n, D, L = x.shape
    return np.ascontiguousarray(x.transpose(0, 1, 3, 2).reshape(Bn, n * L, D)[:, :T])


def block_matrix(logf_block):
    """(8) F = exp(segsum([0, log f]))[1:, :] of one block: (..., L) -> (..., L, L+1).
    Entries above the diagonal are exp(-inf) = 0."""
    a = np.concatenate([np.zeros_like(logf_block[..., :1]), logf_block], axis=-1)  # (..., L+1)
    return np.exp(segsum(a)[..., 1:, :])  # (..., L, L+1)


def qlstm_block_parallel(
    fx,
    ix,
    zx,
    ox,
    initial_state=None,
    *,
    block_length: int = 32,
    forget_bias: float = FORGET_BIAS,
    backend: str = "numpy",
):
    """The quasi-LSTM cell in blocks of ``block_length`` steps (any length; T need not be a
    multiple). Arguments and results as :func:`ref.mixers.qlstm.qlstm_recurrent`:
    ``h`` (B, T, D), ``ct`` (B, D) and the cache for :func:`qlstm_block_parallel_backward`."""
    L = checks.positive_int(block_length, "block_length")
    backend = resolve(backend, ("numpy", "numba", "cuda"), "qlstm_block_parallel")
    fx, ix, zx, ox, initial_state, forget_bias = check_inputs(fx, ix, zx, ox, initial_state, forget_bias)
    # (1), (2)
    f, i, z, o, u = gates(fx, ix, zx, ox, forget_bias)  # (B, T, D) each
    if backend != "numpy":
        # (3) by the chunked linear-scan kernels
        c, ct, scan_cache = linear_scan_chunked(f, u, initial_state, chunk_size=L, backend=backend)
        h, tanh_c = output(o, c)
        cache = QLSTMCache(f, i, z, o, c, tanh_c, initial_state, backend, block_length=L, scan_cache=scan_cache)
        return h, ct, cache

    Bn, T, D = fx.shape
    logf = log_sigmoid(fx + forget_bias)  # (B, T, D), finite
    logf_blocks = _pad_blocks(logf, L, 0.0)  # (B, n, D, L); padding: log f = 0, f = 1
    u_blocks = _pad_blocks(u, L, 0.0)  # (B, n, D, L)
    c_blocks = np.empty_like(u_blocks)  # (B, n, D, L)
    c_in = np.zeros((Bn, D), fx.dtype) if initial_state is None else initial_state  # (B, D)
    for b in range(u_blocks.shape[1]):
        F = block_matrix(logf_blocks[:, b])  # (B, D, L, L+1)
        U = np.concatenate([c_in[..., None], u_blocks[:, b]], axis=-1)  # (B, D, L+1): [c_in; u]
        # (7) c = F [c_in; u]
        c_blocks[:, b] = np.einsum("bdkl,bdl->bdk", F, U)  # (B, D, L)
        c_in = c_blocks[:, b, :, -1]  # the carry; after the last block, the padded steps kept it
    c = _unblock(c_blocks, T)  # (B, T, D)
    ct = c_in.copy()  # (B, D): identity padding leaves c_{T-1} unchanged
    # (4)
    h, tanh_c = output(o, c)
    cache = QLSTMCache(f, i, z, o, c, tanh_c, initial_state, backend, block_length=L, logf=logf)
    return h, ct, cache


def qlstm_block_parallel_backward(dh, dct, cache: QLSTMCache):
    """Gradients ``(dfx, dix, dzx, dox, dinitial_state)`` as :func:`qlstm_recurrent_backward`."""
    dh, dct = check_cotangents(dh, dct, cache.c.shape, cache.c.dtype)
    # (4) the direct part of dL/dc, and dox
    dc, dox = output_backward(dh, cache.o, cache.tanh_c)
    if cache.backend != "numpy":
        df, g, dc0 = linear_scan_chunked_backward(dc, dct, cache.scan_cache)
        dfx, dix, dzx = gates_backward(df * cache.f, g, cache)
        return dfx, dix, dzx, dox, dc0

    T, L = dc.shape[1], cache.block_length
    logf_blocks = _pad_blocks(cache.logf, L, 0.0)  # (B, n, D, L)
    dc_blocks = _pad_blocks(dc, L, 0.0)  # (B, n, D, L)
    g_blocks = np.empty_like(dc_blocks)  # (B, n, D, L)
    carry = dct  # (B, D): dL/d(last state of the block), from the block after it
    for b in range(dc_blocks.shape[1] - 1, -1, -1):
        F = block_matrix(logf_blocks[:, b])  # (B, D, L, L+1), recomputed
        dc_b = dc_blocks[:, b].copy()  # (B, D, L)
        dc_b[..., -1] += carry
        # (9) [dc_in; g] = F^T (dc + dc_out e_{L-1})
        dU = np.einsum("bdkl,bdk->bdl", F, dc_b)  # (B, D, L+1)
        g_blocks[:, b] = dU[..., 1:]
        carry = dU[..., 0]
    g = _unblock(g_blocks, T)  # (B, T, D): dL/du_t, the total gradient of c_t
    # (10) dL/dlog f_t = g_t f_t c_{t-1}
    dlogf = g * cache.f * previous_cells(cache.c, cache.initial_state)
    dfx, dix, dzx = gates_backward(dlogf, g, cache)
    dc0 = None if cache.initial_state is None else carry
    return dfx, dix, dzx, dox, dc0
