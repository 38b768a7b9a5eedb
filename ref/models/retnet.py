"""RetNet: the multi-scale retention layer and the RetNet block (Sun et al., 2023, arXiv 2307.08621).

The layer (the paper's equations 5 and 8), H heads, K = D / H key dims and V = 2D / H value dims
per head (keys D wide and values 2D wide over all heads, as the paper and FLA's ``expand_k = 1``,
``expand_v = 2``):

    q_t = x_t W_q,   k_t = x_t W_k,   v_t = x_t W_v                                     (1)
    gamma_h = 1 - 2^(-5-h),   h = 0 .. H-1          a fixed decay per head, not trained    (2)
    S_t = gamma_h S_{t-1} + k_t^T v_t,   o_t = K^-1/2 q_t S_t     (ref.mixers.retention)   (3)
    y_t = (swish(x_t W_g) * GroupNorm(o_t)) W_o          GroupNorm: one group per head      (4)

(3) is the recurrent form of the parallel o = (K^-1/2 Q K^T ⊙ D) V with D_nm = gamma^(n-m) for
n >= m; the chunked form is the paper's chunkwise recurrent representation. Every form is the same
function (``mode``). The block (pre-LayerNorm, the paper's section 2.3):

    h = x + MSR(LN(x)),    y = h + FFN(LN(h)),    FFN(z) = gelu(z W_1 + b_1) W_2 + b_2      (5)

Position. The paper multiplies q_n and k_m by e^{i n theta} and e^{-i m theta} (its equation 5,
an xPos-style rotation whose per-dim scaling the decay gamma replaces). Here that rotation is
optional and OFF by default (``rotary=False``); ``rotary=True`` applies ``ref.nn.rope`` (RoPE,
rotate-half pairs, theta_i = 10000^(-2i/K)) to q and k, as FLA's MultiScaleRetention does
(torchscale rotates interleaved pairs with a slightly different angle spacing: the same kind of
relative-position rotation, not the same numbers). The decay alone already makes the layer
position-aware.

Normalisations the paper adds for numerical range (dividing QK^T by sqrt(K), each row of D by
sqrt(sum_i D_ni), each row of QK^T ⊙ D by max(|sum|, 1)) all scale a whole (position, head) row of
o by one positive number; GroupNorm, which normalises exactly such a row, undoes them (up to its
eps). So only the sqrt(K) scale is kept (the mixer's ``scale``).

Parameters of the layer::

    W_q (D, H, K)   W_k (D, H, K)   W_v (D, H, V)      projections, split into heads
    W_g (D, H*V)                                       the swish gate
    norm_weight (H*V,)                                 GroupNorm's scale (init 1)
    W_o (H*V, D)                                       the output projection

No biases, as the paper's equations and FLA (torchscale's first release has biases on every
projection). Initialisation as torchscale: xavier_uniform with gain 2^-2.5 for W_q, W_k, W_v,
W_g and gain 1 for W_o. GroupNorm eps 1e-6 (torchscale's per-head LayerNorm). The FFN hidden width
is 2D by default (FLA's RetNetConfig ``hidden_ratio = 2``), initialised as PyTorch's ``nn.Linear``.

Conventions as ``ref.models.gla``: ``forward(params, x) -> (y, cache)``, ``backward(params, cache,
dy) -> (dx, grads)``; ``*_step(params, x_t, state) -> (y_t, state)`` decodes one token with
``state = {"S": (B, H, K, V), "t": tokens seen}`` (None at the start).
"""

from __future__ import annotations

import math

import numpy as np

from ref import checks
from ref.mixers.retention import FORMS as RETENTION_FORMS
from ref.mixers.retention import default_gamma
from ref.models.gla import (
    MIXER_FORMS,
    check_chunk_size,
    check_cotangent,
    check_dtype,
    check_input,
    check_params,
    check_rng,
    head_linear,
    head_linear_backward,
    head_projections,
    split_heads,
    xavier_uniform,
)
from ref.nn import (
    gelu,
    gelu_backward,
    group_norm,
    group_norm_backward,
    layer_norm,
    layer_norm_backward,
    linear,
    linear_backward,
    silu,
    silu_backward,
)
from ref.nn.rope import rope, rope_backward

__all__ = [
    "retnet_gammas",
    "run_retention",
    "run_retention_backward",
    "init_retention_layer",
    "retention_layer",
    "retention_layer_backward",
    "retention_layer_step",
    "init_gelu_mlp",
    "gelu_mlp",
    "gelu_mlp_backward",
    "init_retnet_block",
    "retnet_block",
    "retnet_block_backward",
    "retnet_block_step",
]

