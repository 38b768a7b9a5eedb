"""LightNet's additive recurrence (Qin et al., "You Only Scan Once", arXiv 2405.21022), every form.

The mixer reads queries q, *key logits* x and values v. Per batch, head and key dim k it keeps a
running mass Z_t = Z_{t-1} + exp(x_t) and a state S_t that is the exp(x)-weighted average of the
values seen so far:

    Z_t = Z_{t-1} + exp(x_t)                  (1)  additive: nothing is ever forgotten, only outweighed
    S_t = sum_{s <= t} exp(x_s) v_s / Z_t      (2)  S: (K, V) per batch and head, row k weighted by x[k]
    o_t = scale * q_t S_t                      (3)

In log space, with z_t = log Z_t (a log-cumsum-exp), (2) is GLA's recurrence with derived keys and
gates (flash-linear-attention's ``fused_lightnet_gate`` + ``chunk_gla``):

    z_t  = logaddexp(z_{t-1}, x_t)            (4)
    k'_t = exp(x_t - z_t)        in (0, 1]    (5)  the share of the new token in the mass
    g_t  = z_{t-1} - z_t         <= 0         (6)  log(Z_{t-1} / Z_t): the old mass's share
    S_t  = diag(exp(g_t)) S_{t-1} + k'_t^T v_t (7)

since exp(g_t) + k'_t = 1, (7) is a convex combination and unrolls to (2): S_t = sum_s
exp(x_s - z_t) v_s, the "cumsum ratio" (every exponent x_s - z_t <= 0, so nothing overflows).

State. The state is the pair (S, z): S (B, H, K, V) the average (2), z (B, H, K) the log-mass.
An initial state (S0, z0) is a mass exp(z0) already holding the average S0, so it enters (2) as
one more term: S_t = (exp(z0) S0 + sum_s exp(x_s) v_s) / Z_t with Z_t = exp(z0) + sum_s exp(x_s).
Without one, S_{-1} = 0 and there is no z_{-1}: z_0 = x_0 and the first gate multiplies nothing,
so it is set to 0 (not z_{-1} - z_0 = -inf, which GLA would rightly refuse).

Forms (each returns ``o, (ht_S, ht_z), cache``; each ``*_backward(do, dht, cache)`` returns
``dq, dx, dv, (dS0, dz0)``; dht is a pair whose elements may be None; the gradient of an absent
initial state is (None, None)):

* ``lightnet_recurrent``: (4)-(6) by ``lightnet_gate``, then GLA's recurrent form on (q, k', v, g).
* ``lightnet_chunked(..., chunk_size)``: the same gate, then GLA's chunked form.
* ``lightnet_parallel``: the cumsum ratio (2)-(3) written directly as masked attention,
  independent of the scan: A_ts = scale sum_k q_t[k] exp(x_s[k] - z_t[k]) for s in the mask of
  row t, with z_t = logsumexp of row t (and z0). Default mask: causal. With any other mask it is
  the same model over other neighbourhoods; its own backward, the tests' independent check.
* ``lightnet_global``: the non-causal form for multi-dimensional inputs (paper Sec. 4, "scan
  once"): one sum over all positions replaces the directional scans,

      z = logaddexp(z0, logsumexp_s x_s),  S = exp(z0 - z) S0 + sum_s exp(x_s - z) v_s,  o_t = scale q_t S  (8)

  i.e. every token reads the final state of the causal scan. It equals ``lightnet_parallel`` with
  an all-ones mask. Without positional encoding it is permutation-equivariant (``ref.models.
  lightnet`` adds MD-TPE and MD-LRPE).

Backward through the log-cumsum-exp (``lightnet_gate_backward``). GLA's backward gives dk' and dg.
With w_t = k'_t, dz_t/dx_t = w_t and dz_t/dz_{t-1} = 1 - w_t = exp(g_t), so the total gradient
of z_t, zbar_t, obeys a reverse linear scan:

    zbar_t = -k'_t dk'_t - dg_t + dg_{t+1} + exp(g_{t+1}) zbar_{t+1},   zbar_{T-1} gets dht_z   (9)
    dx_t   = k'_t dk'_t + k'_t zbar_t = k'_t (dk'_t + zbar_t)                                     (10)
    dz0    = dg_0 + exp(g_0) zbar_0                                                             (11)

(from k'_t = exp(x_t - z_t): +k' dk' on x_t, -k' dk' on z_t; from g_t = z_{t-1} - z_t: -dg_t on
z_t, +dg_t on z_{t-1}). Without an initial state g_0 is the constant 0: its dg_0 goes nowhere.
Every factor exp(g) is <= 1, so (9) is as stable as the forward scan.

The parallel and global forms differentiate the softmax-weighted average directly: for a row
(t, k) with weights P over the entries e (the positions s, and the initial state) holding the
values u_e, and dR the gradient of the average R = sum_e P_e u_e, the logit of e gets
P_e (dR . u_e - dR . R) (12).

Layout as flash-linear-attention: q, x (B, T, H, K); v, o (B, T, H, V); scale defaults to K^-0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks
from ref.backend import resolve
from ref.mixers.gla import (
    gla_chunked,
    gla_chunked_backward,
    gla_recurrent,
    gla_recurrent_backward,
)

__all__ = [
    "FORMS",
    "lightnet_gate",
    "lightnet_gate_backward",
    "lightnet_recurrent",
    "lightnet_recurrent_backward",
    "lightnet_chunked",
    "lightnet_chunked_backward",
    "lightnet_parallel",
    "lightnet_parallel_backward",
    "lightnet_global",
    "lightnet_global_backward",
]


# ---------------------------------------------------------------- validation


def _check_x(x, name="x"):
    x = checks.float_array(x, name, ndim=4, dims="(B, T, H, K)")
    checks.nonempty_time(x.shape[1], name)
    return checks.finite(x, name)


def _check_z(z, name, shape, dtype):
    z = checks.float_array(z, name, ndim=3, dims="(B, H, K)")
    checks.same_shape(z, name, shape, "(B, H, K)", "from x")
    checks.same_dtype(z, name, dtype, "the dtype of x")
    return checks.finite(z, name)


def _check_pair(pair, name):
    if pair is None:
        return None, None
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{name}: expected a pair (S, z) or None, got {type(pair).__name__}")
    return pair[0], pair[1]


def _check_inputs(q, x, v, scale, initial_state):
    """Validate the mixer's inputs; return (q, x, v, scale, S0, z0) with scale a float."""
    q, x, v = checks.query_key_value(q, x, v, k_name="x")
    B, T, H, K = q.shape
    V = v.shape[3]
    if scale is None:
        scale = K**-0.5
    elif isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating)) or not np.isfinite(scale):
        raise ValueError(f"scale: expected a finite number or None (K^-0.5), got {scale!r}")
    S0, z0 = _check_pair(initial_state, "initial_state")
    if initial_state is not None:
        if S0 is None or z0 is None:
            raise ValueError("initial_state: expected both S0 (B, H, K, V) and z0 (B, H, K), got a None in the pair")
        S0 = checks.float_array(S0, "initial_state[0]", ndim=4, dims="(B, H, K, V)")
        checks.same_shape(S0, "initial_state[0]", (B, H, K, V), "(B, H, K, V)", "from q and v")
        checks.same_dtype(S0, "initial_state[0]", q.dtype, "the dtype of q")
        checks.finite(S0, "initial_state[0]")
        z0 = _check_z(z0, "initial_state[1]", (B, H, K), q.dtype)
    return q, x, v, float(scale), S0, z0


