"""The MoM layer (Du et al., 2025, arXiv 2502.13685): router, memories, norm, output projection,
and the load-balancing loss, as a forward/backward pair over a nested dict of parameters.

For x (B, T, D), with M routed memories, H heads, key dim K and value dim V:

    logits = x W_r                        p = softmax(logits) over the M memories            (1)
    S_t    = the top_k memories of p_t (ties: the lower index)                              (2)
    w_t[m] = p_t[m] / sum_{j in S_t} p_t[j] for m in S_t, 0 otherwise  (renormalised)        (3)
    q = x W_q (shared);  k^m = x W_k^m,  v^m = x W_v^m;  k^s = x W_k^s,  v^s = x W_v^s        (4)
    [gated:  g^m = logsigmoid(x W_g^m + b_g^m) / 16,  g^s likewise, one per head]           (5)
    o = MoM(q, k, v, w, k^s, v^s, g, g^s)           (``ref.mixers.mom``, any of its forms)    (6)
    y = RMSNorm_V(o) W_o     (RMSNorm over each head's V values, one weight (V,) for all heads) (7)

Parameters (``init_mom_layer``; H, K, V and M are read back from the shapes)::

    router/W (D, M)                      q_proj/W (D, H*K)
    memories/m/k_proj/W (D, H*K)         memories/m/v_proj/W (D, H*V)        m = 0 .. M-1
    memories/m/g_proj/W (D, H), b (H,)   (gated layers only)
    shared/...                           the same three for the shared memory (if any)
    norm/weight (V,)                     o_proj/W (H*V, D)

``mom_layer(params, x, ...) -> (y, aux_loss, cache)`` and ``mom_layer_backward(params, cache, dy,
daux) -> (dx, grads)`` with ``grads`` shaped like ``params`` (x's gradient first, as the other layers).

The load-balancing loss is the one of the official code (``load_balancing_loss_func`` in
OpenSparseLLMs/MoM, fla/models/mom_gated_deltanet/modeling_mom_gated_deltanet.py, commit
50ad6b8b95d33db7a67fde14152da2e80891963d; config training/configs/mom.json: 4 memories, top-2,
a shared memory, aux_loss_scale 0.01, use_layer_wise_balance true), computed per layer and per
sequence ("group") b:

    f_bm = (1/T) sum_t [m in S_t]       the fraction of row b's tokens routed to m (a count)  (8)
    P_bm = (1/T) sum_t w_t[m]           the mean *renormalised top-k* weight (0 off S_t)     (9)
    aux  = aux_loss_scale * M^2 * mean_{b,m} f_bm P_bm                                     (10)
         = aux_loss_scale * (M / B) sum_{b,m} f_bm P_bm

It differs from Switch Transformer's M sum_m f_m P_m in three ways: P averages the renormalised
top-k weights, not the full softmax p; f sums to top_k over m, not 1; and the statistics are per
sequence, averaged over the batch. Balanced routing gives aux / aux_loss_scale = top_k; all tokens
sent to the same top_k memories give M.

Backward. Everything is differentiated as written except the selection (2), which is piecewise
constant: the backward holds S_t fixed and differentiates the renormalised weights (3), the mixer
and the loss through P (f is a count and carries no gradient). With top_k = 1 the weight is 1
whatever the logits and P = f, so the router gets no gradient at all (as in the official code).
Finite differences agree only away from ties between the top_k-th and the next logit, so gradient
checks draw their inputs away from them. Through (3) and (1): with s_t = sum_{j in S_t} p_t[j],

    dp_t[m] = [m in S_t] (dw_t[m] - sum_j dw_t[j] w_t[j]) / s_t,   dlogits = softmax' dp       (11)

(which sends nothing to unselected logits: w is a softmax over the selected logits alone).

Sources (OpenSparseLLMs/MoM). Routing (1)-(3), q shared by the memories, each memory's own k and
v projections, the shared memory's own projections with its output added at weight 1, and the
RMSNorm over each head's values: fla/layers/mom_gated_deltanet.py (commit
50ad6b8b95d33db7a67fde14152da2e80891963d) and mom/layers/mom_gla.py (commit
3edf67b536f567081cb27956db950f2da16c191b). Differences: the memory update is linear attention or
scalar-gated GLA, not the gated delta rule of the main configuration; the gates (5) are one per
head (as simple GLA) from a full-rank map, where mom_gla.py has one per key dim from a rank-16 map
(the same logsigmoid / 16); no short convolution, feature map or output gate; no capacity limit
(the official code drops a memory's earliest tokens beyond ceil(T / top_k) at capacity 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks
from ref.mixers.mom import FORMS
from ref.nn import (
    linear,
    linear_backward,
    logsigmoid,
    logsigmoid_backward,
    rms_norm,
    rms_norm_backward,
    softmax,
    softmax_backward,
)
from ref.nn import _validate
from ref.train.tree import check_same_structure, tree_flatten, tree_map, tree_unflatten

__all__ = [
    "init_mom_layer",
    "mom_layer",
    "mom_layer_backward",
    "route",
    "route_backward",
    "load_balancing_loss",
    "load_balancing_loss_backward",
    "GATE_NORMALIZER",
    "AUX_LOSS_SCALE",
]

GATE_NORMALIZER = 16.0  # (5): official GLA layers divide logsigmoid by gate_logit_normalizer = 16
AUX_LOSS_SCALE = 0.01  # (10): aux_loss_scale of the official config
NORM_EPS = 1e-6  # (7): norm_eps of the official config


# ----------------------------------------------------------------------------- parameters


def _shapes(D, H, K, V, M, shared, gated):
    """The parameter tree's layout: the shape of every leaf (see the module docstring)."""

    def memory():
        p = {"k_proj": {"W": (D, H * K)}, "v_proj": {"W": (D, H * V)}}
        if gated:
            p["g_proj"] = {"W": (D, H), "b": (H,)}
        return p

    shapes = {
        "router": {"W": (D, M)},
        "q_proj": {"W": (D, H * K)},
        "memories": [memory() for _ in range(M)],
        "norm": {"weight": (V,)},
        "o_proj": {"W": (H * V, D)},
    }
    if shared:
        shapes["shared"] = memory()
    return shapes


