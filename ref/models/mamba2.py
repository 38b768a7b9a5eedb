"""The Mamba-2 layer and block (Dao & Gu, 2024, *Transformers are SSMs*, arXiv 2405.21060), whose
sequence mixer is the SSD layer of ``ref.mixers.ssd``, with hand-written backward and the
constant-memory decode step.

The layer (the paper's Sec. 7.1 and Figure 6, "parallel" Mamba block; mamba_ssm's ``Mamba2``), with
E = expand * D inner channels (expand 2) split into H = E / P heads of P channels, N state dims, a
causal convolution of width W (4), and one group (B and C shared by every head: the paper's
multi-input / multi-value head pattern, eq. (20)):

    [z, xBC, dt_raw] = u W_in            in_proj, no bias; widths E | E+2N | H   (B, T, 2E+2N+H)  (1)
    c = causal_conv1d(xBC) + conv_bias   depthwise, width W, over x, B and C     (B, T, E+2N)     (2)
    [x, B, C] = silu(c)                  x (B, T, H, P); B, C (B, T, N)                           (3)
    dt = softplus(dt_raw + dt_bias)      one step size per head                  (B, T, H)        (4)
    A = -exp(A_log)                      one negative scalar per head            (H,)             (5)
    Y = SSD(X = dt * x, A = dt * A, B, C)                                        (B, T, H, P)     (6)
    y = Y + D * x                        D: one skip weight per head             (B, T, H, P)     (7)
    g = RMSNorm(y * silu(z)) * norm_weight   gated norm over the E channels (eps 1e-5)            (8)
    out = g W_out                        out_proj, no bias                       (B, T, D)        (9)

where (6) is the scalar-decay SSM of ``ref.mixers.ssd`` (the paper's SSD, Sec. 2.4 and 5), per
batch, head and channel p, with the state h (P, N) per head:

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,       Y_t = h_t C_t                            (6a)

that is, ``ssd(X * dt, A * dt, B, C)`` as mamba_ssm's ``ssd_minimal`` test calls it. Its three
forms (``mode``): ``"recurrent"`` (a loop over time), ``"quadratic"`` (the dual, attention-like
form Y = (L ⊙ C B^T) X with L = exp(segsum(dt A))) and ``"chunked"`` (the four-step SSD algorithm
over chunks of ``chunk_size``) compute the same function; which is fastest depends on T, N and
the machine (in NumPy on a CPU, the recurrence for short sequences and small N).

The block (mamba_ssm's ``Block`` + ``MixerModel`` with ``d_intermediate=0``: RMSNorm, no MLP):

    y = x + Mamba2(RMSNorm(x))                                                               (10)

A Mamba-2 language model is the scaffold of ``ref.models.lm`` with this block::

    register_block("mamba2", init_mamba2_block, mamba2_block, mamba2_block_backward, mamba2_block_step)
    params = init_lm(rng, vocab_size, D, n_layers, block="mamba2", tied=True, N=64, headdim=16)

Conventions (as ``ref.models.mamba``): ``forward(params, x, **options) -> (y, cache)``,
``backward(params, cache, dy) -> (dx, grads)`` with ``grads`` shaped like ``params``;
``*_step(params, x_t, state) -> (y_t, state)`` decodes one token (``state=None`` at the start);
``*_prefill(params, x, state) -> (y, state)`` runs a whole prompt with any form and returns the
state that ``*_step`` continues from.

Parameters of the layer; the sizes are read from the shapes (P from E / H), so ``forward(params,
x)`` needs no configuration. Each maps to a tensor of mamba_ssm's ``Mamba2`` (our matrices are
(in, out), torch's ``nn.Linear.weight`` is (out, in))::

    in_proj (D, 2E+2N+H)   in_proj.weight.T   columns: z (E) | x (E) | B (N) | C (N) | dt (H)
    conv_weight (E+2N, W)  conv1d.weight[:, 0, :]   channels: x (E) | B (N) | C (N)
    conv_bias (E+2N,)      conv1d.bias
    dt_bias (H,)           dt_bias
    A_log (H,)             A_log
    D (H,)                 D
    norm_weight (E,)       norm.weight   (RMSNormGated, norm_before_gate=False)
    out_proj (E, D)        out_proj.weight.T

The decode state is ``Mamba2State(conv, ssm)``: ``conv`` (B, W-1, E+2N) holds the last W-1 inputs
xBC of the convolution (mamba_ssm's ``conv_state`` (B, E+2N, W) holds the last W, so ours is its
``[:, :, 1:]`` transposed), ``ssm`` (B, H, P, N) the state h of (6a) (mamba_ssm's ``ssm_state``).
Memory O((W - 1 + N) E) whatever the length: the "state size" of the paper's Figure 8 is N.

Sources (facts checked against state-spaces/mamba; the code here is written from the equations):

- ``mamba_ssm/modules/mamba2.py`` @ 03a38fb27e969750074e3cabc451f5f85fea2b17, ``Mamba2.__init__``:
  d_state 128, d_conv 4, expand 2, headdim 64, ngroups 1, A_init_range (1, 16), dt_min 1e-3,
  dt_max 0.1, dt_init_floor 1e-4, in_proj and out_proj ``bias=False``, conv1d ``bias=True`` over
  ``d_ssm + 2 * ngroups * d_state`` channels, in_proj order [z, x, B, C, dt]; dt_bias = the
  inverse softplus of dt = exp(U(log dt_min, log dt_max)) clamped at the floor; A_log = log
  U(A_init_range) per head; D = 1 per head; ``RMSNormGated(d_ssm, eps=1e-5,
  norm_before_gate=False)``. ``Mamba2.step`` (its non-Triton path: roll the conv window,
  silu, dt = softplus(dt + dt_bias), dA = exp(dt A), state = state dA + dt B x, y = state C + D x,
  y = norm(y, z), out_proj) gives the decode equations; ``mamba2_simple.py`` @
  20ddb822efe7436957f09712d0f7260b898d8c57 (``Mamba2Simple.forward``, non-fused path) the order
  (1)-(9).
- ``mamba_ssm/ops/triton/layernorm_gated.py``, ``rms_norm_ref``: with ``norm_before_gate=False``,
  x = x * silu(z), then x / sqrt(mean(x^2) + eps) * weight: (8).
- ``mamba_ssm/models/mixer_seq_simple.py`` (as for ``ref.models.mamba``): norm_epsilon 1e-5, no
  MLP by default, out_proj re-drawn from torch's default and divided by sqrt(n_layer).
- PyTorch's defaults for the other weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in D for
  in_proj, E for out_proj, W for the depthwise convolution.

Differences from mamba_ssm: one group only (``ngroups=1``, its default); D per head
(``D_has_hdim=False``, its default); no ``dt_limit`` clamp (its default (0, inf) is none); no
``d_ssm < d_inner`` MLP branch; everything in the parameters' dtype (mamba_ssm keeps A in float32).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ref import checks
from ref.mixers.ssd import FORMS
from ref.models.gla import check_dtype, check_params, check_rng
from ref.models.mamba import torch_default_init
from ref.nn import (
    causal_conv1d,
    causal_conv1d_backward,
    linear,
    linear_backward,
    rms_norm,
    rms_norm_backward,
    silu,
    silu_backward,
    softplus,
    softplus_backward,
)

__all__ = [
    "MIXER_FORMS",
    "BLOCK_NORM_EPS",
    "GATED_NORM_EPS",
    "Mamba2State",
    "init_mamba2_layer",
    "mamba2_layer",
    "mamba2_layer_backward",
    "mamba2_layer_step",
    "mamba2_layer_prefill",
    "init_mamba2_block",
    "mamba2_block",
    "mamba2_block_backward",
    "mamba2_block_step",
    "mamba2_block_prefill",
]

MIXER_FORMS = tuple(FORMS)  # ("recurrent", "quadratic", "chunked"): the forms of SSD
BLOCK_NORM_EPS = 1e-5  # the block's RMSNorm (mamba_ssm's norm_epsilon)
GATED_NORM_EPS = 1e-5  # the gated RMSNorm (8) before out_proj
DT_INIT_FLOOR = 1e-4  # the smallest initial step size (mamba_ssm's dt_init_floor)


class Mamba2State(NamedTuple):
    """The decode state of one layer: the convolution's last W-1 inputs and the SSM state."""

    conv: np.ndarray  # (B, W-1, E+2N)
    ssm: np.ndarray  # (B, H, P, N)