def _check_cotangents(do, dht, shape_o, shape_S, shape_z, dtype):
    """``do`` (B, T, H, V), dht = (dS (B, H, K, V), dz (B, H, K)); None means zero."""
    if do is None:
        do = np.zeros(shape_o, dtype)
    else:
        do = checks.float_array(do, "do", ndim=4, dims="(B, T, H, V)")
        checks.same_shape(do, "do", shape_o, "(B, T, H, V)", "the shape of o")
        checks.same_dtype(do, "do", dtype, "the dtype of o")
    dS, dz = _check_pair(dht, "dht")
    if dS is not None:
        dS = checks.float_array(dS, "dht[0]", ndim=4, dims="(B, H, K, V)")
        checks.same_shape(dS, "dht[0]", shape_S, "(B, H, K, V)", "the shape of ht[0]")
        checks.same_dtype(dS, "dht[0]", dtype, "the dtype of ht[0]")
    if dz is not None:
        dz = checks.float_array(dz, "dht[1]", ndim=3, dims="(B, H, K)")
        checks.same_shape(dz, "dht[1]", shape_z, "(B, H, K)", "the shape of ht[1]")
        checks.same_dtype(dz, "dht[1]", dtype, "the dtype of ht[1]")
    return do, dS, dz


def _head_first(a):
    return np.ascontiguousarray(np.moveaxis(a, 2, 1))  # (B, T, H, X) -> (B, H, T, X)


