"""Softmax attention, the recurrent form: T decode steps over a growing KV cache.

Query t sits at position p = t + S - T (``masks``). The cache starts with the keys that come
before the first query, plus, for a prefix-LM mask, the whole prefix (its queries also see later
prefix keys, so it enters in one piece: a prefill). Then, for t = 0 .. T-1:

    if token p is not cached yet: cache <- cache + (k_p, v_p)            (1)
    s_ts  = scale * q_t . k_s          for the n cached keys s           (2)
    o_t   = sum_{s: M_ts} softmax_s(s_ts) v_s,   lse_t as the parallel form's (5)   (3)

which is ``attention_decode_step`` (``decode.py``) run T times. It computes exactly what the
parallel form computes, provided no query sees a key after it (else that key is not cached yet),
so bidirectional attention and arbitrary boolean masks are refused.

Backward, step by step, with P_ts = exp(s_ts - lse_t) recomputed from the stored lse; each step
adds its share to the gradients of every cached key and value (they are read by many steps):

    dP_ts = do_t . v_s,    D_t = do_t . o_t,    dS_ts = P_ts (dP_ts - D_t)         (4)
    dq_t  = scale * sum_s dS_ts k_s                                                (5)
    dk_s += scale * dS_ts q_t,    dv_s += P_ts do_t     (summed over each group's query heads)  (6)
"""

from __future__ import annotations

import numpy as np

from ref.backend import resolve
from ref.mixers.attention._inputs import AttentionCache, check_cotangent, check_inputs, repeat_kv, sum_groups
from ref.mixers.attention.decode import KVCache, attend
from ref.mixers.attention.masks import allowed, make_mask, prefill_length


def attention_recurrent(
    q, k, v, *, mask="causal", scale=None, window=None, prefix_len=None, chunk_size=None, backend: str = "numpy"
):
    """Softmax attention by T KV-cache decode steps; same arguments and results as ``attention_parallel``.

    ``mask`` must be decodable: "causal", "sliding_window", "chunked" or "prefix_lm"
    ("bidirectional" and boolean arrays raise ValueError). Returns ``o`` (B, T, HQ, V) and the
    cache (with ``lse`` (B, T, HQ)).
    """
    q, k, v, scale = check_inputs(q, k, v, scale)
    resolve(backend, ("numpy",), "attention_recurrent")  # NumPy only, so far
    B, T, HQ, K = q.shape
    _, S, H, V = v.shape
    spec = make_mask(
        mask, window=window, prefix_len=prefix_len, chunk_size=chunk_size, B=B, HQ=HQ, T=T, S=S, decoding=True
    )

    kv = KVCache.empty(B, S, H, K, V, q.dtype)
    n0 = prefill_length(spec, T, S)
    kv.append(k[:, :n0], v[:, :n0])  # the context before the first query, and the prefix
    o = np.empty((B, T, HQ, V), q.dtype)
    lse = np.empty((B, T, HQ), q.dtype)
    for t in range(T):
        p = t + S - T  # the position of query t
        if p == kv.length:
            kv.append(k[:, p : p + 1], v[:, p : p + 1])  # (1): (B, 1, H, K), (B, 1, H, V)
        M = allowed(spec, np.array([p]), np.arange(kv.length))[:, :, 0]  # (B|1, 1, n)
        o[:, t], lse[:, t] = attend(q[:, t], kv.keys, kv.values, M, scale)  # (2), (3)
    return o, AttentionCache(q=q, k=k, v=v, o=o, lse=lse, scale=scale, mask=spec)


def attention_recurrent_backward(do, cache: AttentionCache):
    """Gradients ``(dq, dk, dv)`` step by step, (4)-(6); dk and dv accumulate over the steps."""
    do = check_cotangent(do, cache)
    q, k, v, o, scale, spec = cache.q, cache.k, cache.v, cache.o, cache.scale, cache.mask
    T, HQ = q.shape[1:3]
    S, H = k.shape[1:3]
    G = HQ // H
    n0 = prefill_length(spec, T, S)
    lse = np.where(np.isfinite(cache.lse), cache.lse, 0.0)  # fully masked rows have no allowed key anyway

    dq = np.empty_like(q)
    dk = np.zeros_like(k)
    dv = np.zeros_like(v)
    for t in range(T):
        p = t + S - T
        n = max(p + 1, n0)  # the keys in the cache at step t
        kr, vr = repeat_kv(k[:, :n], G), repeat_kv(v[:, :n], G)  # (B, n, HQ, K), (B, n, HQ, V)
        M = allowed(spec, np.array([p]), np.arange(n))[:, :, 0]  # (B|1, 1, n)
        s = scale * np.einsum("bhk,bnhk->bhn", q[:, t], kr)  # (B, HQ, n)
        P = np.exp(np.where(M, s - lse[:, t, :, None], -np.inf))  # (B, HQ, n)
        dP = np.einsum("bhv,bnhv->bhn", do[:, t], vr)  # (4)
        D = (do[:, t] * o[:, t]).sum(axis=-1, keepdims=True)  # (4): (B, HQ, 1)
        dS = P * (dP - D)  # (4)
        dq[:, t] = scale * np.einsum("bhn,bnhk->bhk", dS, kr)  # (5)
        dk[:, :n] += sum_groups(scale * np.einsum("bhn,bhk->bnhk", dS, q[:, t]), H)  # (6)
        dv[:, :n] += sum_groups(np.einsum("bhn,bhv->bnhv", P, do[:, t]), H)  # (6)
    return dq, dk, dv
