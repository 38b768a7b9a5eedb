"""A deep S4 / S4D model for sequence-to-sequence regression (Gu, Goel and Ré, arXiv 2111.00396).

The S4 paper's deep SSM (Sec. 3.4; annotated-s4's ``StackedModel`` of ``SequenceBlock``s with
``prenorm=True, glu=False`` and no dropout): a linear encoder lifts each input step to H channels,
a stack of residual blocks mixes them in time with one SSM per channel, and a linear decoder reads
every position out. For x (B, L, d_in):

    h = x W_enc + b_enc                                                   (B, L, H)       (1)
    for each block:
        z = LayerNorm(h)                                                  (B, L, H)       (2)
        y = SSM(z) = K * z + D z        per channel, K (H, L) the kernel   (B, L, H)       (3)
        h = h + GELU(y) W + b           position-wise mixing of channels   (B, L, H)       (4)
    out = h W_dec + b_dec                                                 (B, L, d_out)   (5)

(3) is ``ref.mixers.s4``'s mixer, in the paper's convolutional form (its kernel K by Cauchy sums
for S4, by a Vandermonde product for S4D, then an FFT convolution) or, with
``mode="recurrent"``, the same function as a recurrence over time (S4 paper, Sec. 2.3 and App.
C.2); the tests check that both give the same outputs and gradients.

**Two kinds of SSM** (``kind``), both with complex parameters stored as real pairs, one mode of
each conjugate pair (N/2 of them for a state of size N), as ``ref.mixers.s4``:

* ``"s4"``: A = Λ - P P^* (diagonal plus low rank), bilinear discretisation; ``C`` is S4's C̃
  (the paper's Algorithm 1 trains C̃ = C̄ (I - Ā^L) in place of C̄; the two are in one-to-one
  correspondence for a fixed L).
* ``"s4d"``: A = Λ diagonal (the S4D paper's model), zero-order hold.

The real part of Λ must stay negative (a stable, decaying mode). As state-spaces/s4 does
(``real_transform="exp"``; minimal ``s4d.py``: ``A = -exp(log_A_real) + 1j * A_imag``), the model
stores its logarithm, so no gradient step can make a mode unstable:

    Λ = -exp(log_A_real) + i A_imag                                                       (6)
    dlog_A_real = dΛ_re * Λ_re              (chain rule through the exponential)          (7)

**Initialisations** (``init``), the object of the S4 paper's ablation (Sec. 4.4, Fig. 4a: "NPLR
parameterization with random versus HiPPO initialization"):

* ``"legs"``: HiPPO-LegS (S4 paper eq. (2)) in its DPLR form (``ref.mixers.s4.s4_init``), or for
  S4D its diagonal part S4D-LegS; also ``"lin"``, ``"inv"``, ``"real"`` for S4D
  (``ref.mixers.s4.s4d_init``).
* ``"random"``: state-spaces/s4's random DPLR (``dplr(init="rand")`` in
  src/models/sequence/kernels/dplr.py @1eb1007): Λ_n = -1/2 + i exp(g_n), g_n ~ N(0, 1), B = 1,
  and for S4 a random P ~ complex N(0, 1) (for S4D no P: state-spaces' ``diag-rand``).

Every other parameter is drawn the same way for every init: log Δ ~ U[log dt_min, log dt_max]
(1e-3 and 1e-1), C ~ complex N(0, 1), D ~ N(0, 1); the linear maps uniform in ±1/sqrt(fan_in)
(torch's ``nn.Linear``), biases 0, LayerNorm weight 1 and bias 0.

Parameters (a nested dict; the sizes are read from the shapes, so ``s4_model(params, x)`` needs
no configuration)::

    encoder  {W (d_in, H), b (H,)}
    blocks   [{norm_weight (H,), norm_bias (H,),
               ssm {log_dt (H,), log_A_real, A_imag, [P_re, P_im,] B_re, B_im, C_re, C_im (H, N/2),
                    D (H,)},
               W (H, H), b (H,)}, ...]
    decoder  {W (H, d_out), b (d_out,)}

The kind of each block's SSM is read from its keys (P present: S4). Conventions as the other
models: ``s4_model(params, x, mode=...) -> (y, cache)`` and
``s4_model_backward(params, cache, dy) -> (dx, grads)`` with ``grads`` shaped like ``params``.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.mixers.s4 import FORMS, s4_init, s4d_init
from ref.nn import gelu, gelu_backward, layer_norm, layer_norm_backward, linear, linear_backward

__all__ = [
    "KINDS",
    "INITS",
    "MODES",
    "NORM_EPS",
    "init_s4_ssm",
    "init_s4_model",
    "ssm_kind",
    "s4_ssm_kernel",
    "s4_model",
    "s4_model_backward",
]

KINDS = ("s4", "s4d")
INITS = {"s4": ("legs", "random"), "s4d": ("legs", "lin", "inv", "real", "random")}
MODES = ("convolutional", "recurrent")
NORM_EPS = 1e-5  # the blocks' LayerNorm (torch's default, as annotated-s4 and state-spaces/s4)

# the stored pairs of each kind, in the order the mixer takes them after (u, log_dt, A_re, A_im)
_PAIRS = {"s4": ("P", "B", "C"), "s4d": ("C",)}


# --- initialisation -----------------------------------------------------------------------------


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _uniform_linear(rng, d_in: int, d_out: int, dtype) -> dict:
    """torch's nn.Linear: W, b ~ U(-1/sqrt(d_in), 1/sqrt(d_in)); here b = 0."""
    bound = 1 / np.sqrt(d_in)
    return {"W": rng.uniform(-bound, bound, (d_in, d_out)).astype(dtype), "b": np.zeros(d_out, dtype)}


