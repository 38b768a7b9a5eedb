"""The GLA layer and the GLA Transformer block (Yang et al., 2023, arXiv 2312.06635).

The layer, per head (H heads; K = D / (2H) key dims and V = D / H value dims per head, so the
keys of all heads together are D/2 wide and the values D wide, as in the paper and FLA's
``expand_k = 0.5``, ``expand_v = 1``):

    q_t = x_t W_q,   k_t = x_t W_k,   v_t = x_t W_v                                    (1)
    log alpha_t = logsigmoid(x_t W_a1 W_a2 + b_a) / tau      low rank R = 16, tau = 16  (2)
    S_t = diag(alpha_t) S_{t-1} + k_t^T v_t,   o_t = K^-1/2 q_t S_t    (ref.mixers.gla)  (3)
    r_t = swish(x_t W_r + b_r)                                          output gate     (4)
    y_t = (GroupNorm(o_t) * r_t) W_o           GroupNorm: one group per head, per position (5)

(2) is the paper's alpha_t = sigmoid(x_t W_a1 W_a2 + b_a)^(1/tau) in log space: the mixer takes
natural-log gates ``gk = log alpha <= 0``. The block (pre-norm, as the paper's Transformer++ recipe):

    h = x + GLA(RMSNorm(x)),    y = h + SwiGLU(RMSNorm(h))                                  (6)
    SwiGLU(z) = (swish(z W_gate) * (z W_up)) W_down                                         (7)

Conventions. ``forward(params, x, **options) -> (y, cache)`` and
``backward(params, cache, dy) -> (dx, grads)`` with ``grads`` shaped like ``params`` (a layer's
input x is differentiable, so its gradient comes first, as in ``ref.nn``). ``*_step(params, x_t,
state) -> (y_t, state)`` is the constant-memory decode: one token, the mixer state carried
(``state=None`` at the start); it equals the forward position by position.

Parameters of the layer (B batch, T time, D model width, H heads, R gate rank)::

    W_q (D, H, K)    W_k (D, H, K)    W_v (D, H, V)       projections, split into heads
    W_a1 (D, R)      W_a2 (R, H, K)   b_a (H, K)          the low-rank forget gate (2)
    W_r (D, H*V)     b_r (H*V,)                           the output gate (4)
    norm_weight (H*V,)                                    GroupNorm's scale (5)
    W_o (H*V, D)                                          the output projection

The head count and sizes are read from the shapes (H, K = W_q.shape[1:], V = W_v.shape[2]), so
``forward(params, x)`` needs no configuration. Dropping the gate parameters gives the variants:
without ``W_a1, W_a2, b_a`` there is no decay (plain linear attention, ``gk = None``), without
``W_r, b_r`` no output gate. ``init_gla_layer(..., decay_gate=False, output_gate=False)`` is the
"linear attention" layer of the language-model scaffold (``ref.models.lm``).

Sources and choices (checked against the code, see each constant):
- authors' code (berlino/gated_linear_attention, gla.py): q, k to D/2 and v to D, no biases; the
  gate ``Linear(D, 16, bias=False) -> Linear(16, D/2, bias=True)``, ``logsigmoid / 16``; output
  gate ``Linear(D, D, bias=True)`` through SiLU; a per-head LayerNorm (eps 1e-5); ``W_o`` without
  bias; init xavier_uniform with gain 2^-2.5 for W_q, W_k and both gate matrices, normal(0.02) for
  the other weights, zero biases. FLA (fla/layers/gla.py) has the same layer (no output-gate bias;
  RMSNorm per head).
- GroupNorm here is ``ref.nn.group_norm`` with H groups on (B, T, H*V): a per-head LayerNorm with a
  learned per-channel scale (init 1, no shift), eps 1e-5.
- scale K^-1/2 with K the per-head key dim (FLA's ``head_k_dim ** -0.5``, the mixer's default);
  the authors' first code used (D/H)^-1/2 = (2K)^-1/2.
- block: RMSNorm (eps 1e-6, FLA), SwiGLU hidden width ``int(8 D / 3)`` (the authors round it up to
  a multiple of 256, a GPU-efficiency detail left out at these sizes).
"""

from __future__ import annotations

import math

import numpy as np

