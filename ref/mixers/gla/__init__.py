"""Gated linear attention (Yang et al., 2023): a decay per key dimension, in three forms.

    S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t,      o_t = scale * q_t S_t

Layout as flash-linear-attention: q, k, gk (B, T, H, K); v, o (B, T, H, V); states (B, H, K, V);
natural-log gates gk <= 0 (None: no decay, i.e. linear attention); scale defaults to K^-0.5.

* ``gla_recurrent``: the loop over time (inference; constant memory).
* ``gla_parallel``: masked attention with decays per key dim (O(T^2 K) work).
* ``gla_chunked``: attention inside chunks, the recurrence across chunks (training).

All return ``o, ht, cache``; each ``*_backward(do, dht, cache)`` returns
``dq, dk, dv, dgk, dinitial_state``. Simple GLA, retention and linear attention are GLA with
gates shared across key dims, fixed, or absent (``ref.mixers.simple_gla`` and friends).
"""

from ref.mixers.gla.chunked import gla_chunked, gla_chunked_backward
from ref.mixers.gla.parallel import gla_parallel, gla_parallel_backward
from ref.mixers.gla.recurrent import gla_recurrent, gla_recurrent_backward

FORMS = {
    "recurrent": (gla_recurrent, gla_recurrent_backward),
    "parallel": (gla_parallel, gla_parallel_backward),
    "chunked": (gla_chunked, gla_chunked_backward),
}

__all__ = [
    "FORMS",
    "gla_recurrent",
    "gla_recurrent_backward",
    "gla_parallel",
    "gla_parallel_backward",
    "gla_chunked",
    "gla_chunked_backward",
]