NORM_EPS = 1e-6  # the per-head GroupNorm (torchscale: LayerNorm(head_dim, eps=1e-6))
BLOCK_NORM_EPS = 1e-5  # the block's LayerNorms (PyTorch's default)
QKVG_INIT_GAIN = 2**-2.5  # xavier_uniform gain of W_q, W_k, W_v, W_g (torchscale reset_parameters)


def retnet_gammas(H: int) -> np.ndarray:
    """(2): gamma_h = 1 - 2^(-5-h), h = 0 .. H-1 (float64 (H,)): 0.969, 0.984, 0.992, ..."""
    return default_gamma(checks.positive_int(H, "H"))


def run_retention(q, k, v, gamma, *, mode: str, chunk_size, initial_state=None):
    """Retention (3) with decays gamma (H,) in the chosen form. Returns ``(o, ht, cache)``."""
    checks.one_of(mode, "mode", MIXER_FORMS)
    forward, _ = RETENTION_FORMS[mode]
    options = {"gamma": gamma, "initial_state": initial_state}
    if mode == "chunked":
        options["chunk_size"] = chunk_size
    o, ht, cache = forward(q, k, v, **options)
    return o, ht, (mode, cache)


def run_retention_backward(do, cache):
    """Returns ``(dq, dk, dv)``: the decays are fixed, the final state takes no gradient."""
    mode, mixer_cache = cache
    dq, dk, dv, _ = RETENTION_FORMS[mode][1](do, None, mixer_cache)
    return dq, dk, dv


# ------------------------------------------------------------------------------------------------
# the multi-scale retention layer


