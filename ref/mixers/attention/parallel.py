"""Softmax attention, the parallel form: all T queries against all S keys at once.

For query t (at position p = t + S - T, see ``masks``) and the keys s it may attend to
(M_ts = True), with scores and probabilities per row:

    s_ts   = scale * q_t . k_s                                           (1)  (B, HQ, T, S)
    m_t    = max_{s: M_ts} s_ts            (0 for a fully masked row)    (2)
    e_ts   = exp(s_ts - m_t) if M_ts else 0                              (3)
    z_t    = sum_s e_ts
    o_t    = sum_s e_ts v_s / z_t          (0 for a fully masked row)    (4)
    lse_t  = m_t + log z_t                 (-inf for a fully masked row) (5)

Subtracting the row max over the *allowed* entries keeps every exponent <= 0 (no overflow) and
the largest term equal to 1 (no underflow of the whole row), whatever the size of the scores.

Grouped-query attention: q has HQ heads, k and v have H heads, H dividing HQ; query head h reads
key/value head h // G with G = HQ / H (MHA: G = 1; MQA: H = 1). The code repeats each key/value
head G times and then runs multi-head attention; the backward sums the G copies' gradients.

Backward (as FlashAttention-2), with P_ts = e_ts / z_t = exp(s_ts - lse_t) recomputed from lse:

    dv_s  = sum_t P_ts do_t                                              (6)
    dP_ts = do_t . v_s                                                   (7)
    D_t   = do_t . o_t   (= sum_s P_ts dP_ts)                            (8)
    dS_ts = P_ts (dP_ts - D_t)          (the softmax Jacobian, applied)  (9)
    dq_t  = scale * sum_s dS_ts k_s,    dk_s = scale * sum_t dS_ts q_t   (10)

A fully masked row has P = 0, so o_t = 0 and it sends no gradient anywhere (dq_t = 0 and nothing
to any k or v): defined, documented, never NaN.
"""

from __future__ import annotations

import numpy as np

from ref.backend import resolve
from ref.mixers.attention._inputs import (
    AttentionCache,
    check_cotangent,
    check_inputs,
    head_first,
    repeat_kv,
    sum_groups,
    time_first,
)
from ref.mixers.attention.masks import dense, make_mask


def _scores(q, k, scale, G):
    """(1): s = scale * q k^T per query head, (B, HQ, T, S)."""
    qh = head_first(q)  # (B, HQ, T, K)
    kh = head_first(repeat_kv(k, G))  # (B, HQ, S, K)
    return scale * (qh @ np.swapaxes(kh, -1, -2))


def _kernels(backend):
    """(forward, backward) of the jitted kernels of ``backend``, imported only when used."""
    if backend == "numba":
        from numba_kernels.attention_cpu import attention_cpu, attention_cpu_backward

        return attention_cpu, attention_cpu_backward
    from numba_kernels.attention_cuda import attention_cuda, attention_cuda_backward

    return attention_cuda, attention_cuda_backward


def _mask_arguments(spec):
    """The mask as the kernels take it: (mask kind or boolean array, window, chunk_size, prefix_len)."""
    mask = spec.array if spec.kind == "array" else spec.kind
    return mask, spec.window, spec.chunk_size, spec.prefix_len