from ref import checks
from ref.mixers.gla import FORMS
from ref.nn import (
    group_norm,
    group_norm_backward,
    host_backend,
    linear,
    linear_backward,
    logsigmoid,
    logsigmoid_backward,
    rms_norm,
    rms_norm_backward,
    silu,
    silu_backward,
)

__all__ = [
    "TAU",
    "GATE_RANK",
    "MIXER_FORMS",
    "init_gla_layer",
    "gla_layer",
    "gla_layer_backward",
    "gla_layer_step",
    "init_gla_block",
    "gla_block",
    "gla_block_backward",
    "gla_block_step",
    "init_swiglu",
    "swiglu",
    "swiglu_backward",
]

TAU = 16.0  # gate temperature: log alpha = logsigmoid(.) / tau  (FLA gate_logit_normalizer = 16)
GATE_RANK = 16  # rank R of the gate projection W_a1 W_a2  (FLA gate_low_rank_dim = 16)
NORM_EPS = 1e-5  # the per-head GroupNorm (authors' code: LayerNorm(head_dim, eps=1e-5))
BLOCK_NORM_EPS = 1e-6  # the block's RMSNorms (FLA GLAConfig.norm_eps)
QK_INIT_GAIN = 2**-2.5  # xavier_uniform gain of W_q, W_k and the gate (authors' post_init)
INIT_STD = 0.02  # normal init of the other weights (authors' and FLA's initializer_range)
MIXER_FORMS = tuple(FORMS)  # ("recurrent", "parallel", "chunked")


# ------------------------------------------------------------------------------------------------
# initialisation helpers (shared with ref.models.retnet, ref.models.vir, ref.models.lm)


