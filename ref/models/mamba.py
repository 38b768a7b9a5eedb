"""The Mamba layer and the Mamba block (Gu & Dao, 2023, arXiv 2312.00752), with hand-written backward
and the constant-memory decode step.

The layer (the paper's Figure 3 and Algorithm 2; mamba_ssm's ``Mamba``), with E = expand * D inner
channels (expand 2), N state dims (16), a causal convolution of width W (4) and the rank
R = ceil(D / 16) of the step-size projection:

    [x_in, z] = x W_in                        in_proj, no bias           (B, T, 2E)     (1)
    c = causal_conv1d(x_in) + conv_bias       depthwise, width W         (B, T, E)      (2)
    u = silu(c)                                                          (B, T, E)      (3)
    [dt_low, B_t, C_t] = u W_x                x_proj, no bias            (B, T, R+2N)   (4)
    delta_raw = dt_low W_dt                   dt_proj's weight           (B, T, E)      (5)
    A = -exp(A_log)                           negative real, S4D-Real    (E, N)         (6)
    y = S6(u, delta_raw, A, B, C, D, z, delta_bias=dt_bias, delta_softplus=True)        (7)
    out = y W_out                             out_proj, no bias          (B, T, D)      (8)

where (7) is the selective scan of ``ref.mixers.selective_scan`` (mamba_ssm's ``selective_scan_fn``
semantics), run per channel e and state dim n:

    delta_t = softplus(delta_raw_t + dt_bias)                                          (7a)
    h_t     = exp(delta_t A) * h_{t-1} + delta_t B_t u_t        h (B, E, N)            (7b)
    y_t     = (C_t . h_t + D u_t) * silu(z_t)                                          (7c)

B_t and C_t are "selective": computed from the input at every step (variable B, C of shape
(B, N, T) in the scan's channel-first layout), and so is delta_t. The bias of dt_proj and the
softplus are applied inside the scan, and so is the gate silu(z), as ``mamba_simple.py`` does.

The block (mamba_ssm's ``Block`` + ``MixerModel``, RMSNorm variant, no MLP):

    y = x + Mamba(RMSNorm(x))                                                          (9)

mamba_ssm writes it as "add, then norm, then mixer" and carries the residual separately (to fuse
the add into the norm's kernel); summing the residual once more before the final norm, as its
``MixerModel.forward`` does, makes the two layouts the same function. A Mamba language model is the
scaffold of ``ref.models.lm`` with this block (embedding -> blocks -> RMSNorm -> tied head)::

    params = init_lm(rng, vocab_size, D, n_layers, block="mamba", tied=True)

Conventions (as ``ref.models.gla``): ``forward(params, x, **options) -> (y, cache)``,
``backward(params, cache, dy) -> (dx, grads)`` with ``grads`` shaped like ``params``;
``*_step(params, x_t, state) -> (y_t, state)`` decodes one token (``state=None`` at the start);
``*_prefill(params, x, state) -> (y, state)`` runs a whole prompt with the fast forms and returns
the state that ``*_step`` continues from. Options of the forward: ``mode`` picks the form of the
selective scan, ``"chunked"`` (default, ``chunk_size`` steps per chunk), ``"recurrent"`` or
``"parallel"``, all the same function; ``backend`` is passed on to the scan.

Parameters of the layer; the sizes are read from the shapes, so ``forward(params, x)`` needs no
configuration. Each maps to a tensor of mamba_ssm's ``Mamba`` module (our matrices are
(in, out), torch's ``nn.Linear.weight`` is (out, in))::

    in_proj (D, 2E)        in_proj.weight.T     columns [:E] give x_in, [E:] give z (torch's chunk(2))
    conv_weight (E, W)     conv1d.weight[:, 0, :]
    conv_bias (E,)         conv1d.bias
    x_proj (E, R+2N)       x_proj.weight.T      columns: dt_low (R) | B (N) | C (N)
    dt_proj (R, E)         dt_proj.weight.T
    dt_bias (E,)           dt_proj.bias
    A_log (E, N)           A_log
    D (E,)                 D
    out_proj (E, D)        out_proj.weight.T

The decode state is ``MambaState(conv, ssm)``: ``conv`` (B, W-1, E) holds the last W-1 inputs x_in
of the convolution (``ref.nn.causal_conv1d``'s state; mamba_ssm's ``conv_state`` (B, E, W) holds
the last W, the current one included, so ours is its ``[:, :, 1:]`` transposed), ``ssm`` (B, E, N)
the state h of (7b) (mamba_ssm's ``ssm_state``). Memory O(E (W - 1 + N)) whatever the length.

**The time-invariant ablation** (``selective=False``; the paper's "S4" layer inside the Mamba
block, Table 1's ablation of selection): Δ, B and C stop depending on the input. Steps (4)-(5)
are dropped and x_proj, dt_proj with them; B and C become learned parameters of shape (E, N),
the same at every step, and the step size is the learned constant delta = softplus(dt_bias):

    delta_raw = 0,  B_t = B,  C_t = C         (every t)                     (4', 5')

so (7b) becomes h_t = exp(delta A) * h_{t-1} + delta B u_t with the same decay at every step: an
LTI, S4D-Real-like diagonal SSM per channel (with Mamba's simplified B̄ = delta B rather than
S4D's zero-order hold), which equals a causal convolution of u with the kernel
K_k[e] = sum_n C[e, n] exp(delta_e A[e, n])^k delta_e B[e, n]. Everything else (in_proj, the
convolution, the SiLU, the gate, out_proj) is the selective layer's. ``init_mamba_layer(...,
selective=False)`` builds it (B = 1 and C ~ N(0, 1), S4D's initialisation of B and C, see
``ref.mixers.s4.init``; A and dt_bias as the selective layer), and every function here tells the
two apart by their parameters (``x_proj`` or ``B``). Its parameters::

    B (E, N)               the input matrix, fixed in time (replaces x_proj's B columns)
    C (E, N)               the output matrix, fixed in time (replaces x_proj's C columns)

Sources (facts checked against state-spaces/mamba; the code here is written from the equations):

- ``mamba_ssm/modules/mamba_simple.py`` @ 52f57d66f8d6d02a73b1e38f5f3708eb8ccfa39c, ``Mamba.__init__``
  (lines 32-117): d_state 16, d_conv 4, expand 2, dt_rank ``ceil(d_model / 16)`` (line 58), in_proj
  and out_proj ``bias=False`` (lines 62, 117), depthwise Conv1d ``bias=True``, padding W-1 (64-72),
  x_proj ``bias=False`` and dt_proj ``bias=True`` (77-80); dt_proj.weight ~ U(-R^-1/2, R^-1/2)
  (dt_init "random", dt_scale 1; 82-89); dt = exp(U(log dt_min, log dt_max)) clamped below at
  dt_init_floor 1e-4 and dt_proj.bias = dt + log(-expm1(-dt)), the inverse of softplus, so
  softplus(dt_bias) = dt (91-101); A_log = log(arange(1, N + 1)) repeated over the E channels
  (103-111); D = 1 (113-115). ``Mamba.forward`` (its non-fused path: the conv output cut to T, dt_proj
  applied without its bias, which goes to the scan as ``delta_bias`` with ``delta_softplus=True``, z
  through the scan's gate) and ``Mamba.step`` (the decode: conv window, softplus(dt + bias), the
  state update) give the order (1)-(8); ``Block`` (same file) the "add, then norm, then mixer" layout.
- ``mamba_ssm/models/mixer_seq_simple.py`` @ 60dadf2e0ee730ac337035d5533de10bc26e4847:
  ``create_block`` (lines 29-82): norm_epsilon 1e-5, no MLP when ``d_intermediate=0`` (the
  default); ``_init_weights`` (lines 86-115): embedding normal(0.02), linear biases zeroed except
  dt_proj's (a no-op here: the others have none), out_proj re-drawn from torch's default and
  divided by sqrt(n_residuals_per_layer * n_layer) with one residual per layer (GPT-2's scaling);
  ``MixerModel.forward``: the residual added once more before the final norm.
- PyTorch's defaults for the other weights: ``nn.Linear`` and ``nn.Conv1d`` draw weights and biases
  from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)); fan_in is D for
  in_proj, E for x_proj and out_proj, W for the depthwise conv (1 input channel per group).

Differences from mamba_ssm: everything runs in the parameters' dtype (mamba_ssm keeps A_log and D
in float32 and scans in float32 whatever the model's dtype); ``expand`` is an integer (mamba_ssm
takes ``int(expand * d_model)``); in a language model the final RMSNorm is the scaffold's (eps 1e-6,
mamba_ssm 1e-5) and the vocabulary is not padded to a multiple of 8 (``pad_vocab_size_multiple``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ref import checks
from ref.mixers.selective_scan import FORMS
from ref.models.gla import check_dtype, check_params, check_rng
from ref.nn import (
    causal_conv1d,
    causal_conv1d_backward,
    host_backend,
    linear,
    linear_backward,
    rms_norm,
    rms_norm_backward,
    silu,
    silu_backward,
)

__all__ = [
    "MIXER_FORMS",
    "BLOCK_NORM_EPS",
    "DT_INIT_FLOOR",
    "MambaState",
    "init_mamba_layer",
    "mamba_layer",
    "mamba_layer_backward",
    "mamba_layer_step",
    "mamba_layer_prefill",
    "init_mamba_block",
    "mamba_block",
    "mamba_block_backward",
    "mamba_block_step",
    "mamba_block_prefill",
]

MIXER_FORMS = tuple(FORMS)  # ("recurrent", "parallel", "chunked"): the forms of the selective scan
BLOCK_NORM_EPS = 1e-5  # the block's RMSNorm (mamba_ssm's norm_epsilon)
DT_INIT_FLOOR = 1e-4  # the smallest initial step size (mamba_ssm's dt_init_floor)


class MambaState(NamedTuple):
    """The decode state of one layer: the convolution's last W-1 inputs and the SSM state."""

    conv: np.ndarray  # (B, W-1, E)
    ssm: np.ndarray  # (B, E, N)