def _time_second(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, 2))  # (B, H, T, X) -> (B, T, H, X)


# ---------------------------------------------------------------- the gate: (4)-(6), (9)-(11)


@dataclass(frozen=True)
class GateCache:
    x: np.ndarray  # (B, T, H, K) key logits
    k: np.ndarray  # (B, T, H, K) k' = exp(x - z)
    g: np.ndarray  # (B, T, H, K) gates z_{t-1} - z_t (g_0 = 0 without an initial state)
    has_initial: bool


def lightnet_gate(x, *, initial_state=None):
    """LightNet's keys and gates from the key logits: the log-cumsum-exp (4) and (5), (6).

    x (B, T, H, K); initial_state z0 (B, H, K) or None. Returns ``k'`` (B, T, H, K) in (0, 1],
    the gates ``g`` (B, T, H, K) <= 0, the final log-mass ``z_T`` (B, H, K) and the cache.
    """
    x = _check_x(x)
    B, T, H, K = x.shape
    z0 = None if initial_state is None else _check_z(initial_state, "initial_state", (B, H, K), x.dtype)
    if z0 is None:
        z = np.logaddexp.accumulate(x, axis=1)  # (4): z_0 = x_0
    else:
        z = np.logaddexp.accumulate(np.concatenate([z0[:, None], x], axis=1), axis=1)[:, 1:]  # (4)
    k = np.exp(x - z)  # (5)
    g = np.empty_like(x)
    g[:, 1:] = z[:, :-1] - z[:, 1:]  # (6); logaddexp(a, b) >= a in floating point too, so g <= 0
    g[:, 0] = 0 if z0 is None else z0 - z[:, 0]  # no z_{-1}: the first gate multiplies S_{-1} = 0
    return k, g, z[:, -1].copy(), GateCache(x=x, k=k, g=g, has_initial=z0 is not None)