def xavier_uniform(rng, shape, fan_in: int, fan_out: int, gain: float, dtype) -> np.ndarray:
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)), as ``torch.nn.init.xavier_uniform_``."""
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape).astype(dtype)


def normal(rng, shape, std: float, dtype) -> np.ndarray:
    """N(0, std^2)."""
    return (std * rng.standard_normal(shape)).astype(dtype)


def check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    return rng


def check_dtype(dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dtype not in checks.FLOAT_DTYPES:
        raise ValueError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def split_heads(width: int, num_heads, width_name: str, what: str) -> int:
    """The per-head size ``width / num_heads``; an error naming both unless it divides exactly."""
    H = checks.positive_int(num_heads, "num_heads")
    if width % H:
        raise ValueError(f"num_heads: expected a divisor of the {what} {width_name} = {width}, got {H}")
    return width // H


# ------------------------------------------------------------------------------------------------
# parameter checks and the pieces every multi-head layer shares


def check_params(params, where: str, spec: dict, dtype) -> None:
    """``params`` must hold exactly the keys of ``spec`` (key -> (shape, dims)), each a float array
    of that shape and ``dtype``; the error names the parameter by its path."""
    if not isinstance(params, dict):
        raise ValueError(f"{where}: expected a dict of parameters, got {type(params).__name__}")
    for key, (shape, dims) in spec.items():
        if key not in params:
            raise ValueError(f"{where}: expected a parameter {key!r} of shape {dims}, got keys {sorted(params)}")
        a = checks.float_array(params[key], f"{where}/{key}", ndim=len(shape), dims=dims)
        checks.same_shape(a, f"{where}/{key}", shape, dims, "from the other parameters")
        checks.same_dtype(a, f"{where}/{key}", dtype, "the dtype of the parameters")
    extra = sorted(set(params) - set(spec))
    if extra:
        raise ValueError(f"{where}: unexpected parameters {extra}; expected exactly {sorted(spec)}")


def head_projections(params, where: str):
    """(D, H, K, V, dtype) from W_q (D, H, K) and W_v (D, H, V), with W_k checked against W_q."""
    if not isinstance(params, dict):
        raise ValueError(f"{where}: expected a dict of parameters, got {type(params).__name__}")
    for key in ("W_q", "W_v"):
        if key not in params:
            raise ValueError(f"{where}: expected a parameter {key!r}, got keys {sorted(params)}")
    W_q = checks.float_array(params["W_q"], f"{where}/W_q", ndim=3, dims="(D, H, K)")
    D, H, K = W_q.shape
    W_v = checks.float_array(params["W_v"], f"{where}/W_v", ndim=3, dims="(D, H, V)")
    if W_v.shape[:2] != (D, H):
        raise ValueError(f"{where}/W_v: expected shape (D, H, V) with (D, H) = {(D, H)} (from W_q), got {W_v.shape}")
    return D, H, K, W_v.shape[2], W_q.dtype


def check_input(x, D: int, dtype, name: str = "x") -> np.ndarray:
    """x (B, T, D) in the dtype of the parameters, T >= 1."""
    x = checks.float_array(x, name, ndim=3, dims="(B, T, D)")
    if x.shape[2] != D:
        raise ValueError(f"{name}: expected shape (B, T, D) with D = {D} (the rows of W_q), got {x.shape}")
    checks.nonempty_time(x.shape[1], name)
    checks.same_dtype(x, name, dtype, "the dtype of the parameters")
    return x


def head_linear(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None):
    """A linear layer whose output is split into heads: y[..., h, :] = x W[:, h, :] + b[h].

    x (..., D_in), W (D_in, H, X), b (H, X) or None -> y (..., H, X). Returns ``(y, cache)``.
    """
    D_in, H, X = W.shape
    y, cache = linear(x, W.reshape(D_in, H * X), None if b is None else b.reshape(H * X))  # (..., H*X)
    return y.reshape(x.shape[:-1] + (H, X)), (cache, W.shape)


def head_linear_backward(dy: np.ndarray, cache):
    """Returns ``(dx, dW, db)``: dW (D_in, H, X), db (H, X) or None."""
    lin_cache, (D_in, H, X) = cache
    dx, dW, db = linear_backward(dy.reshape(dy.shape[:-2] + (H * X,)), lin_cache)  # dy (..., H*X)
    return dx, dW.reshape(D_in, H, X), None if db is None else db.reshape(H, X)


def run_mixer(q, k, v, gk, *, mode: str, chunk_size, initial_state=None, backend: str = "numpy"):
    """GLA's mixer (3) in the chosen form, on ``backend`` ("numba" and "cuda" for the chunked and
    recurrent forms). Returns ``(o, ht, cache)``; o (B, T, H, V), ht (B, H, K, V)."""
    checks.one_of(mode, "mode", MIXER_FORMS)
    forward, _ = FORMS[mode]
    options = {"initial_state": initial_state, "backend": backend}
    if mode == "chunked":
        options["chunk_size"] = chunk_size
    o, ht, cache = forward(q, k, v, gk, **options)
    return o, ht, (mode, cache)


def run_mixer_backward(do, cache):
    """Returns ``(dq, dk, dv, dgk)`` (dgk None without gates); the final state takes no gradient."""
    mode, mixer_cache = cache
    dq, dk, dv, dgk, _ = FORMS[mode][1](do, None, mixer_cache)
    return dq, dk, dv, dgk


def check_chunk_size(chunk_size) -> int:
    return checks.positive_int(chunk_size, "chunk_size")


def check_cotangent(dy, shape: tuple, dtype, name: str = "dy") -> np.ndarray:
    """The upstream gradient of an output (B, T, D): exactly its shape and dtype."""
    dy = checks.float_array(dy, name, ndim=len(shape), dims="(B, T, D)")
    checks.same_shape(dy, name, shape, "(B, T, D)", "the shape of the output")
    checks.same_dtype(dy, name, dtype, "the dtype of the output")
    return dy


# ------------------------------------------------------------------------------------------------
# the GLA layer


def init_gla_layer(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 4,
    *,
    key_dim: int | None = None,
    value_dim: int | None = None,
    gate_rank: int = GATE_RANK,
    decay_gate: bool = True,
    output_gate: bool = True,
    dtype=np.float64,
) -> dict:
    """Parameters of a GLA layer of width D with ``num_heads`` heads (paper: 4).

    ``key_dim`` / ``value_dim`` are the total widths over all heads (default D/2 and D).
    Initialisation as the authors' code: xavier_uniform (gain 2^-2.5) for W_q, W_k, W_a1, W_a2;
    normal(0.02) for W_v, W_r, W_o; zero biases (so alpha = sigmoid(0)^(1/16) = 0.958 wherever
    x W_a1 W_a2 = 0); GroupNorm scale 1.
    """
    rng = check_rng(rng)
    dtype = check_dtype(dtype)
    D = checks.positive_int(D, "D")
    key_dim = D // 2 if key_dim is None else checks.positive_int(key_dim, "key_dim")
    value_dim = D if value_dim is None else checks.positive_int(value_dim, "value_dim")
    K = split_heads(key_dim, num_heads, "key_dim", "key width")
    V = split_heads(value_dim, num_heads, "value_dim", "value width")
    H = checks.positive_int(num_heads, "num_heads")
    R = checks.positive_int(gate_rank, "gate_rank")
    if not isinstance(decay_gate, bool) or not isinstance(output_gate, bool):
        raise ValueError(f"decay_gate, output_gate: expected True or False, got {decay_gate!r}, {output_gate!r}")

    p = {
        "W_q": xavier_uniform(rng, (D, H, K), D, H * K, QK_INIT_GAIN, dtype),
        "W_k": xavier_uniform(rng, (D, H, K), D, H * K, QK_INIT_GAIN, dtype),
        "W_v": normal(rng, (D, H, V), INIT_STD, dtype),
    }
    if decay_gate:
        p["W_a1"] = xavier_uniform(rng, (D, R), D, R, QK_INIT_GAIN, dtype)
        p["W_a2"] = xavier_uniform(rng, (R, H, K), R, H * K, QK_INIT_GAIN, dtype)
        p["b_a"] = np.zeros((H, K), dtype)
    if output_gate:
        p["W_r"] = normal(rng, (D, H * V), INIT_STD, dtype)
        p["b_r"] = np.zeros(H * V, dtype)
    p["norm_weight"] = np.ones(H * V, dtype)
    p["W_o"] = normal(rng, (H * V, D), INIT_STD, dtype)
    return p


def _gla_spec(params, where: str):
    """(D, H, K, V, dtype, gated, output_gated) after checking every parameter's shape."""
    D, H, K, V, dtype = head_projections(params, where)
    spec = {
        "W_q": ((D, H, K), "(D, H, K)"),
        "W_k": ((D, H, K), "(D, H, K)"),
        "W_v": ((D, H, V), "(D, H, V)"),
        "norm_weight": ((H * V,), "(H*V,)"),
        "W_o": ((H * V, D), "(H*V, D)"),
    }
    gated = "W_a1" in params
    if gated:
        R = checks.float_array(params["W_a1"], f"{where}/W_a1", ndim=2, dims="(D, R)").shape[1]
        spec.update({"W_a1": ((D, R), "(D, R)"), "W_a2": ((R, H, K), "(R, H, K)"), "b_a": ((H, K), "(H, K)")})
    output_gated = "W_r" in params
    if output_gated:
        spec.update({"W_r": ((D, H * V), "(D, H*V)"), "b_r": ((H * V,), "(H*V,)")})
    check_params(params, where, spec, dtype)
    return D, H, K, V, dtype, gated, output_gated


