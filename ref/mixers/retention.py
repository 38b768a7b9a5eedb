"""Retention (RetNet, Sun et al., 2023): linear attention with a fixed decay per head.

    S_t = gamma_h S_{t-1} + k_t^T v_t,      o_t = scale * q_t S_t                     (1)

equivalently, in RetNet's parallel form, o = (scale * (q k^T) ⊙ D) v with D_ts = gamma_h^(t-s)
for s <= t (and 0 above the diagonal). gamma (H,) lies in (0, 1); by default, as in RetNet and
flash-linear-attention's ``chunk_retention`` / ``fused_recurrent_retention``,

    gamma_h = 1 - 2^(-5-h),   h = 0 .. H-1                                             (2)

so the heads look back over about 32, 64, 128, ... steps. RetNet's xPos rotation of q and k and
its group norm belong to the layer, not to this op. Layout as FLA: q, k (B, T, H, K); v, o
(B, T, H, V); states (B, H, K, V); scale defaults to K^-0.5.

Retention is simple GLA (``ref.mixers.simple_gla``) with the constant gate

    g_t = log(gamma_h)   for every step t                                             (3)

so each form is the same form of simple GLA. gamma is a fixed hyper-parameter, not trained:
the backward passes return ``dq, dk, dv, dinitial_state`` and no gradient for gamma.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.mixers.simple_gla import (
    simple_gla_chunked,
    simple_gla_chunked_backward,
    simple_gla_parallel,
    simple_gla_parallel_backward,
    simple_gla_recurrent,
    simple_gla_recurrent_backward,
)

__all__ = [
    "FORMS",
    "default_gamma",
    "retention_recurrent",
    "retention_recurrent_backward",
    "retention_parallel",
    "retention_parallel_backward",
    "retention_chunked",
    "retention_chunked_backward",
]


def default_gamma(H: int) -> np.ndarray:
    """(2): gamma_h = 1 - 2^(-5-h) for h = 0 .. H-1, float64 (H,)."""
    return 1.0 - 2.0 ** (-5.0 - np.arange(H))


def _constant_gate(q, gamma):
    """Validate gamma (H,) against q; return the gate (3) g (B, T, H) as a read-only broadcast view."""
    q = checks.float_array(q, "q", ndim=4, dims="(B, T, H, K)")
    B, T, H, _ = q.shape
    if gamma is None:
        gamma = default_gamma(H)
    else:
        gamma = checks.float_array(gamma, "gamma", ndim=1, dims="(H,)")
        checks.same_shape(gamma, "gamma", (H,), "(H,)", "the number of heads of q")
        checks.finite(gamma, "gamma")
        outside = (gamma <= 0) | (gamma >= 1)
        if outside.any():
            h = int(np.argmax(outside))
            raise ValueError(f"gamma: expected decays in the open interval (0, 1), got {float(gamma[h])} at head {h}")
    log_gamma = np.log(gamma.astype(np.float64)).astype(q.dtype)  # (H,), each < 0
    return np.broadcast_to(log_gamma, (B, T, H))  # (3): (B, T, H), nothing copied


def _without_gate_gradient(grads):
    dq, dk, dv, _, dh0 = grads  # gamma is fixed: its gradient is not part of the op
    return dq, dk, dv, dh0


def retention_recurrent(q, k, v, *, gamma=None, scale=None, initial_state=None, backend: str = "numpy"):
    """Retention by a loop over time.

    q, k (B, T, H, K); v (B, T, H, V); gamma (H,) in (0, 1) or None for (2); scale (default
    K^-0.5); initial_state (B, H, K, V) or None. Returns ``o`` (B, T, H, V), the final state
    ``ht`` (B, H, K, V) and the cache.
    """
    g = _constant_gate(q, gamma)
    return simple_gla_recurrent(q, k, v, g, scale=scale, initial_state=initial_state, backend=backend)


def retention_recurrent_backward(do, dht, cache):
    """Gradients ``(dq, dk, dv, dinitial_state)``."""
    return _without_gate_gradient(simple_gla_recurrent_backward(do, dht, cache))


def retention_parallel(q, k, v, *, gamma=None, scale=None, initial_state=None, backend: str = "numpy"):
    """Retention as masked attention; arguments as ``retention_recurrent``."""
    g = _constant_gate(q, gamma)
    return simple_gla_parallel(q, k, v, g, scale=scale, initial_state=initial_state, backend=backend)


def retention_parallel_backward(do, dht, cache):
    """Gradients ``(dq, dk, dv, dinitial_state)``."""
    return _without_gate_gradient(simple_gla_parallel_backward(do, dht, cache))


def retention_chunked(
    q, k, v, *, gamma=None, scale=None, initial_state=None, chunk_size: int = 64, backend: str = "numpy"
):
    """Retention by chunks (RetNet's chunkwise form); arguments as ``retention_recurrent``."""
    g = _constant_gate(q, gamma)
    return simple_gla_chunked(
        q, k, v, g, scale=scale, initial_state=initial_state, chunk_size=chunk_size, backend=backend
    )


def retention_chunked_backward(do, dht, cache):
    """Gradients ``(dq, dk, dv, dinitial_state)``."""
    return _without_gate_gradient(simple_gla_chunked_backward(do, dht, cache))


FORMS = {
    "recurrent": (retention_recurrent, retention_recurrent_backward),
    "parallel": (retention_parallel, retention_parallel_backward),
    "chunked": (retention_chunked, retention_chunked_backward),
}