def init_s4_ssm(rng: np.random.Generator, H: int, N: int, *, kind: str = "s4", init: str = "legs",
                dt_min: float = 1e-3, dt_max: float = 1e-1, dtype=np.float64) -> dict:
    """One block's SSM parameters: H channels, state size N (even), ``kind`` "s4" or "s4d",
    ``init`` one of ``INITS[kind]`` (see the module docstring)."""
    rng = _check_rng(rng)
    kind = checks.one_of(kind, "kind", KINDS)
    init = checks.one_of(init, "init", INITS[kind])
    legs_or_random = "legs" if init == "random" else init
    if kind == "s4":
        p = s4_init(H, N, rng, dt_min=dt_min, dt_max=dt_max, dtype=np.float64)
        p = {"log_dt": p["log_dt"], "A_re": p["Lambda_re"], "A_im": p["Lambda_im"], "P_re": p["P_re"],
             "P_im": p["P_im"], "B_re": p["B_re"], "B_im": p["B_im"], "C_re": p["Ct_re"], "C_im": p["Ct_im"],
             "D": p["D"]}
    else:
        p = s4d_init(H, N, rng, init=legs_or_random, dt_min=dt_min, dt_max=dt_max, dtype=np.float64)
    # The random init's draws are made for every init, so that one seed gives every init the same
    # log_dt, C, D (and the same later blocks and linear maps): only A, B, P differ between inits.
    shape = p["A_re"].shape
    random_imag = np.exp(rng.standard_normal(shape))
    random_P = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)  # torch.randn(cfloat)
    if init == "random":
        # state-spaces/s4 dplr(init="rand"): real part 1/2, imaginary part exp(N(0, 1)), B = 1, random P
        p["A_re"], p["A_im"] = np.full(shape, -0.5), random_imag
        p["B_re"], p["B_im"] = np.ones(shape), np.zeros(shape)
        if kind == "s4":
            p["P_re"], p["P_im"] = random_P.real, random_P.imag
    out = {"log_dt": p["log_dt"], "log_A_real": np.log(-p["A_re"]), "A_imag": p["A_im"]}  # (6)
    for name in ("P", "B", "C") if kind == "s4" else ("B", "C"):
        out[f"{name}_re"], out[f"{name}_im"] = p[f"{name}_re"], p[f"{name}_im"]
    out["D"] = p["D"]
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in out.items()}


