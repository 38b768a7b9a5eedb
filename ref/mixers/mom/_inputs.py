"""Validation, the cache, and the helpers shared by the four forms of the MoM mixer.

Every form sees the shared memory as one more memory, number M, whose routing weight is 1 at every
token: ``stack_memories`` appends it to the routed ones (keys, values, weights, gates, states), the
forms run over M' = M + 1 memories (or M when there is no shared memory), and ``split_gradients``
takes the shared memory's gradients back out. The weight 1 is a constant, so its gradient is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks
from ref.mixers.gla._inputs import check_log_gates


@dataclass(frozen=True)
class MoMInputs:
    """The mixer's inputs after validation (None for what was left out)."""

    q: np.ndarray  # (B, T, H, K) shared by every memory
    k: np.ndarray  # (B, T, M, H, K)
    v: np.ndarray  # (B, T, M, H, V)
    w: np.ndarray  # (B, T, M) routing weights >= 0; 0 where memory m is not selected
    k_s: np.ndarray | None  # (B, T, H, K) the shared memory's keys
    v_s: np.ndarray | None  # (B, T, H, V)
    g: np.ndarray | None  # (B, T, M, H) natural-log gates <= 0
    g_s: np.ndarray | None  # (B, T, H)
    initial_state: np.ndarray | None  # (B, M, H, K, V)
    initial_state_shared: np.ndarray | None  # (B, H, K, V)
    scale: float

    @property
    def shared(self) -> bool:
        return self.k_s is not None


@dataclass(frozen=True)
class Memories:
    """The routed memories and, last, the shared one (weight 1 everywhere): M' memories."""

    k: np.ndarray  # (B, T, M', H, K)
    v: np.ndarray  # (B, T, M', H, V)
    w: np.ndarray  # (B, T, M')
    g: np.ndarray | None  # (B, T, M', H); None when no memory is gated
    h0: np.ndarray | None  # (B, M', H, K, V); None when no memory has an initial state

    @property
    def routed(self) -> np.ndarray:
        """(B, T, M') booleans: memory m is written (and decays) at token t iff w_t[m] > 0."""
        return self.w > 0


@dataclass(frozen=True)
class MoMCache:
    """What every form's backward needs; ``parts`` holds what a form keeps per memory."""

    inputs: MoMInputs
    ht: np.ndarray  # (B, M, H, K, V)
    ht_shared: np.ndarray | None  # (B, H, K, V)
    backend: str = "numpy"
    parts: tuple = ()


