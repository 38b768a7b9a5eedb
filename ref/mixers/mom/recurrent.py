"""MoM, the recurrent form: a loop over time that writes only the memories each token is routed to.

With M' memories (the M routed ones and, last, the shared one, whose weight is 1 at every token)
and a_t[m] = exp(g_t[m]) (1 without gates), per batch row and head:

    M^m_t = a_t[m] M^m_{t-1} + k^m_t^T v^m_t    if w_t[m] > 0                  (1)   (K, V)
    M^m_t = M^m_{t-1}                            otherwise
    o_t   = scale * sum_m w_t[m] q_t M^m_t                                      (2)

(the paper's mixed memory: o_t = scale * q_t (sum_m w_t[m] M^m_t), by linearity). Memory
O(M' K V) per head whatever T: the form for inference.

Backward, in two passes, without storing the T states (as GLA's recurrent form):

* forward again, recomputing M^m_t:
      dq_t      = scale * sum_m w_t[m] do_t (M^m_t)^T                                       (3)
      r_t[m]    = scale * q_t M^m_t do_t^T  (per head),   dw_t[m] = sum_heads r_t[m]       (4)
* backwards in time, carrying dM^m (the total gradient of M^m_t):
      dM^m_t = scale * w_t[m] q_t^T do_t + (a_{t+1}[m] if routed at t+1, else 1) dM^m_{t+1}  (5)
      dk^m_t = dM^m_t (v^m_t)^T,  dv^m_t = k^m_t dM^m_t   where routed, 0 elsewhere         (6)
      dinitial_state = the carried dM^m after step 0
* the gates from the identity of ``gate_gradient``, with q . dq^m = w_t[m] r_t[m]            (7)

dw is the gradient with the routing held fixed: 0 for a memory the token is not routed to (its
weight is a constant 0 there; moving it off 0 would change which memories are written).
"""

from __future__ import annotations

import numpy as np

from ref.backend import resolve
from ref.mixers.mom._inputs import (
    MoMCache,
    check_cotangents,
    check_inputs,
    gate_gradient,
    split_gradients,
    split_states,
    stack_memories,
)


def _write(S, k_t, v_t, g_t, routed_t):
    """(1) for one step: decay and write the routed memories, leave the others as they are.

    S (B, M', H, K, V); k_t (B, M', H, K); v_t (B, M', H, V); g_t (B, M', H) or None; routed_t (B, M').
    """
    decayed = S if g_t is None else np.exp(g_t)[..., None, None] * S
    written = decayed + k_t[..., :, None] * v_t[..., None, :]  # (B, M', H, K, V)
    return np.where(routed_t[:, :, None, None, None], written, S)


def mom_recurrent(
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
    """Mixture-of-memories linear attention by a loop over time.

    q (B, T, H, K) shared by every memory; k (B, T, M, H, K) and v (B, T, M, H, V) per memory;
    w (B, T, M) routing weights >= 0, 0 where a memory is not selected (``top_k``, if given, is the
    most nonzero weights a token may have); the shared memory's k_s (B, T, H, K) and v_s (B, T, H, V),
    or None for none; g (B, T, M, H) and g_s (B, T, H) natural-log gates <= 0, or None for no decay;
    scale (default K^-0.5); initial_state (B, M, H, K, V) and initial_state_shared (B, H, K, V).

    Returns ``o`` (B, T, H, V), the final states ``ht`` (B, M, H, K, V) and ``ht_shared``
    (B, H, K, V) (None without a shared memory), and the cache.
    """
    x = check_inputs(q, k, v, w, k_s, v_s, g, g_s, scale, initial_state, initial_state_shared, top_k)
    backend = resolve(backend, ("numpy",), "mom_recurrent")
    mem = stack_memories(x)
    B, T, Mp, H, K = mem.k.shape
    V = mem.v.shape[4]
    routed = mem.routed  # (B, T, M')
    S = np.zeros((B, Mp, H, K, V), x.q.dtype) if mem.h0 is None else mem.h0.copy()
    o = np.empty((B, T, H, V), x.q.dtype)
    for t in range(T):
        S = _write(S, mem.k[:, t], mem.v[:, t], None if mem.g is None else mem.g[:, t], routed[:, t])  # (1)
        read = np.einsum("bhk,bmhkv->bmhv", x.q[:, t], S)  # q_t M^m_t: (B, M', H, V)
        o[:, t] = x.scale * np.einsum("bm,bmhv->bhv", mem.w[:, t], read)  # (2)
    ht, ht_shared = split_states(x, S)
    cache = MoMCache(inputs=x, ht=ht, ht_shared=ht_shared, backend=backend)
    return o, ht.copy(), None if ht_shared is None else ht_shared.copy(), cache


def mom_recurrent_backward(do, dht, dht_shared, cache: MoMCache):
    """Gradients ``(dq, dk, dv, dw, dk_s, dv_s, dg, dg_s, dinitial_state, dinitial_state_shared)``.

    None for an input that was not given; ``dht``, ``dht_shared`` None mean zero.
    """
    do, dS_final = check_cotangents(do, dht, dht_shared, cache)
    x = cache.inputs
    mem = stack_memories(x)
    q, scale = x.q, x.scale
    B, T, Mp, H, K = mem.k.shape
    V = mem.v.shape[4]
    routed = mem.routed  # (B, T, M')

    # pass 1, forward: recompute M^m_t and take (3), (4)
    dq = np.empty_like(q)
    r = np.empty((B, T, Mp, H), q.dtype)
    S = np.zeros((B, Mp, H, K, V), q.dtype) if mem.h0 is None else mem.h0.copy()
    for t in range(T):
        S = _write(S, mem.k[:, t], mem.v[:, t], None if mem.g is None else mem.g[:, t], routed[:, t])
        dq[:, t] = scale * np.einsum("bm,bhv,bmhkv->bhk", mem.w[:, t], do[:, t], S)  # (3)
        r[:, t] = scale * np.einsum("bhk,bmhkv,bhv->bmh", q[:, t], S, do[:, t])  # (4)
    dw = r.sum(axis=-1) * routed  # (4): (B, T, M')

    # pass 2, backward in time: (5), (6)
    dk = np.zeros_like(mem.k)
    dv = np.zeros_like(mem.v)
    dS = np.zeros((B, Mp, H, K, V), q.dtype) if dS_final is None else dS_final.copy()
    for t in range(T - 1, -1, -1):
        dS += scale * mem.w[:, t, :, None, None, None] * (q[:, t, None, :, :, None] * do[:, t, None, :, None, :])  # (5)
        on = routed[:, t, :, None, None]  # (B, M', 1, 1)
        dk[:, t] = np.where(on, np.einsum("bmhkv,bmhv->bmhk", dS, mem.v[:, t]), 0)  # (6)
        dv[:, t] = np.where(on, np.einsum("bmhk,bmhkv->bmhv", mem.k[:, t], dS), 0)  # (6)
        if mem.g is not None:  # carry to t-1 through the decay of step t, where it was applied
            dS = np.where(on[..., None], np.exp(mem.g[:, t])[..., None, None] * dS, dS)
    dh0 = None if mem.h0 is None else dS

    dg = None
    if mem.g is not None:  # (7)
        ht = S  # the final states, recomputed by pass 1
        qdq = mem.w[..., None] * r  # (B, T, M', H)
        kdk = (mem.k * dk).sum(axis=-1)  # (B, T, M', H)
        dg = gate_gradient(qdq, kdk, ht, dS_final, routed)
    return split_gradients(x, dq, dk, dv, dw, dg, dh0)
