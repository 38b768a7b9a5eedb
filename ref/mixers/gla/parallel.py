"""GLA, the parallel form: all outputs at once, as masked attention with a decay per key dim.

Unrolling the recurrence S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t with G_t = gk_0 + ... + gk_t:

    S_t = diag(exp(G_t)) S_{-1} + sum_{s <= t} diag(exp(G_t - G_s)) k_s^T v_s

so, with E_ts[k] = exp(G_t[k] - G_s[k]) for s <= t (and 0 above the diagonal):

    A_ts = scale * sum_k q_t[k] k_s[k] E_ts[k]                                  (1)  (T, T)
    o_t  = sum_s A_ts v_s + scale * (q_t * exp(G_t)) S_{-1}                     (2)
    h_T  = diag(exp(G_{T-1})) S_{-1} + sum_s (k_s * E_{T-1,s})^T v_s            (3)

Every exponent is G_t - G_s <= 0 with s <= t (entries above the diagonal are set to -inf before
exp), so nothing overflows; the price is O(T^2 K) work and O(T^2) memory (the key dims are
accumulated one at a time). The factorised form (q * exp(G)) (k * exp(-G))^T would be cheaper
but overflows as soon as G is large and negative.

Backward: the gradient of every term of (1)-(3), including that of G written out explicitly
(d/dG_t of E_ts is +E_ts, d/dG_s is -E_ts), then dgk = the reverse cumulative sum of dG. The other
forms obtain dgk from an identity instead; this form is the independent check of it.
"""

from __future__ import annotations

import numpy as np

from ref.backend import resolve
from ref.mixers.gla._inputs import GLACache, check_cotangents, check_inputs


def _head_first(x):
    return np.ascontiguousarray(np.moveaxis(x, 2, 1))  # (B, T, H, X) -> (B, H, T, X)


def _cumulative_gates(gk, shape, dtype):
    """G = cumsum of the log-gates over time, (B, H, T, K); zeros when there is no gate."""
    if gk is None:
        return np.zeros(shape, dtype)
    return np.cumsum(_head_first(gk), axis=2)


def _decay(G, j):
    """E_ts for key dim j: exp(G_t - G_s) on and below the diagonal, 0 above.   (B, H, T, T)"""
    T = G.shape[2]
    diff = G[:, :, :, None, j] - G[:, :, None, :, j]  # (B, H, T, T)
    causal = np.tril(np.ones((T, T), dtype=bool))
    return np.exp(np.where(causal, diff, -np.inf))


def gla_parallel(q, k, v, gk=None, *, scale=None, initial_state=None, backend: str = "numpy"):
    """Gated linear attention as masked attention; same arguments and results as ``gla_recurrent``."""
    q, k, v, gk, scale, h0 = check_inputs(q, k, v, gk, scale, initial_state)
    backend = resolve(backend, ("numpy",), "gla_parallel")
    qh, kh, vh = _head_first(q), _head_first(k), _head_first(v)  # (B, H, T, K|V)
    B, H, T, K = qh.shape
    G = _cumulative_gates(gk, qh.shape, q.dtype)  # (B, H, T, K)

    A = np.zeros((B, H, T, T), q.dtype)
    for j in range(K):  # (1), one key dim at a time: T^2 memory instead of T^2 K
        A += qh[..., j, None] * kh[..., None, :, j] * _decay(G, j)
    A *= scale
    oh = A @ vh  # (2): (B, H, T, V)
    E_last = np.exp(G[:, :, -1:, :] - G)  # (B, H, T, K): E_{T-1, s}
    ht = np.einsum("bhsk,bhsv->bhkv", kh * E_last, vh)  # (3)
    if h0 is not None:
        oh += scale * (qh * np.exp(G)) @ h0  # (2)
        ht += np.exp(G[:, :, -1, :])[..., None] * h0  # (3)
    o = np.moveaxis(oh, 1, 2)  # (B, T, H, V)
    cache = GLACache(q=q, k=k, v=v, gk=gk, initial_state=h0, ht=ht, scale=scale, backend=backend)
    return np.ascontiguousarray(o), ht, cache


def gla_parallel_backward(do, dht, cache: GLACache):
    """Gradients ``(dq, dk, dv, dgk, dinitial_state)`` of (1)-(3), dG written out explicitly."""
    do, dht = check_cotangents(do, dht, cache)
    q, k, v, gk, h0, scale = cache.q, cache.k, cache.v, cache.gk, cache.initial_state, cache.scale
    qh, kh, vh, doh = _head_first(q), _head_first(k), _head_first(v), _head_first(do)
    B, H, T, K = qh.shape
    G = _cumulative_gates(gk, qh.shape, q.dtype)  # (B, H, T, K)

    dA = doh @ np.swapaxes(vh, -1, -2)  # (B, H, T, T): dL/dA_ts = do_t . v_s (masked below)
    dqh, dkh, dG = np.zeros_like(qh), np.zeros_like(kh), np.zeros_like(qh)
    A = np.zeros_like(dA)
    for j in range(K):
        E = _decay(G, j)  # zero above the diagonal, so dA needs no mask
        dAE = scale * dA * E  # (B, H, T, T)
        dqh[..., j] = np.einsum("bhts,bhs->bht", dAE, kh[..., j])  # (1): d/dq_t
        dkh[..., j] = np.einsum("bhts,bht->bhs", dAE, qh[..., j])  # (1): d/dk_s
        P = dAE * qh[..., j, None] * kh[..., None, :, j]  # dL/dA_ts * A_ts's term for dim j
        dG[..., j] = P.sum(axis=3) - P.sum(axis=2)  # +E_ts on G_t, -E_ts on G_s
        A += qh[..., j, None] * kh[..., None, :, j] * E
    dvh = np.swapaxes(scale * A, -1, -2) @ doh  # (2): (B, H, T, V)

    dh0 = None
    if h0 is not None:
        eG = np.exp(G)  # (B, H, T, K)
        dq_h0 = scale * eG * (doh @ np.swapaxes(h0, -1, -2))  # (2): (B, H, T, K)
        dqh += dq_h0
        dG += qh * dq_h0
        dh0 = scale * np.swapaxes(qh * eG, -1, -2) @ doh  # (2): (B, H, K, V)
    if dht is not None:
        E_last = np.exp(G[:, :, -1:, :] - G)  # (B, H, T, K)
        dk_ht = E_last * (vh @ np.swapaxes(dht, -1, -2))  # (3): (B, H, T, K)
        dkh += dk_ht
        dvh += (kh * E_last) @ dht  # (3)
        dG -= kh * dk_ht  # -E_{T-1,s} on G_s
        dG[:, :, -1, :] += (dht * cache.ht).sum(axis=-1)  # +E on G_{T-1}, and the h0 term
        if h0 is not None:
            dh0 = dh0 + np.exp(G[:, :, -1, :])[..., None] * dht

    back = lambda x: np.ascontiguousarray(np.moveaxis(x, 1, 2))  # noqa: E731  (B, H, T, X) -> (B, T, H, X)
    dgk = None
    if gk is not None:
        dgk = back(np.flip(np.cumsum(np.flip(dG, axis=2), axis=2), axis=2))  # G_t sums gk_0..gk_t
    return back(dqh), back(dkh), back(dvh), dgk, dh0