def check_inputs(q, k, v, w, k_s, v_s, g, g_s, scale, initial_state, initial_state_shared, top_k) -> MoMInputs:
    """Validate the mixer's inputs; raise ValueError naming the first bad argument."""
    q = checks.float_array(q, "q", ndim=4, dims="(B, T, H, K)")
    B, T, H, K = q.shape
    checks.nonempty_time(T, "q")
    dt = q.dtype

    k = checks.float_array(k, "k", ndim=5, dims="(B, T, M, H, K)")
    if k.shape[:2] != (B, T) or k.shape[3:] != (H, K):
        raise ValueError(
            f"k: expected shape (B, T, M, H, K) with (B, T) = {(B, T)} and (H, K) = {(H, K)} (from q), got {k.shape}"
        )
    M = k.shape[2]
    if M < 1:
        raise ValueError(f"k: expected at least one memory (M >= 1 on axis 2), got shape {k.shape}")
    checks.same_dtype(k, "k", dt, "the dtype of q")
    v = checks.float_array(v, "v", ndim=5, dims="(B, T, M, H, V)")
    if v.shape[:4] != (B, T, M, H):
        raise ValueError(
            f"v: expected shape (B, T, M, H, V) with (B, T, M, H) = {(B, T, M, H)} (from q, k), got {v.shape}"
        )
    checks.same_dtype(v, "v", dt, "the dtype of q")
    V = v.shape[4]

    w = checks.float_array(w, "w", ndim=3, dims="(B, T, M)")
    checks.same_shape(w, "w", (B, T, M), "(B, T, M)", "from k")
    checks.same_dtype(w, "w", dt, "the dtype of q")
    checks.finite(w, "w")
    if w.size and w.min() < 0:
        i = tuple(int(j) for j in np.unravel_index(int(np.argmin(w)), w.shape))
        raise ValueError(
            f"w: expected routing weights >= 0 (0 for an unselected memory), got {float(w[i])} at index {i}"
        )
    if top_k is not None:
        top_k = checks.positive_int(top_k, "top_k")
        selected = (w > 0).sum(axis=-1)  # (B, T)
        if selected.max() > top_k:
            b, t = (int(j) for j in np.unravel_index(int(np.argmax(selected)), selected.shape))
            raise ValueError(
                f"w: expected at most top_k = {top_k} nonzero weights per token (the selected memories), "
                f"got {int(selected[b, t])} at (b, t) = {(b, t)}"
            )

    if (k_s is None) != (v_s is None):
        given, missing = ("k_s", "v_s") if v_s is None else ("v_s", "k_s")
        raise ValueError(
            f"{missing}: expected an array since {given} is given (the shared memory needs both), got None"
        )
    if k_s is not None:
        k_s = checks.float_array(k_s, "k_s", ndim=4, dims="(B, T, H, K)")
        checks.same_shape(k_s, "k_s", q.shape, "(B, T, H, K)", "the shape of q")
        checks.same_dtype(k_s, "k_s", dt, "the dtype of q")
        v_s = checks.float_array(v_s, "v_s", ndim=4, dims="(B, T, H, V)")
        checks.same_shape(v_s, "v_s", (B, T, H, V), "(B, T, H, V)", "from q and v")
        checks.same_dtype(v_s, "v_s", dt, "the dtype of q")
    for x, name in ((q, "q"), (k, "k"), (v, "v"), (k_s, "k_s"), (v_s, "v_s")):
        if x is not None:
            checks.finite(x, name)

    if g is not None:
        g = check_log_gates(g, "g", (B, T, M, H), "(B, T, M, H)", "from k", dt)
    if g_s is not None:
        _require_shared(k_s, "g_s")
        g_s = check_log_gates(g_s, "g_s", (B, T, H), "(B, T, H)", "from q", dt)

    if scale is None:
        scale = K**-0.5
    elif isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating)) or not np.isfinite(scale):
        raise ValueError(f"scale: expected a finite number or None (K^-0.5), got {scale!r}")

    if initial_state is not None:
        initial_state = _state(initial_state, "initial_state", (B, M, H, K, V), "(B, M, H, K, V)", dt)
    if initial_state_shared is not None:
        _require_shared(k_s, "initial_state_shared")
        initial_state_shared = _state(initial_state_shared, "initial_state_shared", (B, H, K, V), "(B, H, K, V)", dt)
    return MoMInputs(q, k, v, w, k_s, v_s, g, g_s, initial_state, initial_state_shared, float(scale))


def _require_shared(k_s, name):
    if k_s is None:
        raise ValueError(
            f"{name}: given without a shared memory (k_s and v_s are None); pass k_s and v_s, or drop {name}"
        )


def _state(x, name, shape, dims, dtype):
    x = checks.float_array(x, name, ndim=len(shape), dims=dims)
    checks.same_shape(x, name, shape, dims, "from q, k and v")
    checks.same_dtype(x, name, dtype, "the dtype of q")
    return checks.finite(x, name)


def check_cotangents(do, dht, dht_shared, cache: MoMCache):
    """``do`` (B, T, H, V) (None: zero); ``dht`` (B, M, H, K, V) and ``dht_shared`` (B, H, K, V) or None.

    Returns ``do`` and the final-state cotangents stacked like ``stack_memories`` (B, M', H, K, V),
    or None when neither is given.
    """
    x = cache.inputs
    B, T, M, H, V = x.v.shape
    K = x.q.shape[3]
    if do is None:
        do = np.zeros((B, T, H, V), x.q.dtype)
    else:
        do = checks.float_array(do, "do", ndim=4, dims="(B, T, H, V)")
        checks.same_shape(do, "do", (B, T, H, V), "(B, T, H, V)", "the shape of o")
        checks.same_dtype(do, "do", x.q.dtype, "the dtype of o")
    if dht is not None:
        dht = checks.float_array(dht, "dht", ndim=5, dims="(B, M, H, K, V)")
        checks.same_shape(dht, "dht", (B, M, H, K, V), "(B, M, H, K, V)", "the shape of ht")
        checks.same_dtype(dht, "dht", x.q.dtype, "the dtype of ht")
    if dht_shared is not None:
        _require_shared(x.k_s, "dht_shared")
        dht_shared = checks.float_array(dht_shared, "dht_shared", ndim=4, dims="(B, H, K, V)")
        checks.same_shape(dht_shared, "dht_shared", (B, H, K, V), "(B, H, K, V)", "the shape of ht_shared")
        checks.same_dtype(dht_shared, "dht_shared", x.q.dtype, "the dtype of ht_shared")
    return do, stack_states(dht, dht_shared, x)


