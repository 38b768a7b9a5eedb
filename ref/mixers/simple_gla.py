"""Simple GLA: gated linear attention with one scalar decay per head and step (Mamba-2's gate).

    S_t = exp(g_t) S_{t-1} + k_t^T v_t,      o_t = scale * q_t S_t                    (1)

with g (B, T, H) natural-log gates <= 0, one number per head and step, shared by every key dim
(flash-linear-attention's ``simple_gla``; Mamba-2's SSD is this recurrence with exp(g_t) =
exp(dt_t A)). Layout as FLA: q, k (B, T, H, K); v, o (B, T, H, V); states (B, H, K, V); scale
defaults to K^-0.5; g = None means no decay (plain linear attention).

It is GLA (``ref.mixers.gla``) with the per-key gate gk_t[k] = g_t for every k, so three of its
forms are thin wrappers over the same forms of GLA:

* ``simple_gla_recurrent``, ``simple_gla_parallel``, ``simple_gla_chunked(..., chunk_size)``: the
  gate is handed to GLA as a read-only broadcast view (B, T, H, K) of g, not a copy per key dim.
  Backward: GLA's dgk, summed over the key dims, since g_t feeds every gk_t[k]:

      dg_t = sum_k dgk_t[k]                                                            (2)

The fourth form is written out directly, as RetNet writes its parallel form, with a T x T decay
matrix instead of GLA's decay per key dim. With G_t = g_0 + ... + g_t:

* ``simple_gla_decay_matrix``:

      D_ts = exp(G_t - G_s) for s <= t, 0 above the diagonal                         (3)
      o = (scale * (q k^T) ⊙ D) v + scale * diag(exp(G)) q S_{-1}                     (4)
      h_T = exp(G_{T-1}) S_{-1} + sum_s exp(G_{T-1} - G_s) k_s^T v_s                  (5)

  with its own hand-written backward (below). Being an independent second implementation, it is
  the check that GLA with a broadcast gate really computes simple GLA.

All forms return ``o, ht, cache``; each ``*_backward(do, dht, cache)`` returns
``dq, dk, dv, dg, dinitial_state`` (None for an absent gate or initial state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks
from ref.backend import resolve
from ref.mixers.gla import (
    gla_chunked,
    gla_chunked_backward,
    gla_parallel,
    gla_parallel_backward,
    gla_recurrent,
    gla_recurrent_backward,
)
from ref.mixers.gla._inputs import check_cotangents, check_inputs, check_log_gates

__all__ = [
    "FORMS",
    "per_key_gate",
    "simple_gla_recurrent",
    "simple_gla_recurrent_backward",
    "simple_gla_parallel",
    "simple_gla_parallel_backward",
    "simple_gla_chunked",
    "simple_gla_chunked_backward",
    "simple_gla_decay_matrix",
    "simple_gla_decay_matrix_backward",
]


def per_key_gate(q, g):
    """Validate the scalar gate g (B, T, H) against q; return GLA's gate (B, T, H, K), or None.

    The result is a read-only broadcast view: every key dim reads the same g_t, nothing is copied.
    """
    if g is None:
        return None
    q = checks.float_array(q, "q", ndim=4, dims="(B, T, H, K)")
    g = check_log_gates(g, "g", q.shape[:3], "(B, T, H)", "the (B, T, H) of q", q.dtype)
    return np.broadcast_to(g[..., None], q.shape)  # (B, T, H, K), strides 0 along K


def _scalar_gate_gradient(dgk):
    """(2): dg_t = sum_k dgk_t[k]: (B, T, H, K) -> (B, T, H); None stays None."""
    return None if dgk is None else dgk.sum(axis=-1)


# ---------------------------------------------------------------- the three GLA-based forms


def simple_gla_recurrent(q, k, v, g=None, *, scale=None, initial_state=None, backend: str = "numpy"):
    """Simple GLA by a loop over time (GLA's recurrent form with the gate shared by the key dims).

    q, k (B, T, H, K); v (B, T, H, V); g (B, T, H) natural-log gates <= 0, or None for no decay;
    scale (default K^-0.5); initial_state (B, H, K, V) or None. Returns ``o`` (B, T, H, V), the
    final state ``ht`` (B, H, K, V) and the cache (GLA's). backend: passed to ``gla_recurrent``
    (likewise for the parallel and chunked forms).
    """
    gk = per_key_gate(q, g)
    return gla_recurrent(q, k, v, gk, scale=scale, initial_state=initial_state, backend=backend)


def simple_gla_recurrent_backward(do, dht, cache):
    """Gradients ``(dq, dk, dv, dg, dinitial_state)``."""
    dq, dk, dv, dgk, dh0 = gla_recurrent_backward(do, dht, cache)
    return dq, dk, dv, _scalar_gate_gradient(dgk), dh0


def simple_gla_parallel(q, k, v, g=None, *, scale=None, initial_state=None, backend: str = "numpy"):
    """Simple GLA as masked attention (GLA's parallel form); arguments as ``simple_gla_recurrent``."""
    gk = per_key_gate(q, g)
    return gla_parallel(q, k, v, gk, scale=scale, initial_state=initial_state, backend=backend)


def simple_gla_parallel_backward(do, dht, cache):
    """Gradients ``(dq, dk, dv, dg, dinitial_state)``."""
    dq, dk, dv, dgk, dh0 = gla_parallel_backward(do, dht, cache)
    return dq, dk, dv, _scalar_gate_gradient(dgk), dh0


def simple_gla_chunked(
    q, k, v, g=None, *, scale=None, initial_state=None, chunk_size: int = 64, backend: str = "numpy"
):
    """Simple GLA by chunks (GLA's chunked form); arguments as ``simple_gla_recurrent``."""
    gk = per_key_gate(q, g)
    return gla_chunked(q, k, v, gk, scale=scale, initial_state=initial_state, chunk_size=chunk_size, backend=backend)


def simple_gla_chunked_backward(do, dht, cache):
    """Gradients ``(dq, dk, dv, dg, dinitial_state)``."""
    dq, dk, dv, dgk, dh0 = gla_chunked_backward(do, dht, cache)
    return dq, dk, dv, _scalar_gate_gradient(dgk), dh0


# ---------------------------------------------------------------- the decay-matrix form


@dataclass(frozen=True)
class DecayMatrixCache:
    """What ``simple_gla_decay_matrix_backward`` needs."""

    q: np.ndarray  # (B, T, H, K)
    k: np.ndarray  # (B, T, H, K)
    v: np.ndarray  # (B, T, H, V)
    g: np.ndarray | None  # (B, T, H) natural-log gates <= 0, or None (no decay)
    initial_state: np.ndarray | None  # (B, H, K, V)
    ht: np.ndarray  # (B, H, K, V)
    scale: float


def _head_first(x):
    return np.ascontiguousarray(np.moveaxis(x, 2, 1))  # (B, T, H, ...) -> (B, H, T, ...)


def _time_second(x):
    return np.ascontiguousarray(np.moveaxis(x, 1, 2))  # (B, H, T, ...) -> (B, T, H, ...)


def _cumulative_gates(g, B, H, T, dtype):
    """G_t = g_0 + ... + g_t per batch and head, (B, H, T); zeros when there is no gate."""
    if g is None:
        return np.zeros((B, H, T), dtype)
    return np.cumsum(_head_first(g), axis=2)


def _decay_matrix(G):
    """(3): D_ts = exp(G_t - G_s) on and below the diagonal, 0 above.   (B, H, T, T)

    Every exponent taken is G_t - G_s <= 0 (s <= t): the entries above the diagonal, whose
    exponents are positive and may overflow, are set to -inf before exp, never computed.
    """
    T = G.shape[2]
    diff = G[:, :, :, None] - G[:, :, None, :]  # (B, H, T, T)
    causal = np.tril(np.ones((T, T), dtype=bool))
    return np.exp(np.where(causal, diff, -np.inf))


def simple_gla_decay_matrix(q, k, v, g=None, *, scale=None, initial_state=None, backend: str = "numpy"):
    """Simple GLA as RetNet writes its parallel form: (q k^T ⊙ D) v with a T x T decay matrix D.

    Arguments and results as ``simple_gla_recurrent``; O(T^2 (K + V)) work, O(T^2) memory.
    """
    gk = per_key_gate(q, g)  # validates g
    q, k, v, _, scale, h0 = check_inputs(q, k, v, gk, scale, initial_state)
    backend = resolve(backend, ("numpy",), "simple_gla_decay_matrix")
    qh, kh, vh = _head_first(q), _head_first(k), _head_first(v)  # (B, H, T, K|V)
    B, H, T, K = qh.shape
    G = _cumulative_gates(g, B, H, T, q.dtype)  # (B, H, T)
    D = _decay_matrix(G)  # (3): (B, H, T, T)

    A = scale * (qh @ np.swapaxes(kh, -1, -2)) * D  # (4): (B, H, T, T)
    oh = A @ vh  # (4): (B, H, T, V)
    to_end = np.exp(G[:, :, -1:] - G)  # (B, H, T): exp(G_{T-1} - G_s) <= 1
    ht = np.swapaxes(kh * to_end[..., None], -1, -2) @ vh  # (5): (B, H, K, V)
    if h0 is not None:
        oh += scale * (qh * np.exp(G)[..., None]) @ h0  # (4)
        ht += np.exp(G[:, :, -1])[..., None, None] * h0  # (5)
    cache = DecayMatrixCache(q=q, k=k, v=v, g=g, initial_state=h0, ht=ht, scale=scale)
    return _time_second(oh), ht, cache


def simple_gla_decay_matrix_backward(do, dht, cache: DecayMatrixCache):
    """Gradients ``(dq, dk, dv, dg, dinitial_state)`` of (3)-(5), by hand.

    With P = q k^T and dA_ts = do_t . v_s (the gradient of A in o = A v):

        dq = (scale dA ⊙ D) k,   dk = (scale dA ⊙ D)^T q,   dv = A^T do                 from (4)
        dL/dD_ts * D_ts = W_ts = scale dA_ts P_ts D_ts:  dG_t += sum_s W_ts,  dG_s -= sum_t W_ts
                                                         (dD_ts/dG_t = D_ts = -dD_ts/dG_s)

    plus the terms of S_{-1} in (4), those of (5) with dht, and dg = the reverse cumulative sum
    of dG over time (G_t sums g_0 .. g_t, so g_s reaches every G_t with t >= s).
    """
    do, dht = check_cotangents(do, dht, cache)  # reads cache.q and cache.v only
    q, k, v, g, h0, scale = cache.q, cache.k, cache.v, cache.g, cache.initial_state, cache.scale
    qh, kh, vh, doh = _head_first(q), _head_first(k), _head_first(v), _head_first(do)
    B, H, T, K = qh.shape
    G = _cumulative_gates(g, B, H, T, q.dtype)  # (B, H, T)
    D = _decay_matrix(G)  # (B, H, T, T)

    P = qh @ np.swapaxes(kh, -1, -2)  # (B, H, T, T)
    dA = doh @ np.swapaxes(vh, -1, -2)  # (B, H, T, T); D is 0 above the diagonal, so no mask
    dAD = scale * dA * D  # dL/dP
    dqh = dAD @ kh  # (B, H, T, K)
    dkh = np.swapaxes(dAD, -1, -2) @ qh  # (B, H, T, K)
    dvh = np.swapaxes(scale * P * D, -1, -2) @ doh  # (B, H, T, V)
    W = dAD * P  # (B, H, T, T): dL/dD_ts * D_ts
    dG = W.sum(axis=3) - W.sum(axis=2)  # (B, H, T)

    dh0 = None
    if h0 is not None:  # o_t += scale exp(G_t) q_t S_{-1}
        eG = np.exp(G)[..., None]  # (B, H, T, 1)
        dq_h0 = scale * eG * (doh @ np.swapaxes(h0, -1, -2))  # (B, H, T, K)
        dqh += dq_h0
        dG += (qh * dq_h0).sum(axis=-1)
        dh0 = scale * np.swapaxes(qh * eG, -1, -2) @ doh  # (B, H, K, V)
    if dht is not None:  # h_T of (5)
        to_end = np.exp(G[:, :, -1:] - G)[..., None]  # (B, H, T, 1)
        dk_ht = to_end * (vh @ np.swapaxes(dht, -1, -2))  # (B, H, T, K)
        dkh += dk_ht
        dvh += (kh * to_end) @ dht  # (B, H, T, V)
        dG -= (kh * dk_ht).sum(axis=-1)  # -exp(G_{T-1} - G_s) on G_s
        dG[:, :, -1] += (dht * cache.ht).sum(axis=(-2, -1))  # every term of h_T carries exp(G_{T-1})
        if h0 is not None:
            dh0 = dh0 + np.exp(G[:, :, -1])[..., None, None] * dht

    dg = None
    if g is not None:
        dg = _time_second(np.flip(np.cumsum(np.flip(dG, axis=2), axis=2), axis=2))  # (B, T, H)
    return _time_second(dqh), _time_second(dkh), _time_second(dvh), dg, dh0


FORMS = {
    "recurrent": (simple_gla_recurrent, simple_gla_recurrent_backward),
    "parallel": (simple_gla_parallel, simple_gla_parallel_backward),
    "chunked": (simple_gla_chunked, simple_gla_chunked_backward),
    "decay_matrix": (simple_gla_decay_matrix, simple_gla_decay_matrix_backward),
}
