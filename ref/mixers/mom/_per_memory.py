"""MoM as M' independent GLAs over the full sequence, keys and gates masked where not routed.

Memory m is "unchanged at a token not routed to it". In GLA's recurrence S_t = diag(exp(gk_t))
S_{t-1} + k_t^T v_t that is exactly k_t = 0 (no write) and gk_t = 0 (no decay) at that token. So
each memory is a GLA over the whole sequence with

    k'^m_t = k^m_t [w_t[m] > 0],   gk'^m_t[:] = g^m_t [w_t[m] > 0]  (the scalar gate on every key dim)   (1)

and the mixer's output is the weighted sum of the memories' outputs (the shared memory's weight is 1):

    o_t = sum_m w_t[m] o^m_t,   o^m = GLA(q, k'^m, v^m, gk'^m)                                (2)

Any form of GLA does; the parallel and chunked forms of MoM use GLA's parallel and chunked forms.

Backward, memory by memory: GLA's backward with do^m = w[m] * do gives dq^m, dk'^m, dv^m, dgk'^m;
then dq = sum_m dq^m, dk^m = dk'^m and dg^m = sum_K dgk'^m where routed (0 elsewhere, since the
mask is a constant), and dw_t[m] = <o^m_t, do_t> where routed (the routing held fixed).
"""

from __future__ import annotations

import numpy as np

from ref.mixers.mom._inputs import (
    MoMCache,
    MoMInputs,
    check_cotangents,
    split_gradients,
    split_states,
    stack_memories,
)


def masked_gla_inputs(mem, m):
    """(1): GLA's k (B, T, H, K), v (B, T, H, V) and gk (B, T, H, K) or None for memory m."""
    on = mem.routed[:, :, m]  # (B, T)
    k_m = mem.k[:, :, m] * on[:, :, None, None]  # (B, T, H, K)
    gk_m = None
    if mem.g is not None:
        g_m = mem.g[:, :, m] * on[:, :, None]  # (B, T, H)
        gk_m = np.ascontiguousarray(np.broadcast_to(g_m[..., None], k_m.shape))  # the scalar gate on every key dim
    return k_m, np.ascontiguousarray(mem.v[:, :, m]), gk_m


def forward(gla_form, x: MoMInputs, backend: str, **options):
    """(2) with ``gla_form`` (GLA's parallel or chunked function); returns ``o, ht, ht_shared, cache``."""
    mem = stack_memories(x)
    B, T, Mp, H, K = mem.k.shape
    V = mem.v.shape[4]
    o = np.zeros((B, T, H, V), x.q.dtype)
    ht = np.empty((B, Mp, H, K, V), x.q.dtype)
    parts = []
    for m in range(Mp):
        k_m, v_m, gk_m = masked_gla_inputs(mem, m)
        h0_m = None if mem.h0 is None else mem.h0[:, m]
        o_m, ht[:, m], gla_cache = gla_form(x.q, k_m, v_m, gk_m, scale=x.scale, initial_state=h0_m, **options)
        o += mem.w[:, :, m, None, None] * o_m  # (2)
        parts.append((o_m, gla_cache))
    ht, ht_shared = split_states(x, ht)
    cache = MoMCache(inputs=x, ht=ht, ht_shared=ht_shared, backend=backend, parts=tuple(parts))
    return o, ht.copy(), None if ht_shared is None else ht_shared.copy(), cache


def backward(gla_backward, do, dht, dht_shared, cache: MoMCache):
    """The gradients of (2) through GLA's ``gla_backward``, in the order of ``split_gradients``."""
    do, dS_final = check_cotangents(do, dht, dht_shared, cache)
    x = cache.inputs
    mem = stack_memories(x)
    B, T, Mp, H, K = mem.k.shape
    routed = mem.routed  # (B, T, M')
    dq = np.zeros_like(x.q)
    dk, dv = np.zeros_like(mem.k), np.zeros_like(mem.v)
    dw = np.zeros_like(mem.w)
    dg = None if mem.g is None else np.zeros_like(mem.g)
    dh0 = None if mem.h0 is None else np.zeros_like(mem.h0)
    for m, (o_m, gla_cache) in enumerate(cache.parts):
        on = routed[:, :, m]  # (B, T)
        do_m = mem.w[:, :, m, None, None] * do  # (B, T, H, V)
        dht_m = None if dS_final is None else dS_final[:, m]
        dq_m, dk_m, dv_m, dgk_m, dh0_m = gla_backward(do_m, dht_m, gla_cache)
        dq += dq_m
        dk[:, :, m] = dk_m * on[:, :, None, None]
        dv[:, :, m] = dv_m * on[:, :, None, None]  # already 0 there (k' = 0), made exact
        dw[:, :, m] = (o_m * do).sum(axis=(-2, -1)) * on
        if dg is not None:
            dg[:, :, m] = dgk_m.sum(axis=-1) * on[:, :, None]
        if dh0 is not None:
            dh0[:, m] = dh0_m
    return split_gradients(x, dq, dk, dv, dw, dg, dh0)