def init_s4_model(rng: np.random.Generator, d_input: int, H: int, N: int, d_output: int, n_layers: int, *,
                  kind: str = "s4", init: str = "legs", dt_min: float = 1e-3, dt_max: float = 1e-1,
                  dtype=np.float64) -> dict:
    """Parameters of the model (1)-(5): ``n_layers`` blocks of H channels with a state of size N each."""
    rng = _check_rng(rng)
    d_input, H, N = checks.positive_int(d_input, "d_input"), checks.positive_int(H, "H"), checks.positive_int(N, "N")
    d_output, n_layers = checks.positive_int(d_output, "d_output"), checks.positive_int(n_layers, "n_layers")
    dtype = checks.one_of(np.dtype(dtype), "dtype", checks.FLOAT_DTYPES)
    encoder = _uniform_linear(rng, d_input, H, dtype)
    decoder = _uniform_linear(rng, H, d_output, dtype)
    blocks = []
    for _ in range(n_layers):
        ssm = init_s4_ssm(rng, H, N, kind=kind, init=init, dt_min=dt_min, dt_max=dt_max, dtype=dtype)
        mix = _uniform_linear(rng, H, H, dtype)
        blocks.append({"norm_weight": np.ones(H, dtype), "norm_bias": np.zeros(H, dtype), "ssm": ssm, **mix})
    return {"encoder": encoder, "blocks": blocks, "decoder": decoder}


# --- one SSM: the parameter transform (6) around ref.mixers.s4 ----------------------------------


def ssm_kind(ssm: dict) -> str:
    """"s4" when the SSM has a low-rank term P, else "s4d"."""
    return "s4" if "P_re" in ssm else "s4d"


def _mixer_args(ssm: dict):
    """The mixer's positional parameters after u: (log_dt, A_re, A_im, *pairs, D), in its order."""
    kind = ssm_kind(ssm)
    A_re = -np.exp(ssm["log_A_real"])  # (6)
    pairs = []
    for name in _PAIRS[kind]:
        pairs += [ssm[f"{name}_re"], ssm[f"{name}_im"]]
    if kind == "s4":
        return (ssm["log_dt"], A_re, ssm["A_imag"], *pairs, ssm["D"])
    # s4d takes (log_dt, A_re, A_im, C_re, C_im, D, B_re, B_im)
    return (ssm["log_dt"], A_re, ssm["A_imag"], *pairs, ssm["D"], ssm["B_re"], ssm["B_im"])


def _ssm_grads(ssm: dict, A_re: np.ndarray, g: tuple) -> dict:
    """The mixer's gradients (after du) back to the stored parameters, with (7) for log_A_real."""
    kind = ssm_kind(ssm)
    if kind == "s4":  # (dlog_dt, dA_re, dA_im, dP_re, dP_im, dB_re, dB_im, dC_re, dC_im, dD)
        dlog_dt, dA_re, dA_im, dP_re, dP_im, dB_re, dB_im, dC_re, dC_im, dD = g
        extra = {"P_re": dP_re, "P_im": dP_im}
    else:  # (dlog_dt, dA_re, dA_im, dC_re, dC_im, dD, dB_re, dB_im)
        dlog_dt, dA_re, dA_im, dC_re, dC_im, dD, dB_re, dB_im = g
        extra = {}
    grads = {"log_dt": dlog_dt, "log_A_real": dA_re * A_re, "A_imag": dA_im, **extra,  # (7)
             "B_re": dB_re, "B_im": dB_im, "C_re": dC_re, "C_im": dC_im, "D": dD}
    return {k: grads[k] for k in ssm}  # the order of params


def _ssm_forward(ssm: dict, u: np.ndarray, mode: str):
    """(3) on u (B, H, L) channel-first: y (B, H, L), cache."""
    forward, _ = FORMS[ssm_kind(ssm)][mode]
    args = _mixer_args(ssm)
    y, cache = forward(u, *args)
    return y, (cache, args[1])


def _ssm_backward(ssm: dict, cache, dy: np.ndarray, mode: str):
    mixer_cache, A_re = cache
    _, backward = FORMS[ssm_kind(ssm)][mode]
    du, *g = backward(dy, mixer_cache)
    return du, _ssm_grads(ssm, A_re, tuple(g))


def s4_ssm_kernel(ssm: dict, L: int) -> np.ndarray:
    """The convolution kernel K (H, L) of one block's SSM (for plots): K_l = C Ā^l B̄, S4 paper eq. (5)."""
    from ref.mixers.s4 import s4_kernel, s4d_kernel

    args = _mixer_args(ssm)
    if ssm_kind(ssm) == "s4":
        return s4_kernel(*args[:-1], L=L)[0]
    log_dt, A_re, A_im, C_re, C_im, _, B_re, B_im = args
    return s4d_kernel(log_dt, A_re, A_im, C_re, C_im, B_re, B_im, L=L)[0]