def stack_states(routed, shared, x: MoMInputs):
    """Routed (B, M, H, K, V) and shared (B, H, K, V) states -> (B, M', H, K, V).

    Zeros stand in for the absent one; None when both are absent.
    """
    if not x.shared:
        return routed
    if routed is None and shared is None:
        return None
    B, T, M, H, V = x.v.shape
    K = x.q.shape[3]
    if routed is None:
        routed = np.zeros((B, M, H, K, V), x.q.dtype)
    if shared is None:
        shared = np.zeros((B, H, K, V), x.q.dtype)
    return np.concatenate([routed, shared[:, None]], axis=1)


def stack_memories(x: MoMInputs) -> Memories:
    """The routed memories and the shared one as M' memories; the shared one has weight 1."""
    if not x.shared:
        return Memories(k=x.k, v=x.v, w=x.w, g=x.g, h0=x.initial_state)
    B, T, M, H, K = x.k.shape
    k = np.concatenate([x.k, x.k_s[:, :, None]], axis=2)  # (B, T, M + 1, H, K)
    v = np.concatenate([x.v, x.v_s[:, :, None]], axis=2)  # (B, T, M + 1, H, V)
    w = np.concatenate([x.w, np.ones((B, T, 1), x.q.dtype)], axis=2)  # (B, T, M + 1)
    g = None
    if x.g is not None or x.g_s is not None:
        g_routed = np.zeros((B, T, M, H), x.q.dtype) if x.g is None else x.g
        g_shared = np.zeros((B, T, H), x.q.dtype) if x.g_s is None else x.g_s
        g = np.concatenate([g_routed, g_shared[:, :, None]], axis=2)  # (B, T, M + 1, H)
    h0 = stack_states(x.initial_state, x.initial_state_shared, x)
    return Memories(k=k, v=v, w=w, g=g, h0=h0)


def split_gradients(x: MoMInputs, dq, dk, dv, dw, dg, dh0):
    """Gradients over the M' memories -> ``(dq, dk, dv, dw, dk_s, dv_s, dg, dg_s, dinitial_state,
    dinitial_state_shared)``, None for every input that was not given."""
    M = x.k.shape[2]
    dk_s = dv_s = dg_s = dh0_s = None
    if x.shared:
        dk, dk_s = dk[:, :, :M], dk[:, :, M]
        dv, dv_s = dv[:, :, :M], dv[:, :, M]
        dw = dw[:, :, :M]  # the shared memory's weight is the constant 1
        if dg is not None:
            dg, dg_s = dg[:, :, :M], dg[:, :, M]
        if dh0 is not None:
            dh0, dh0_s = dh0[:, :M], dh0[:, M]
    dg = None if x.g is None else dg
    dg_s = None if x.g_s is None else dg_s
    dh0 = None if x.initial_state is None else dh0
    dh0_s = None if x.initial_state_shared is None else dh0_s
    c = np.ascontiguousarray
    opt = lambda a: None if a is None else c(a)  # noqa: E731
    return c(dq), c(dk), c(dv), c(dw), opt(dk_s), opt(dv_s), opt(dg), opt(dg_s), opt(dh0), opt(dh0_s)


def split_states(x: MoMInputs, ht):
    """Final states over the M' memories -> routed (B, M, H, K, V), shared (B, H, K, V) or None."""
    M = x.k.shape[2]
    if not x.shared:
        return ht, None
    return np.ascontiguousarray(ht[:, :M]), np.ascontiguousarray(ht[:, M])


def gate_gradient(qdq, kdk, ht, dht, routed):
    """dg for one scalar gate per memory, head and step, from the read and write gradients.

    The identity of GLA's ``gate_gradient`` (``ref.mixers.gla._inputs``), summed over the key dims:
    with the gates masked (g'_t = g_t where routed, 0 elsewhere), G_t = g'_0 + ... + g'_t enters
    only through exp(G_t - G_s) between a read at t and a write at s <= t, so

        dL/dg'_t = sum_{t' >= t} (q . dq^m - k' . dk)_t'  (+ <dht, ht>)

    where q . dq^m is the part of q . dq that flows through memory m (``qdq``), and dL/dg_t =
    dL/dg'_t where routed, 0 elsewhere (there the gate is not applied).

    qdq, kdk (B, T, M', H); ht, dht (B, M', H, K, V) or dht None; routed (B, T, M'). Returns (B, T, M', H).
    """
    dG = qdq - kdk  # (B, T, M', H)
    dg = np.flip(np.cumsum(np.flip(dG, axis=1), axis=1), axis=1)
    if dht is not None:
        dg = dg + (dht * ht).sum(axis=(-2, -1))[:, None]  # (B, 1, M', H): enters every dg_t
    return dg * routed[..., None]
