"""Validation, the cache, and the gate gradient shared by the three forms of GLA."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks


@dataclass(frozen=True)
class GLACache:
    """What every form's backward needs. ``states`` holds the chunk-entering states (chunked form)."""

    q: np.ndarray  # (B, T, H, K)
    k: np.ndarray  # (B, T, H, K)
    v: np.ndarray  # (B, T, H, V)
    gk: np.ndarray | None  # (B, T, H, K) natural-log gates <= 0, or None (no decay)
    initial_state: np.ndarray | None  # (B, H, K, V)
    ht: np.ndarray  # (B, H, K, V)
    scale: float
    backend: str = "numpy"
    chunk_size: int = 0
    states: np.ndarray | None = None  # (B, n + 1, H, K, V) for the chunked form


def check_inputs(q, k, v, gk, scale, initial_state):
    """Validate GLA's inputs; return (q, k, v, gk, scale, initial_state) with scale a float."""
    q, k, v = checks.query_key_value(q, k, v)
    B, T, H, K = q.shape
    V = v.shape[3]
    if gk is not None:
        gk = check_log_gates(gk, "gk", q.shape, "(B, T, H, K)", "the shape of q", q.dtype)
    if scale is None:
        scale = K**-0.5
    elif isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating)) or not np.isfinite(scale):
        raise ValueError(f"scale: expected a finite number or None (K^-0.5), got {scale!r}")
    if initial_state is not None:
        initial_state = checks.float_array(initial_state, "initial_state", ndim=4, dims="(B, H, K, V)")
        checks.same_shape(initial_state, "initial_state", (B, H, K, V), "(B, H, K, V)", "from q and v")
        checks.same_dtype(initial_state, "initial_state", q.dtype, "the dtype of q")
        checks.finite(initial_state, "initial_state")
    return q, k, v, gk, float(scale), initial_state


def check_log_gates(g, name, shape, dims, like, dtype):
    """Natural-log decays: finite, <= 0, exactly the given shape and dtype."""
    g = checks.float_array(g, name, ndim=len(shape), dims=dims)
    checks.same_shape(g, name, shape, dims, like)
    checks.same_dtype(g, name, dtype, "the dtype of q")
    checks.finite(g, name)
    if g.size and g.max() > 0:
        i = tuple(int(j) for j in np.unravel_index(int(np.argmax(g)), g.shape))
        raise ValueError(
            f"{name}: expected natural-log gates <= 0 (a decay exp({name}) in (0, 1]), got {float(g[i])} at index {i}"
        )
    return g


def check_cotangents(do, dht, cache: GLACache):
    """``do`` (B, T, H, V) and ``dht`` (B, H, K, V); None means zero."""
    B, T, H, V = cache.v.shape
    K = cache.q.shape[3]
    if do is None:
        do = np.zeros((B, T, H, V), cache.q.dtype)
    else:
        do = checks.float_array(do, "do", ndim=4, dims="(B, T, H, V)")
        checks.same_shape(do, "do", (B, T, H, V), "(B, T, H, V)", "the shape of o")
        checks.same_dtype(do, "do", cache.q.dtype, "the dtype of o")
    if dht is not None:
        dht = checks.float_array(dht, "dht", ndim=4, dims="(B, H, K, V)")
        checks.same_shape(dht, "dht", (B, H, K, V), "(B, H, K, V)", "the shape of ht")
        checks.same_dtype(dht, "dht", cache.q.dtype, "the dtype of ht")
    return do, dht


def gate_gradient(q, dq, k, dk, ht, dht):
    """dgk from dq and dk, without the states (the identity every form's backward uses).

    With G_t = g_0 + ... + g_t (per key dim), the gates enter only through exp(G_t - G_s) between
    a query at t and a key at s <= t (and exp(G_t) on the initial state). So dL/dG_t collects +1
    from every term at query time t and -1 from every term whose key is at t:

        dL/dG_t = q_t * dq_t - k_t * dk_t  (+ sum_v dht * ht at t = T-1, for the final state)

    and since G_t depends on g_s for every s <= t, dL/dg_t = sum_{t' >= t} dL/dG_t' (a reverse
    cumulative sum). Shapes: (B, T, H, K).
    """
    dG = q * dq - k * dk  # (B, T, H, K)
    dg = np.flip(np.cumsum(np.flip(dG, axis=1), axis=1), axis=1)
    if dht is not None:
        dg = dg + (dht * ht).sum(axis=-1)[:, None]  # (B, 1, H, K): enters every dg_t
    return dg
