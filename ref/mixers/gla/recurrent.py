"""GLA, the recurrent form: one state update per token.

    S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t                (1)   S: (K, V) per batch and head
    o_t = scale * q_t S_t                                     (2)

Memory O(K V) per head whatever T: the form for inference.

Backward, in two passes, without storing the T states:

* forward again, recomputing S_t:    dq_t = scale * do_t S_t^T                        (3)
* backwards in time, carrying dS (the total gradient of S_t):
      dS_t = scale * q_t^T do_t + diag(exp(gk_{t+1})) dS_{t+1},   dS_{T-1} gets dht   (4)
      dk_t = dS_t v_t^T,   dv_t = k_t dS_t,   dinitial_state = diag(exp(gk_0)) dS_0    (5)
* the gates from dq and dk (``gate_gradient``): dgk_t = sum_{t' >= t} (q dq - k dk)_t'
  (+ sum_v dht * ht).
"""

from __future__ import annotations

import numpy as np

from ref.backend import resolve
from ref.mixers.gla._inputs import GLACache, check_cotangents, check_inputs, gate_gradient


def gla_recurrent(q, k, v, gk=None, *, scale=None, initial_state=None, backend: str = "numpy"):
    """Gated linear attention by a loop over time.

    q, k (B, T, H, K); v (B, T, H, V); gk (B, T, H, K) natural-log gates <= 0, or None for no decay
    (plain linear attention); scale (default K^-0.5); initial_state (B, H, K, V) or None.
    Returns ``o`` (B, T, H, V), the final state ``ht`` (B, H, K, V) and the cache.
    backend: "numpy" (this loop), "numba" (``numba_kernels.gla_cpu.gla_cpu``), "cuda" (a group of
    lanes per state column, ``numba_kernels.gla_cuda.gla_cuda``) or "auto"; the backward runs on the
    same backend.
    """
    q, k, v, gk, scale, initial_state = check_inputs(q, k, v, gk, scale, initial_state)
    backend = resolve(backend, ("numpy", "numba", "cuda"), "gla_recurrent")
    if backend != "numpy":
        if backend == "numba":
            from numba_kernels.gla_cpu import gla_cpu as kernel
        else:
            from numba_kernels.gla_cuda import gla_cuda as kernel
        o, ht = kernel(q, k, v, gk, scale, initial_state)
        cache = GLACache(q=q, k=k, v=v, gk=gk, initial_state=initial_state, ht=ht, scale=scale, backend=backend)
        return o, ht.copy(), cache
    B, T, H, K = q.shape
    V = v.shape[3]
    S = np.zeros((B, H, K, V), q.dtype) if initial_state is None else initial_state.copy()
    o = np.empty((B, T, H, V), q.dtype)
    for t in range(T):
        if gk is not None:
            S *= np.exp(gk[:, t])[..., None]  # (1) decay: (B, H, K, 1)
        S += k[:, t, :, :, None] * v[:, t, :, None, :]  # (1) + k_t^T v_t: (B, H, K, V)
        o[:, t] = scale * np.einsum("bhk,bhkv->bhv", q[:, t], S)  # (2)
    cache = GLACache(q=q, k=k, v=v, gk=gk, initial_state=initial_state, ht=S, scale=scale, backend=backend)
    return o, S.copy(), cache


def gla_recurrent_backward(do, dht, cache: GLACache):
    """Gradients ``(dq, dk, dv, dgk, dinitial_state)``; None for an absent gate or initial state."""
    do, dht = check_cotangents(do, dht, cache)
    q, k, v, gk, h0, scale = cache.q, cache.k, cache.v, cache.gk, cache.initial_state, cache.scale
    if cache.backend != "numpy":
        if cache.backend == "numba":
            from numba_kernels.gla_cpu import gla_cpu_backward as kernel
        else:
            from numba_kernels.gla_cuda import gla_cuda_backward as kernel
        return kernel(q, k, v, gk, scale, h0, cache.ht, do, dht)
    B, T, H, K = q.shape
    V = v.shape[3]

    # pass 1, forward: recompute S_t and take (3)
    dq = np.empty_like(q)
    S = np.zeros((B, H, K, V), q.dtype) if h0 is None else h0.copy()
    for t in range(T):
        if gk is not None:
            S *= np.exp(gk[:, t])[..., None]
        S += k[:, t, :, :, None] * v[:, t, :, None, :]
        dq[:, t] = scale * np.einsum("bhv,bhkv->bhk", do[:, t], S)  # (3)

    # pass 2, backward in time: (4) and (5)
    dk = np.empty_like(k)
    dv = np.empty_like(v)
    dS = np.zeros((B, H, K, V), q.dtype) if dht is None else dht.copy()
    for t in range(T - 1, -1, -1):
        dS += scale * q[:, t, :, :, None] * do[:, t, :, None, :]  # (4)
        dk[:, t] = np.einsum("bhkv,bhv->bhk", dS, v[:, t])  # (5)
        dv[:, t] = np.einsum("bhk,bhkv->bhv", k[:, t], dS)  # (5)
        if gk is not None:
            dS *= np.exp(gk[:, t])[..., None]  # carry to t-1 through the decay of step t
    dh0 = None if h0 is None else dS

    dgk = None if gk is None else gate_gradient(q, dq, k, dk, cache.ht, dht)
    return dq, dk, dv, dgk, dh0