def init_mom_layer(rng, D, H, K, V, M, top_k=2, *, shared=True, gated=False, dtype=np.float64):
    """Parameters of an MoM layer (a nested dict of arrays), initialised as the official layers.

    D model width, H heads, K key and V value dim per head, M routed memories; ``top_k`` (1..M)
    is checked here so that a bad configuration fails when it is made (pass the same value to
    ``mom_layer``). ``shared``: add the shared memory's projections; ``gated``: add a scalar
    log-gate per memory and head (5). Weights: Glorot-uniform with gain 2^-2.5, U(-a, a) with
    a = 2^-2.5 sqrt(6 / (fan_in + fan_out)) (the official layers' ``_initialize_weights``); the
    gates' biases 0; the norm's weight 1.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    D, H, K, V, M = (checks.positive_int(n, name) for n, name in ((D, "D"), (H, "H"), (K, "K"), (V, "V"), (M, "M")))
    _check_top_k(top_k, M)
    shared = _validate.flag(shared, "shared")
    gated = _validate.flag(gated, "gated")
    dtype = np.dtype(dtype)
    if dtype not in checks.FLOAT_DTYPES:
        raise ValueError(f"dtype: expected float32 or float64, got {dtype}")

    def init(path, shape):
        if path == "norm/weight":
            return np.ones(shape, dtype)
        if len(shape) == 1:  # the gates' biases
            return np.zeros(shape, dtype)
        fan_in, fan_out = shape
        a = 2**-2.5 * np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, shape).astype(dtype)

    layout = _shapes(D, H, K, V, M, shared, gated)
    return tree_unflatten({path: init(path, shape) for path, shape in tree_flatten(layout).items()})


@dataclass(frozen=True)
class LayerDims:
    B: int
    T: int
    D: int
    H: int
    K: int
    V: int
    M: int
    shared: bool
    gated: bool


def _check_top_k(top_k, M):
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= M:
        raise ValueError(f"top_k: expected an integer in [1, M] = [1, {M}], got {top_k!r}")
    return int(top_k)


def _dims(params, x) -> LayerDims:
    """Read H, K, V, M from the parameters, then check the whole tree against those sizes."""
    x = checks.float_array(x, "x", ndim=3, dims="(B, T, D)")
    B, T, D = x.shape
    checks.nonempty_time(T, "x")
    checks.finite(x, "x")
    try:
        M = params["router"]["W"].shape[1]
        V = params["norm"]["weight"].shape[0]
        HV = params["o_proj"]["W"].shape[0]
        HK = params["q_proj"]["W"].shape[1]
        shared = "shared" in params
        gated = "g_proj" in params["memories"][0]
        D_router = params["router"]["W"].shape[0]
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(
            "params: expected the tree of init_mom_layer (router, q_proj, memories, norm, o_proj and "
            f"optionally shared), could not read it ({type(e).__name__}: {e})"
        ) from None
    if D != D_router:
        raise ValueError(
            f"x: expected shape (B, T, D) with D = {D_router} (the rows of params router/W), got {x.shape}"
        )
    if V < 1 or HV % V:
        raise ValueError(f"params: o_proj/W has {HV} rows, not a multiple of V = {V} (the length of norm/weight)")
    H = HV // V
    if H < 1 or HK % H:
        raise ValueError(f"params: q_proj/W has {HK} columns, not a multiple of H = {H} (o_proj/W rows / V)")
    K = HK // H
    like = f"init_mom_layer(D={D}, H={H}, K={K}, V={V}, M={M}, shared={shared}, gated={gated}, dtype={x.dtype})"
    template = tree_map(lambda shape: np.zeros(shape, x.dtype), _shapes(D, H, K, V, M, shared, gated))
    check_same_structure(params, template, "params", like)
    for path, leaf in tree_flatten(params).items():
        checks.finite(leaf, f"params/{path}")
    return LayerDims(B, T, D, H, K, V, M, shared, gated)


# ----------------------------------------------------------------------------- router


def route(logits, top_k):
    """(1)-(3): ``w, selected, cache`` from router logits (B, T, M): the renormalised top-k weights."""
    p, softmax_cache = softmax(logits, axis=-1)  # (1)
    order = np.argsort(-logits, axis=-1, kind="stable")  # (2): the largest first, ties to the lower index
    selected = np.zeros(logits.shape, dtype=bool)
    np.put_along_axis(selected, order[..., :top_k], True, axis=-1)  # (B, T, M)
    kept = np.where(selected, p, 0)
    s = kept.sum(axis=-1, keepdims=True)  # (B, T, 1)
    w = kept / s  # (3)
    return w, selected, (softmax_cache, selected, w, s)


def route_backward(dw, cache):
    """(11): dlogits (B, T, M) from dw, the selection held fixed."""
    softmax_cache, selected, w, s = cache
    dp = np.where(selected, (dw - (dw * w).sum(axis=-1, keepdims=True)) / s, 0)  # through (3)
    (dlogits,) = softmax_backward(dp, softmax_cache)  # through (1)
    return dlogits


# ----------------------------------------------------------------------------- balance loss


def load_balancing_loss(w, selected):
    """(8)-(10) without aux_loss_scale: ``M^2 mean_{b,m} f_bm P_bm`` and the cache.

    w (B, T, M) the renormalised top-k weights; selected (B, T, M) booleans.
    """
    B, T, M = w.shape
    f = selected.mean(axis=1)  # (8): (B, M)
    P = w.mean(axis=1)  # (9): (B, M)
    loss = M**2 * float(np.mean(f * P))  # (10)
    return loss, (f, selected, w.dtype)


def load_balancing_loss_backward(dloss, cache):
    """dw (B, T, M): dloss * M^2 / (B M) * f_bm / T on the selected memories (f is a count)."""
    f, selected, dtype = cache
    B, T, M = selected.shape
    dP = dloss * M**2 / (B * M) * f  # (B, M): d(10)/dP
    return np.where(selected, dP[:, None, :] / T, 0).astype(dtype)  # (9): dP/dw = 1/T on the selected


# ----------------------------------------------------------------------------- the layer


@dataclass(frozen=True)
class MoMLayerCache:
    dims: LayerDims
    form: str
    aux_loss_scale: float
    router: tuple  # linear cache
    routing: tuple  # route cache
    balance: tuple  # load_balancing_loss cache
    q: tuple  # linear cache
    memories: tuple  # per memory: (k linear, v linear, gate caches or None)
    shared: tuple | None
    mixer: object  # the mixer form's cache
    norm: tuple
    out: tuple


def _project_memory(x, p, d: LayerDims):
    """(4), (5) for one memory: k (B, T, H, K), v (B, T, H, V), g (B, T, H) or None, and the caches."""
    k, k_cache = linear(x, p["k_proj"]["W"])
    v, v_cache = linear(x, p["v_proj"]["W"])
    g, gate_caches = None, None
    if "g_proj" in p:
        a, a_cache = linear(x, p["g_proj"]["W"], p["g_proj"]["b"])  # (B, T, H)
        ls, ls_cache = logsigmoid(a)
        g = ls / GATE_NORMALIZER  # (5)
        gate_caches = (a_cache, ls_cache)
    B, T = x.shape[:2]
    return k.reshape(B, T, d.H, d.K), v.reshape(B, T, d.H, d.V), g, (k_cache, v_cache, gate_caches)


def _project_memory_backward(dk, dv, dg, caches, d: LayerDims):
    """dx and the memory's gradients {k_proj, v_proj[, g_proj]} from dk, dv, dg."""
    k_cache, v_cache, gate_caches = caches
    B, T = dk.shape[:2]
    dx, dWk, _ = linear_backward(dk.reshape(B, T, d.H * d.K), k_cache)
    dx_v, dWv, _ = linear_backward(dv.reshape(B, T, d.H * d.V), v_cache)
    dx = dx + dx_v
    grads = {"k_proj": {"W": dWk}, "v_proj": {"W": dWv}}
    if gate_caches is not None:
        a_cache, ls_cache = gate_caches
        (da,) = logsigmoid_backward(dg / GATE_NORMALIZER, ls_cache)
        dx_g, dWg, dbg = linear_backward(da, a_cache)
        dx = dx + dx_g
        grads["g_proj"] = {"W": dWg, "b": dbg}
    return dx, grads