# ------------------------------------------------------------------------------------------------
# initialisation


def torch_default_init(rng, shape, fan_in: int, dtype) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default for nn.Linear and nn.Conv1d."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def init_mamba_layer(
    rng: np.random.Generator,
    D: int,
    *,
    N: int = 16,
    expand: int = 2,
    conv_width: int = 4,
    dt_rank: int | None = None,
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    n_layer: int = 1,
    selective: bool = True,
    dtype=np.float64,
) -> dict:
    """Parameters of a Mamba layer of width D, initialised as mamba_ssm (see the module docstring).

    E = expand * D inner channels, N state dims, a convolution of width ``conv_width``, step-size
    rank ``dt_rank`` (default ceil(D / 16)). softplus(dt_bias) is log-uniform in [dt_min, dt_max]
    (floored at 1e-4). ``n_layer``: out_proj is divided by sqrt(n_layer), as mamba_ssm does for a
    model of that many layers (1: no rescaling). ``selective=False``: the time-invariant ablation
    (module docstring): parameters B = 1 and C ~ N(0, 1) of shape (E, N) in place of x_proj and
    dt_proj (``dt_rank`` is then unused).
    """
    rng, dtype = check_rng(rng), check_dtype(dtype)
    if not isinstance(selective, bool):
        raise ValueError(f"selective: expected True or False, got {selective!r}")
    D = checks.positive_int(D, "D")
    N = checks.positive_int(N, "N")
    E = D * checks.positive_int(expand, "expand")
    W = checks.positive_int(conv_width, "conv_width")
    R = math.ceil(D / 16) if dt_rank is None else checks.positive_int(dt_rank, "dt_rank")
    n_layer = checks.positive_int(n_layer, "n_layer")
    dt_min, dt_max = checks.positive_float(dt_min, "dt_min"), checks.positive_float(dt_max, "dt_max")
    if dt_min > dt_max:
        raise ValueError(f"dt_max: expected a value >= dt_min = {dt_min}, got {dt_max}")

    # dt = exp(U(log dt_min, log dt_max)), at least DT_INIT_FLOOR; dt_bias = softplus^-1(dt)
    dt = np.exp(rng.uniform(0.0, 1.0, E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = np.maximum(dt, DT_INIT_FLOOR)  # (E,)
    dt_bias = dt + np.log(-np.expm1(-dt))  # softplus(dt_bias) = dt
    params = {
        "in_proj": torch_default_init(rng, (D, 2 * E), D, dtype),
        "conv_weight": torch_default_init(rng, (E, W), W, dtype),
        "conv_bias": torch_default_init(rng, (E,), W, dtype),
    }
    if selective:
        params["x_proj"] = torch_default_init(rng, (E, R + 2 * N), E, dtype)
        params["dt_proj"] = rng.uniform(-(R**-0.5), R**-0.5, size=(R, E)).astype(dtype)
    else:  # (4', 5'): B and C fixed in time; S4D's B = 1, C ~ N(0, 1)
        params["B"] = np.ones((E, N), dtype)
        params["C"] = rng.standard_normal((E, N)).astype(dtype)
    return {
        **params,
        "dt_bias": dt_bias.astype(dtype),
        # S4D-Real: A[e, n] = -(n + 1), stored as its log
        "A_log": np.log(np.broadcast_to(np.arange(1, N + 1, dtype=np.float64), (E, N))).astype(dtype),
        "D": np.ones(E, dtype),
        "out_proj": (torch_default_init(rng, (E, D), E, np.float64) / math.sqrt(n_layer)).astype(dtype),
    }


# ------------------------------------------------------------------------------------------------
# validation


class _Sizes(NamedTuple):
    D: int  # model width
    E: int  # inner channels
    W: int  # convolution width
    R: int  # step-size rank (0 in the time-invariant layer)
    N: int  # state dims
    dtype: np.dtype
    selective: bool  # False: the time-invariant ablation (B, C parameters, no x_proj / dt_proj)


def _mamba_spec(params, where: str) -> _Sizes:
    """The sizes read from the shapes, after checking every parameter against them. A layer with
    ``x_proj`` is selective; one without it is the time-invariant ablation (``B``, ``C``)."""
    if not isinstance(params, dict):
        raise ValueError(f"{where}: expected a dict of parameters, got {type(params).__name__}")
    selective = "x_proj" in params or "B" not in params
    for key in ("in_proj", "conv_weight", "x_proj" if selective else "B", "A_log"):
        if key not in params:
            raise ValueError(f"{where}: expected a parameter {key!r}, got keys {sorted(params)}")
    W_in = checks.float_array(params["in_proj"], f"{where}/in_proj", ndim=2, dims="(D, 2E)")
    D, E2 = W_in.shape
    if E2 % 2:
        raise ValueError(f"{where}/in_proj: expected shape (D, 2E) with an even number of columns, got {W_in.shape}")
    E = E2 // 2
    W = checks.float_array(params["conv_weight"], f"{where}/conv_weight", ndim=2, dims="(E, W)").shape[1]
    N = checks.float_array(params["A_log"], f"{where}/A_log", ndim=2, dims="(E, N)").shape[1]
    if selective:
        RN = checks.float_array(params["x_proj"], f"{where}/x_proj", ndim=2, dims="(E, R+2N)").shape[1]
        R = RN - 2 * N
        if W < 1 or N < 1 or R < 1:
            raise ValueError(
                f"{where}: expected conv_weight (E, W) with W >= 1, A_log (E, N) with N >= 1 and x_proj (E, R+2N) "
                f"with R >= 1, got W = {W}, N = {N}, x_proj of {RN} columns"
            )
        projections = {"x_proj": ((E, R + 2 * N), "(E, R+2N)"), "dt_proj": ((R, E), "(R, E)")}
    else:
        R = 0
        if W < 1 or N < 1:
            raise ValueError(
                f"{where}: expected conv_weight (E, W) with W >= 1 and A_log (E, N) with N >= 1, got W = {W}, N = {N}"
            )
        projections = {"B": ((E, N), "(E, N)"), "C": ((E, N), "(E, N)")}
    spec = {
        "in_proj": ((D, 2 * E), "(D, 2E)"),
        "conv_weight": ((E, W), "(E, W)"),
        "conv_bias": ((E,), "(E,)"),
        **projections,
        "dt_bias": ((E,), "(E,)"),
        "A_log": ((E, N), "(E, N)"),
        "D": ((E,), "(E,)"),
        "out_proj": ((E, D), "(E, D)"),
    }
    check_params(params, where, spec, W_in.dtype)
    return _Sizes(D, E, W, R, N, W_in.dtype, selective)


def _check_x(x, sizes: _Sizes, name: str = "x") -> np.ndarray:
    """x (B, T, D) in the dtype of the parameters, T >= 1."""
    return checks.sequence_input(x, name, sizes.D, sizes.dtype, "the rows of in_proj")


def _check_options(mode, chunk_size):
    return checks.form_options(mode, chunk_size, MIXER_FORMS)


def _check_state(state, Bn: int, sizes: _Sizes):
    """A decode state: None (zeros) or MambaState / a pair (conv (B, W-1, E), ssm (B, E, N))."""
    if state is None:
        return None
    if not isinstance(state, tuple) or len(state) != 2:
        raise ValueError(f"state: expected None or a pair (conv, ssm) from a previous call, got {state!r:.100}")
    conv, ssm = state
    conv = checks.state_part(conv, "state.conv", (Bn, sizes.W - 1, sizes.E), "(B, W-1, E)", sizes.dtype)
    ssm = checks.state_part(ssm, "state.ssm", (Bn, sizes.E, sizes.N), "(B, E, N)", sizes.dtype)
    return MambaState(conv, ssm)


def _check_cotangent(dy, shape: tuple, dtype) -> np.ndarray:
    return checks.output_cotangent(dy, "dy", shape, dtype)


def _channels_first(a: np.ndarray) -> np.ndarray:
    """(B, T, X) -> (B, X, T), the selective scan's layout (a view)."""
    return np.moveaxis(a, 1, 2)


def _channels_last(a: np.ndarray) -> np.ndarray:
    """(B, X, T) -> (B, T, X) (a view)."""
    return np.moveaxis(a, 2, 1)


# ------------------------------------------------------------------------------------------------
# the layer


def _mamba_layer(params, x, mode, chunk_size, backend, state):
    """The layer (1)-(8) from ``state`` (None: zeros); returns ``(y, state at the end, cache)``."""
    sz = _mamba_spec(params, "params")
    x = _check_x(x, sz)
    state = _check_state(state, x.shape[0], sz)
    conv_state, ssm_state = (None, None) if state is None else state
    E, R, N = sz.E, sz.R, sz.N
    c = {"x_shape": x.shape, "dtype": sz.dtype, "mode": mode, "E": E, "selective": sz.selective}

    # (1) [x_in, z] = x W_in
    xz, c["in_proj"] = linear(x, params["in_proj"])  # (B, T, 2E)
    x_in, z = xz[..., :E], xz[..., E:]  # (B, T, E) each
    # (2) the causal depthwise convolution, continuing from the last W-1 inputs
    conv, conv_state, c["conv"] = causal_conv1d(x_in, params["conv_weight"], params["conv_bias"], conv_state)
    # (3) u = silu(c)
    u, c["silu"] = silu(conv)  # (B, T, E)
    if sz.selective:
        # (4) [dt_low, B, C] = u W_x
        xbc, c["x_proj"] = linear(u, params["x_proj"])  # (B, T, R+2N)
        dt_low, B, C = xbc[..., :R], xbc[..., R : R + N], xbc[..., R + N :]  # (B, T, R), (B, T, N), (B, T, N)
        # (5) delta_raw = dt_low W_dt  (dt_proj's bias is added inside the scan, before its softplus)
        delta_raw, c["dt_proj"] = linear(dt_low, params["dt_proj"])  # (B, T, E)
        # channel-first for the scan: delta_raw (B, E, T); B, C (B, N, T), one per step
        delta_raw, B, C = _channels_first(delta_raw), _channels_first(B), _channels_first(C)
    else:
        # (4', 5') the time-invariant ablation: delta = softplus(0 + dt_bias) and B, C (E, N) at every step
        delta_raw = np.zeros((x.shape[0], E, x.shape[1]), sz.dtype)  # (B, E, T)
        B, C = params["B"], params["C"]  # (E, N): the scan's "fixed" B and C
    # (6) A = -exp(A_log)
    A = -np.exp(params["A_log"])  # (E, N)
    c["A"] = A
    # (7) the selective scan, channel-first: u, delta, z (B, E, T)
    forward, _ = FORMS[mode]
    options = {"initial_state": ssm_state, "return_last_state": True, "backend": backend}
    if mode == "chunked":
        options["chunk_size"] = chunk_size
    y, ssm_state, c["scan"] = forward(
        _channels_first(u),
        delta_raw,
        A,
        B,
        C,
        params["D"],
        _channels_first(z),
        params["dt_bias"],
        True,
        **options,
    )  # y (B, E, T), ssm_state (B, E, N)
    # (8) out = y W_out
    out, c["out_proj"] = linear(_channels_last(y), params["out_proj"])  # (B, T, D)
    return out, MambaState(conv_state, ssm_state), c


def mamba_layer(
    params: dict, x: np.ndarray, *, mode: str = "chunked", chunk_size: int = 64, backend: str = "numpy"
):
    """The Mamba layer (1)-(8) on x (B, T, D), from a zero state. ``mode``: the form of the
    selective scan (``"chunked"``, ``"recurrent"``, ``"parallel"``); ``chunk_size``: steps per
    chunk of the chunked form; ``backend``: passed to the scan. Returns ``(y, cache)``, y (B, T, D)."""
    mode, chunk_size = _check_options(mode, chunk_size)
    y, _, cache = _mamba_layer(params, x, mode, chunk_size, backend, None)
    return y, cache


def mamba_layer_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``: dx (B, T, D) and grads shaped like ``params``."""
    c = cache
    dy = _check_cotangent(dy, c["x_shape"], c["dtype"])
    g = {}
    # (8) out = y W_out
    dy_inner, g["out_proj"], _ = linear_backward(dy, c["out_proj"])  # (B, T, E)
    # (7) the selective scan; the state at the end takes no gradient
    _, scan_backward = FORMS[c["mode"]]
    du, ddelta, dA, dB, dC, g["D"], dz, g["dt_bias"], _ = scan_backward(_channels_first(dy_inner), None, c["scan"])
    # (6) A = -exp(A_log):  dA/dA_log = -exp(A_log) = A
    g["A_log"] = dA * c["A"]
    if c["selective"]:
        # (5) delta_raw = dt_low W_dt
        ddt_low, g["dt_proj"], _ = linear_backward(_channels_last(ddelta), c["dt_proj"])  # (B, T, R)
        # (4) [dt_low, B, C] = u W_x: the three gradients side by side, then through x_proj
        dxbc = np.concatenate([ddt_low, _channels_last(dB), _channels_last(dC)], axis=-1)  # (B, T, R+2N)
        du_proj, g["x_proj"], _ = linear_backward(dxbc, c["x_proj"])  # (B, T, E)
        # u feeds both the scan (7) and x_proj (4): its gradients add
        du = _channels_last(du) + du_proj  # (B, T, E)
    else:
        # (4', 5') B and C are parameters: the scan already summed their gradients over batch and
        # time (its "fixed" B, C); delta_raw = 0 is a constant, so ddelta goes nowhere
        g["B"], g["C"] = dB, dC  # (E, N)
        du = _channels_last(du)  # (B, T, E)
    # (3) u = silu(c)
    (dconv,) = silu_backward(du, c["silu"])
    # (2) the convolution; the state at the end takes no gradient
    dx_in, g["conv_weight"], g["conv_bias"], _ = causal_conv1d_backward(dconv, None, c["conv"])
    # (1) [x_in, z] = x W_in
    dxz = np.concatenate([dx_in, _channels_last(dz)], axis=-1)  # (B, T, 2E)
    dx, g["in_proj"], _ = linear_backward(dxz, c["in_proj"])  # (B, T, D)
    return dx, {key: g[key] for key in params}


def mamba_layer_step(params: dict, x_t: np.ndarray, state: MambaState | None = None):
    """Decode one token: x_t (B, D) and ``state`` (None: zeros) -> ``(y_t, state)``, y_t (B, D)
    and the new ``MambaState``. The same (1)-(8) as the forward, one step of the recurrence."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    y, state, _ = _mamba_layer(params, x_t[:, None, :], "recurrent", None, "numpy", state)
    return y[:, 0], state


def mamba_layer_prefill(
    params: dict,
    x: np.ndarray,
    state: MambaState | None = None,
    *,
    mode: str = "chunked",
    chunk_size: int = 64,
    backend: str = "numpy",
):
    """Run a whole prompt x (B, T, D) with the chosen form, from ``state`` (None: zeros); returns
    ``(y, state)`` with the state at its end, from which :func:`mamba_layer_step` continues."""
    mode, chunk_size = _check_options(mode, chunk_size)
    y, state, _ = _mamba_layer(params, x, mode, chunk_size, backend, state)
    return y, state


# ------------------------------------------------------------------------------------------------
# the block


def init_mamba_block(
    rng: np.random.Generator,
    D: int,
    *,
    N: int = 16,
    expand: int = 2,
    conv_width: int = 4,
    dt_rank: int | None = None,
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    n_layer: int = 1,
    selective: bool = True,
    dtype=np.float64,
) -> dict:
    """Parameters of the block (9): ``{"norm": {"weight" (D,)}, "mixer": <Mamba layer>}``, the norm's
    scale 1 and the layer by :func:`init_mamba_layer` (same keyword arguments; ``selective=False``
    gives the time-invariant ablation)."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    layer = init_mamba_layer(
        rng,
        D,
        N=N,
        expand=expand,
        conv_width=conv_width,
        dt_rank=dt_rank,
        dt_min=dt_min,
        dt_max=dt_max,
        n_layer=n_layer,
        selective=selective,
        dtype=dtype,
    )
    return {"norm": {"weight": np.ones(D, dtype)}, "mixer": layer}


def _check_block(params):
    if not isinstance(params, dict) or set(params) != {"norm", "mixer"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a Mamba block {{'norm', 'mixer'}}, got {got}")
    if not isinstance(params["norm"], dict) or set(params["norm"]) != {"weight"}:
        raise ValueError(f"params/norm: expected {{'weight': (D,)}}, got {params['norm']!r:.80}")


def _mamba_block(params, x, mode, chunk_size, backend, state):
    _check_block(params)
    _check_x(x, _mamba_spec(params["mixer"], "params/mixer"))
    # (9) y = x + Mamba(RMSNorm(x))
    n, c_norm = rms_norm(x, params["norm"]["weight"], eps=BLOCK_NORM_EPS, backend=host_backend(backend))  # (B, T, D)
    a, state, c_mix = _mamba_layer(params["mixer"], n, mode, chunk_size, backend, state)
    return x + a, state, (c_norm, c_mix)


def mamba_block(
    params: dict, x: np.ndarray, *, mode: str = "chunked", chunk_size: int = 64, backend: str = "numpy"
):
    """The Mamba block (9) on x (B, T, D); options as :func:`mamba_layer`. Returns ``(y, cache)``."""
    mode, chunk_size = _check_options(mode, chunk_size)
    y, _, cache = _mamba_block(params, x, mode, chunk_size, backend, None)
    return y, cache


def mamba_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_norm, c_mix = cache
    dy = _check_cotangent(dy, c_mix["x_shape"], c_mix["dtype"])
    # y = x + a:  dx = dy + (the path through the norm and the layer)
    dn, g_mix = mamba_layer_backward(params["mixer"], c_mix, dy)
    dx_mix, dw = rms_norm_backward(dn, c_norm)
    return dy + dx_mix, {"norm": {"weight": dw}, "mixer": g_mix}


def mamba_block_step(params: dict, x_t: np.ndarray, state: MambaState | None = None):
    """Decode one token through the block: x_t (B, D), ``state`` (None: zeros) -> ``(y_t, state)``."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    y, state, _ = _mamba_block(params, x_t[:, None, :], "recurrent", None, "numpy", state)
    return y[:, 0], state


def mamba_block_prefill(
    params: dict,
    x: np.ndarray,
    state: MambaState | None = None,
    *,
    mode: str = "chunked",
    chunk_size: int = 64,
    backend: str = "numpy",
):
    """:func:`mamba_layer_prefill` for the block: ``(y, state)`` after the prompt x (B, T, D)."""
    mode, chunk_size = _check_options(mode, chunk_size)
    y, state, _ = _mamba_block(params, x, mode, chunk_size, backend, state)
    return y, state
