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
(the same logsigmoid / 16); no feature map or output gate; no capacity limit (the official code
drops a memory's earliest tokens beyond ceil(T / top_k) at capacity 1.0); the short convolution
is optional and sits in the block, before the layer (13), where the official MoM Gated DeltaNet
convolves q, k and v inside the layer.

The block (``init_mom_block``, ``mom_block``, ``mom_block_backward``, ``mom_block_step``): pre-norm
residual MoM layer and SwiGLU MLP (12), with the optional short convolution (13); registered in
``ref.models.lm`` as ``"mom"``, whose forward also returns the balance loss (10) for the
language model to add to its loss. ``num_memories=1, shared=False`` is plain linear attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ref import checks
from ref.mixers.mom import FORMS
from ref.models.gla import (
    BLOCK_NORM_EPS,
    check_cotangent,
    check_dtype,
    check_rng,
    init_swiglu,
    split_heads,
    swiglu,
    swiglu_backward,
)
from ref.nn import (
    causal_conv1d,
    causal_conv1d_backward,
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
    "init_mom_block",
    "MoMBlockCache",
    "MoMLayerCache",
    "mom_block",
    "mom_block_backward",
    "mom_block_step",
    "default_top_k",
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

    @property
    def selected(self) -> np.ndarray:
        """(B, T, M) booleans: the memories each token was routed to (2)."""
        return self.routing[1]

    @property
    def weights(self) -> np.ndarray:
        """(B, T, M): the renormalised routing weights w (3), 0 off the selection."""
        return self.routing[2]


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
    y, aux, _, _, cache = _mom_layer(params, x, top_k, form, chunk_size, scale, aux_loss_scale, backend, None, None)
    return y, aux, cache


def _mom_layer(params, x, top_k, form, chunk_size, scale, aux_loss_scale, backend, h0, h0_shared):
    """The layer from the states ``h0`` (B, M, H, K, V) and ``h0_shared`` (B, H, K, V) (None:
    zeros). Returns ``(y, aux_loss, ht, ht_shared, cache)``."""
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

    o, ht, ht_shared, mixer_cache = mixer(
        q,
        k,
        v,
        w,
        k_s,
        v_s,
        g,
        g_s,
        scale=scale,
        initial_state=h0,
        initial_state_shared=h0_shared,
        top_k=top_k,
        backend=backend,
        **options,
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
    return y, aux_loss_scale * balance, ht, ht_shared, cache


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


# ----------------------------------------------------------------------------- the block
#
# The MoM block (pre-norm, as the official MoM models and ``ref.models.gla``):
#
#     h = x + MoM(RMSNorm(x)),    y = h + SwiGLU(RMSNorm(h))                             (12)
#
# The block hands on the layer's load-balancing loss (10): ``mom_block`` returns ``(y, aux_loss,
# cache)`` and ``mom_block_backward(params, cache, dy, daux)`` takes its gradient. The
# language-model scaffold (``ref.models.lm``) registers it as ``"mom"`` with ``aux_loss=True``,
# adds every block's aux_loss to the task loss and sends daux = 1 back.
#
# Optionally (``conv_size=W``) a short causal depthwise convolution sits before the layer:
#
#     h = x + MoM(ShortConv(RMSNorm(x))),   ShortConv(z)_t = sum_{j<W} conv_w[:, j] z_{t-W+1+j}  (13)
#
# (``ref.nn.causal_conv1d``, no bias, PyTorch's Conv1d init U(-1/sqrt(W), 1/sqrt(W))). The official
# MoM Gated DeltaNet convolves q, k and v (FLA's ShortConvolution, width 4: "crucial to the
# performance"); one convolution of the layer's input, shared by the router and every projection,
# is the simpler variant here (as Mamba convolves x before its projections). It lets a token see
# its predecessor, which associative recall needs: the key before the value it stores.


def default_top_k(M: int) -> int:
    """min(2, M): the official configuration's top-2 (of 4 memories), or every memory if fewer."""
    return min(2, M)


def init_mom_block(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 1,
    *,
    num_memories: int = 4,
    key_dim: int | None = None,
    value_dim: int | None = None,
    shared: bool = True,
    gated: bool = False,
    conv_size: int | None = None,
    mlp_hidden: int | None = None,
    dtype=np.float64,
) -> dict:
    """Parameters of the block (12): ``{"norm1": {"weight"}, "mixer": <MoM layer>, "norm2":
    {"weight"}, "mlp": <SwiGLU>}``, and ``"conv": {"weight" (D, conv_size)}`` when ``conv_size``
    is given (13).

    ``num_heads`` heads; ``key_dim`` and ``value_dim`` the widths over all heads (default D/2
    and D, as GLA's ``expand_k = 0.5``, ``expand_v = 1``), so each memory holds a
    (key_dim / H) x (value_dim / H) state per head; ``num_memories`` routed memories (the
    official configuration: 4); ``shared`` and ``gated`` as :func:`init_mom_layer`.
    ``num_memories=1, shared=False`` is plain linear attention (the one memory takes every token
    at weight 1).
    """
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    key_dim = max(1, D // 2) if key_dim is None else checks.positive_int(key_dim, "key_dim")
    value_dim = D if value_dim is None else checks.positive_int(value_dim, "value_dim")
    K = split_heads(key_dim, num_heads, "key_dim", "key width")
    V = split_heads(value_dim, num_heads, "value_dim", "value width")
    M = checks.positive_int(num_memories, "num_memories")
    W = None if conv_size is None else checks.positive_int(conv_size, "conv_size")
    params = {"norm1": {"weight": np.ones(D, dtype)}}
    if W is not None:
        params["conv"] = {"weight": rng.uniform(-(W**-0.5), W**-0.5, (D, W)).astype(dtype)}  # (13)
    params["mixer"] = init_mom_layer(rng, D, num_heads, K, V, M, default_top_k(M), shared=shared, gated=gated, dtype=dtype)
    params["norm2"] = {"weight": np.ones(D, dtype)}
    params["mlp"] = init_swiglu(rng, D, mlp_hidden, dtype=dtype)
    return params


class MoMBlockCache(NamedTuple):
    """The block's cache; ``mixer`` is the layer's :class:`MoMLayerCache` (its ``selected`` and
    ``weights`` are the routing of every token)."""

    norm1: tuple
    conv: tuple | None
    mixer: MoMLayerCache
    norm2: tuple
    mlp: tuple


def _check_block(params):
    keys = {"norm1", "mixer", "norm2", "mlp"}
    if not isinstance(params, dict) or not keys <= set(params) <= keys | {"conv"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a MoM block {{'norm1', ['conv',] 'mixer', 'norm2', 'mlp'}}, got {got}")


def _block_options(params, top_k, mode):
    """top_k (None: :func:`default_top_k`) and the mixer's form, checked."""
    _check_block(params)
    try:
        M = params["mixer"]["router"]["W"].shape[1]
    except (KeyError, TypeError, AttributeError, IndexError):
        raise ValueError("params/mixer: expected the tree of init_mom_layer (with router/W)") from None
    top_k = default_top_k(M) if top_k is None else top_k
    return _check_top_k(top_k, M), checks.one_of(mode, "mode", tuple(FORMS))


def _mom_block(params, x, top_k, mode, chunk_size, aux_loss_scale, h0, h0_shared, conv0):
    """The block from the mixer's states h0, h0_shared and the convolution's last inputs conv0
    (B, W-1, D) (None: zeros). Returns ``(y, aux_loss, ht, ht_shared, conv_t, cache)``."""
    # (12) h = x + MoM(RMSNorm(x)), (13) with the short convolution in between
    n1, c_n1 = rms_norm(x, params["norm1"]["weight"], eps=BLOCK_NORM_EPS)
    z, conv_t, c_conv = n1, None, None
    if "conv" in params:
        z, conv_t, c_conv = causal_conv1d(n1, params["conv"]["weight"], None, conv0)  # (13): (B, T, D)
    a, aux, ht, ht_shared, c_mix = _mom_layer(
        params["mixer"], z, top_k, mode, chunk_size, None, aux_loss_scale, "numpy", h0, h0_shared
    )
    h = x + a
    # (12) y = h + SwiGLU(RMSNorm(h))
    n2, c_n2 = rms_norm(h, params["norm2"]["weight"], eps=BLOCK_NORM_EPS)
    m, c_mlp = swiglu(params["mlp"], n2)
    return h + m, aux, ht, ht_shared, conv_t, MoMBlockCache(c_n1, c_conv, c_mix, c_n2, c_mlp)


def mom_block(
    params: dict,
    x: np.ndarray,
    *,
    top_k: int | None = None,
    mode: str = "chunked",
    chunk_size: int = 64,
    aux_loss_scale: float = AUX_LOSS_SCALE,
):
    """The MoM block (12) on x (B, T, D). ``top_k`` memories per token (None: min(2, M));
    ``mode`` the mixer's form ("recurrent", "parallel", "chunked" or "varlen", the same
    function; the keyword of the other blocks of ``ref.models.lm``). Returns ``(y, aux_loss,
    cache)``: add aux_loss (a float, the load-balancing loss (10)) to the task loss."""
    top_k, mode = _block_options(params, top_k, mode)
    y, aux, _, _, _, cache = _mom_block(params, x, top_k, mode, chunk_size, aux_loss_scale, None, None, None)
    return y, aux, cache


def mom_block_backward(params: dict, cache, dy: np.ndarray, daux=None):
    """Returns ``(dx, grads)`` from dy (B, T, D) and daux, the gradient of aux_loss (None: 0)."""
    c_n1, c_conv, c_mix, c_n2, c_mlp = cache
    d = c_mix.dims
    dy = check_cotangent(dy, (d.B, d.T, d.D), c_mix.router[0].dtype)
    # y = h + m: dh = dy + (the path through the MLP)
    dn2, g_mlp = swiglu_backward(params["mlp"], c_mlp, dy)
    dh_mlp, dw2 = rms_norm_backward(dn2, c_n2)
    dh = dy + dh_mlp
    # h = x + a: dx = dh + (the path through the layer, which also carries aux_loss's gradient)
    dz, g_mix = mom_layer_backward(params["mixer"], c_mix, dh, daux)
    grads = {"mixer": g_mix, "norm2": {"weight": dw2}, "mlp": g_mlp}
    dn1 = dz
    if c_conv is not None:  # (13)
        dn1, dconv, _, _ = causal_conv1d_backward(dz, None, c_conv)
        grads["conv"] = {"weight": dconv}
    dx_mix, dw1 = rms_norm_backward(dn1, c_n1)
    grads["norm1"] = {"weight": dw1}
    return dh + dx_mix, {key: grads[key] for key in params}


def mom_block_step(params: dict, x_t: np.ndarray, state: dict | None = None, *, top_k: int | None = None):
    """Decode one token: x_t (B, D) and ``state`` = {"memories": (B, M, H, K, V), "shared":
    (B, H, K, V) or None, "conv": (B, W-1, D) or None} (None: zeros) -> ``(y_t, state)``. Memory
    O((M + 1) H K V + W D) whatever the length so far; equals :func:`mom_block` position by
    position (a token's routing depends only on that position's input)."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    top_k, _ = _block_options(params, top_k, "recurrent")
    h0 = h0_shared = conv0 = None
    if state is not None:
        if not isinstance(state, dict) or set(state) != {"memories", "shared", "conv"}:
            raise ValueError(
                f"state: expected None or the dict {{'memories', 'shared', 'conv'}} of mom_block_step, got {state!r:.80}"
            )
        h0, h0_shared, conv0 = state["memories"], state["shared"], state["conv"]
    y, _, ht, ht_shared, conv_t, _ = _mom_block(
        params, x_t[:, None, :], top_k, "recurrent", None, AUX_LOSS_SCALE, h0, h0_shared, conv0
    )
    return y[:, 0], {"memories": ht, "shared": ht_shared, "conv": conv_t}