def mom_layer(
    params,
    x,
    *,
    top_k: int = 2,
    form: str = "chunked",
    chunk_size: int = 64,
    scale=None,
    aux_loss_scale: float = AUX_LOSS_SCALE,
    backend: str = "numpy",
):
    """The MoM layer (1)-(7) and its load-balancing loss (10).

    params: the tree of ``init_mom_layer``; x (B, T, D); top_k memories per token; ``form`` the
    mixer's form ("recurrent", "parallel", "chunked" or "varlen"; ``chunk_size`` for "chunked");
    scale of the mixer (default K^-0.5); aux_loss_scale the loss's coefficient (0.01 as the
    official config). Returns ``y`` (B, T, D), ``aux_loss`` (a float; add it to the task loss)
    and the cache.
    """
    d = _dims(params, x)
    top_k = _check_top_k(top_k, d.M)
    checks.one_of(form, "form", tuple(FORMS))
    aux_loss_scale = _validate.real(aux_loss_scale, "aux_loss_scale")
    mixer, _ = FORMS[form]
    options = {"chunk_size": chunk_size} if form == "chunked" else {}
    B, T = d.B, d.T

    logits, router_cache = linear(x, params["router"]["W"])  # (1): (B, T, M)
    w, selected, routing_cache = route(logits, top_k)  # (2), (3)
    q, q_cache = linear(x, params["q_proj"]["W"])
    q = q.reshape(B, T, d.H, d.K)  # (4)
    per_memory = [_project_memory(x, p, d) for p in params["memories"]]
    k = np.stack([m[0] for m in per_memory], axis=2)  # (B, T, M, H, K)
    v = np.stack([m[1] for m in per_memory], axis=2)  # (B, T, M, H, V)
    g = np.stack([m[2] for m in per_memory], axis=2) if d.gated else None  # (B, T, M, H)
    k_s = v_s = g_s = shared_caches = None
    if d.shared:
        k_s, v_s, g_s, shared_caches = _project_memory(x, params["shared"], d)

    o, _, _, mixer_cache = mixer(
        q, k, v, w, k_s, v_s, g, g_s, scale=scale, top_k=top_k, backend=backend, **options
    )  # (6): (B, T, H, V)
    n, norm_cache = rms_norm(o, params["norm"]["weight"], eps=NORM_EPS)  # (7): over V, per head
    y, out_cache = linear(n.reshape(B, T, d.H * d.V), params["o_proj"]["W"])  # (7): (B, T, D)

    balance, balance_cache = load_balancing_loss(w, selected)  # (8)-(10)
    cache = MoMLayerCache(
        dims=d,
        form=form,
        aux_loss_scale=aux_loss_scale,
        router=router_cache,
        routing=routing_cache,
        balance=balance_cache,
        q=q_cache,
        memories=tuple(m[3] for m in per_memory),
        shared=shared_caches,
        mixer=mixer_cache,
        norm=norm_cache,
        out=out_cache,
    )
    return y, aux_loss_scale * balance, cache


