"""Validation shared by the two forms of the Titans memory mixer, and the inner products they need."""

from __future__ import annotations

import numpy as np

from ref import checks


def check_inputs(q, k, v, eta, theta, alpha, initial_memory, initial_surprise, chunk_size):
    """Validate; return (q, k, v, eta, theta, alpha, W0, S0, chunk_size) with W0, S0 tuples."""
    q, k, v = checks.query_key_value(q, k, v)
    B, T, H, K = q.shape
    V = v.shape[3]
    gates = []
    for g, name, what in ((eta, "eta", "momentum decay"), (theta, "theta", "inner learning rate"),
                          (alpha, "alpha", "forgetting rate")):
        g = checks.float_array(g, name, ndim=3, dims="(B, T, H)")
        checks.same_shape(g, name, (B, T, H), "(B, T, H)", "from q")
        checks.same_dtype(g, name, q.dtype, "the dtype of q")
        checks.finite(g, name)
        if g.size and (g.min() < 0 or g.max() > 1):
            raise ValueError(f"{name}: expected a {what} in [0, 1], got values in [{g.min()}, {g.max()}]")
        gates.append(g)
    W0 = check_memory(initial_memory, "initial_memory", B, H, K, V, q.dtype)
    if initial_surprise is None:
        S0 = tuple(np.zeros_like(w) for w in W0)
    else:
        S0 = check_memory(initial_surprise, "initial_surprise", B, H, K, V, q.dtype)
        for l, (s, w) in enumerate(zip(S0, W0)):
            checks.same_shape(s, f"initial_surprise[{l}]", w.shape, "(B, H, out, in)", "the shape of initial_memory")
    chunk_size = checks.positive_int(chunk_size, "chunk_size")
    return q, k, v, *gates, W0, S0, chunk_size


def check_memory(W, name, B, H, K, V, dtype):
    """A memory: a non-empty tuple/list of (B, H, out_l, in_l) arrays chaining K -> ... -> V."""
    if isinstance(W, np.ndarray):
        W = (W,)
    if not isinstance(W, (tuple, list)) or len(W) == 0:
        raise ValueError(f"{name}: expected a non-empty tuple of (B, H, out, in) weight arrays, got {type(W).__name__}")
    W = tuple(W)
    fan_in = K
    for l, w in enumerate(W):
        wn = f"{name}[{l}]"
        w = checks.float_array(w, wn, ndim=4, dims="(B, H, out, in)")
        if w.shape[:2] != (B, H) or w.shape[3] != fan_in:
            raise ValueError(
                f"{wn}: expected shape (B, H, out, in) with (B, H) = {(B, H)} (from q) and in = {fan_in} "
                f"({'K' if l == 0 else 'the out of the layer before'}), got {w.shape}"
            )
        checks.same_dtype(w, wn, dtype, "the dtype of q")
        checks.finite(w, wn)
        fan_in = w.shape[2]
    if fan_in != V:
        raise ValueError(f"{name}[{len(W) - 1}]: expected the last layer to output V = {V} (from v), got {fan_in}")
    return W


def check_cotangents(dy, dWT, dST, W0, y_shape, dtype):
    """``dy`` (B, T, H, V), dfinal_memory and dfinal_surprise (tuples like W0); None means zero."""
    if dy is None:
        dy = np.zeros(y_shape, dtype)
    else:
        dy = checks.output_cotangent(dy, "dy", y_shape, dtype, "(B, T, H, V)")
    out = [dy]
    for d, name in ((dWT, "dfinal_memory"), (dST, "dfinal_surprise")):
        if d is None:
            out.append(tuple(np.zeros_like(w) for w in W0))
            continue
        d = (d,) if isinstance(d, np.ndarray) else tuple(d)
        if len(d) != len(W0):
            raise ValueError(f"{name}: expected {len(W0)} arrays (one per memory layer), got {len(d)}")
        out.append(tuple(checks.output_cotangent(a, f"{name}[{l}]", w.shape, dtype, "(B, H, out, in)")
                         for l, (a, w) in enumerate(zip(d, W0))))
    return tuple(out)


def dot(A, B):
    """<A, B> summed over every layer and over (out, in): one value per leading index."""
    return sum(np.sum(a * b, axis=(-2, -1)) for a, b in zip(A, B))


def axpy(a, X, Y):
    """a X + Y for tuples of weights, ``a`` broadcast over (out, in)."""
    a = np.asarray(a)[..., None, None]
    return tuple(a * x + y for x, y in zip(X, Y))


def scale(a, X):
    a = np.asarray(a)[..., None, None]
    return tuple(a * x for x in X)
