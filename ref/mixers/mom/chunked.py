"""MoM, the chunked form: every memory as GLA's chunked form over the whole sequence.

Memory m is GLA over the full sequence with its keys and gates zeroed where the token is not
routed to it (``_per_memory``, equation (1)); each memory runs GLA's chunked form (attention
inside chunks of ``chunk_size`` steps, the recurrence across them), and o = sum_m w[m] o^m with
the shared memory's weight 1. The form for training: O(M' T C K) work, one state per chunk.

Masking spends work on tokens a memory never sees (M' full-length passes where the routed tokens
number top_k T); the varlen form (``varlen.py``) avoids that, as the paper's kernels do.
Backward: GLA's chunked backward per memory, then the masks and weights (``_per_memory``).
"""

from __future__ import annotations

from ref import checks
from ref.backend import resolve
from ref.mixers.gla import gla_chunked, gla_chunked_backward
from ref.mixers.mom import _per_memory
from ref.mixers.mom._inputs import MoMCache, check_inputs


def mom_chunked(
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
    chunk_size: int = 64,
    backend: str = "numpy",
):
    """Mixture-of-memories linear attention by chunks; as ``mom_recurrent``, plus ``chunk_size``."""
    x = check_inputs(q, k, v, w, k_s, v_s, g, g_s, scale, initial_state, initial_state_shared, top_k)
    C = checks.positive_int(chunk_size, "chunk_size")
    backend = resolve(backend, ("numpy",), "mom_chunked")
    return _per_memory.forward(gla_chunked, x, backend, chunk_size=C)


def mom_chunked_backward(do, dht, dht_shared, cache: MoMCache):
    """Gradients ``(dq, dk, dv, dw, dk_s, dv_s, dg, dg_s, dinitial_state, dinitial_state_shared)``."""
    return _per_memory.backward(gla_chunked_backward, do, dht, dht_shared, cache)