def mom_layer_backward(params, cache: MoMLayerCache, dy, daux=None):
    """``dx, grads``: the gradient of x (B, T, D) and of every parameter, ``grads`` shaped like ``params``.

    dy (B, T, D) the gradient of y; daux the gradient of aux_loss (a number; None means 0, e.g.
    1.0 when aux_loss is added to the loss as is). The top-k selection is held fixed (see above).
    """
    d = cache.dims
    B, T = d.B, d.T
    dy = _validate.cotangent(dy, "dy", (B, T, d.D), cache.router[0].dtype, "(B, T, D)")
    if isinstance(daux, np.ndarray) and daux.shape == ():
        daux = daux.item()  # a 0-d array, as aux_loss's gradient may come
    daux = 0.0 if daux is None else _validate.real(daux, "daux")
    _, mixer_backward = FORMS[cache.form]

    dn, dWo, _ = linear_backward(dy, cache.out)  # (7)
    do, dnorm = rms_norm_backward(dn.reshape(B, T, d.H, d.V), cache.norm)  # (7)
    dq, dk, dv, dw, dk_s, dv_s, dg, dg_s, _, _ = mixer_backward(do, None, None, cache.mixer)  # (6)
    dw = dw + load_balancing_loss_backward(cache.aux_loss_scale * daux, cache.balance)  # (10), through P
    dlogits = route_backward(dw, cache.routing)  # (3), (1)

    dx, dWr, _ = linear_backward(dlogits, cache.router)
    dx_q, dWq, _ = linear_backward(dq.reshape(B, T, d.H * d.K), cache.q)
    dx = dx + dx_q
    memories = []
    for m, caches in enumerate(cache.memories):
        dx_m, grads_m = _project_memory_backward(
            dk[:, :, m], dv[:, :, m], None if dg is None else dg[:, :, m], caches, d
        )
        dx = dx + dx_m
        memories.append(grads_m)
    grads = {
        "router": {"W": dWr},
        "q_proj": {"W": dWq},
        "memories": memories,
        "norm": {"weight": dnorm},
        "o_proj": {"W": dWo},
    }
    if d.shared:
        dx_s, grads["shared"] = _project_memory_backward(dk_s, dv_s, dg_s, cache.shared, d)
        dx = dx + dx_s
    return dx, grads