def _gla_layer(params, x, mode, chunk_size, initial_state, backend="numpy"):
    """The layer (1)-(5); returns ``(y, ht, cache)``."""
    D, H, _, V, dtype, gated, output_gated = _gla_spec(params, "params")
    x = check_input(x, D, dtype)
    B, T, _ = x.shape
    c = {"gated": gated, "output_gated": output_gated, "x_shape": x.shape, "dtype": dtype, "H": H}

    # (1) q, k (B, T, H, K) and v (B, T, H, V)
    q, c["q"] = head_linear(x, params["W_q"])
    k, c["k"] = head_linear(x, params["W_k"])
    v, c["v"] = head_linear(x, params["W_v"])
    gk = None
    if gated:
        # (2) log alpha = logsigmoid(x W_a1 W_a2 + b_a) / tau
        a1, c["a1"] = linear(x, params["W_a1"])  # (B, T, R)
        a2, c["a2"] = head_linear(a1, params["W_a2"], params["b_a"])  # (B, T, H, K)
        ls, c["logsigmoid"] = logsigmoid(a2, backend=host_backend(backend))
        gk = ls / TAU  # (B, T, H, K), <= 0
    # (3) S_t = diag(alpha_t) S_{t-1} + k_t^T v_t,  o_t = K^-1/2 q_t S_t
    o, ht, c["mixer"] = run_mixer(
        q, k, v, gk, mode=mode, chunk_size=chunk_size, initial_state=initial_state, backend=backend
    )
    o = o.reshape(B, T, H * V)  # (B, T, H*V)
    # (5) GroupNorm with one group per head
    z, c["norm"] = group_norm(o, params["norm_weight"], None, num_groups=H, eps=NORM_EPS)  # (B, T, H*V)
    if output_gated:
        # (4) r = swish(x W_r + b_r), then z * r
        r_pre, c["r_lin"] = linear(x, params["W_r"], params["b_r"])  # (B, T, H*V)
        r, c["r_silu"] = silu(r_pre, backend=host_backend(backend))
        c["z"], c["r"] = z, r
        z = z * r
    # (5) y = (GroupNorm(o) * r) W_o
    y, c["out"] = linear(z, params["W_o"])  # (B, T, D)
    return y, ht, c


