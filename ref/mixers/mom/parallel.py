"""MoM, the parallel form: every memory as masked attention over the whole sequence.

Memory m is GLA over the full sequence with its keys and gates zeroed where the token is not
routed to it (``_per_memory``, equation (1)): at such a token k'_t = 0 writes nothing and g'_t = 0
decays nothing, which is exactly "memory m unchanged". Each memory then runs GLA's parallel form,

    o^m = (scale * (q k'^m^T) ⊙ D^m) v^m  (+ the initial state's term),
    D^m_ts = exp(G^m_t - G^m_s) for s <= t, G^m the cumulative masked gates,

and o = sum_m w[m] o^m (the shared memory with weight 1). O(M' T^2 K) work; every exponent <= 0.
Backward: GLA's parallel backward per memory, then the masks and weights (``_per_memory``).
"""

from __future__ import annotations

from ref.backend import resolve
from ref.mixers.gla import gla_parallel, gla_parallel_backward
from ref.mixers.mom import _per_memory
from ref.mixers.mom._inputs import MoMCache, check_inputs


def mom_parallel(
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
    """Mixture-of-memories linear attention, each memory as masked attention; as ``mom_recurrent``."""
    x = check_inputs(q, k, v, w, k_s, v_s, g, g_s, scale, initial_state, initial_state_shared, top_k)
    backend = resolve(backend, ("numpy",), "mom_parallel")
    return _per_memory.forward(gla_parallel, x, backend)


def mom_parallel_backward(do, dht, dht_shared, cache: MoMCache):
    """Gradients ``(dq, dk, dv, dw, dk_s, dv_s, dg, dg_s, dinitial_state, dinitial_state_shared)``."""
    return _per_memory.backward(gla_parallel_backward, do, dht, dht_shared, cache)
