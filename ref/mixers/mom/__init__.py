"""MoM, mixture-of-memories linear attention (Du et al., 2025, arXiv 2502.13685): the mixer, in four forms.

M routed memories and, optionally, one shared memory, each a linear-attention state (K, V) per
batch row and head. A router gives each token t weights w_t[m] >= 0, nonzero only for the top-k
memories it selected; only those memories are written (and, with gates, decay) at t:

    M^m_t = exp(g_t[m]) M^m_{t-1} + k^m_t^T v^m_t   if w_t[m] > 0,   else M^m_{t-1}
    M^s_t = exp(g^s_t) M^s_{t-1} + k^s_t^T v^s_t                     (the shared memory: every token)
    o_t   = scale * q_t (sum_m w_t[m] M^m_t + M^s_t)                 (the paper's mixed memory)

Layout as flash-linear-attention with a memory axis after time: q (B, T, H, K) shared by every
memory; k (B, T, M, H, K), v (B, T, M, H, V), w (B, T, M); the shared memory's k_s (B, T, H, K),
v_s (B, T, H, V) (None: no shared memory); scalar natural-log gates g (B, T, M, H), g_s (B, T, H),
each <= 0 (None: no decay); states (B, M, H, K, V) and (B, H, K, V); scale defaults to K^-0.5.

* ``mom_recurrent``: the loop over time, writing only the routed memories (inference).
* ``mom_parallel``: per memory, GLA's parallel form with keys and gates zeroed where not routed.
* ``mom_chunked``: the same with GLA's chunked form (training).
* ``mom_varlen``: the paper's implementation: per memory, gather its tokens, run the recurrence
  over them only, scatter the outputs back.

All return ``o, ht, ht_shared, cache``; each ``*_backward(do, dht, dht_shared, cache)`` returns
``dq, dk, dv, dw, dk_s, dv_s, dg, dg_s, dinitial_state, dinitial_state_shared`` (None for an input
not given). dw holds the routing fixed: 0 where w = 0. The layer around it (router, top-k, the
load-balancing loss) is ``ref.models.mom``.
"""

from ref.mixers.mom.chunked import mom_chunked, mom_chunked_backward
from ref.mixers.mom.parallel import mom_parallel, mom_parallel_backward
from ref.mixers.mom.recurrent import mom_recurrent, mom_recurrent_backward
from ref.mixers.mom.varlen import mom_varlen, mom_varlen_backward

FORMS = {
    "recurrent": (mom_recurrent, mom_recurrent_backward),
    "parallel": (mom_parallel, mom_parallel_backward),
    "chunked": (mom_chunked, mom_chunked_backward),
    "varlen": (mom_varlen, mom_varlen_backward),
}

__all__ = [
    "FORMS",
    "mom_recurrent",
    "mom_recurrent_backward",
    "mom_parallel",
    "mom_parallel_backward",
    "mom_chunked",
    "mom_chunked_backward",
    "mom_varlen",
    "mom_varlen_backward",
]
