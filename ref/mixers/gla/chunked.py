"""GLA, the chunked form: attention inside chunks, the recurrence across them.

Cut time into chunks of C steps. Inside a chunk, let b_i = gk_start + ... + gk_i be the gates
accumulated from the chunk's start (per key dim), and S the state entering the chunk. Unrolling
the recurrence from the chunk's start:

    o_i = scale * (q_i * exp(b_i)) S                                     inter-chunk    (1)
        + sum_{j <= i} A_ij v_j,  A_ij = scale * sum_k q_i[k] k_j[k] exp(b_i[k] - b_j[k])  (2)
    S'  = diag(exp(b_last)) S + sum_j (k_j * exp(b_last - b_j))^T v_j                     (3)

(1) and (2) are matrix products over a whole chunk (the hardware-efficient part); only (3) runs
sequentially, once per chunk. Stability: every exponent is a difference b_i - b_j with j <= i, or
b_i, or b_last - b_j, all <= 0, and the sums b restart at every chunk, so their magnitude is
bounded by C steps of gates: nothing overflows and nothing cancels catastrophically, even at
T = 65,536 with near-total forgetting.

Backward, chunk by chunk from the last, carrying dS (the gradient of the state leaving a chunk):

    dS_entering = diag(exp(b_last)) dS' + scale * sum_i (q_i * exp(b_i))^T do_i     from (1), (3)
    dq_i = scale * exp(b_i) * (do_i S^T) + sum_j dA_ij ...                           from (1), (2)
    dk_j, dv_j from (2) and from (3) with dS'

using the entering states saved by the forward (one (K, V) state per chunk), then dgk from dq and
dk (``gate_gradient``).
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.backend import resolve
from ref.mixers.gla._inputs import GLACache, check_cotangents, check_inputs, gate_gradient


def _chunks(T, C):
    return [(s, min(s + C, T)) for s in range(0, T, C)]


def _local_gates(gk, s, e, shape, dtype):
    """b_i for the chunk [s, e): gates accumulated from the chunk's start.   (B, H, L, K)"""
    if gk is None:
        return np.zeros(shape, dtype)
    return np.cumsum(np.moveaxis(gk[:, s:e], 2, 1), axis=2)


def _intra_weights(qc, kc, b):
    """A_ij / scale = sum_k q_i[k] k_j[k] exp(b_i[k] - b_j[k]) for j <= i, 0 above.   (B, H, L, L)"""
    L = qc.shape[2]
    diff = b[:, :, :, None, :] - b[:, :, None, :, :]  # (B, H, L, L, K)
    causal = np.tril(np.ones((L, L), dtype=bool))[:, :, None]  # (L, L, 1)
    E = np.exp(np.where(causal, diff, -np.inf))  # (B, H, L, L, K)
    return np.einsum("bhik,bhjk,bhijk->bhij", qc, kc, E), E


def gla_chunked(q, k, v, gk=None, *, scale=None, initial_state=None, chunk_size: int = 64, backend: str = "numpy"):
    """Gated linear attention by chunks; same arguments and results as ``gla_recurrent``.

    backend: "numpy" (this file), "numba" (``numba_kernels.gla_cpu.gla_cpu_chunked``), "cuda"
    (``numba_kernels.gla_cuda.gla_cuda_chunked``) or "auto"; the backward runs on the same backend.
    """
    q, k, v, gk, scale, h0 = check_inputs(q, k, v, gk, scale, initial_state)
    C = checks.positive_int(chunk_size, "chunk_size")
    backend = resolve(backend, ("numpy", "numba", "cuda"), "gla_chunked")
    if backend != "numpy":
        if backend == "numba":
            from numba_kernels.gla_cpu import gla_cpu_chunked as kernel
        else:
            from numba_kernels.gla_cuda import gla_cuda_chunked as kernel
        o, states = kernel(q, k, v, gk, scale, h0, C)
        ht = states[:, -1]  # (B, H, K, V)
        cache = GLACache(
            q=q, k=k, v=v, gk=gk, initial_state=h0, ht=ht, scale=scale, backend=backend, chunk_size=C, states=states
        )
        return o, ht.copy(), cache
    B, T, H, K = q.shape
    V = v.shape[3]
    chunks = _chunks(T, C)
    states = np.empty((B, len(chunks) + 1, H, K, V), q.dtype)  # the state entering each chunk, and the last
    S = np.zeros((B, H, K, V), q.dtype) if h0 is None else h0
    o = np.empty((B, T, H, V), q.dtype)
    for c, (s, e) in enumerate(chunks):
        states[:, c] = S
        qc, kc, vc = (np.moveaxis(x[:, s:e], 2, 1) for x in (q, k, v))  # (B, H, L, K|V)
        b = _local_gates(gk, s, e, qc.shape, q.dtype)  # (B, H, L, K)
        A, _ = _intra_weights(qc, kc, b)
        oc = scale * ((qc * np.exp(b)) @ S + A @ vc)  # (1) + (2): (B, H, L, V)
        o[:, s:e] = np.moveaxis(oc, 1, 2)
        b_last = b[:, :, -1:, :]  # (B, H, 1, K)
        S = np.exp(b_last[:, :, 0, :])[..., None] * S + np.swapaxes(kc * np.exp(b_last - b), -1, -2) @ vc  # (3)
    states[:, -1] = S
    cache = GLACache(
        q=q, k=k, v=v, gk=gk, initial_state=h0, ht=S, scale=scale, backend=backend, chunk_size=C, states=states
    )
    return o, S.copy(), cache