def lightnet_gate_backward(dk, dg, dzt, cache: GateCache):
    """Gradients ``(dx, dz0)`` by the reverse scan (9)-(11); any cotangent may be None (zero).

    ``dz0`` is None when the forward had no initial state.
    """
    x, k, g = cache.x, cache.k, cache.g
    B, T, H, K = x.shape
    def cotangent(d, name, shape, dims, like):
        if d is None:
            return np.zeros(shape, x.dtype)
        d = checks.float_array(d, name, ndim=len(shape), dims=dims)
        checks.same_shape(d, name, shape, dims, like)
        return checks.same_dtype(d, name, x.dtype, "the dtype of x")

    dk = cotangent(dk, "dk", x.shape, "(B, T, H, K)", "the shape of k")
    dg = cotangent(dg, "dg", x.shape, "(B, T, H, K)", "the shape of g").copy()
    if not cache.has_initial:
        dg[:, 0] = 0  # g_0 is the constant 0: nothing upstream of it
    dzt = cotangent(dzt, "dzt", (B, H, K), "(B, H, K)", "the shape of z_T")

    direct = -k * dk - dg  # (9): the terms of zbar_t from k'_t and g_t
    direct[:, :-1] += dg[:, 1:]  # (9): + dg_{t+1}, since g_{t+1} = z_t - z_{t+1}
    zbar = np.empty_like(x)
    carry = dzt.copy()  # zbar_{T-1} gets dz_T
    for t in range(T - 1, -1, -1):
        carry = direct[:, t] + carry  # (9): zbar_t
        zbar[:, t] = carry
        carry = np.exp(g[:, t]) * carry  # dz_t/dz_{t-1} = exp(g_t): hand on to t - 1
    dx = k * (dk + zbar)  # (10)
    dz0 = dg[:, 0] + carry if cache.has_initial else None  # (11): carry = exp(g_0) zbar_0
    return dx, dz0


# ---------------------------------------------------------------- recurrent and chunked: via GLA


@dataclass(frozen=True)
class LightNetCache:
    gate: GateCache
    gla: object  # GLA's cache
    form: str


def _via_gla(form, gla_forward, q, x, v, scale, initial_state, backend, **options):
    q, x, v, scale, S0, z0 = _check_inputs(q, x, v, scale, initial_state)
    k, g, zt, gate_cache = lightnet_gate(x, initial_state=z0)  # (4)-(6)
    o, S, gla_cache = gla_forward(q, k, v, g, scale=scale, initial_state=S0, backend=backend, **options)  # (7), (3)
    return o, (S, zt), LightNetCache(gate=gate_cache, gla=gla_cache, form=form)


def _via_gla_backward(gla_backward, do, dht, cache: LightNetCache):
    gla_cache = cache.gla
    B, T, H, V = gla_cache.v.shape
    K = gla_cache.q.shape[3]
    do, dS, dz = _check_cotangents(do, dht, (B, T, H, V), (B, H, K, V), (B, H, K), gla_cache.q.dtype)
    dq, dk, dv, dg, dS0 = gla_backward(do, dS, gla_cache)
    dx, dz0 = lightnet_gate_backward(dk, dg, dz, cache.gate)  # (9)-(11)
    return dq, dx, dv, (dS0, dz0)


def lightnet_recurrent(q, x, v, *, scale=None, initial_state=None, backend: str = "numpy"):
    """LightNet by a loop over time: the gate (4)-(6), then GLA's recurrent form.

    q, x (B, T, H, K) queries and key logits; v (B, T, H, V); scale (default K^-0.5);
    initial_state (S0 (B, H, K, V), z0 (B, H, K)) or None; ``backend`` is GLA's.
    Returns ``o`` (B, T, H, V), the final state ``(S_T, z_T)`` and the cache.
    """
    return _via_gla("recurrent", gla_recurrent, q, x, v, scale, initial_state, backend)


def lightnet_recurrent_backward(do, dht, cache: LightNetCache):
    """Gradients ``(dq, dx, dv, (dS0, dz0))``; dht = (dS_T, dz_T), either may be None."""
    return _via_gla_backward(gla_recurrent_backward, do, dht, cache)


def lightnet_chunked(q, x, v, *, scale=None, initial_state=None, chunk_size: int = 64, backend: str = "numpy"):
    """LightNet by chunks: the gate (4)-(6), then GLA's chunked form; arguments as ``lightnet_recurrent``."""
    return _via_gla("chunked", gla_chunked, q, x, v, scale, initial_state, backend, chunk_size=chunk_size)