# --- the model (1)-(5) --------------------------------------------------------------------------


def _check_model(params, x):
    if not isinstance(params, dict) or not {"encoder", "blocks", "decoder"} <= set(params):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a dict with 'encoder', 'blocks' and 'decoder' (init_s4_model), got {got}")
    W_enc = params["encoder"]["W"]
    x = checks.float_array(x, "x", ndim=3, dims="(B, L, d_in)")
    checks.nonempty_time(x.shape[1], "x")
    if x.shape[2] != W_enc.shape[0]:
        raise ValueError(f"x: expected shape (B, L, d_in) with d_in = {W_enc.shape[0]} (rows of encoder W), "
                         f"got {x.shape}")
    checks.same_dtype(x, "x", W_enc.dtype, "the dtype of the parameters")
    return checks.finite(x, "x")


def s4_model(params: dict, x: np.ndarray, *, mode: str = "convolutional"):
    """(1)-(5): ``x`` (B, L, d_in) -> ``y`` (B, L, d_out), cache. ``mode``: "convolutional" (the
    kernel and an FFT convolution, S4's training form) or "recurrent" (step by step), the same function."""
    mode = checks.one_of(mode, "mode", MODES)
    x = _check_model(params, x)
    h, enc_cache = linear(x, params["encoder"]["W"], params["encoder"]["b"])  # (1): (B, L, H)
    block_caches = []
    for blk in params["blocks"]:
        z, norm_cache = layer_norm(h, blk["norm_weight"], blk["norm_bias"], eps=NORM_EPS)  # (2)
        y, ssm_cache = _ssm_forward(blk["ssm"], np.ascontiguousarray(z.transpose(0, 2, 1)), mode)  # (3): (B, H, L)
        a, act_cache = gelu(y.transpose(0, 2, 1))  # (B, L, H)
        o, lin_cache = linear(a, blk["W"], blk["b"])  # (4)
        h = h + o  # (4): the residual
        block_caches.append((norm_cache, ssm_cache, act_cache, lin_cache))
    out, dec_cache = linear(h, params["decoder"]["W"], params["decoder"]["b"])  # (5): (B, L, d_out)
    return out, (mode, enc_cache, block_caches, dec_cache, out.shape)


def s4_model_backward(params: dict, cache, dy: np.ndarray):
    """Gradients ``(dx, grads)`` of (1)-(5), ``grads`` shaped like ``params``; every step is the
    backward of the ``ref.nn`` op or ``ref.mixers.s4`` form that the forward called, in reverse."""
    mode, enc_cache, block_caches, dec_cache, shape = cache
    dy = checks.float_array(dy, "dy", ndim=3, dims="(B, L, d_out)")
    checks.same_shape(dy, "dy", shape, "(B, L, d_out)", "the shape of y")
    dh, dW_dec, db_dec = linear_backward(dy, dec_cache)  # (5)
    block_grads = []
    for blk, (norm_cache, ssm_cache, act_cache, lin_cache) in zip(params["blocks"][::-1], block_caches[::-1]):
        da, dW, db = linear_backward(dh, lin_cache)  # (4)
        (dy_ssm,) = gelu_backward(da, act_cache)  # (B, L, H)
        dz, dssm = _ssm_backward(blk["ssm"], ssm_cache, np.ascontiguousarray(dy_ssm.transpose(0, 2, 1)), mode)  # (3)
        dh_norm, dnw, dnb = layer_norm_backward(np.ascontiguousarray(dz.transpose(0, 2, 1)), norm_cache)  # (2)
        dh = dh + dh_norm  # the residual passes dh through, the branch adds its part
        block_grads.append({"norm_weight": dnw, "norm_bias": dnb, "ssm": dssm, "W": dW, "b": db})
    dx, dW_enc, db_enc = linear_backward(dh, enc_cache)  # (1)
    grads = {"encoder": {"W": dW_enc, "b": db_enc}, "blocks": block_grads[::-1],
             "decoder": {"W": dW_dec, "b": db_dec}}
    return dx, grads