def gla_chunked_backward(do, dht, cache: GLACache):
    """Gradients ``(dq, dk, dv, dgk, dinitial_state)``, chunk by chunk from the last."""
    do, dht = check_cotangents(do, dht, cache)
    q, k, v, gk, h0, scale = cache.q, cache.k, cache.v, cache.gk, cache.initial_state, cache.scale
    if cache.backend != "numpy":
        if cache.backend == "numba":
            from numba_kernels.gla_cpu import gla_cpu_chunked_backward as kernel
        else:
            from numba_kernels.gla_cuda import gla_cuda_chunked_backward as kernel
        return kernel(q, k, v, gk, scale, h0, cache.states, do, dht, cache.chunk_size)
    B, T, H, K = q.shape
    V = v.shape[3]
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    dS = np.zeros((B, H, K, V), q.dtype) if dht is None else dht.copy()  # gradient of the state leaving the chunk
    chunks = _chunks(T, cache.chunk_size)
    for c in range(len(chunks) - 1, -1, -1):
        s, e = chunks[c]
        S = cache.states[:, c]  # (B, H, K, V) entering the chunk
        qc, kc, vc, doc = (np.moveaxis(x[:, s:e], 2, 1) for x in (q, k, v, do))  # (B, H, L, X)
        b = _local_gates(gk, s, e, qc.shape, q.dtype)  # (B, H, L, K)
        eb = np.exp(b)
        b_last = b[:, :, -1:, :]
        k_to_end = np.exp(b_last - b)  # (B, H, L, K): exp(b_last - b_j)
        A, E = _intra_weights(qc, kc, b)

        dA = scale * (doc @ np.swapaxes(vc, -1, -2)) * np.tril(np.ones((e - s, e - s)))  # (2): (B, H, L, L)
        dqc = scale * eb * (doc @ np.swapaxes(S, -1, -2))  # (1)
        dqc += np.einsum("bhij,bhjk,bhijk->bhik", dA, kc, E)  # (2)
        dkc = np.einsum("bhij,bhik,bhijk->bhjk", dA, qc, E)  # (2)
        dkc += k_to_end * (vc @ np.swapaxes(dS, -1, -2))  # (3)
        dvc = scale * np.swapaxes(A, -1, -2) @ doc  # (2)
        dvc += (kc * k_to_end) @ dS  # (3)
        # the gradient of the state entering this chunk, from (3) and (1)
        dS = np.exp(b_last[:, :, 0, :])[..., None] * dS + scale * np.swapaxes(qc * eb, -1, -2) @ doc

        dq[:, s:e], dk[:, s:e], dv[:, s:e] = (np.moveaxis(x, 1, 2) for x in (dqc, dkc, dvc))
    dh0 = None if h0 is None else dS
    dgk = None if gk is None else gate_gradient(q, dq, k, dk, cache.ht, dht)
    return dq, dk, dv, dgk, dh0
