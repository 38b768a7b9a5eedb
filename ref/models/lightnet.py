"""LightNet (Qin et al., "You Only Scan Once", arXiv 2405.21022): the layer, the block, a small model.

The LightNet attention layer (LNA), per head (H heads, K = V = D / H dims per head):

    q_t = SiLU(x_t W_q),   a_t = x_t W_k (key logits),   v_t = x_t W_v                   (1)
    causal:     k'_t = exp(a_t - z_t), g_t = z_{t-1} - z_t, z_t = logcumsumexp(a)_t         (2)
    non-causal: k'_s = exp(a_s - logsumexp_s a_s)        (one normaliser over all tokens)   (3)
    MD-LRPE:    q~_t = rho_t(q_t), k~_s = rho_s(k'_s), gates repeated: (g_t, g_t)            (4)
    causal:     o_t = K^-1/2 q~_t S_t,  S_t = diag(exp(g_t)) S_{t-1} + k~_t^T v_t   (GLA)     (5)
    non-causal: o_t = K^-1/2 q~_t S,    S = sum_s k~_s^T v_s                                  (6)
    y_t = (RMSNorm(o_t) * SiLU(x_t W_u1 W_u2)) W_o          low-rank output gate, rank R      (7)

(2)+(5) without (4) is ``ref.mixers.lightnet.lightnet_<form>``; (3)+(6) without (4) is
``lightnet_global``: here the layer calls the pieces (``lightnet_gate``, GLA) so that MD-LRPE can
act between them, as the authors' code does (the gate, then LRPE on q and k', then ``chunk_gla``).

MD-LRPE (4): multi-dimensional linearized relative positional encoding. A token at grid position
p = (p_0, ..., p_{m-1}) (its coordinates on an n_0 x ... x n_{m-1} grid; T = prod n_a tokens in
row-major order) gets the phases phi_t[k] = p_{a(k)} theta[k]: the key dims are cut into m blocks,
block a reading axis a. Each coordinate is rotated in the complex plane, written in real form:

    rho_t(u) = [u * cos(phi_t), u * sin(phi_t)]        (K -> 2K)                              (8)
    rho_t(q) . rho_s(k) = sum_k q[k] k[k] cos(phi_t[k] - phi_s[k])                            (9)

and phi_t[k] - phi_s[k] = (p_{a(k)}(t) - p_{a(k)}(s)) theta[k] depends only on the offset p(t) -
p(s): the score is relative in every axis, yet q~ and k~ are per-token (linear attention keeps its
O(T) form). This real (cos, sin) form is the one that commutes with LightNet's gates, which are
per key dim: both copies of dim k carry gate g[k], so S_t keeps its meaning (a rotation mixing two
key dims with different gates would not). theta (H, K) is learned, initialised to base^(-i/e) for
the i-th dim of each block of e = ceil(K / m) dims.

MD-TPE: multi-dimensional Toeplitz positional encoding, applied once to the token embeddings. For
each axis a a learned kernel t^a (2 n_a - 1, D) mixes each channel along that axis by relative
position only (a Toeplitz matrix per channel), and the axes add up:

    e'_p = e_p + sum_a sum_{j} t^a[p_a - j] * e_{p with p_a := j}                              (10)

(causal: offsets p_a - j < 0 are dropped, which keeps raster order causal).

The block (pre-norm, with the gated MLP the paper alternates with LNA):

    h = x + LNA(RMSNorm(x)),   y = h + GLU(RMSNorm(h)),   GLU(u) = (SiLU(u W_1) * (u W_2)) W_3   (11)

The model: features (B, T, F) of the grid's tokens (``image_tokens`` cuts images into patches)
-> linear embedding -> MD-TPE -> blocks -> RMSNorm -> pool (mean over tokens, the last token, or
none) -> linear head -> logits. Non-causal for 2-D (``causal=False``, one global sum per layer:
the "scan once"), or causal for 1-D sequences (grid (T,)).

Conventions (as ``ref.models.gla``): layers and blocks are pairs ``forward(params, x, **options) ->
(y, cache)`` and ``backward(params, cache, dy) -> (dx, grads)``; the model's ``lightnet_backward``
returns ``grads`` only. Parameters are nested dicts of arrays; their shapes give the sizes, and the
presence of ``theta`` (MD-LRPE) and ``tpe`` (MD-TPE) switches the encodings on.

Sources and choices:
- The paper's body text (arXiv 2405.21022v1; equation numbers from its OpenReview version:
  (7)-(9) the layer, (10)-(11) the encodings, as the public reviews cite them) was not available
  here; the definitions follow the authors' code and flash-linear-attention:
  fla-org/flash-linear-attention fla/layers/lightnet.py and fla/ops/lightnet/naive.py (commit
  04506e15): q = SiLU(x W_q), keys and gates from logcumsumexp, GLA, RMSNorm(o) * SiLU(gate)
  with a low-rank gate D -> R -> D, then W_o; no initial mass (z_{-1} = -inf, first gate 0).
  Doraemonzzz/xmixers lightnet_attention.py (commit 081fbef4): LRPE applied to q and to
  k' = exp(a - z) after the gate, with the gates repeated for the doubled key dims; scale 1 there,
  K^-1/2 here (FLA's default). Doraemonzzz/xopes ops/md_lrpe/cosine/md_lrpe_cosine_torch.py
  (commit 0744360b): the multi-dimensional (cos, sin) form (8), one block of dims per axis.
  Doraemonzzz/xmixers modules/pes/md/md_tpe.py and tpe.py (commits 41b22a8e, 3e09249d): MD-TPE
  sums one 1-D Toeplitz mixing per axis. There the kernel of each axis is c_h lambda_h^r (r >= 0),
  computed by a decayed linear recurrence for O(n) cost, followed by a norm and a projection; here
  the kernel is a free table of 2 n_a - 1 coefficients per channel (bidirectional unless causal)
  added to the embedding, the same operator family without the exponential constraint, which is
  cheap at these grid sizes (O(T sum_a n_a D)).
- RMSNorm eps 1e-6; GLU hidden width int(8 D / 3); gate rank R = max(1, D // 8) by default (FLA
  uses 128 at D = 1024); xavier-uniform init for the matrices, N(0, 0.02) for the MD-TPE kernels,
  zero biases, unit norm weights.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ref import checks
from ref.mixers.gla import FORMS as GLA_FORMS
from ref.mixers.lightnet import lightnet_gate, lightnet_gate_backward
from ref.nn import (
    cross_entropy,
    cross_entropy_backward,
    linear,
    linear_backward,
    rms_norm,
    rms_norm_backward,
    silu,
    silu_backward,
    softmax,
    softmax_backward,
)

__all__ = [
    "NORM_EPS",
    "CAUSAL_FORMS",
    "POOLS",
    "grid_positions",
    "toeplitz_matrix",
    "md_tpe",
    "md_tpe_backward",
    "lrpe_theta",
    "md_lrpe",
    "md_lrpe_backward",
    "init_lightnet_layer",
    "lightnet_layer",
    "lightnet_layer_backward",
    "init_glu",
    "glu",
    "glu_backward",
    "init_lightnet_block",
    "lightnet_block",
    "lightnet_block_backward",
    "init_lightnet",
    "lightnet_forward",
    "lightnet_backward",
    "lightnet_loss_and_grads",
    "image_tokens",
    "sample_same_row",
]

NORM_EPS = 1e-6
CAUSAL_FORMS = ("recurrent", "chunked", "parallel")  # GLA's forms, for (5)
POOLS = ("mean", "last", None)
INIT_STD = 0.02
LRPE_BASE = 10000.0


# ------------------------------------------------------------------------------------------------
# small helpers


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    return rng


def _check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in checks.FLOAT_DTYPES:
        raise ValueError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def _xavier(rng, shape, dtype):
    """U(-a, a), a = sqrt(6 / (fan_in + fan_out)) with fan_in = shape[0], fan_out = the rest."""
    fan_in, fan_out = shape[0], int(np.prod(shape[1:]))
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape).astype(dtype)


def _check_grid(grid, T: int) -> tuple[int, ...]:
    """The token grid (n_0, ..., n_{m-1}) with prod n_a = T; None means the 1-D grid (T,)."""
    if grid is None:
        return (T,)
    if not isinstance(grid, (tuple, list)) or not grid:
        raise ValueError(f"grid: expected a non-empty tuple of axis lengths (n_0, ..., n_(m-1)), got {grid!r}")
    grid = tuple(checks.positive_int(n, "grid") for n in grid)
    if int(np.prod(grid)) != T:
        raise ValueError(f"grid: expected axis lengths whose product is the number of tokens T = {T}, got {grid}")
    return grid


def _check_x(x, D: int, dtype, name: str = "x"):
    x = checks.float_array(x, name, ndim=3, dims="(B, T, D)")
    if x.shape[2] != D:
        raise ValueError(f"{name}: expected shape (B, T, D) with D = {D} (from the parameters), got {x.shape}")
    checks.nonempty_time(x.shape[1], name)
    checks.same_dtype(x, name, dtype, "the dtype of the parameters")
    return checks.finite(x, name)


def _check_dy(dy, shape, dtype, name="dy"):
    dy = checks.float_array(dy, name, ndim=len(shape))
    checks.same_shape(dy, name, shape, "(the output's axes)", "the shape of the output")
    checks.same_dtype(dy, name, dtype, "the dtype of the output")
    return dy


def _param(params, where, key, shape, dims, dtype):
    if not isinstance(params, dict) or key not in params:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{where}: expected a parameter {key!r} of shape {dims}, got {got}")
    a = checks.float_array(params[key], f"{where}/{key}", ndim=len(shape), dims=dims)
    checks.same_shape(a, f"{where}/{key}", shape, dims, "from the other parameters")
    checks.same_dtype(a, f"{where}/{key}", dtype, "the dtype of the parameters")
    return a


def _heads(x, W):
    """x (..., D) @ W (D, H, X) -> (..., H, X). Returns ``(y, cache)``."""
    D, H, X = W.shape
    y, cache = linear(x, W.reshape(D, H * X))
    return y.reshape(x.shape[:-1] + (H, X)), (cache, W.shape)


def _heads_backward(dy, cache):
    """Returns ``(dx, dW)`` with dW (D, H, X)."""
    lin_cache, shape = cache
    dx, dW, _ = linear_backward(dy.reshape(dy.shape[:-2] + (-1,)), lin_cache)
    return dx, dW.reshape(shape)


# ------------------------------------------------------------------------------------------------
# grid positions, MD-TPE (10) and MD-LRPE (8)


def grid_positions(grid) -> np.ndarray:
    """The coordinates of the T = prod(grid) tokens in row-major order.   (T, m) int64"""
    grid = tuple(grid)
    T = int(np.prod(grid))
    return np.stack(np.unravel_index(np.arange(T), grid), axis=-1).astype(np.int64)


def toeplitz_matrix(kernel: np.ndarray, n: int, *, causal: bool = False) -> np.ndarray:
    """T_ij = kernel[i - j + n - 1] per channel: kernel (2n - 1, D) -> (n, n, D); 0 for j > i if causal."""
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    Tm = kernel[i - j + n - 1]  # (n, n, D): constant along diagonals
    if causal:
        Tm = np.where((i >= j)[..., None], Tm, 0)
    return Tm


def _check_kernels(kernels, grid, D, dtype, where="kernels"):
    if not isinstance(kernels, (list, tuple)) or len(kernels) != len(grid):
        got = len(kernels) if isinstance(kernels, (list, tuple)) else type(kernels).__name__
        raise ValueError(f"{where}: expected one kernel per grid axis ({len(grid)} for grid {grid}), got {got}")
    for a, (kernel, n) in enumerate(zip(kernels, grid)):
        name = f"{where}/{a}"
        kernel = checks.float_array(kernel, name, ndim=2, dims="(2 n_a - 1, D)")
        checks.same_shape(kernel, name, (2 * n - 1, D), "(2 n_a - 1, D)", f"axis {a} of grid {grid} and D")
        checks.same_dtype(kernel, name, dtype, "the dtype of x")
    return list(kernels)


def md_tpe(x: np.ndarray, kernels, grid, *, causal: bool = False):
    """MD-TPE (10): x (B, T, D) plus one Toeplitz mixing along each grid axis. Returns ``(y, cache)``.

    kernels: one array (2 n_a - 1, D) per axis, entry r + n_a - 1 for the offset r = i - j.
    """
    x = checks.float_array(x, "x", ndim=3, dims="(B, T, D)")
    B, T, D = x.shape
    grid = _check_grid(grid, T)
    kernels = _check_kernels(kernels, grid, D, x.dtype)
    X = x.reshape((B,) + grid + (D,))  # (B, n_0, ..., n_{m-1}, D)
    Y = X.copy()  # (10): e'_p = e_p + ...
    mats = []
    for a, (kernel, n) in enumerate(zip(kernels, grid)):
        Tm = toeplitz_matrix(kernel, n, causal=causal)  # (n, n, D)
        Xa = np.moveaxis(X, 1 + a, -2)  # (B, ..., n_a, D): axis a next to the channels
        Y += np.moveaxis(np.einsum("ijd,...jd->...id", Tm, Xa), -2, 1 + a)  # (10): sum_j t[i - j] e_j
        mats.append(Tm)
    return Y.reshape(B, T, D), (X, grid, mats, bool(causal))


def md_tpe_backward(dy: np.ndarray, cache):
    """Returns ``(dx, dkernels)``: dkernels a list shaped like the kernels."""
    X, grid, mats, causal = cache
    B, D = X.shape[0], X.shape[-1]
    T = int(np.prod(grid))
    dy = _check_dy(dy, (B, T, D), X.dtype)
    dY = dy.reshape(X.shape)
    dX = dY.copy()  # the identity term
    dkernels = []
    for a, (Tm, n) in enumerate(zip(mats, grid)):
        Xa, dYa = np.moveaxis(X, 1 + a, -2), np.moveaxis(dY, 1 + a, -2)  # (B, ..., n_a, D)
        dX += np.moveaxis(np.einsum("ijd,...id->...jd", Tm, dYa), -2, 1 + a)  # T^T dY
        rows = (-1, n, D)  # every line along axis a: (M, n_a, D)
        dTm = np.einsum("mid,mjd->ijd", dYa.reshape(rows), Xa.reshape(rows))  # (n, n, D): dL/dT_ij
        i, j = np.arange(n)[:, None], np.arange(n)[None, :]
        if causal:
            dTm = np.where((i >= j)[..., None], dTm, 0)
        dkernel = np.zeros((2 * n - 1, D), X.dtype)
        np.add.at(dkernel, (i - j + n - 1).ravel(), dTm.reshape(n * n, D))  # each diagonal sums into one entry
        dkernels.append(dkernel)
    return dX.reshape(B, T, D), dkernels


def _lrpe_phase_positions(grid, K: int) -> np.ndarray:
    """P[t, k] = p_{a(k)}(t): the coordinate that key dim k reads (blocks of e = ceil(K / m) dims)."""
    m = len(grid)
    if K < m:
        raise ValueError(f"theta: MD-LRPE needs at least one key dim per grid axis, got K = {K} for {m} axes")
    e = -(-K // m)
    axis_of = np.arange(K) // e  # (K,)
    return grid_positions(grid)[:, axis_of].astype(np.float64)  # (T, K)


def lrpe_theta(num_heads: int, K: int, m: int, base: float = LRPE_BASE, dtype=np.float64) -> np.ndarray:
    """theta[h, k] = base^(-i/e) for the i-th dim of each block of e = ceil(K / m) dims.   (H, K)"""
    e = -(-K // m)
    i = np.arange(K) % e
    return np.broadcast_to(base ** (-i / e), (num_heads, K)).astype(dtype)


def md_lrpe(x: np.ndarray, theta: np.ndarray, grid):
    """MD-LRPE (8): x (B, T, H, K) -> [x cos(phi), x sin(phi)] (B, T, H, 2K). Returns ``(y, cache)``.

    theta (H, K) frequencies; phi[t, h, k] = p_{a(k)}(t) theta[h, k] for the token's grid position.
    """
    x = checks.float_array(x, "x", ndim=4, dims="(B, T, H, K)")
    B, T, H, K = x.shape
    grid = _check_grid(grid, T)
    theta = checks.float_array(theta, "theta", ndim=2, dims="(H, K)")
    checks.same_shape(theta, "theta", (H, K), "(H, K)", "the heads and key dims of x")
    checks.same_dtype(theta, "theta", x.dtype, "the dtype of x")
    P = _lrpe_phase_positions(grid, K).astype(x.dtype)  # (T, K)
    phi = P[:, None, :] * theta  # (T, H, K)
    cos, sin = np.cos(phi), np.sin(phi)
    y = np.concatenate([x * cos, x * sin], axis=-1)  # (8): (B, T, H, 2K)
    return y, (x, P, cos, sin)


def md_lrpe_backward(dy: np.ndarray, cache):
    """Returns ``(dx, dtheta)``."""
    x, P, cos, sin = cache
    B, T, H, K = x.shape
    dy = _check_dy(dy, (B, T, H, 2 * K), x.dtype)
    dc, ds = dy[..., :K], dy[..., K:]
    dx = dc * cos + ds * sin
    dphi = (x * (ds * cos - dc * sin)).sum(axis=0)  # (T, H, K): d/dphi of x cos, x sin
    dtheta = (dphi * P[:, None, :]).sum(axis=0)  # (H, K): phi = P theta
    return dx, dtheta


# ------------------------------------------------------------------------------------------------
# the LightNet attention layer (1)-(7)


def init_lightnet_layer(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 2,
    *,
    gate_rank: int | None = None,
    grid_axes: int | None = 1,
    lrpe_base: float = LRPE_BASE,
    dtype=np.float64,
) -> dict:
    """Parameters of the layer: W_q, W_k, W_v (D, H, K), the gate W_u1 (D, R), W_u2 (R, D),
    norm_weight (D,), W_o (D, D), and theta (H, K) for MD-LRPE over ``grid_axes`` axes
    (``grid_axes=None``: no MD-LRPE)."""
    rng, dtype = _check_rng(rng), _check_dtype(dtype)
    D = checks.positive_int(D, "D")
    H = checks.positive_int(num_heads, "num_heads")
    if D % H:
        raise ValueError(f"num_heads: expected a divisor of the model width D = {D}, got {H}")
    K = D // H
    R = max(1, D // 8) if gate_rank is None else checks.positive_int(gate_rank, "gate_rank")
    params = {
        "W_q": _xavier(rng, (D, H, K), dtype),
        "W_k": _xavier(rng, (D, H, K), dtype),
        "W_v": _xavier(rng, (D, H, K), dtype),
        "W_u1": _xavier(rng, (D, R), dtype),
        "W_u2": _xavier(rng, (R, D), dtype),
        "norm_weight": np.ones(D, dtype),
        "W_o": _xavier(rng, (D, D), dtype),
    }
    if grid_axes is not None:
        m = checks.positive_int(grid_axes, "grid_axes")
        if K < m:
            raise ValueError(f"grid_axes: MD-LRPE needs a head dim K >= the number of axes, got K = {K} < {m}")
        params["theta"] = lrpe_theta(H, K, m, lrpe_base, dtype)
    return params


def _layer_shapes(params, where="params"):
    if not isinstance(params, dict) or "W_q" not in params:
        got = type(params).__name__
        raise ValueError(f"{where}: expected a LightNet layer {{'W_q', 'W_k', 'W_v', ...}}, got {got}")
    W_q = checks.float_array(params["W_q"], f"{where}/W_q", ndim=3, dims="(D, H, K)")
    D, H, K = W_q.shape
    dtype = W_q.dtype
    if "W_u1" not in params:
        raise ValueError(f"{where}: expected a parameter 'W_u1' of shape (D, R), got {sorted(params)}")
    R = checks.float_array(params["W_u1"], f"{where}/W_u1", ndim=2, dims="(D, R)").shape[1]
    spec = {
        "W_k": ((D, H, K), "(D, H, K)"),
        "W_v": ((D, H, K), "(D, H, K)"),
        "W_u1": ((D, R), "(D, R)"),
        "W_u2": ((R, D), "(R, D)"),
        "norm_weight": ((D,), "(D,)"),
        "W_o": ((D, D), "(D, D)"),
    }
    if "theta" in params:
        spec["theta"] = ((H, K), "(H, K)")
    for key, (shape, dims) in spec.items():
        _param(params, where, key, shape, dims, dtype)
    extra = sorted(set(params) - set(spec) - {"W_q"})
    if extra:
        raise ValueError(f"{where}: unexpected parameters {extra}")
    return D, H, K, dtype


def _check_form(form, chunk_size):
    checks.one_of(form, "form", CAUSAL_FORMS)
    return {"chunk_size": checks.positive_int(chunk_size, "chunk_size")} if form == "chunked" else {}


def lightnet_layer(
    params: dict, x: np.ndarray, *, causal: bool, grid=None, form: str = "chunked", chunk_size: int = 64
):
    """The LightNet attention layer (1)-(7) on x (B, T, D). Returns ``(y, cache)``.

    ``causal``: the scan (2), (5) in GLA's ``form`` (recurrent, chunked, parallel), or the global
    sum (3), (6). ``grid``: the token grid for MD-LRPE (default (T,)).
    """
    D, H, K, dtype = _layer_shapes(params)
    x = _check_x(x, D, dtype)
    B, T, _ = x.shape
    grid = _check_grid(grid, T)
    if not isinstance(causal, (bool, np.bool_)):
        raise ValueError(f"causal: expected True or False, got {causal!r}")
    options = _check_form(form, chunk_size) if causal else {}
    c = {"x_shape": x.shape, "causal": bool(causal), "form": form}

    qp, c["q_lin"] = _heads(x, params["W_q"])  # (1): (B, T, H, K)
    q, c["q_act"] = silu(qp)
    a, c["k_lin"] = _heads(x, params["W_k"])  # (1): key logits
    v, c["v_lin"] = _heads(x, params["W_v"])  # (1): (B, T, H, V)
    g = None
    if causal:
        k, g, _, c["gate"] = lightnet_gate(a)  # (2)
    else:
        k, c["gate"] = softmax(a, axis=1)  # (3): normalised over all T tokens, per head and key dim
    if "theta" in params:  # (4)
        q, c["q_rpe"] = md_lrpe(q, params["theta"], grid)
        k, c["k_rpe"] = md_lrpe(k, params["theta"], grid)
        if g is not None:
            g = np.concatenate([g, g], axis=-1)  # both copies of dim k decay with g[k]
    scale = K**-0.5
    if causal:
        o, _, c["mix"] = GLA_FORMS[form][0](q, k, v, g, scale=scale, **options)  # (5)
    else:
        S = np.einsum("bthk,bthv->bhkv", k, v)  # (6): one state from all tokens
        o = scale * np.einsum("bthk,bhkv->bthv", q, S)  # (6)
        c["mix"] = (q, k, v, S, scale)
    o = o.reshape(B, T, D)
    n, c["norm"] = rms_norm(o, params["norm_weight"], eps=NORM_EPS)  # (7)
    u1, c["u1"] = linear(x, params["W_u1"])  # (7): low-rank gate, (B, T, R)
    u2, c["u2"] = linear(u1, params["W_u2"])
    s, c["u_act"] = silu(u2)
    y, c["out"] = linear(n * s, params["W_o"])  # (7)
    c["n"], c["s"] = n, s
    return y, c


def lightnet_layer_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)`` with ``grads`` shaped like ``params``."""
    c = cache
    B, T, D = c["x_shape"]
    H, K = params["W_q"].shape[1:]
    dy = _check_dy(dy, (B, T, D), params["W_q"].dtype)
    grads = {}
    # (7) y = (n * s) W_o
    dns, grads["W_o"], _ = linear_backward(dy, c["out"])
    (du2,) = silu_backward(dns * c["n"], c["u_act"])
    du1, grads["W_u2"], _ = linear_backward(du2, c["u2"])
    dx, grads["W_u1"], _ = linear_backward(du1, c["u1"])
    do, grads["norm_weight"] = rms_norm_backward(dns * c["s"], c["norm"])
    do = do.reshape(B, T, H, K)
    # (5) / (6)
    dg = None
    if c["causal"]:
        dq, dk, dv, dg, _ = GLA_FORMS[c["form"]][1](do, None, c["mix"])
    else:
        q, k, v, S, scale = c["mix"]
        dq = scale * np.einsum("bthv,bhkv->bthk", do, S)
        dS = scale * np.einsum("bthk,bthv->bhkv", q, do)
        dk = np.einsum("bthv,bhkv->bthk", v, dS)
        dv = np.einsum("bthk,bhkv->bthv", k, dS)
    # (4)
    if "theta" in params:
        dq, dtheta_q = md_lrpe_backward(dq, c["q_rpe"])
        dk, dtheta_k = md_lrpe_backward(dk, c["k_rpe"])
        grads["theta"] = dtheta_q + dtheta_k
        if dg is not None:
            dg = dg[..., :K] + dg[..., K:]
    # (2) / (3)
    if c["causal"]:
        da, _ = lightnet_gate_backward(dk, dg, None, c["gate"])
    else:
        (da,) = softmax_backward(dk, c["gate"])
    # (1)
    (dqp,) = silu_backward(dq, c["q_act"])
    for d_in, key, lin in ((dqp, "W_q", "q_lin"), (da, "W_k", "k_lin"), (dv, "W_v", "v_lin")):
        dx_part, grads[key] = _heads_backward(d_in, c[lin])
        dx = dx + dx_part
    return dx, grads