# ------------------------------------------------------------------------------------------------
# initialisation


def init_mamba2_layer(
    rng: np.random.Generator,
    D: int,
    *,
    N: int = 128,
    expand: int = 2,
    headdim: int = 64,
    conv_width: int = 4,
    A_init_range: tuple = (1.0, 16.0),
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    n_layer: int = 1,
    dtype=np.float64,
) -> dict:
    """Parameters of a Mamba-2 layer of width D, initialised as mamba_ssm (module docstring).

    E = expand * D inner channels in H = E / headdim heads, N state dims (mamba_ssm's d_state), a
    convolution of width ``conv_width``. -A = exp(A_log) is uniform in ``A_init_range`` per head;
    softplus(dt_bias) is log-uniform in [dt_min, dt_max] (floored at 1e-4). ``n_layer``: out_proj
    is divided by sqrt(n_layer), as mamba_ssm does for a model of that many layers.
    """
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    N = checks.positive_int(N, "N")
    E = D * checks.positive_int(expand, "expand")
    P = checks.positive_int(headdim, "headdim")
    if E % P:
        raise ValueError(f"headdim: expected a divisor of the inner width E = expand * D = {E}, got {P}")
    H = E // P
    W = checks.positive_int(conv_width, "conv_width")
    n_layer = checks.positive_int(n_layer, "n_layer")
    dt_min, dt_max = checks.positive_float(dt_min, "dt_min"), checks.positive_float(dt_max, "dt_max")
    if dt_min > dt_max:
        raise ValueError(f"dt_max: expected a value >= dt_min = {dt_min}, got {dt_max}")
    if not isinstance(A_init_range, (tuple, list)) or len(A_init_range) != 2:
        raise ValueError(f"A_init_range: expected a pair (low, high), got {A_init_range!r}")
    a_lo = checks.positive_float(A_init_range[0], "A_init_range[0]")
    a_hi = checks.positive_float(A_init_range[1], "A_init_range[1]")
    if a_lo > a_hi:
        raise ValueError(f"A_init_range: expected low <= high, got {tuple(A_init_range)}")

    # dt = exp(U(log dt_min, log dt_max)), at least DT_INIT_FLOOR; dt_bias = softplus^-1(dt)
    dt = np.exp(rng.uniform(0.0, 1.0, H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = np.maximum(dt, DT_INIT_FLOOR)  # (H,)
    dt_bias = dt + np.log(-np.expm1(-dt))  # softplus(dt_bias) = dt
    conv_dim = E + 2 * N
    return {
        "in_proj": torch_default_init(rng, (D, 2 * E + 2 * N + H), D, dtype),
        "conv_weight": torch_default_init(rng, (conv_dim, W), W, dtype),
        "conv_bias": torch_default_init(rng, (conv_dim,), W, dtype),
        "dt_bias": dt_bias.astype(dtype),
        "A_log": np.log(rng.uniform(a_lo, a_hi, H)).astype(dtype),
        "D": np.ones(H, dtype),
        "norm_weight": np.ones(E, dtype),
        "out_proj": (torch_default_init(rng, (E, D), E, np.float64) / math.sqrt(n_layer)).astype(dtype),
    }


# ------------------------------------------------------------------------------------------------
# validation


class _Sizes(NamedTuple):
    D: int  # model width
    E: int  # inner channels
    H: int  # heads
    P: int  # channels per head
    N: int  # state dims
    W: int  # convolution width
    dtype: np.dtype


def _mamba2_spec(params, where: str) -> _Sizes:
    """The sizes read from the shapes, after checking every parameter against them."""
    if not isinstance(params, dict):
        raise ValueError(f"{where}: expected a dict of parameters, got {type(params).__name__}")
    for key in ("out_proj", "A_log", "conv_weight"):
        if key not in params:
            raise ValueError(f"{where}: expected a parameter {key!r}, got keys {sorted(params)}")
    W_out = checks.float_array(params["out_proj"], f"{where}/out_proj", ndim=2, dims="(E, D)")
    E, D = W_out.shape
    H = checks.float_array(params["A_log"], f"{where}/A_log", ndim=1, dims="(H,)").shape[0]
    if H < 1 or E % H:
        raise ValueError(f"{where}/A_log: expected (H,) with H a divisor of E = {E} (the rows of out_proj), got H = {H}")
    conv_dim, W = checks.float_array(params["conv_weight"], f"{where}/conv_weight", ndim=2, dims="(E+2N, W)").shape
    if conv_dim <= E or (conv_dim - E) % 2 or W < 1:
        raise ValueError(
            f"{where}/conv_weight: expected shape (E+2N, W) with E = {E}, N >= 1 and W >= 1, got {(conv_dim, W)}"
        )
    N = (conv_dim - E) // 2
    spec = {
        "in_proj": ((D, 2 * E + 2 * N + H), "(D, 2E+2N+H)"),
        "conv_weight": ((conv_dim, W), "(E+2N, W)"),
        "conv_bias": ((conv_dim,), "(E+2N,)"),
        "dt_bias": ((H,), "(H,)"),
        "A_log": ((H,), "(H,)"),
        "D": ((H,), "(H,)"),
        "norm_weight": ((E,), "(E,)"),
        "out_proj": ((E, D), "(E, D)"),
    }
    check_params(params, where, spec, W_out.dtype)
    return _Sizes(D, E, H, E // H, N, W, W_out.dtype)


def _check_x(x, sizes: _Sizes, name: str = "x") -> np.ndarray:
    """x (B, T, D) in the dtype of the parameters, T >= 1."""
    return checks.sequence_input(x, name, sizes.D, sizes.dtype, "the columns of out_proj")


def _check_options(mode, chunk_size):
    return checks.form_options(mode, chunk_size, MIXER_FORMS)


def _check_state(state, Bn: int, sz: _Sizes):
    """A decode state: None (zeros) or Mamba2State / a pair (conv (B, W-1, E+2N), ssm (B, H, P, N))."""
    if state is None:
        return None
    if not isinstance(state, tuple) or len(state) != 2:
        raise ValueError(f"state: expected None or a pair (conv, ssm) from a previous call, got {state!r:.100}")
    conv, ssm = state
    conv = checks.state_part(conv, "state.conv", (Bn, sz.W - 1, sz.E + 2 * sz.N), "(B, W-1, E+2N)", sz.dtype)
    ssm = checks.state_part(ssm, "state.ssm", (Bn, sz.H, sz.P, sz.N), "(B, H, P, N)", sz.dtype)
    return Mamba2State(conv, ssm)


def _check_cotangent(dy, shape: tuple, dtype) -> np.ndarray:
    return checks.output_cotangent(dy, "dy", shape, dtype)


# ------------------------------------------------------------------------------------------------
# the layer


def _mamba2_layer(params, u, mode, chunk_size, state):
    """The layer (1)-(9) from ``state`` (None: zeros); returns ``(out, state at the end, cache)``."""
    sz = _mamba2_spec(params, "params")
    u = _check_x(u, sz)
    state = _check_state(state, u.shape[0], sz)
    conv_state, ssm_state = (None, None) if state is None else state
    Bn, T, _ = u.shape
    E, H, P, N = sz.E, sz.H, sz.P, sz.N
    c = {"x_shape": u.shape, "dtype": sz.dtype, "mode": mode, "sizes": sz}

    # (1) [z, xBC, dt_raw] = u W_in
    zxbcdt, c["in_proj"] = linear(u, params["in_proj"])  # (B, T, 2E+2N+H)
    z, xbc_in, dt_raw = zxbcdt[..., :E], zxbcdt[..., E : 2 * E + 2 * N], zxbcdt[..., 2 * E + 2 * N :]
    # (2) the causal depthwise convolution over x, B, C, continuing from the last W-1 inputs
    conv, conv_state, c["conv"] = causal_conv1d(xbc_in, params["conv_weight"], params["conv_bias"], conv_state)
    # (3) [x, B, C] = silu(conv)
    xbc, c["silu"] = silu(conv)  # (B, T, E+2N)
    x = xbc[..., :E].reshape(Bn, T, H, P)  # (B, T, H, P)
    Bm, Cm = xbc[..., E : E + N], xbc[..., E + N :]  # (B, T, N) each, shared by every head
    # (4) dt = softplus(dt_raw + dt_bias)
    dt, c["softplus"] = softplus(dt_raw + params["dt_bias"])  # (B, T, H)
    # (5) A = -exp(A_log)
    A = -np.exp(params["A_log"])  # (H,)
    # (6) Y = SSD(dt x, dt A, B, C): B and C broadcast over the heads (one group)
    forward, _ = FORMS[mode]
    options = {"block_len": chunk_size} if mode == "chunked" else {}
    B_h = np.ascontiguousarray(np.broadcast_to(Bm[:, :, None, :], (Bn, T, H, N)))  # (B, T, H, N)
    C_h = np.ascontiguousarray(np.broadcast_to(Cm[:, :, None, :], (Bn, T, H, N)))  # (B, T, H, N)
    Y, ssm_state, c["ssd"] = forward(x * dt[..., None], dt * A, B_h, C_h, initial_states=ssm_state, **options)
    # (7) y = Y + D x
    y = Y + params["D"][:, None] * x  # (B, T, H, P)
    # (8) g = RMSNorm(y * silu(z)) * norm_weight
    sz_gate, c["gate"] = silu(z)  # (B, T, E)
    y_flat = y.reshape(Bn, T, E)  # (B, T, E)
    g, c["norm"] = rms_norm(y_flat * sz_gate, params["norm_weight"], eps=GATED_NORM_EPS)
    # (9) out = g W_out
    out, c["out_proj"] = linear(g, params["out_proj"])  # (B, T, D)
    c.update(x=x, dt=dt, A=A, y=y_flat, silu_z=sz_gate)
    return out, Mamba2State(conv_state, ssm_state), c


def mamba2_layer(params: dict, x: np.ndarray, *, mode: str = "chunked", chunk_size: int = 64):
    """The Mamba-2 layer (1)-(9) on x (B, T, D), from a zero state. ``mode``: the form of SSD
    (``"chunked"``, ``"recurrent"``, ``"quadratic"``), all the same function; ``chunk_size``:
    steps per chunk of the chunked form. Returns ``(y, cache)``, y (B, T, D)."""
    mode, chunk_size = _check_options(mode, chunk_size)
    y, _, cache = _mamba2_layer(params, x, mode, chunk_size, None)
    return y, cache


def mamba2_layer_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``: dx (B, T, D) and grads shaped like ``params``."""
    c = cache
    dy = _check_cotangent(dy, c["x_shape"], c["dtype"])
    sz = c["sizes"]
    Bn, T, _ = c["x_shape"]
    E, H, P, N = sz.E, sz.H, sz.P, sz.N
    x, dt, A = c["x"], c["dt"], c["A"]
    g = {}
    # (9) out = g W_out
    dg, g["out_proj"], _ = linear_backward(dy, c["out_proj"])  # (B, T, E)
    # (8) g = RMSNorm(y * s) with s = silu(z)
    dys, g["norm_weight"] = rms_norm_backward(dg, c["norm"])  # d(y * s), (B, T, E)
    dz, = silu_backward(dys * c["y"], c["gate"])  # (B, T, E)
    dy_inner = (dys * c["silu_z"]).reshape(Bn, T, H, P)  # (B, T, H, P)
    # (7) y = Y + D x
    g["D"] = (dy_inner * x).sum(axis=(0, 1, 3))  # (H,)
    dx = dy_inner * params["D"][:, None]  # (B, T, H, P)
    # (6) Y = SSD(dt x, dt A, B, C); the state at the end takes no gradient
    _, backward = FORMS[c["mode"]]
    dXs, dAs, dB_h, dC_h, _ = backward(dy_inner, None, c["ssd"])
    dx += dXs * dt[..., None]
    ddt = (dXs * x).sum(-1) + dAs * A  # (B, T, H)
    dA = (dAs * dt).sum(axis=(0, 1))  # (H,)
    dB, dC = dB_h.sum(axis=2), dC_h.sum(axis=2)  # (B, T, N): B and C feed every head
    # (5) A = -exp(A_log): dA/dA_log = A
    g["A_log"] = dA * A
    # (4) dt = softplus(dt_raw + dt_bias)
    ddt_raw, = softplus_backward(ddt, c["softplus"])  # (B, T, H)
    g["dt_bias"] = ddt_raw.sum(axis=(0, 1))
    # (3) [x, B, C] = silu(conv)
    dxbc = np.concatenate([dx.reshape(Bn, T, E), dB, dC], axis=-1)  # (B, T, E+2N)
    dconv, = silu_backward(dxbc, c["silu"])
    # (2) the convolution; the state at the end takes no gradient
    dxbc_in, g["conv_weight"], g["conv_bias"], _ = causal_conv1d_backward(dconv, None, c["conv"])
    # (1) [z, xBC, dt_raw] = u W_in
    dzxbcdt = np.concatenate([dz, dxbc_in, ddt_raw], axis=-1)  # (B, T, 2E+2N+H)
    du, g["in_proj"], _ = linear_backward(dzxbcdt, c["in_proj"])  # (B, T, D)
    return du, {key: g[key] for key in params}


def mamba2_layer_step(params: dict, x_t: np.ndarray, state: Mamba2State | None = None):
    """Decode one token: x_t (B, D) and ``state`` (None: zeros) -> ``(y_t, state)``, y_t (B, D)
    and the new ``Mamba2State``. The same (1)-(9) as the forward, one step of the recurrence."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    y, state, _ = _mamba2_layer(params, x_t[:, None, :], "recurrent", None, state)
    return y[:, 0], state


def mamba2_layer_prefill(
    params: dict, x: np.ndarray, state: Mamba2State | None = None, *, mode: str = "chunked", chunk_size: int = 64
):
    """Run a whole prompt x (B, T, D) with the chosen form, from ``state`` (None: zeros); returns
    ``(y, state)`` with the state at its end, from which :func:`mamba2_layer_step` continues."""
    mode, chunk_size = _check_options(mode, chunk_size)
    y, state, _ = _mamba2_layer(params, x, mode, chunk_size, state)
    return y, state


# ------------------------------------------------------------------------------------------------
# the block


def init_mamba2_block(rng: np.random.Generator, D: int, *, dtype=np.float64, **layer_kwargs) -> dict:
    """Parameters of the block (10): ``{"norm": {"weight" (D,)}, "mixer": <Mamba-2 layer>}``, the
    norm's scale 1 and the layer by :func:`init_mamba2_layer` (its keyword arguments: N, expand,
    headdim, conv_width, A_init_range, dt_min, dt_max, n_layer)."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    allowed = {"N", "expand", "headdim", "conv_width", "A_init_range", "dt_min", "dt_max", "n_layer"}
    unknown = sorted(set(layer_kwargs) - allowed)
    if unknown:
        raise ValueError(f"init_mamba2_block: unexpected keyword arguments {unknown}; expected some of {sorted(allowed)}")
    layer = init_mamba2_layer(rng, D, dtype=dtype, **layer_kwargs)
    return {"norm": {"weight": np.ones(D, dtype)}, "mixer": layer}


def _check_block(params):
    if not isinstance(params, dict) or set(params) != {"norm", "mixer"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a Mamba-2 block {{'norm', 'mixer'}}, got {got}")
    if not isinstance(params["norm"], dict) or set(params["norm"]) != {"weight"}:
        raise ValueError(f"params/norm: expected {{'weight': (D,)}}, got {params['norm']!r:.80}")


def _mamba2_block(params, x, mode, chunk_size, state):
    _check_block(params)
    _check_x(x, _mamba2_spec(params["mixer"], "params/mixer"))
    # (10) y = x + Mamba2(RMSNorm(x))
    n, c_norm = rms_norm(x, params["norm"]["weight"], eps=BLOCK_NORM_EPS)  # (B, T, D)
    a, state, c_mix = _mamba2_layer(params["mixer"], n, mode, chunk_size, state)
    return x + a, state, (c_norm, c_mix)


def mamba2_block(params: dict, x: np.ndarray, *, mode: str = "chunked", chunk_size: int = 64):
    """The Mamba-2 block (10) on x (B, T, D); options as :func:`mamba2_layer`. Returns ``(y, cache)``."""
    mode, chunk_size = _check_options(mode, chunk_size)
    y, _, cache = _mamba2_block(params, x, mode, chunk_size, None)
    return y, cache


def mamba2_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_norm, c_mix = cache
    dy = _check_cotangent(dy, c_mix["x_shape"], c_mix["dtype"])
    # y = x + a:  dx = dy + (the path through the norm and the layer)
    dn, g_mix = mamba2_layer_backward(params["mixer"], c_mix, dy)
    dx_mix, dw = rms_norm_backward(dn, c_norm)
    return dy + dx_mix, {"norm": {"weight": dw}, "mixer": g_mix}


def mamba2_block_step(params: dict, x_t: np.ndarray, state: Mamba2State | None = None):
    """Decode one token through the block: x_t (B, D), ``state`` (None: zeros) -> ``(y_t, state)``."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    y, state, _ = _mamba2_block(params, x_t[:, None, :], "recurrent", None, state)
    return y[:, 0], state


def mamba2_block_prefill(
    params: dict, x: np.ndarray, state: Mamba2State | None = None, *, mode: str = "chunked", chunk_size: int = 64
):
    """:func:`mamba2_layer_prefill` for the block: ``(y, state)`` after the prompt x (B, T, D)."""
    mode, chunk_size = _check_options(mode, chunk_size)
    y, state, _ = _mamba2_block(params, x, mode, chunk_size, state)
    return y, state
