"""A ConvS5 next-frame model: an encoder convolution, residual ConvS5 blocks, a decoder convolution.

Paper: Smith, De Mello, Kautz, Linderman, Byeon, "Convolutional State Space Models for Long-Range
Spatiotemporal Modeling" (arXiv 2310.19694; code NVlabs/ConvSSM). The mixer, its two forms (loop
and parallel scan over time) and their backward passes are ``ref.mixers.convs5``; this module
assembles them into a model of frames x (B, T, H, W, C) (channels last), as the paper's ConvS5
stacks (an encoder, ConvS5 layers with a nonlinearity and a residual path, a decoder):

    u_0   = W_enc * x_t + b_enc                          (k_enc x k_enc conv, C -> D features)   (1)
    y_l   = ConvS5_l(u_{l-1})                            (ref.mixers.convs5: (1)-(3) there)     (2)
    u_l   = u_{l-1} + GELU(y_l)                          (residual block, l = 1 .. L)            (3)
    z_t   = W_dec * u_L + b_dec                          (k_dec x k_dec conv, D -> C logits)     (4)

Training runs (2) with ``convs5_parallel`` (every convolution of every frame at once, the states by
the associative scan over time); :func:`convs5_model_step` decodes one frame at a time with a state
of fixed size (B, H, W, P) per layer, whatever the number of frames already seen: the paper's
"fast autoregressive generation". Both are the same function (``mode="recurrent"`` runs the loop).

Parameters (a tree, as every model here)::

    enc    {W (D, C, k_enc, k_enc), b (D,)}
    layers [{log_neg_Lambda_re, Lambda_im, log_step (P,), B_re, B_im (P, D, k_B, k_B),
             C_re, C_im (D, P, k_C, k_C), D (D,)}]          (ref.mixers.convs5.convs5_init)

Re Λ is stored as its log-magnitude (S4D's parameterisation), so that no optimizer step can make a
mode unstable (the NVlabs code clips Re Λ to <= -1e-4 instead; the mixer refuses Re Λ >= 0):

    Re Λ = -exp(log_neg_Lambda_re)                                                            (5)
    dec    {W (C, D, k_dec, k_dec), b (C,)}

``convs5_model(params, x, mode=...) -> (logits, cache)``; ``convs5_model_backward(params, cache,
dlogits) -> (dx, grads)`` with ``grads`` shaped like ``params``.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.mixers.convs5 import FORMS, convs5_init
from ref.nn import conv2d, conv2d_backward, gelu, gelu_backward

__all__ = ["MODES", "init_frame_conv", "frame_conv", "frame_conv_backward", "init_convs5_model", "convs5_model",
           "convs5_model_backward", "convs5_model_step", "count_params"]

MODES = ("parallel", "recurrent")
SSM_KEYS = ("Lambda_re", "Lambda_im", "log_step", "B_re", "B_im", "C_re", "C_im", "D")  # the mixer's arguments
LAYER_KEYS = ("log_neg_Lambda_re",) + SSM_KEYS[1:]  # a layer's parameters: Re Λ = -exp(log_neg_Lambda_re)


def _mixer_args(layer):
    """The mixer's arguments from a layer's parameters: Re Λ = -exp(log_neg_Lambda_re) < 0 always."""
    args = {k: layer[k] for k in SSM_KEYS[1:]}
    args["Lambda_re"] = -np.exp(layer["log_neg_Lambda_re"])  # (5)
    return args


def _init_layer(D, P, rng, **kwargs):
    p = convs5_init(D, P, rng, **kwargs)
    p["log_neg_Lambda_re"] = np.log(-p.pop("Lambda_re"))
    return {k: p[k] for k in LAYER_KEYS}


def init_frame_conv(rng, c_out, c_in, k, dtype):
    """He-normal weight (c_out, c_in, k, k), zero bias."""
    W = rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2 / (c_in * k * k))
    return {"W": W.astype(dtype), "b": np.zeros(c_out, dtype)}


def init_convs5_model(rng: np.random.Generator, channels: int = 1, D: int = 8, P: int = 16, n_layers: int = 1, *,
                      k_enc: int = 3, k_B: int = 3, k_C: int = 3, k_dec: int = 3, dt_min: float = 1e-3,
                      dt_max: float = 1e-1, dtype=np.float64) -> dict:
    """Parameters of (1)-(4): ``channels`` image channels C, D features, P complex state channels per
    layer (S5's initialisation, ``convs5_init``), He-normal convolutions with zero biases."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    C, D, L = (checks.positive_int(v, n) for v, n in ((channels, "channels"), (D, "D"), (n_layers, "n_layers")))
    for k, name in ((k_enc, "k_enc"), (k_dec, "k_dec")):
        if checks.positive_int(k, name) % 2 == 0:
            raise ValueError(f"{name}: expected an odd kernel size (same padding), got {k}")
    return {
        "enc": init_frame_conv(rng, D, C, k_enc, dtype),
        "layers": [_init_layer(D, P, rng, k_B=k_B, k_C=k_C, dt_min=dt_min, dt_max=dt_max, dtype=dtype)
                   for _ in range(L)],
        "dec": init_frame_conv(rng, C, D, k_dec, dtype),
    }


def count_params(params) -> int:
    """Number of scalars in a parameter tree."""
    if isinstance(params, dict):
        return sum(count_params(v) for v in params.values())
    if isinstance(params, (list, tuple)):
        return sum(count_params(v) for v in params)
    return 0 if params is None else int(np.size(params))


# ---------------------------------------------------------------- per-frame convolutions (channels last)


def frame_conv(x, conv):
    """A 'same' convolution of every frame: x (..., H, W, C_in) -> (..., H, W, C_out) and the cache."""
    lead, (H, W, Ci) = x.shape[:-3], x.shape[-3:]
    imgs = np.ascontiguousarray(x.reshape(-1, H, W, Ci).transpose(0, 3, 1, 2))  # (n, C_in, H, W)
    y, cache = conv2d(imgs, conv["W"], conv["b"], padding=conv["W"].shape[2] // 2)  # (n, C_out, H, W)
    return np.ascontiguousarray(y.transpose(0, 2, 3, 1)).reshape(lead + (H, W, y.shape[1])), (cache, x.shape)


def frame_conv_backward(dy, cache):
    """Returns ``(dx, {"W": dW, "b": db})``."""
    c, x_shape = cache
    H, W, Co = dy.shape[-3:]
    dimgs = np.ascontiguousarray(dy.reshape(-1, H, W, Co).transpose(0, 3, 1, 2))  # (n, C_out, H, W)
    dx, dW, db = conv2d_backward(dimgs, c)  # (n, C_in, H, W)
    return np.ascontiguousarray(dx.transpose(0, 2, 3, 1)).reshape(x_shape), {"W": dW, "b": db}


def _check(params, x):
    if not isinstance(params, dict) or set(params) != {"enc", "layers", "dec"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a ConvS5 model {{'enc', 'layers', 'dec'}}, got {got}")
    C = params["enc"]["W"].shape[1]
    x = checks.float_array(x, "x", ndim=5, dims="(B, T, H, W, C)")
    if x.shape[4] != C:
        raise ValueError(f"x: expected shape (B, T, H, W, C) with C = {C} (axis 1 of enc/W), got {x.shape}")
    checks.same_dtype(x, "x", params["enc"]["W"].dtype, "the dtype of the parameters")
    return x


# ---------------------------------------------------------------- the model


def convs5_model(params: dict, x: np.ndarray, *, mode: str = "parallel"):
    """Logits (B, T, H, W, C) for frames x (B, T, H, W, C): (1)-(4); ``mode`` picks the mixer's form
    ("parallel": the scan, "recurrent": the loop; the same function). Returns ``(logits, cache)``."""
    x = _check(params, x)
    checks.one_of(mode, "mode", MODES)
    forward = FORMS[mode][0]
    u, c_enc = frame_conv(x, params["enc"])  # (1): (B, T, H, W, D)
    c_layers = []
    for ssm in params["layers"]:
        y, _, c_ssm = forward(u, **_mixer_args(ssm))  # (2): (B, T, H, W, D)
        a, c_act = gelu(y)
        u = u + a  # (3)
        c_layers.append((c_ssm, c_act))
    z, c_dec = frame_conv(u, params["dec"])  # (4): (B, T, H, W, C)
    return z, (c_enc, c_layers, c_dec, mode)


def convs5_model_backward(params: dict, cache, dlogits: np.ndarray):
    """Returns ``(dx, grads)``: (4) back to (1), every ConvS5 layer by its form's backward."""
    c_enc, c_layers, c_dec, mode = cache
    backward = FORMS[mode][1]
    du, g_dec = frame_conv_backward(dlogits, c_dec)  # (4)
    g_layers = [None] * len(c_layers)
    for i in range(len(c_layers) - 1, -1, -1):
        c_ssm, c_act = c_layers[i]
        (dy,) = gelu_backward(du, c_act)  # (3): u_l = u_{l-1} + GELU(y_l)
        du_ssm, *dparams, _ = backward(dy, None, c_ssm)  # (2): du, dLambda_re, ..., dD, dinitial_state
        g = dict(zip(SSM_KEYS, dparams))
        # (5): d log_neg_Lambda_re = dLambda_re * dRe Λ / d log_neg_Lambda_re = dLambda_re * Re Λ
        g["log_neg_Lambda_re"] = g.pop("Lambda_re") * -np.exp(params["layers"][i]["log_neg_Lambda_re"])
        g_layers[i] = {k: g[k] for k in LAYER_KEYS}
        du = du + du_ssm  # the residual path and the mixer's input add
    dx, g_enc = frame_conv_backward(du, c_enc)  # (1)
    return dx, {"enc": g_enc, "layers": g_layers, "dec": g_dec}


def convs5_model_step(params: dict, x_t: np.ndarray, states: list | None = None):
    """Decode one frame: x_t (B, H, W, C) -> ``(logits_t (B, H, W, C), states)``, with one complex
    state (re, im), each (B, H, W, P), per layer (None at the start). The work per frame is the same
    at every position: the state never grows (X_t = Ā X_{t-1} + B̄ * U_t). Equals
    :func:`convs5_model` fed the frames one at a time."""
    x_t = checks.float_array(x_t, "x_t", ndim=4, dims="(B, H, W, C)")
    _check(params, x_t[:, None])
    states = [None] * len(params["layers"]) if states is None else list(states)
    if len(states) != len(params["layers"]):
        raise ValueError(f"states: expected one state per layer ({len(params['layers'])}), got {len(states)}")
    forward = FORMS["recurrent"][0]
    u, _ = frame_conv(x_t, params["enc"])  # (1): (B, H, W, D)
    for i, ssm in enumerate(params["layers"]):
        y, states[i], _ = forward(u[:, None], **_mixer_args(ssm), initial_state=states[i])  # (2)
        u = u + gelu(y[:, 0])[0]  # (3)
    z, _ = frame_conv(u, params["dec"])  # (4)
    return z, states