def gla_layer(
    params: dict, x: np.ndarray, *, mode: str = "chunked", chunk_size: int = 64, backend: str = "numpy"
):
    """The GLA layer on x (B, T, D). ``mode`` picks the mixer's form: ``"chunked"`` (training,
    ``chunk_size`` steps per chunk), ``"recurrent"`` or ``"parallel"``; all compute the same
    function. ``backend`` runs the mixer (``ref.mixers.gla``: "numba" or "cuda" for the chunked
    and recurrent forms); the rest is NumPy. Returns ``(y, cache)`` with y (B, T, D)."""
    if mode == "chunked":
        chunk_size = check_chunk_size(chunk_size)
    y, _, cache = _gla_layer(params, x, mode, chunk_size, None, backend)
    return y, cache


def gla_layer_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``: dx (B, T, D) and grads shaped like ``params``."""
    c = cache
    g = {}
    dy = check_cotangent(dy, c["x_shape"], c["dtype"])
    # (5) y = z W_o
    dz, g["W_o"], _ = linear_backward(dy, c["out"])  # (B, T, H*V)
    dx = np.zeros(c["x_shape"], dy.dtype)  # (B, T, D): the sum of the paths through every projection
    if c["output_gated"]:
        # (4) z * r: dz_norm = dz * r, dr = dz * z_norm
        dr = dz * c["z"]
        dz = dz * c["r"]
        (dr_pre,) = silu_backward(dr, c["r_silu"])
        dx_r, g["W_r"], g["b_r"] = linear_backward(dr_pre, c["r_lin"])
        dx += dx_r
    # (5) GroupNorm
    do, g["norm_weight"], _ = group_norm_backward(dz, c["norm"])  # (B, T, H*V)
    B, T, _ = do.shape
    do = do.reshape(B, T, c["H"], -1)  # (B, T, H, V)
    # (3) the mixer
    dq, dk, dv, dgk = run_mixer_backward(do, c["mixer"])
    if c["gated"]:
        # (2) gk = logsigmoid(a2) / tau
        (da2,) = logsigmoid_backward(dgk / TAU, c["logsigmoid"])
        da1, g["W_a2"], g["b_a"] = head_linear_backward(da2, c["a2"])
        dx_a, g["W_a1"], _ = linear_backward(da1, c["a1"])
        dx += dx_a
    # (1) the projections
    for name, d in (("q", dq), ("k", dk), ("v", dv)):
        dx_p, g["W_" + name], _ = head_linear_backward(d, c[name])
        dx += dx_p
    return dx, {key: g[key] for key in params}


def gla_layer_step(params: dict, x_t: np.ndarray, state: np.ndarray | None = None):
    """Decode one token: x_t (B, D) and the mixer state S (B, H, K, V) (None: zeros) ->
    ``(y_t, S)``. Memory O(H K V) whatever the length so far."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    y, ht, _ = _gla_layer(params, x_t[:, None, :], "recurrent", None, state)
    return y[:, 0], ht


# ------------------------------------------------------------------------------------------------
# SwiGLU and the block