def lightnet_chunked_backward(do, dht, cache: LightNetCache):
    """Gradients ``(dq, dx, dv, (dS0, dz0))``."""
    return _via_gla_backward(gla_chunked_backward, do, dht, cache)


# ---------------------------------------------------------------- parallel: the cumsum ratio, masked


@dataclass(frozen=True)
class ParallelCache:
    q: np.ndarray  # (B, T, H, K)
    x: np.ndarray  # (B, T, H, K)
    v: np.ndarray  # (B, T, H, V)
    S0: np.ndarray | None  # (B, H, K, V)
    z0: np.ndarray | None  # (B, H, K)
    mask: np.ndarray  # (T, T) bool: row t may read position s
    ht: tuple  # (S_T (B, H, K, V), z_T (B, H, K))
    scale: float


def _check_mask(mask, T, has_initial):
    if mask is None:
        return np.tril(np.ones((T, T), dtype=bool))  # causal
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        got = getattr(mask, "dtype", type(mask).__name__)
        raise ValueError(f"mask: expected a boolean numpy array (T, T), got {got}")
    checks.same_shape(mask, "mask", (T, T), "(T, T)", "T from q")
    if not has_initial and not mask.any(axis=1).all():
        row = int(np.flatnonzero(~mask.any(axis=1))[0])
        raise ValueError(f"mask: row {row} reads no position and there is no initial_state (its mass would be 0)")
    return mask


def _row_logmass(xj, mask, z0j):
    """z_t = logaddexp(z0, logsumexp_{s: mask[t, s]} x_s) for one key dim; and the logits.

    xj (B, H, T), z0j (B, H) or None -> z (B, H, T) and L (B, H, T, T) with -inf off the mask.
    """
    L = np.where(mask, xj[:, :, None, :], -np.inf)  # (B, H, T, T): L[t, s] = x_s
    m = L.max(axis=-1)  # (B, H, T); -inf on an empty row
    if z0j is not None:
        m = np.maximum(m, z0j[..., None])
    total = np.exp(L - m[..., None]).sum(axis=-1)
    if z0j is not None:
        total = total + np.exp(z0j[..., None] - m)
    return m + np.log(total), L


def _final_state(xh, vh, S0, z0):
    """(2) after all T positions: z_T = logaddexp(z0, logsumexp_s x_s), S_T; and the weights."""
    zt = np.logaddexp.reduce(xh, axis=2)  # (B, H, K)
    if z0 is not None:
        zt = np.logaddexp(z0, zt)
    P = np.exp(xh - zt[:, :, None, :])  # (B, H, T, K): exp(x_s - z_T) <= 1
    S = np.einsum("bhtk,bhtv->bhkv", P, vh)  # (2)
    P0 = None
    if z0 is not None:
        P0 = np.exp(z0 - zt)  # (B, H, K): the initial mass's share
        S = S + P0[..., None] * S0
    return S, zt, P, P0


def lightnet_parallel(q, x, v, *, scale=None, initial_state=None, mask=None, backend: str = "numpy"):
    """LightNet as masked attention with weights exp(x_s - z_t) (the cumsum ratio), O(T^2 K).

    Arguments as ``lightnet_recurrent``; ``mask`` (T, T) bool, row t reading the positions s with
    mask[t, s] (default: causal, s <= t). The final state is the state after all T positions,
    whatever the mask.
    """
    q, x, v, scale, S0, z0 = _check_inputs(q, x, v, scale, initial_state)
    backend = resolve(backend, ("numpy",), "lightnet_parallel")
    qh, xh, vh = _head_first(q), _head_first(x), _head_first(v)  # (B, H, T, K|V)
    B, H, T, K = qh.shape
    mask = _check_mask(mask, T, z0 is not None)

    oh = np.zeros(vh.shape, q.dtype)
    A = np.zeros((B, H, T, T), q.dtype)
    for j in range(K):  # one key dim at a time: T^2 memory instead of T^2 K
        z, L = _row_logmass(xh[..., j], mask, None if z0 is None else z0[..., j])  # (B, H, T)
        A += qh[..., j, None] * np.exp(L - z[..., None])  # weights exp(x_s - z_t) <= 1, 0 off the mask
        if z0 is not None:
            P0 = np.exp(z0[..., j, None] - z)  # (B, H, T): the initial state's weight in row t
            oh += (qh[..., j] * P0)[..., None] * S0[:, :, j, None, :]  # (2)-(3), initial term
    oh = scale * (oh + A @ vh)  # (3)
    S, zt, _, _ = _final_state(xh, vh, S0, z0)
    cache = ParallelCache(q=q, x=x, v=v, S0=S0, z0=z0, mask=mask, ht=(S, zt), scale=scale)
    return _time_second(oh), (S.copy(), zt.copy()), cache