def init_retention_layer(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 4,
    *,
    key_dim: int | None = None,
    value_dim: int | None = None,
    dtype=np.float64,
) -> dict:
    """Parameters of a multi-scale retention layer (``key_dim`` D and ``value_dim`` 2D in total
    by default); init as torchscale (see the module docstring)."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    key_dim = D if key_dim is None else checks.positive_int(key_dim, "key_dim")
    value_dim = 2 * D if value_dim is None else checks.positive_int(value_dim, "value_dim")
    K = split_heads(key_dim, num_heads, "key_dim", "key width")
    V = split_heads(value_dim, num_heads, "value_dim", "value width")
    H = checks.positive_int(num_heads, "num_heads")
    return {
        "W_q": xavier_uniform(rng, (D, H, K), D, H * K, QKVG_INIT_GAIN, dtype),
        "W_k": xavier_uniform(rng, (D, H, K), D, H * K, QKVG_INIT_GAIN, dtype),
        "W_v": xavier_uniform(rng, (D, H, V), D, H * V, QKVG_INIT_GAIN, dtype),
        "W_g": xavier_uniform(rng, (D, H * V), D, H * V, QKVG_INIT_GAIN, dtype),
        "norm_weight": np.ones(H * V, dtype),
        "W_o": xavier_uniform(rng, (H * V, D), H * V, D, 1.0, dtype),
    }


def _retention_spec(params, where: str):
    D, H, K, V, dtype = head_projections(params, where)
    spec = {
        "W_q": ((D, H, K), "(D, H, K)"),
        "W_k": ((D, H, K), "(D, H, K)"),
        "W_v": ((D, H, V), "(D, H, V)"),
        "W_g": ((D, H * V), "(D, H*V)"),
        "norm_weight": ((H * V,), "(H*V,)"),
        "W_o": ((H * V, D), "(H*V, D)"),
    }
    check_params(params, where, spec, dtype)
    return D, H, K, V, dtype


def _retention_layer(params, x, mode, chunk_size, rotary, initial_state, t0):
    """The layer (1)-(4) on x (B, T, D) whose first token is at position t0. Returns (y, ht, cache)."""
    D, H, K, V, dtype = _retention_spec(params, "params")
    x = check_input(x, D, dtype)
    rotary = _check_rotary(rotary, K)
    B, T, _ = x.shape
    c = {"x_shape": x.shape, "dtype": dtype, "H": H, "rotary": rotary}

    # (1) q, k (B, T, H, K), v (B, T, H, V)
    q, c["q"] = head_linear(x, params["W_q"])
    k, c["k"] = head_linear(x, params["W_k"])
    v, c["v"] = head_linear(x, params["W_v"])
    if rotary:
        # the paper's e^{i n theta}: q_n, k_n rotated by their position n (optional, off by default)
        positions = t0 + np.arange(T)  # (T,)
        q, c["rope_q"] = rope(q, positions=positions)
        k, c["rope_k"] = rope(k, positions=positions)
    # (2), (3) retention with gamma_h = 1 - 2^(-5-h)
    o, ht, c["mixer"] = run_retention(
        q, k, v, retnet_gammas(H), mode=mode, chunk_size=chunk_size, initial_state=initial_state
    )
    o = o.reshape(B, T, H * V)  # (B, T, H*V)
    # (4) y = (swish(x W_g) * GroupNorm(o)) W_o
    n, c["norm"] = group_norm(o, params["norm_weight"], None, num_groups=H, eps=NORM_EPS)  # (B, T, H*V)
    g_pre, c["g_lin"] = linear(x, params["W_g"])  # (B, T, H*V)
    g, c["g_silu"] = silu(g_pre)
    c["n"], c["g"] = n, g
    y, c["out"] = linear(g * n, params["W_o"])  # (B, T, D)
    return y, ht, c


def _check_rotary(rotary, K: int) -> bool:
    if not isinstance(rotary, bool):
        raise ValueError(f"rotary: expected True or False, got {rotary!r}")
    if rotary and K % 2:
        raise ValueError(f"rotary: needs an even per-head key dim K (pairs of dims rotate), got K = {K}")
    return rotary


def retention_layer(params: dict, x: np.ndarray, *, mode: str = "chunked", chunk_size: int = 64, rotary: bool = False):
    """Multi-scale retention on x (B, T, D); ``mode`` "chunked" | "recurrent" | "parallel" (the
    same function); ``rotary`` rotates q and k by position (off by default). Returns ``(y, cache)``."""
    if mode == "chunked":
        chunk_size = check_chunk_size(chunk_size)
    y, _, cache = _retention_layer(params, x, mode, chunk_size, rotary, None, 0)
    return y, cache


def retention_layer_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c = cache
    g = {}
    dy = check_cotangent(dy, c["x_shape"], c["dtype"])
    # (4) y = (gate * n) W_o
    dgn, g["W_o"], _ = linear_backward(dy, c["out"])  # (B, T, H*V)
    (dg_pre,) = silu_backward(dgn * c["n"], c["g_silu"])
    dx, g["W_g"], _ = linear_backward(dg_pre, c["g_lin"])  # (B, T, D)
    do, g["norm_weight"], _ = group_norm_backward(dgn * c["g"], c["norm"])  # (B, T, H*V)
    B, T, _ = do.shape
    # (3) retention
    dq, dk, dv = run_retention_backward(do.reshape(B, T, c["H"], -1), c["mixer"])  # do (B, T, H, V)
    if c["rotary"]:
        (dq,) = rope_backward(dq, c["rope_q"])
        (dk,) = rope_backward(dk, c["rope_k"])
    # (1) the projections
    for name, d in (("q", dq), ("k", dk), ("v", dv)):
        dx_p, g["W_" + name], _ = head_linear_backward(d, c[name])
        dx = dx + dx_p
    return dx, {key: g[key] for key in params}


def _check_state(state):
    """A decode state: None (start) or {"S": (B, H, K, V) or None, "t": tokens seen}."""
    if state is None:
        return None, 0
    if not isinstance(state, dict) or set(state) != {"S", "t"}:
        raise ValueError(f"state: expected None or a dict {{'S', 't'}} from a previous step, got {state!r:.100}")
    t = state["t"]
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
        raise ValueError(f"state['t']: expected the number of tokens seen (an integer >= 0), got {t!r}")
    return state["S"], int(t)


def retention_layer_step(params: dict, x_t: np.ndarray, state: dict | None = None, *, rotary: bool = False):
    """Decode one token: x_t (B, D), ``state`` None or {"S": (B, H, K, V), "t": position} ->
    ``(y_t, state)``; memory O(H K V) whatever the position."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    S, t = _check_state(state)
    y, ht, _ = _retention_layer(params, x_t[:, None, :], "recurrent", None, rotary, S, t)
    return y[:, 0], {"S": ht, "t": t + 1}


# ------------------------------------------------------------------------------------------------
# the FFN and the block