# ------------------------------------------------------------------------------------------------
# the GLU and the block (11)


def init_glu(rng, D: int, hidden: int | None = None, *, dtype=np.float64) -> dict:
    """GLU parameters: W_1, W_2 (D, F), W_3 (F, D); F = int(8 D / 3) by default."""
    rng, dtype = _check_rng(rng), _check_dtype(dtype)
    D = checks.positive_int(D, "D")
    F = max(1, int(8 * D / 3)) if hidden is None else checks.positive_int(hidden, "hidden")
    return {"W_1": _xavier(rng, (D, F), dtype), "W_2": _xavier(rng, (D, F), dtype), "W_3": _xavier(rng, (F, D), dtype)}


def glu(params: dict, x: np.ndarray):
    """(11) GLU(x) = (SiLU(x W_1) * (x W_2)) W_3 on x (..., D). Returns ``(y, cache)``."""
    a, c1 = linear(x, params["W_1"])
    s, c_act = silu(a)
    b, c2 = linear(x, params["W_2"])
    y, c3 = linear(s * b, params["W_3"])
    return y, (c1, c_act, c2, c3, s, b)


def glu_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c1, c_act, c2, c3, s, b = cache
    dsb, dW_3, _ = linear_backward(dy, c3)
    (da,) = silu_backward(dsb * b, c_act)
    dx1, dW_1, _ = linear_backward(da, c1)
    dx2, dW_2, _ = linear_backward(dsb * s, c2)
    return dx1 + dx2, {"W_1": dW_1, "W_2": dW_2, "W_3": dW_3}