def _final_state_backward(dS, dz, xh, vh, S0, z0, S, P, P0):
    """Gradients (dx (B,H,T,K), dv (B,H,T,V), dS0, dz0) of the final state, by (12)."""
    dxh, dvh = np.zeros_like(xh), np.zeros_like(vh)
    dS0 = None if S0 is None else np.zeros_like(S0)
    dz0 = None if z0 is None else np.zeros_like(z0)
    if dS is not None:
        dvh += np.einsum("bhtk,bhkv->bhtv", P, dS)
        dRR = (dS * S).sum(-1)  # (B, H, K): dR . R
        dxh += P * (np.einsum("bhkv,bhtv->bhtk", dS, vh) - dRR[:, :, None, :])  # (12)
        if S0 is not None:
            dS0 += P0[..., None] * dS
            dz0 += P0 * ((dS * S0).sum(-1) - dRR)  # (12) for the initial entry
    if dz is not None:  # z_T = logsumexp: its gradient is the softmax P
        dxh += P * dz[:, :, None, :]
        if z0 is not None:
            dz0 += P0 * dz
    return dxh, dvh, dS0, dz0


def lightnet_parallel_backward(do, dht, cache: ParallelCache):
    """Gradients ``(dq, dx, dv, (dS0, dz0))`` of the masked form, by (12), row by row."""
    q, x, v, S0, z0, mask, scale = cache.q, cache.x, cache.v, cache.S0, cache.z0, cache.mask, cache.scale
    B, T, H, K = q.shape
    V = v.shape[3]
    do, dS, dz = _check_cotangents(do, dht, v.shape, (B, H, K, V), (B, H, K), q.dtype)
    qh, xh, vh, doh = _head_first(q), _head_first(x), _head_first(v), _head_first(do)

    dov = doh @ np.swapaxes(vh, -1, -2)  # (B, H, T, T): do_t . v_s
    dqh, dxh = np.zeros_like(qh), np.zeros_like(xh)
    dvh = np.zeros_like(vh)
    dS0 = None if S0 is None else np.zeros_like(S0)
    dz0 = None if z0 is None else np.zeros_like(z0)
    for j in range(K):
        z, L = _row_logmass(xh[..., j], mask, None if z0 is None else z0[..., j])
        P = np.exp(L - z[..., None])  # (B, H, T, T): row t's weights over s
        R = P @ vh  # (B, H, T, V): R_t = sum_s P_ts v_s (+ the initial term below)
        if z0 is not None:
            P0 = np.exp(z0[..., j, None] - z)  # (B, H, T)
            R += P0[..., None] * S0[:, :, j, None, :]
        dqh[..., j] = scale * (doh * R).sum(-1)  # (3): dq_t[j] = scale do_t . R_t
        c = qh[..., j] * dqh[..., j]  # (B, H, T): dR_t . R_t with dR_t = scale q_t[j] do_t
        sq = scale * qh[..., j, None]  # (B, H, T, 1)
        dxh[..., j] = (P * (sq * dov - c[..., None])).sum(axis=2)  # (12), summed over rows t
        dvh += np.swapaxes(P * sq, -1, -2) @ doh  # dv_s = sum_t P_ts scale q_t[j] do_t
        if z0 is not None:
            dS0[:, :, j] = np.einsum("bht,bhtv->bhv", P0 * sq[..., 0], doh)
            dz0[..., j] = (P0 * (sq[..., 0] * (doh @ S0[:, :, j, :, None])[..., 0] - c)).sum(-1)  # (12)
    S, zt = cache.ht
    if dS is not None or dz is not None:
        _, _, P, P0 = _final_state(xh, vh, S0, z0)
        dx_f, dv_f, dS0_f, dz0_f = _final_state_backward(dS, dz, xh, vh, S0, z0, S, P, P0)
        dxh += dx_f
        dvh += dv_f
        if S0 is not None:
            dS0 += dS0_f
            dz0 += dz0_f
    return _time_second(dqh), _time_second(dxh), _time_second(dvh), (dS0, dz0)