def init_gelu_mlp(rng, D: int, hidden: int | None = None, *, dtype=np.float64) -> dict:
    """FFN (5) parameters, hidden width 2D by default; PyTorch nn.Linear init: weights and biases
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    F = 2 * D if hidden is None else checks.positive_int(hidden, "hidden")
    a1, a2 = 1 / math.sqrt(D), 1 / math.sqrt(F)
    return {
        "W_1": rng.uniform(-a1, a1, (D, F)).astype(dtype),
        "b_1": rng.uniform(-a1, a1, F).astype(dtype),
        "W_2": rng.uniform(-a2, a2, (F, D)).astype(dtype),
        "b_2": rng.uniform(-a2, a2, D).astype(dtype),
    }


def gelu_mlp(params: dict, x: np.ndarray):
    """(5) gelu(x W_1 + b_1) W_2 + b_2 on x (..., D), exact (erf) GELU. Returns ``(y, cache)``."""
    a, c1 = linear(x, params["W_1"], params["b_1"])  # (..., F)
    s, c_act = gelu(a)
    y, c2 = linear(s, params["W_2"], params["b_2"])  # (..., D)
    return y, (c1, c_act, c2)


def gelu_mlp_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c1, c_act, c2 = cache
    ds, dW_2, db_2 = linear_backward(dy, c2)
    (da,) = gelu_backward(ds, c_act)
    dx, dW_1, db_1 = linear_backward(da, c1)
    return dx, {"W_1": dW_1, "b_1": db_1, "W_2": dW_2, "b_2": db_2}


def init_retnet_block(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 4,
    *,
    mlp_hidden: int | None = None,
    dtype=np.float64,
    **layer_options,
) -> dict:
    """Parameters of the block (5): ``{"norm1": {"weight", "bias"}, "mixer": <retention layer>,
    "norm2": {"weight", "bias"}, "mlp": <FFN>}``; ``layer_options`` (key_dim, value_dim) go to
    :func:`init_retention_layer`."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    return {
        "norm1": {"weight": np.ones(D, dtype), "bias": np.zeros(D, dtype)},
        "mixer": init_retention_layer(rng, D, num_heads, dtype=dtype, **layer_options),
        "norm2": {"weight": np.ones(D, dtype), "bias": np.zeros(D, dtype)},
        "mlp": init_gelu_mlp(rng, D, mlp_hidden, dtype=dtype),
    }


def _retnet_block(params, x, mode, chunk_size, rotary, initial_state, t0):
    if not isinstance(params, dict) or set(params) != {"norm1", "mixer", "norm2", "mlp"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a block {{'norm1', 'mixer', 'norm2', 'mlp'}}, got {got}")
    # (5) h = x + MSR(LN(x))
    n1, c_n1 = layer_norm(x, params["norm1"]["weight"], params["norm1"]["bias"], eps=BLOCK_NORM_EPS)
    a, ht, c_mix = _retention_layer(params["mixer"], n1, mode, chunk_size, rotary, initial_state, t0)
    h = x + a
    # (5) y = h + FFN(LN(h))
    n2, c_n2 = layer_norm(h, params["norm2"]["weight"], params["norm2"]["bias"], eps=BLOCK_NORM_EPS)
    m, c_mlp = gelu_mlp(params["mlp"], n2)
    return h + m, ht, (c_n1, c_mix, c_n2, c_mlp)


def retnet_block(params: dict, x: np.ndarray, *, mode: str = "chunked", chunk_size: int = 64, rotary: bool = False):
    """The RetNet block (5) on x (B, T, D). Returns ``(y, cache)``."""
    if mode == "chunked":
        chunk_size = check_chunk_size(chunk_size)
    y, _, cache = _retnet_block(params, x, mode, chunk_size, rotary, None, 0)
    return y, cache


def retnet_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_n1, c_mix, c_n2, c_mlp = cache
    dy = check_cotangent(dy, c_mix["x_shape"], c_mix["dtype"])
    dn2, g_mlp = gelu_mlp_backward(params["mlp"], c_mlp, dy)
    dh_mlp, dw2, db2 = layer_norm_backward(dn2, c_n2)
    dh = dy + dh_mlp
    dn1, g_mix = retention_layer_backward(params["mixer"], c_mix, dh)
    dx_mix, dw1, db1 = layer_norm_backward(dn1, c_n1)
    grads = {
        "norm1": {"weight": dw1, "bias": db1},
        "mixer": g_mix,
        "norm2": {"weight": dw2, "bias": db2},
        "mlp": g_mlp,
    }
    return dh + dx_mix, grads


def retnet_block_step(params: dict, x_t: np.ndarray, state: dict | None = None, *, rotary: bool = False):
    """Decode one token through the block: x_t (B, D) -> ``(y_t, state)`` (see :func:`retention_layer_step`)."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    S, t = _check_state(state)
    y, ht, _ = _retnet_block(params, x_t[:, None, :], "recurrent", None, rotary, S, t)
    return y[:, 0], {"S": ht, "t": t + 1}