def attention_parallel(
    q, k, v, *, mask="causal", scale=None, window=None, prefix_len=None, chunk_size=None, backend: str = "numpy"
):
    """Scaled dot-product attention with a mask, layout as flash-linear-attention.

    q (B, T, HQ, K); k (B, S, H, K); v (B, S, H, V), H dividing HQ (GQA; MQA when H = 1).
    ``mask``: "causal" (default), "bidirectional", "sliding_window" (needs ``window``),
    "chunked" (needs ``chunk_size``), "prefix_lm" (needs ``prefix_len``, an int or an int array
    (B,)), or a boolean array (T, S), (B, T, S) or (B, HQ, T, S), True = may attend. With S != T
    the causal-type masks align the last query with the last key (``ref.mixers.attention.masks``).
    ``scale`` defaults to K^-0.5.

    Returns ``o`` (B, T, HQ, V) and the cache, which keeps the log-sum-exp of every row,
    ``cache.lse`` (B, T, HQ). A fully masked row gives o = 0 and lse = -inf.

    backend: "numpy" (this file, O(T S) memory), "numba" (``numba_kernels.attention_cpu``) or
    "cuda" (``numba_kernels.attention_cuda``): FlashAttention-style tiles, O(T) memory; or "auto".
    The backward runs on the same backend.
    """
    q, k, v, scale = check_inputs(q, k, v, scale)
    backend = resolve(backend, ("numpy", "numba", "cuda"), "attention_parallel")
    B, T, HQ, _ = q.shape
    _, S, H, _ = k.shape
    G = HQ // H
    spec = make_mask(mask, window=window, prefix_len=prefix_len, chunk_size=chunk_size, B=B, HQ=HQ, T=T, S=S)
    if backend != "numpy":
        o, lse = _kernels(backend)[0](q, k, v, scale, *_mask_arguments(spec))
        return o, AttentionCache(q=q, k=k, v=v, o=o, lse=lse, scale=scale, mask=spec, backend=backend)
    M = dense(spec, T, S)  # (B|1, HQ|1, T, S)

    s = _scores(q, k, scale, G)  # (1): (B, HQ, T, S)
    m = np.where(M, s, -np.inf).max(axis=-1, keepdims=True)  # (2): (B, HQ, T, 1)
    m = np.where(np.isfinite(m), m, 0.0)  # a fully masked row: any finite m will do
    e = np.exp(np.where(M, s - m, -np.inf))  # (3): exp(-inf) = 0 off the mask
    z = e.sum(axis=-1, keepdims=True)  # the normaliser: (B, HQ, T, 1)
    empty = z == 0  # fully masked rows
    z_safe = np.where(empty, 1.0, z)
    oh = (e @ head_first(repeat_kv(v, G))) / z_safe  # (4): (B, HQ, T, V)
    lse = np.where(empty, -np.inf, m + np.log(z_safe))  # (5): (B, HQ, T, 1)

    o = time_first(oh)  # (B, T, HQ, V)
    lse = np.ascontiguousarray(np.moveaxis(lse[..., 0], 1, 2))  # (B, T, HQ)
    return o, AttentionCache(q=q, k=k, v=v, o=o, lse=lse, scale=scale, mask=spec)


def attention_parallel_backward(do, cache: AttentionCache):
    """Gradients ``(dq, dk, dv)`` by (6)-(10); dk and dv summed over the query heads of each group."""
    do = check_cotangent(do, cache)
    q, k, v, scale = cache.q, cache.k, cache.v, cache.scale
    if cache.backend != "numpy":
        backward = _kernels(cache.backend)[1]
        return backward(q, k, v, cache.o, cache.lse, do, scale, *_mask_arguments(cache.mask))
    T, HQ = q.shape[1:3]
    S, H = k.shape[1:3]
    G = HQ // H
    M = dense(cache.mask, T, S)  # (B|1, HQ|1, T, S)

    s = _scores(q, k, scale, G)  # (1): (B, HQ, T, S)
    lse = np.moveaxis(cache.lse, 2, 1)[..., None]  # (B, HQ, T, 1)
    lse = np.where(np.isfinite(lse), lse, 0.0)  # a fully masked row has no allowed entry anyway
    P = np.exp(np.where(M, s - lse, -np.inf))  # P_ts = exp(s_ts - lse_t): (B, HQ, T, S)

    doh = head_first(do)  # (B, HQ, T, V)
    dvh = np.swapaxes(P, -1, -2) @ doh  # (6): (B, HQ, S, V)
    dP = doh @ np.swapaxes(head_first(repeat_kv(v, G)), -1, -2)  # (7): (B, HQ, T, S)
    D = (doh * head_first(cache.o)).sum(axis=-1, keepdims=True)  # (8): (B, HQ, T, 1)
    dS = P * (dP - D)  # (9)
    dqh = scale * dS @ head_first(repeat_kv(k, G))  # (10): (B, HQ, T, K)
    dkh = scale * np.swapaxes(dS, -1, -2) @ head_first(q)  # (10): (B, HQ, S, K)

    dq = time_first(dqh)  # (B, T, HQ, K)
    dk = sum_groups(time_first(dkh), H)  # (B, S, HQ, K) -> (B, S, H, K)
    dv = sum_groups(time_first(dvh), H)  # (B, S, HQ, V) -> (B, S, H, V)
    return dq, dk, dv