def init_lightnet_block(
    rng,
    D: int,
    num_heads: int = 2,
    *,
    mlp_hidden: int | None = None,
    dtype=np.float64,
    **layer_options,
) -> dict:
    """``{"norm1": {"weight"}, "attn": <layer>, "norm2": {"weight"}, "mlp": <GLU>}``; ``layer_options``
    go to :func:`init_lightnet_layer` (gate_rank, grid_axes, lrpe_base)."""
    rng, dtype = _check_rng(rng), _check_dtype(dtype)
    D = checks.positive_int(D, "D")
    return {
        "norm1": {"weight": np.ones(D, dtype)},
        "attn": init_lightnet_layer(rng, D, num_heads, dtype=dtype, **layer_options),
        "norm2": {"weight": np.ones(D, dtype)},
        "mlp": init_glu(rng, D, mlp_hidden, dtype=dtype),
    }


def lightnet_block(params: dict, x: np.ndarray, **options):
    """The block (11) on x (B, T, D); ``options`` as :func:`lightnet_layer`. Returns ``(y, cache)``."""
    if not isinstance(params, dict) or set(params) != {"norm1", "attn", "norm2", "mlp"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a block {{'norm1', 'attn', 'norm2', 'mlp'}}, got {got}")
    n1, c_n1 = rms_norm(x, params["norm1"]["weight"], eps=NORM_EPS)
    a, c_attn = lightnet_layer(params["attn"], n1, **options)
    h = x + a  # (11)
    n2, c_n2 = rms_norm(h, params["norm2"]["weight"], eps=NORM_EPS)
    m, c_mlp = glu(params["mlp"], n2)
    return h + m, (c_n1, c_attn, c_n2, c_mlp)  # (11)


def lightnet_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_n1, c_attn, c_n2, c_mlp = cache
    dy = _check_dy(dy, c_attn["x_shape"], params["norm1"]["weight"].dtype)
    dn2, g_mlp = glu_backward(params["mlp"], c_mlp, dy)
    dh_mlp, dw2 = rms_norm_backward(dn2, c_n2)
    dh = dy + dh_mlp
    dn1, g_attn = lightnet_layer_backward(params["attn"], c_attn, dh)
    dx_attn, dw1 = rms_norm_backward(dn1, c_n1)
    grads = {"norm1": {"weight": dw1}, "attn": g_attn, "norm2": {"weight": dw2}, "mlp": g_mlp}
    return dh + dx_attn, grads


# ------------------------------------------------------------------------------------------------
# the model


def init_lightnet(
    rng: np.random.Generator,
    *,
    in_features: int,
    dim: int,
    num_classes: int,
    grid,
    num_layers: int = 2,
    num_heads: int = 2,
    use_tpe: bool = True,
    use_lrpe: bool = True,
    gate_rank: int | None = None,
    mlp_hidden: int | None = None,
    lrpe_base: float = LRPE_BASE,
    dtype=np.float64,
) -> dict:
    """Parameters of the model: ``{"embed": {"W", "b"}, "tpe": {"kernels": [...]}, "blocks": [...],
    "norm": {"weight"}, "head": {"W", "b"}}`` (no ``tpe`` without MD-TPE, no ``theta`` in the
    layers without MD-LRPE). ``grid``: the token grid (n_0, ..., n_{m-1}), which sizes the MD-TPE
    kernels and the MD-LRPE blocks."""
    rng, dtype = _check_rng(rng), _check_dtype(dtype)
    F = checks.positive_int(in_features, "in_features")
    D = checks.positive_int(dim, "dim")
    C = checks.positive_int(num_classes, "num_classes")
    L = checks.positive_int(num_layers, "num_layers")
    if not isinstance(grid, (tuple, list)) or not grid:
        raise ValueError(f"grid: expected a non-empty tuple of axis lengths (n_0, ..., n_(m-1)), got {grid!r}")
    grid = tuple(checks.positive_int(n, "grid") for n in grid)
    if isinstance(lrpe_base, bool) or not isinstance(lrpe_base, numbers.Real) or not lrpe_base > 0:
        raise ValueError(f"lrpe_base: expected a number > 0, got {lrpe_base!r}")
    params = {"embed": {"W": _xavier(rng, (F, D), dtype), "b": np.zeros(D, dtype)}}
    if use_tpe:
        params["tpe"] = {"kernels": [(INIT_STD * rng.standard_normal((2 * n - 1, D))).astype(dtype) for n in grid]}
    params["blocks"] = [
        init_lightnet_block(
            rng,
            D,
            num_heads,
            mlp_hidden=mlp_hidden,
            dtype=dtype,
            gate_rank=gate_rank,
            grid_axes=len(grid) if use_lrpe else None,
            lrpe_base=float(lrpe_base),
        )
        for _ in range(L)
    ]
    params["norm"] = {"weight": np.ones(D, dtype)}
    params["head"] = {"W": _xavier(rng, (D, C), dtype), "b": np.zeros(C, dtype)}
    return params


def lightnet_forward(
    params: dict,
    x: np.ndarray,
    *,
    grid=None,
    causal: bool = False,
    pool: str | None = "mean",
    form: str = "chunked",
    chunk_size: int = 64,
):
    """The model on token features x (B, T, F). Returns ``(logits, cache)``.

    logits (B, C) pooled over the tokens (``pool="mean"``, or ``"last"``: the last token, which in
    a causal model has seen all others), or (B, T, C) per token (``pool=None``). ``grid``: the
    token grid (default (T,)); ``causal``, ``form``, ``chunk_size`` as :func:`lightnet_layer`.
    """
    if not isinstance(params, dict) or not {"embed", "blocks", "norm", "head"} <= set(params):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a LightNet model {{'embed', 'blocks', 'norm', 'head', ['tpe']}}, got {got}")
    W_e = checks.float_array(params["embed"]["W"], "params/embed/W", ndim=2, dims="(F, D)")
    x = checks.float_array(x, "x", ndim=3, dims="(B, T, F)")
    if x.shape[2] != W_e.shape[0]:
        F = W_e.shape[0]
        raise ValueError(f"x: expected shape (B, T, F) with F = {F} (the rows of params/embed/W), got {x.shape}")
    checks.nonempty_time(x.shape[1], "x")
    checks.same_dtype(x, "x", W_e.dtype, "the dtype of the parameters")
    checks.finite(x, "x")
    grid = _check_grid(grid, x.shape[1])
    if not isinstance(causal, (bool, np.bool_)):
        raise ValueError(f"causal: expected True or False, got {causal!r}")
    checks.one_of(pool, "pool", POOLS)
    caches = {"pool": pool}
    h, caches["embed"] = linear(x, W_e, params["embed"]["b"])  # (B, T, D)
    if "tpe" in params:
        h, caches["tpe"] = md_tpe(h, params["tpe"]["kernels"], grid, causal=causal)  # (10)
    caches["blocks"] = []
    for block in params["blocks"]:
        h, c = lightnet_block(block, h, causal=causal, grid=grid, form=form, chunk_size=chunk_size)
        caches["blocks"].append(c)
    h, caches["norm"] = rms_norm(h, params["norm"]["weight"], eps=NORM_EPS)
    caches["h_shape"] = h.shape
    if pool == "mean":
        h = h.mean(axis=1)  # (B, D)
    elif pool == "last":
        h = h[:, -1]  # (B, D)
    logits, caches["head"] = linear(h, params["head"]["W"], params["head"]["b"])
    return logits, caches


def lightnet_backward(params: dict, cache, dlogits: np.ndarray):
    """Returns ``grads`` shaped like ``params`` (the inputs are data: no dx)."""
    grads = {}
    dh, dW, db = linear_backward(dlogits, cache["head"])
    grads["head"] = {"W": dW, "b": db}
    B, T, D = cache["h_shape"]
    if cache["pool"] == "mean":
        dh = np.broadcast_to(dh[:, None, :] / T, (B, T, D))
    elif cache["pool"] == "last":
        dfull = np.zeros((B, T, D), dh.dtype)
        dfull[:, -1] = dh
        dh = dfull
    dh, dw = rms_norm_backward(dh, cache["norm"])
    grads["norm"] = {"weight": dw}
    grads["blocks"] = [None] * len(params["blocks"])
    for i in range(len(params["blocks"]) - 1, -1, -1):
        dh, grads["blocks"][i] = lightnet_block_backward(params["blocks"][i], cache["blocks"][i], dh)
    if "tpe" in params:
        dh, dkernels = md_tpe_backward(dh, cache["tpe"])
        grads["tpe"] = {"kernels": dkernels}
    _, dW, db = linear_backward(dh, cache["embed"])
    grads["embed"] = {"W": dW, "b": db}
    return grads


def lightnet_loss_and_grads(params: dict, x: np.ndarray, labels: np.ndarray, **options):
    """Mean cross-entropy of the model's logits against integer ``labels`` (B,) (or (B, T) with
    ``pool=None``). Returns ``(loss, grads, logits)``; ``options`` as :func:`lightnet_forward`."""
    logits, cache = lightnet_forward(params, x, **options)
    loss, c_loss = cross_entropy(logits, labels)
    dlogits, _ = cross_entropy_backward(np.ones((), logits.dtype), c_loss)
    return float(loss), lightnet_backward(params, cache, dlogits), logits


# ------------------------------------------------------------------------------------------------
# data for the 2-D model


def image_tokens(images: np.ndarray, patch: int = 1):
    """Cut images (B, H, W) or (B, H, W, C) into non-overlapping patch x patch tokens.

    Returns ``(tokens, grid)``: tokens (B, T, patch * patch * C) in row-major order over the
    grid (H / patch, W / patch), T = its size. ``patch=1``: one token per pixel.
    """
    images = checks.float_array(images, "images")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images: expected shape (B, H, W) or (B, H, W, C), got {images.shape}")
    p = checks.positive_int(patch, "patch")
    B, Hh, Ww, C = images.shape
    if Hh % p or Ww % p:
        raise ValueError(f"patch: expected a divisor of the image height and width ({Hh}, {Ww}), got {p}")
    grid = (Hh // p, Ww // p)
    t = images.reshape(B, grid[0], p, grid[1], p, C).transpose(0, 1, 3, 2, 4, 5)  # (B, gh, gw, p, p, C)
    return np.ascontiguousarray(t.reshape(B, grid[0] * grid[1], p * p * C)), grid


def sample_same_row(rng: np.random.Generator, batch: int, side: int = 8, dtype=np.float64):
    """The synthetic 2-D task: are the two marked pixels of a side x side image in the same row?

    Returns ``(images, labels)``: images (B, side, side) with two pixels set to 1 (all else 0),
    labels (B,) int64, 1 for the same row; half of the batch (rounded down) is positive. Without
    positional information a permutation-equivariant model cannot tell (the pooled features of
    any two marked pixels are the same): chance level; MD-LRPE's relative offsets make it
    learnable.
    """
    rng, dtype = _check_rng(rng), _check_dtype(dtype)
    B = checks.positive_int(batch, "batch")
    n = checks.positive_int(side, "side")
    if n < 2:
        raise ValueError(f"side: expected an image side >= 2 (two distinct rows and columns), got {side}")
    labels = (np.arange(B) < B // 2).astype(np.int64)
    rng.shuffle(labels)
    images = np.zeros((B, n, n), dtype)
    for b in range(B):
        r1, c1 = rng.integers(n), rng.integers(n)
        if labels[b]:
            r2 = r1
            c2 = (c1 + rng.integers(1, n)) % n  # another column of the same row
        else:
            r2 = (r1 + rng.integers(1, n)) % n  # another row, any column
            c2 = rng.integers(n)
        images[b, r1, c1] = images[b, r2, c2] = 1
    return images, labels
