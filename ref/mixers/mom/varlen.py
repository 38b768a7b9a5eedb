"""MoM, the varlen form of the paper: gather each memory's tokens, run its recurrence, scatter back.

The paper's hardware-efficient implementation (tokens reordered by memory into variable-length
sequences for the kernels; ``transform`` and ``reconstruct`` in the official code) never touches a
memory at a token that is not routed to it. For each batch row b and memory m:

    idx      = the times t with w_t[m] > 0, in order                          (1)  gather
    o~, h_T  = GLA(q[idx], k^m[idx], v^m[idx], g^m[idx]; h0^m)              (2)  the recurrence
                over those L = len(idx) tokens only (a variable-length sequence)
    o[idx]  += w[idx, m] * o~                                               (3)  scatter back

with the shared memory's idx every time and weight 1. Since memory m is unchanged between two of
its tokens, the recurrence over the gathered tokens visits exactly the states of the masked full
recurrence (``recurrent.py``), at the times that read them with a nonzero weight: the equivalence
the paper relies on, and which the tests check. A memory no token of row b is routed to keeps its
initial state (L = 0). Total work: the routed tokens (top_k T plus T for the shared memory), not M' T.

The official code also caps each memory at a capacity of ceil(T / top_k * capacity) tokens,
dropping the earliest routed tokens beyond it; this reference drops none (capacity unlimited).

Backward: GLA's recurrent backward on each gathered sequence with do~ = w[idx, m] * do[idx], its
gradients scattered back to idx (0 at the other times), dq summed over memories, and
dw[idx, m] = <o~, do[idx]> (0 elsewhere: the routing held fixed).
"""

from __future__ import annotations

import numpy as np

from ref.backend import resolve
from ref.mixers.gla import gla_recurrent, gla_recurrent_backward
from ref.mixers.mom._inputs import (
    MoMCache,
    check_cotangents,
    check_inputs,
    split_gradients,
    split_states,
    stack_memories,
)


def _gathered(x, mem, b, m, idx):
    """(1): memory m's GLA inputs for batch row b at times idx, each with a batch axis of 1."""
    q = x.q[b, idx][None]  # (1, L, H, K)
    k = mem.k[b, idx, m][None]  # (1, L, H, K)
    v = mem.v[b, idx, m][None]  # (1, L, H, V)
    gk = None
    if mem.g is not None:
        gk = np.ascontiguousarray(np.broadcast_to(mem.g[b, idx, m][None, :, :, None], k.shape))  # (1, L, H, K)
    h0 = None if mem.h0 is None else mem.h0[b, m][None]  # (1, H, K, V)
    return q, k, v, gk, h0


def mom_varlen(
    q,
    k,
    v,
    w,
    k_s=None,
    v_s=None,
    g=None,
    g_s=None,
    *,
    scale=None,
    initial_state=None,
    initial_state_shared=None,
    top_k=None,
    backend: str = "numpy",
):
    """Mixture-of-memories linear attention over each memory's gathered tokens; as ``mom_recurrent``."""
    x = check_inputs(q, k, v, w, k_s, v_s, g, g_s, scale, initial_state, initial_state_shared, top_k)
    backend = resolve(backend, ("numpy",), "mom_varlen")
    mem = stack_memories(x)
    B, T, Mp, H, K = mem.k.shape
    V = mem.v.shape[4]
    o = np.zeros((B, T, H, V), x.q.dtype)
    ht = np.zeros((B, Mp, H, K, V), x.q.dtype) if mem.h0 is None else mem.h0.copy()  # kept where L = 0
    parts = []
    for b in range(B):
        for m in range(Mp):
            idx = np.flatnonzero(mem.routed[b, :, m])  # (1)
            if idx.size == 0:
                parts.append((idx, None, None))
                continue
            q_g, k_g, v_g, gk_g, h0_g = _gathered(x, mem, b, m, idx)
            o_g, ht_g, gla_cache = gla_recurrent(q_g, k_g, v_g, gk_g, scale=x.scale, initial_state=h0_g)  # (2)
            o[b, idx] += mem.w[b, idx, m, None, None] * o_g[0]  # (3)
            ht[b, m] = ht_g[0]
            parts.append((idx, o_g[0], gla_cache))
    ht, ht_shared = split_states(x, ht)
    cache = MoMCache(inputs=x, ht=ht, ht_shared=ht_shared, backend=backend, parts=tuple(parts))
    return o, ht.copy(), None if ht_shared is None else ht_shared.copy(), cache


def mom_varlen_backward(do, dht, dht_shared, cache: MoMCache):
    """Gradients ``(dq, dk, dv, dw, dk_s, dv_s, dg, dg_s, dinitial_state, dinitial_state_shared)``."""
    do, dS_final = check_cotangents(do, dht, dht_shared, cache)
    x = cache.inputs
    mem = stack_memories(x)
    B, T, Mp, H, K = mem.k.shape
    dq = np.zeros_like(x.q)
    dk, dv = np.zeros_like(mem.k), np.zeros_like(mem.v)
    dw = np.zeros_like(mem.w)
    dg = None if mem.g is None else np.zeros_like(mem.g)
    dh0 = None
    if mem.h0 is not None:  # a memory with no tokens passes its final-state gradient straight through
        dh0 = np.zeros_like(mem.h0) if dS_final is None else dS_final.copy()
    parts = iter(cache.parts)
    for b in range(B):
        for m in range(Mp):
            idx, o_g, gla_cache = next(parts)
            if idx.size == 0:
                continue
            do_g = (mem.w[b, idx, m, None, None] * do[b, idx])[None]  # (1, L, H, V)
            dht_g = None if dS_final is None else dS_final[b, m][None]
            dq_g, dk_g, dv_g, dgk_g, dh0_g = gla_recurrent_backward(do_g, dht_g, gla_cache)
            dq[b, idx] += dq_g[0]  # scatter back
            dk[b, idx, m] = dk_g[0]
            dv[b, idx, m] = dv_g[0]
            dw[b, idx, m] = (o_g * do[b, idx]).sum(axis=(-2, -1))
            if dg is not None:
                dg[b, idx, m] = dgk_g[0].sum(axis=-1)  # the scalar gate fed every key dim
            if dh0 is not None:
                dh0[b, m] = dh0_g[0]
    return split_gradients(x, dq, dk, dv, dw, dg, dh0)