def init_swiglu(rng, D: int, hidden: int | None = None, *, dtype=np.float64) -> dict:
    """SwiGLU parameters (7): hidden width ``int(8 D / 3)`` by default (4D of a GELU MLP at equal
    parameter count); normal(0.02) init."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    F = max(1, int(8 * D / 3)) if hidden is None else checks.positive_int(hidden, "hidden")
    return {
        "W_gate": normal(rng, (D, F), INIT_STD, dtype),
        "W_up": normal(rng, (D, F), INIT_STD, dtype),
        "W_down": normal(rng, (F, D), INIT_STD, dtype),
    }


def swiglu(params: dict, x: np.ndarray, *, backend: str = "numpy"):
    """(7) (swish(x W_gate) * (x W_up)) W_down on x (..., D); ``backend`` runs the swish ("numba":
    fused). Returns ``(y, cache)``."""
    a, c_gate = linear(x, params["W_gate"])  # (..., F)
    s, c_silu = silu(a, backend=host_backend(backend))
    u, c_up = linear(x, params["W_up"])  # (..., F)
    y, c_down = linear(s * u, params["W_down"])  # (..., D)
    return y, (c_gate, c_silu, c_up, c_down, s, u)


def swiglu_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_gate, c_silu, c_up, c_down, s, u = cache
    dsu, dW_down, _ = linear_backward(dy, c_down)
    (da,) = silu_backward(dsu * u, c_silu)
    dx_gate, dW_gate, _ = linear_backward(da, c_gate)
    dx_up, dW_up, _ = linear_backward(dsu * s, c_up)
    return dx_gate + dx_up, {"W_gate": dW_gate, "W_up": dW_up, "W_down": dW_down}


def init_gla_block(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 4,
    *,
    mlp_hidden: int | None = None,
    dtype=np.float64,
    **layer_options,
) -> dict:
    """Parameters of the block (6): ``{"norm1": {"weight"}, "mixer": <GLA layer>, "norm2":
    {"weight"}, "mlp": <SwiGLU>}``. ``layer_options`` go to :func:`init_gla_layer` (key_dim,
    value_dim, gate_rank, decay_gate, output_gate)."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    return {
        "norm1": {"weight": np.ones(D, dtype)},
        "mixer": init_gla_layer(rng, D, num_heads, dtype=dtype, **layer_options),
        "norm2": {"weight": np.ones(D, dtype)},
        "mlp": init_swiglu(rng, D, mlp_hidden, dtype=dtype),
    }


def _check_block(params, where="params"):
    if not isinstance(params, dict) or set(params) != {"norm1", "mixer", "norm2", "mlp"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{where}: expected a block {{'norm1', 'mixer', 'norm2', 'mlp'}}, got {got}")


def _gla_block(params, x, mode, chunk_size, initial_state, backend="numpy"):
    _check_block(params)
    # (6) h = x + GLA(RMSNorm(x))
    n1, c_n1 = rms_norm(x, params["norm1"]["weight"], eps=BLOCK_NORM_EPS, backend=host_backend(backend))
    a, ht, c_mix = _gla_layer(params["mixer"], n1, mode, chunk_size, initial_state, backend)
    h = x + a
    # (6) y = h + SwiGLU(RMSNorm(h))
    n2, c_n2 = rms_norm(h, params["norm2"]["weight"], eps=BLOCK_NORM_EPS, backend=host_backend(backend))
    m, c_mlp = swiglu(params["mlp"], n2, backend=backend)
    return h + m, ht, (c_n1, c_mix, c_n2, c_mlp)


def gla_block(
    params: dict, x: np.ndarray, *, mode: str = "chunked", chunk_size: int = 64, backend: str = "numpy"
):
    """The GLA Transformer block (6) on x (B, T, D); ``backend`` as :func:`gla_layer`. Returns
    ``(y, cache)``."""
    if mode == "chunked":
        chunk_size = check_chunk_size(chunk_size)
    y, _, cache = _gla_block(params, x, mode, chunk_size, None, backend)
    return y, cache


def gla_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_n1, c_mix, c_n2, c_mlp = cache
    dy = check_cotangent(dy, c_mix["x_shape"], c_mix["dtype"])
    # y = h + m:  dh = dy + (the path through the MLP)
    dn2, g_mlp = swiglu_backward(params["mlp"], c_mlp, dy)
    dh_mlp, dw2 = rms_norm_backward(dn2, c_n2)
    dh = dy + dh_mlp
    # h = x + a:  dx = dh + (the path through the layer)
    dn1, g_mix = gla_layer_backward(params["mixer"], c_mix, dh)
    dx_mix, dw1 = rms_norm_backward(dn1, c_n1)
    grads = {"norm1": {"weight": dw1}, "mixer": g_mix, "norm2": {"weight": dw2}, "mlp": g_mlp}
    return dh + dx_mix, grads


def gla_block_step(params: dict, x_t: np.ndarray, state: np.ndarray | None = None):
    """Decode one token through the block: x_t (B, D), state (B, H, K, V) or None -> ``(y_t, state)``."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    y, ht, _ = _gla_block(params, x_t[:, None, :], "recurrent", None, state)
    return y[:, 0], ht