# ---------------------------------------------------------------- global: one sum over all positions


@dataclass(frozen=True)
class GlobalCache:
    q: np.ndarray  # (B, T, H, K)
    x: np.ndarray  # (B, T, H, K)
    v: np.ndarray  # (B, T, H, V)
    S0: np.ndarray | None
    z0: np.ndarray | None
    ht: tuple  # (S (B, H, K, V), z (B, H, K))
    scale: float


def lightnet_global(q, x, v, *, scale=None, initial_state=None, backend: str = "numpy"):
    """LightNet without a direction (8): every token reads one state made from all positions.

    Arguments and results as ``lightnet_recurrent``; the returned state (S, z) is the global one,
    equal to the final state of the causal forms. O(T K V): the "scan once" of the paper.
    """
    q, x, v, scale, S0, z0 = _check_inputs(q, x, v, scale, initial_state)
    backend = resolve(backend, ("numpy",), "lightnet_global")
    qh, xh, vh = _head_first(q), _head_first(x), _head_first(v)
    S, z, _, _ = _final_state(xh, vh, S0, z0)  # (8): (B, H, K, V), (B, H, K)
    oh = scale * qh @ S  # (8): (B, H, T, V)
    cache = GlobalCache(q=q, x=x, v=v, S0=S0, z0=z0, ht=(S, z), scale=scale)
    return _time_second(oh), (S.copy(), z.copy()), cache


def lightnet_global_backward(do, dht, cache: GlobalCache):
    """Gradients ``(dq, dx, dv, (dS0, dz0))`` of (8): the outputs' dS joins dht's, then (12)."""
    q, x, v, S0, z0, scale = cache.q, cache.x, cache.v, cache.S0, cache.z0, cache.scale
    B, T, H, K = q.shape
    V = v.shape[3]
    do, dS, dz = _check_cotangents(do, dht, v.shape, (B, H, K, V), (B, H, K), q.dtype)
    qh, xh, vh, doh = _head_first(q), _head_first(x), _head_first(v), _head_first(do)
    S, _ = cache.ht
    dqh = scale * doh @ np.swapaxes(S, -1, -2)  # (B, H, T, K)
    dS_total = scale * np.swapaxes(qh, -1, -2) @ doh  # (B, H, K, V): every o_t reads S
    if dS is not None:
        dS_total = dS_total + dS
    _, _, P, P0 = _final_state(xh, vh, S0, z0)
    dxh, dvh, dS0, dz0 = _final_state_backward(dS_total, dz, xh, vh, S0, z0, S, P, P0)
    return _time_second(dqh), _time_second(dxh), _time_second(dvh), (dS0, dz0)


FORMS = {
    "recurrent": (lightnet_recurrent, lightnet_recurrent_backward),
    "chunked": (lightnet_chunked, lightnet_chunked_backward),
    "parallel": (lightnet_parallel, lightnet_parallel_backward),
    "global": (lightnet_global, lightnet_global_backward),
}
